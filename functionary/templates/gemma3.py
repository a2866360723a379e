"""Prompt template gemma3: Gemma turns (``<start_of_turn>user|system|model|tool``) with the
Qwen-style tool list and ``<tool_call>`` calls (parser in ``_qwen_calls``)."""

from __future__ import annotations

from functionary.templates._qwen_prompt import QwenFamilyTemplate, content, history_calls, is_tool_result, tools_block
from functionary.templates.base import PreparedRequest


class Gemma3Template(QwenFamilyTemplate):
    version = "gemma3"
    stop_tokens = ("<end_of_turn>",)
    eos_tokens = ("<end_of_turn>", "<eos>")
    special_tokens = ("<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>", "<tool_call>", "</tool_call>")
    generation_prompt = "<start_of_turn>model\n"

    def _header(self, prepared: PreparedRequest) -> str:
        if prepared.tools:
            return (
                "<start_of_turn>system\nYou are capable of executing available function(s) if required."
                + tools_block(prepared)
                + "<end_of_turn>\n"
            )
        messages = prepared.messages
        if messages and messages[0]["role"] == "system":
            # The trained template shows a leading system message twice when there are no tools
            # (here and again as the first turn): reproduced, it is what the model saw.
            return f"<start_of_turn>system\n{content(messages[0])}<end_of_turn>\n"
        return ""

    def _turn(self, message: dict, *, first: bool, prev: dict | None, next: dict | None) -> str:
        role = message["role"]
        text = content(message)
        if role in ("user", "system"):
            return f"<start_of_turn>{role}\n{text}<end_of_turn>\n"
        if role == "assistant":
            head = "<start_of_turn>model" + ("\n" + text if text else "")
            calls = "".join(f"\n<tool_call>\n{call}\n</tool_call>" for call in history_calls(message))
            return head + calls + "<end_of_turn>\n"
        if is_tool_result(message):
            start = "" if is_tool_result(prev) else "<start_of_turn>tool"
            end = "" if is_tool_result(next) else "<end_of_turn>\n"
            return f"{start}\n<tool_response>\n{text}\n</tool_response>{end}"
        return ""
