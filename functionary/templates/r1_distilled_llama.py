"""Prompt template ``r1_distilled_llama``: DeepSeek-R1-Distill-Llama headers with the llama-3.1
``<function=name>{json}</function>`` / ``<|python_tag|>`` calls.

From upstream HEAD (e240e8c). The system block (``<｜System｜>``) appears only when there are tools
or a code interpreter; tool results are ``ipython\\n\\n{content}`` glued to the previous turn; an
assistant turn ends with ``<|eom_id|>`` after calls, ``<｜end▁of▁sentence｜>`` after text only, and
nothing when it had neither. Output parsing is v3-llama3.1's (upstream inherits it; ``<think>`` is
plain text there).
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

SYSTEM = "<｜System｜>"
USER = "<｜User｜>"
ASSISTANT = "<｜Assistant｜>"
END_OF_SENTENCE = "<｜end▁of▁sentence｜>"
EOM = "<|eom_id|>"


class R1DistilledLlamaTemplate(FunctionTagGrammar, PromptTemplate):
    version = "r1_distilled_llama"
    stop_tokens = (END_OF_SENTENCE, EOM)
    eos_tokens = (END_OF_SENTENCE,)
    special_tokens = (
        "<｜begin▁of▁sentence｜>", END_OF_SENTENCE, USER, ASSISTANT, "<think>", "</think>", EOM, "<|python_tag|>",
    )

    def render(self, prepared: PreparedRequest) -> str:
        functions, code_interpreter = split_builtin_tools(prepared.tools)
        parts = []
        if functions or code_interpreter:
            parts.append(SYSTEM + "\n")
        if code_interpreter:
            parts.append("Environment: ipython\n\n")
        if functions:
            parts.append(tools_block(functions, escape=False))
        for message in prepared.messages:
            role, content = message["role"], message["content"] or ""
            if role == "user":
                parts.append(USER + content)
            elif role == "system":
                parts.append(f"{SYSTEM}{content}\n")
            elif role == "tool":
                parts.append("ipython\n\n" + content)
            else:
                parts.append(ASSISTANT + content)
                if message["tool_calls"]:
                    parts.append(render_calls(message["tool_calls"]) + EOM)
                elif content:
                    parts.append(END_OF_SENTENCE)
        parts.append(ASSISTANT)
        parts.append(choice_prefix(prepared))
        return "".join(parts)

    def make_parser(self, prepared: PreparedRequest) -> StreamParser:
        return FunctionTagParser(prepared)
