"""Prompt template ``v3-llama3.1-reasoning``: the llama-3.1 format with ``Reasoning Mode: On``.

From upstream HEAD (e240e8c): the v3-llama3.1 prompt with a built-in ``reasoning`` tool always
added, which turns on the ``Reasoning Mode: On`` line. Unlike the shipped v3.1 template, the tool
lines are not HTML-escaped, and an assistant turn with neither text nor calls renders nothing.
Output parsing is v3-llama3.1's (upstream inherits it unchanged; ``<think>`` is plain text there).
"""

from __future__ import annotations

from functionary.templates.v3_llama31 import V3Llama31Template


class V3Llama31ReasoningTemplate(V3Llama31Template):
    # the same Llama-3.1 tokenizer, calls and parser as v3-llama3.1
    version = "v3-llama3.1-reasoning"
    mode_line = "Reasoning Mode: On\n\n"
    escape_tools = False
    empty_turns = False
