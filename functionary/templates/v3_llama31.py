"""Prompt template ``v3-llama3.1``: Meta's llama-3.1 custom-tool format.

Shipped by ``meetkai/functionary-medium-v3.1`` (and small-v3.1). The prompt is that shipped chat
template written in Python, quirks included: the tool lines of the system message are
HTML-escaped (``"`` -> ``&#34;``), because the template adds plain strings to a ``|safe`` (Markup)
string and Markup escapes what is added to it. The model was trained on that prompt.

Calls are ``<function=name>{json}</function>`` and ``<|python_tag|>code`` (see
:mod:`functionary.templates._llama31_calls`).
"""

from __future__ import annotations

from functionary.templates._llama31_calls import (
    FunctionTagGrammar,
    FunctionTagParser,
    choice_prefix,
    render_calls,
    split_builtin_tools,
    tools_block,
)
from functionary.templates.base import PreparedRequest, PromptTemplate, StreamParser

EOT = "<|eot_id|>"
EOM = "<|eom_id|>"
GENERATION_PROMPT = "<|start_header_id|>assistant<|end_header_id|>\n\n"
KNOWLEDGE = "Cutting Knowledge Date: December 2023\n\n"
IPYTHON = "Environment: ipython\n\n"


def header(role: str) -> str:
    return f"<|start_header_id|>{role}<|end_header_id|>\n\n"


class V3Llama31Template(FunctionTagGrammar, PromptTemplate):
    version = "v3-llama3.1"
    stop_tokens = ("<|eot_id|>", "<|end_of_text|>", "<|eom_id|>")
    eos_tokens = ("<|eot_id|>", "<|end_of_text|>", "<|eom_id|>")
    special_tokens = (
        "<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
        "<|eot_id|>", "<|eom_id|>", "<|python_tag|>",
    )

    def render(self, prepared: PreparedRequest) -> str:
        functions, code_interpreter = split_builtin_tools(prepared.tools)
        parts = [header("system"), IPYTHON if code_interpreter else "\n", KNOWLEDGE]
        if functions:
            parts.append(tools_block(functions, escape=True))
        parts.append(EOT)
        for message in prepared.messages:
            role, content = message["role"], message["content"]
            if role in ("user", "system"):
                parts.append(f"{header(role)}{content or ''}{EOT}")
            elif role == "tool":
                parts.append(f"{header('ipython')}{content or ''}{EOT}")
            else:
                parts.append(header(role))
                if content:
                    parts.append(content)
                if message["tool_calls"]:
                    parts.append(render_calls(message["tool_calls"]))
                    parts.append(EOM)
                else:
                    parts.append(EOT)
        parts.append(GENERATION_PROMPT)
        parts.append(choice_prefix(prepared))
        return "".join(parts)

    def make_parser(self, prepared: PreparedRequest) -> StreamParser:
        return FunctionTagParser(prepared)
