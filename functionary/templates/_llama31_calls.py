"""What the llama-3.1-style versions share: ``<function=name>{json}</function>`` calls and
``<|python_tag|>code``, rendered in prompts and parsed from outputs, and the template base class
(:class:`FunctionTagTemplate`) whose render pipeline they fill in.

Used by ``v3-llama3.1`` (meetkai/functionary-{small,medium}-v3.1), ``v3-llama3.1-reasoning`` and
``r1_distilled_llama``. Parsing decisions are in docs/parsing-decisions-llama3.md.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from enum import Enum
from typing import Any, ClassVar

from functionary.templates.base import (
    ArgumentsDelta, Event, PreparedRequest, PromptTemplate, StreamParser, StripSegment, TextDelta, ToolCallStart,
    announce_named_call,
)
from functionary.templates._tokens import EOM
from functionary.turn_syntax import NAME, TurnSyntax

FUNCTION_OPEN = "<function="
FUNCTION_CLOSE = "</function>"
PYTHON_TAG = "<|python_tag|>"

TOOLS_INTRO = "\nYou have access to the following functions:\n\n"
TOOLS_INSTRUCTIONS = (
    "\nThink very carefully before calling functions.\n"
    "If a you choose to call a function ONLY reply in the following format:\n"
    "<{start_tag}={function_name}>{parameters}{end_tag}\n"
    "where\n\n"
    "start_tag => `<function`\n"
    "parameters => a JSON dict with the function argument name as key and function argument value as value.\n"
    "end_tag => `</function>`\n\n"
    "Here is an example,\n"
    '<function=example_function_name>{"example_name": "example_value"}</function>\n\n'
    "Reminder:\n"
    "- If looking for real time information use relevant functions before falling back to brave_search\n"
    "- Function calls MUST follow the specified format, start with <function= and end with </function>\n"
    "- Required parameters MUST be specified\n"
    "- Only call one function at a time\n"
    "- Put the entire function call reply on one line\n\n"
)


# ---------------------------------------------------------------------------------------------
# Rendering


def html_escape(text: str) -> str:
    """markupsafe's escape, which the shipped v3.1 template applies by accident (``"..."|safe +
    value`` makes a Markup string, and Markup escapes what is added to it)."""
    return (
        text.replace("&", "&amp;")
        .replace(">", "&gt;")
        .replace("<", "&lt;")
        .replace("'", "&#39;")
        .replace('"', "&#34;")
    )


def split_builtin_tools(tools: Iterable[Mapping[str, Any]]) -> tuple[list[Mapping[str, Any]], bool]:
    """The function tools, and whether a code interpreter was among them."""
    functions: list[Mapping[str, Any]] = []
    code_interpreter = False
    for tool in tools:
        if tool.get("type") == "code_interpreter":
            code_interpreter = True
        else:
            functions.append(tool)
    return functions, code_interpreter


def tools_block(functions: Iterable[Mapping[str, Any]], *, escape: bool) -> str:
    """``You have access to the following functions:`` + one ``Use the function ...`` entry with
    the function's JSON per tool + the call-format instructions."""
    esc = html_escape if escape else _same
    parts = [TOOLS_INTRO]
    for tool in functions:
        fn = tool["function"] if "type" in tool else tool
        name, description = fn.get("name"), fn.get("description")
        parts.append(
            f"Use the function '{esc(_text(name))}' to '{esc(_text(description))}'\n"
            f"{esc(json.dumps(fn, ensure_ascii=False))}\n\n"
        )
    parts.append(TOOLS_INSTRUCTIONS)
    return "".join(parts)


def render_calls(calls: Iterable[Mapping[str, Any]]) -> str:
    parts = []
    for call in calls:
        fn = call["function"]
        if fn["name"] == "python":
            parts.append(f"{PYTHON_TAG}{fn['arguments']}")
        else:
            parts.append(f"{FUNCTION_OPEN}{fn['name']}>{fn['arguments']}{FUNCTION_CLOSE}")
    return "".join(parts)


class FunctionTagTemplate(PromptTemplate):
    """A version whose calls are ``<function=name>{json}</function>`` and ``<|python_tag|>code``.

    ``render`` is the system block, one piece per message, the generation prompt and the prefix
    that enforces the tool choice; a version spells the first two (:meth:`system_block`,
    :meth:`render_message`) and names its ``generation_prompt``. Parsing and the grammar are shared.
    """

    generation_prompt: ClassVar[str]

    def render(self, prepared: PreparedRequest) -> str:
        functions, code_interpreter = split_builtin_tools(prepared.tools)
        parts = [self.system_block(functions, code_interpreter=code_interpreter)]
        parts.extend(self.render_message(m) for m in prepared.messages)
        parts.append(self.generation_prompt)
        parts.append(choice_prefix(prepared))
        return "".join(parts)

    def system_block(self, functions: list[Mapping[str, Any]], *, code_interpreter: bool) -> str:
        raise NotImplementedError

    def render_message(self, message: dict) -> str:
        raise NotImplementedError

    def make_parser(self, prepared: PreparedRequest) -> StreamParser:
        return announce_named_call(prepared.choice, FunctionTagParser(prepared))

    def turn_syntax(self, prepared: PreparedRequest) -> TurnSyntax:
        # text, then <function=name>{json}</function> calls, then at most one <|python_tag|> call
        # whose code runs to the end
        return TurnSyntax(
            tail=choice_prefix(prepared), text_avoid=(FUNCTION_OPEN, PYTHON_TAG),
            call_open=f"{FUNCTION_OPEN}{NAME}>", call_close=FUNCTION_CLOSE, code_open=PYTHON_TAG, code_body="rest",
            args_avoid=(FUNCTION_CLOSE,), calls_end=(EOM,), end=self.end_tokens(),
        )


def choice_prefix(prepared: PreparedRequest) -> str:
    """What the prompt ends with to enforce the tool choice (the parser starts after it)."""
    choice = prepared.choice
    if choice.kind == "required":
        return FUNCTION_OPEN
    if choice.is_named:
        return f"{FUNCTION_OPEN}{choice.name}>"
    return ""


def _same(text: str) -> str:
    return text


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


# ---------------------------------------------------------------------------------------------
# Parsing


class _State(Enum):
    TEXT = "text"
    NAME = "name"  # after "<function=", before ">"
    ARGS = "args"  # after "<function=name>", before "</function>"
    CODE = "code"  # after "<|python_tag|>": the rest of the output is code


_MAX_NAME = 256
_TEXT_MARKERS = (FUNCTION_OPEN, PYTHON_TAG)


class FunctionTagParser(StreamParser):
    """Text, ``<function=name>args</function>`` calls (any number, text in between) and a final
    ``<|python_tag|>code`` call named ``python``.

    * Content is all text outside calls, or none if that is only whitespace (upstream's rule).
    * A name is stripped; one that is empty, holds whitespace or a ``<``, or runs past 256
      characters means the ``<function=`` was text after all.
    * Arguments are stripped and end at the first ``</function>``; an unclosed call at the end of
      the output (cut by the length limit) keeps the arguments it has (as upstream streams it).
    * ``<|python_tag|>`` (outside a call) makes everything after it the code of a ``python`` call.
    """

    __slots__ = ("_state", "_marker_in_prompt", "_hold", "_name", "_args",
                 "_text_started", "_text_blank")

    def __init__(self, prepared: PreparedRequest) -> None:
        self._state = _State.TEXT
        self._marker_in_prompt = False  # the current "<function=" came from the prompt
        self._hold = ""  # a possible marker prefix at the end of what was fed
        self._name = ""
        self._args = StripSegment()  # the current call's arguments, stripped at both ends
        self._text_started = False
        self._text_blank = ""  # leading whitespace-only text, emitted once real text follows
        choice = prepared.choice
        if choice.kind == "required":
            self._state, self._marker_in_prompt = _State.NAME, True
        elif choice.is_named:
            self._state = _State.ARGS  # the prompt opened the call (announce_named_call names it)

    def feed(self, text: str) -> list[Event]:
        out: list[Event] = []
        rest = self._hold + text if self._hold else text
        self._hold = ""
        while rest:
            state = self._state
            if state is _State.TEXT:
                rest = self._feed_text(rest, out)
            elif state is _State.NAME:
                rest = self._feed_name(rest, out)
            elif state is _State.ARGS:
                rest = self._feed_args(rest, out)
            else:
                out.append(ArgumentsDelta(rest))
                rest = ""
        return out

    def finish(self) -> list[Event]:
        out: list[Event] = []
        hold, self._hold = self._hold, ""
        if self._state is _State.TEXT:
            self._emit_text(hold, out)
        elif self._state is _State.NAME:
            self._emit_text(("" if self._marker_in_prompt else FUNCTION_OPEN) + self._name + hold, out)
        # ARGS: a held "</functi" prefix and trailing blanks are dropped (the arguments are stripped)
        self._name = ""
        self._args = StripSegment()
        return out

    # -- states --------------------------------------------------------------------------------

    def _feed_text(self, s: str, out: list[Event]) -> str:
        i = s.find("<")
        while i >= 0:
            if s.startswith(FUNCTION_OPEN, i):
                self._emit_text(s[:i], out)
                self._state, self._marker_in_prompt, self._name = _State.NAME, False, ""
                return s[i + len(FUNCTION_OPEN):]
            if s.startswith(PYTHON_TAG, i):
                self._emit_text(s[:i], out)
                out.append(ToolCallStart("python"))
                self._state = _State.CODE
                return s[i + len(PYTHON_TAG):]
            if len(s) - i < len(PYTHON_TAG) and any(m.startswith(s[i:]) for m in _TEXT_MARKERS):
                self._emit_text(s[:i], out)
                self._hold = s[i:]
                return ""
            i = s.find("<", i + 1)
        self._emit_text(s, out)
        return ""

    def _feed_name(self, s: str, out: list[Event]) -> str:
        end = s.find(">")
        chunk = s if end < 0 else s[:end]
        for k, c in enumerate(chunk):
            if c == "<" or c == "\n":
                return self._not_a_call(chunk[:k], s[k:], out)
        self._name += chunk
        if len(self._name) > _MAX_NAME:
            return self._not_a_call("", s[len(chunk):], out)
        if end < 0:
            return ""
        name = self._name.strip()
        if not name or any(c.isspace() for c in name):
            return self._not_a_call(">", s[end + 1:], out)
        out.append(ToolCallStart(name))
        self._state, self._name, self._args = _State.ARGS, "", StripSegment()
        return s[end + 1:]

    def _not_a_call(self, more: str, rest: str, out: list[Event]) -> str:
        prefix = "" if self._marker_in_prompt else FUNCTION_OPEN
        self._emit_text(prefix + self._name + more, out)
        self._state, self._name, self._marker_in_prompt = _State.TEXT, "", False
        return rest

    def _feed_args(self, s: str, out: list[Event]) -> str:
        i = s.find(FUNCTION_CLOSE)
        if i >= 0:
            self._emit_args(s[:i], out)
            self._state, self._args = _State.TEXT, StripSegment()
            return s[i + len(FUNCTION_CLOSE):]
        keep = _marker_prefix_len(s, FUNCTION_CLOSE)
        self._emit_args(s[: len(s) - keep], out)
        self._hold = s[len(s) - keep:]
        return ""

    # -- output --------------------------------------------------------------------------------

    def _emit_text(self, text: str, out: list[Event]) -> None:
        if not text:
            return
        if not self._text_started:
            if text.isspace():
                self._text_blank += text
                return
            self._text_started = True
            text, self._text_blank = self._text_blank + text, ""
        out.append(TextDelta(text))

    def _emit_args(self, text: str, out: list[Event]) -> None:
        piece = self._args.push(text)
        if piece:
            out.append(ArgumentsDelta(piece))


def _marker_prefix_len(s: str, marker: str) -> int:
    """Length of the longest suffix of ``s`` that is a proper prefix of ``marker``."""
    start = max(0, len(s) - len(marker) + 1)
    i = s.find(marker[0], start)
    while i >= 0:
        if marker.startswith(s[i:]):
            return len(s) - i
        i = s.find(marker[0], i + 1)
    return 0
