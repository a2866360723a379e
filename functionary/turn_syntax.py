"""How a template's assistant turn is spelled, as data for :mod:`functionary.turn_grammar`.

A template that can be grammar-constrained returns a :class:`TurnSyntax` from
``PromptTemplate.turn_syntax(prepared)``: the literal texts around text, calls and code, and the
tail of its prompt that already belongs to the turn (the generation prompt's ``>>>`` for
v3.llama3, the tool-choice prefix). The regex itself is built in one place
(:func:`functionary.turn_grammar.turn_regex`), so every family follows the same rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["NAME", "TurnSyntax"]

NAME = "{name}"  # placeholder for the tool's name in ``call_open``


@dataclass(frozen=True, slots=True)
class TurnSyntax:
    """The spelling of one assistant turn, from the end of the prompt to the end token.

    ``tail``: what the rendered prompt already ends with of the turn (the regex starts after it);
    ``turn_open``: text every answer starts with (v1's newline); ``text_open``: before plain text
    (``>>>all\\n``); ``text_avoid``: openers free text must not contain (else an unconstrained call
    could hide in it); ``text_sep``: between text and the first call; ``calls_open`` /
    ``calls_close``: around the calls (r1); ``call_open`` (with :data:`NAME`) / ``call_close``:
    around one call's JSON arguments; ``call_sep``: a regex between calls; ``code_open`` /
    ``code_close``: the code interpreter's call (``None``: python is an ordinary JSON call, the
    Qwen family); ``code_body``: ``"rest"`` (the code runs to the end of the answer, so it is the
    last call) or a tuple of words the code must not contain; ``args_avoid``: what free arguments (a tool
    nothing was asked of) must not contain, the text that ends a call (``()``: they run to the end); ``end``:
    the end tokens the model writes (optional in the regex: TGI's EOS ends a grammar's final state too);
    ``text_end`` / ``calls_end``: end tokens REQUIRED after a text answer / after calls, for families whose turn
    ends with a token that is never the tokenizer's EOS (v2's ``<|stop|>``, llama-3.1's ``<|eom_id|>`` after
    calls), so that no earlier point of the answer counts as complete; ``max_calls``: 1 where the format has one
    call per turn (v1)."""

    tail: str
    text_avoid: tuple[str, ...]
    call_open: str
    end: tuple[str, ...]
    turn_open: str = ""
    text_open: str = ""
    text_sep: str = ""
    calls_open: str = ""
    calls_close: str = ""
    call_close: str = ""
    call_sep: str = ""
    code_open: str | None = None
    code_close: str = ""
    code_body: Literal["rest"] | tuple[str, ...] = "rest"
    args_avoid: tuple[str, ...] = ()
    text_end: tuple[str, ...] = ()
    calls_end: tuple[str, ...] = ()
    max_calls: int | None = None
