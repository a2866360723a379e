"""Prompt template ``v3-llama3.1``: Meta's llama-3.1 custom-tool format.

Shipped by ``meetkai/functionary-medium-v3.1`` (and small-v3.1). The prompt is that shipped chat
template written in Python, quirks included: the tool lines of the system message are
HTML-escaped (``"`` -> ``&#34;``), because the template adds plain strings to a ``|safe`` (Markup)
string and Markup escapes what is added to it. The model was trained on that prompt.

Calls are ``<function=name>{json}</function>`` and ``<|python_tag|>code`` (see
:mod:`functionary.templates._llama31_calls`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from functionary.templates._llama31_calls import PYTHON_TAG, FunctionTagTemplate, render_calls, tools_block
from functionary.templates._tokens import EOM, EOT, LLAMA3_END, LLAMA3_SPECIAL, header

KNOWLEDGE = "Cutting Knowledge Date: December 2023\n\n"
IPYTHON = "Environment: ipython\n\n"


class V3Llama31Template(FunctionTagTemplate):
    version = "v3-llama3.1"
    stop_tokens = (*LLAMA3_END, EOM)
    eos_tokens = (*LLAMA3_END, EOM)
    special_tokens = (*LLAMA3_SPECIAL, EOM, PYTHON_TAG)
    generation_prompt = header("assistant")
    # what the reasoning variant (v3_llama31_reasoning) changes
    mode_line: ClassVar[str] = ""  # a line right after the system header
    escape_tools: ClassVar[bool] = True  # the tool lines are HTML-escaped
    empty_turns: ClassVar[bool] = True  # an assistant turn with neither text nor calls is rendered

    def system_block(self, functions: list[Mapping[str, Any]], *, code_interpreter: bool) -> str:
        environment = IPYTHON if code_interpreter else "\n"
        tools = tools_block(functions, escape=self.escape_tools) if functions else ""
        return f"{header('system')}{self.mode_line}{environment}{KNOWLEDGE}{tools}{EOT}"

    def render_message(self, message: dict) -> str:
        role, content, calls = message["role"], message["content"] or "", message["tool_calls"]
        if role in ("user", "system"):
            return f"{header(role)}{content}{EOT}"
        if role == "tool":
            return f"{header('ipython')}{content}{EOT}"
        if calls:
            return f"{header(role)}{content}{render_calls(calls)}{EOM}"
        return f"{header(role)}{content}{EOT}" if content or self.empty_turns else ""
