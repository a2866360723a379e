"""Prompt template ``r1_distilled_llama``: DeepSeek-R1-Distill-Llama headers with the llama-3.1
``<function=name>{json}</function>`` / ``<|python_tag|>`` calls.

From upstream HEAD (e240e8c). The system block (``<｜System｜>``) appears only when there are tools
or a code interpreter; tool results are ``ipython\\n\\n{content}`` glued to the previous turn; an
assistant turn ends with ``<|eom_id|>`` after calls, ``<｜end▁of▁sentence｜>`` after text only, and
nothing when it had neither. Output parsing is v3-llama3.1's (upstream inherits it; ``<think>`` is
plain text there).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from functionary.templates._llama31_calls import PYTHON_TAG, FunctionTagTemplate, render_calls, tools_block
from functionary.templates._tokens import EOM, R1_ASSISTANT, R1_EOS, R1_SPECIAL, R1_SYSTEM, R1_USER


class R1DistilledLlamaTemplate(FunctionTagTemplate):
    version = "r1_distilled_llama"
    stop_tokens = (R1_EOS, EOM)
    eos_tokens = (R1_EOS,)
    special_tokens = (*R1_SPECIAL, EOM, PYTHON_TAG)
    generation_prompt = R1_ASSISTANT

    def system_block(self, functions: list[Mapping[str, Any]], *, code_interpreter: bool) -> str:
        if not (functions or code_interpreter):
            return ""
        environment = "Environment: ipython\n\n" if code_interpreter else ""
        tools = tools_block(functions, escape=False) if functions else ""
        return f"{R1_SYSTEM}\n{environment}{tools}"

    def render_message(self, message: dict) -> str:
        role, content, calls = message["role"], message["content"] or "", message["tool_calls"]
        if role == "user":
            return R1_USER + content
        if role == "system":
            return f"{R1_SYSTEM}{content}\n"
        if role == "tool":
            return "ipython\n\n" + content
        if calls:
            return f"{R1_ASSISTANT}{content}{render_calls(calls)}{EOM}"
        return f"{R1_ASSISTANT}{content}{R1_EOS if content else ''}"
