"""Prompt template ``v3-llama3.1-reasoning``: the llama-3.1 format with ``Reasoning Mode: On``.

From upstream HEAD (e240e8c): the v3-llama3.1 prompt with a built-in ``reasoning`` tool always
added, which turns on the ``Reasoning Mode: On`` line. Unlike the shipped v3.1 template, the tool
lines are not HTML-escaped, and an assistant turn with neither text nor calls renders nothing.
Output parsing is v3-llama3.1's (upstream inherits it unchanged; ``<think>`` is plain text there).
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
from functionary.templates.v3_llama31 import EOM, EOT, GENERATION_PROMPT, IPYTHON, KNOWLEDGE, V3Llama31Template, header

REASONING = "Reasoning Mode: On\n\n"


class V3Llama31ReasoningTemplate(FunctionTagGrammar, PromptTemplate):
    version = "v3-llama3.1-reasoning"
    # the same Llama-3.1 tokenizer as v3-llama3.1
    stop_tokens = V3Llama31Template.stop_tokens
    eos_tokens = V3Llama31Template.eos_tokens
    special_tokens = V3Llama31Template.special_tokens

    def render(self, prepared: PreparedRequest) -> str:
        functions, code_interpreter = split_builtin_tools(prepared.tools)
        parts = [header("system"), REASONING, IPYTHON if code_interpreter else "\n", KNOWLEDGE]
        if functions:
            parts.append(tools_block(functions, escape=False))
        parts.append(EOT)
        for message in prepared.messages:
            role, content = message["role"], message["content"]
            if role in ("user", "system"):
                parts.append(f"{header(role)}{content or ''}{EOT}")
            elif role == "tool":
                parts.append(f"{header('ipython')}{content or ''}{EOT}")
            elif message["tool_calls"]:
                parts.append(f"{header(role)}{content or ''}{render_calls(message['tool_calls'])}{EOM}")
            elif content:
                parts.append(f"{header(role)}{content}{EOT}")
        parts.append(GENERATION_PROMPT)
        parts.append(choice_prefix(prepared))
        return "".join(parts)

    def make_parser(self, prepared: PreparedRequest) -> StreamParser:
        return FunctionTagParser(prepared)
