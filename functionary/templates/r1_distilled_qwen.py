"""Prompt template r1_distilled_qwen: DeepSeek-R1 turn tokens with the Qwen-style tool list and
``<tool_call>`` calls (parser in ``_qwen_calls``)."""

from __future__ import annotations

from functionary.templates._qwen_prompt import QwenFamilyTemplate, content, history_calls, is_tool_result, tools_block
from functionary.templates._tokens import R1_ASSISTANT, R1_EOS, R1_SPECIAL, R1_SYSTEM, R1_USER
from functionary.templates.base import PreparedRequest


class R1DistilledQwenTemplate(QwenFamilyTemplate):
    version = "r1_distilled_qwen"
    stop_tokens = (R1_EOS,)
    eos_tokens = (R1_EOS,)
    special_tokens = (*R1_SPECIAL, "<|im_start|>", "<|im_end|>", "<tool_call>", "</tool_call>")
    generation_prompt = R1_ASSISTANT

    def _header(self, prepared: PreparedRequest) -> str:
        return R1_SYSTEM + tools_block(prepared) + "\n" if prepared.tools else ""

    def _turn(self, message: dict, *, first: bool, prev: dict | None, next: dict | None) -> str:
        role = message["role"]
        text = content(message)
        if role == "user":
            return R1_USER + text
        if role == "system":
            # The trained template's indentation leaks into the prompt before a system turn.
            return "\n        " + R1_SYSTEM + text + "\n"
        if role == "assistant":
            calls = "\n".join(f"<tool_call>\n{call}\n</tool_call>" for call in history_calls(message))
            return R1_ASSISTANT + text + calls + R1_EOS
        if is_tool_result(message):
            start = "" if is_tool_result(prev) else R1_USER
            return f"{start}\n<tool_response>\n{text}\n</tool_response>"
        return ""
