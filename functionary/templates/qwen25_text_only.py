"""Prompt template qwen2.5-text-only: ChatML turns, tools as JSON lines in the system turn, calls as
``<tool_call>`` JSON objects (parser in ``_qwen_calls``)."""

from __future__ import annotations

from functionary.templates._qwen_prompt import QwenFamilyTemplate, content, history_calls, is_tool_result, tools_block
from functionary.templates.base import PreparedRequest


class Qwen25TextOnlyTemplate(QwenFamilyTemplate):
    version = "qwen2.5-text-only"
    stop_tokens = ("<|im_end|>",)
    eos_tokens = ("<|im_end|>", "<|endoftext|>")
    special_tokens = ("<|im_start|>", "<|im_end|>", "<|endoftext|>", "<tool_call>", "</tool_call>")
    generation_prompt = "<|im_start|>assistant\n"

    def _header(self, prepared: PreparedRequest) -> str:
        messages = prepared.messages
        system = content(messages[0]) if messages and messages[0]["role"] == "system" else None
        tools = tools_block(prepared) if prepared.tools else ""
        return "<|im_start|>system\n" + self._system_text(system, tools=bool(tools)) + tools + "<|im_end|>\n"

    def _system_text(self, system: str | None, *, tools: bool) -> str:
        """The system turn's text before the tool list (a leading system message replaces the
        default)."""
        return "You are a helpful assistant." if system is None else system

    def _turn(self, message: dict, *, first: bool, prev: dict | None, next: dict | None) -> str:
        role = message["role"]
        text = content(message)
        if role == "user":
            return f"<|im_start|>user\n{text}<|im_end|>\n" if text else ""
        if role == "system":
            return "" if first else f"<|im_start|>system\n{text}<|im_end|>\n"
        if role == "assistant":
            calls = history_calls(message)
            if not calls:
                return f"<|im_start|>assistant\n{text}<|im_end|>\n"
            head = "<|im_start|>assistant" + ("\n" + text if text else "")
            return head + "".join(f"\n<tool_call>\n{call}\n</tool_call>" for call in calls) + "<|im_end|>\n"
        if is_tool_result(message):
            start = "" if is_tool_result(prev) else "<|im_start|>user"
            end = "" if is_tool_result(next) else "<|im_end|>\n"
            return f"{start}\n<tool_response>\n{text}\n</tool_response>{end}"
        return ""
