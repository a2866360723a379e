"""The special tokens of the tokenizer families that several versions are trained on, spelled once.

Llama 3 / 3.1: ``v2.llama3``, ``v3.llama3``, ``v3-llama3.1`` and ``v3-llama3.1-reasoning``.
DeepSeek-R1: ``r1``, ``r1_distilled_qwen`` and ``r1_distilled_llama`` (the distilled models keep
R1's turn tokens on their own base tokenizer).
"""

from __future__ import annotations

# ---------------------------------------------------------------------------------------------
# Llama 3

EOT = "<|eot_id|>"
END_OF_TEXT = "<|end_of_text|>"
EOM = "<|eom_id|>"  # llama-3.1: the turn ends for a tool to answer
LLAMA3_END = (EOT, END_OF_TEXT)  # the stop and EOS texts of Llama 3
LLAMA3_SPECIAL = ("<|begin_of_text|>", END_OF_TEXT, "<|start_header_id|>", "<|end_header_id|>", EOT)


def header(role: object) -> str:
    """The Llama 3 message header: ``<|start_header_id|>{role}<|end_header_id|>`` and a blank line."""
    return f"<|start_header_id|>{role}<|end_header_id|>\n\n"


# ---------------------------------------------------------------------------------------------
# DeepSeek-R1

R1_EOS = "<｜end▁of▁sentence｜>"
R1_SYSTEM = "<｜System｜>"
R1_USER = "<｜User｜>"
R1_ASSISTANT = "<｜Assistant｜>"
R1_SPECIAL = ("<｜begin▁of▁sentence｜>", R1_EOS, R1_USER, R1_ASSISTANT, "<think>", "</think>")
