"""Prompt template ``v3.llama3``: the ``>>>recipient\\ncontent`` format.

Shipped by ``meetkai/functionary-small-v3.2`` / ``medium-v3.2`` (and medium-v3.0). The prompt is
the shipped chat template (MeetKai/functionary a8b0de1) written in Python: a system message with
the tools as a TypeScript namespace (:mod:`functionary.typescript`), an optional code-interpreter
system message, one llama-3 header per message, assistant turns as ``>>>all\\n<text>`` and
``>>>name\\n<arguments>``, and the generation prompt ending in ``>>>``.

Output: segments ``recipient\\nbody`` separated by ``>>>``; ``all`` is text, any other recipient
a call whose body is its arguments. See docs/parsing-decisions-llama3.md for the choices made
where upstream's two parsers disagree.
"""

from __future__ import annotations

from enum import Enum

from functionary.templates.base import (
    ArgumentsDelta, Event, PreparedRequest, PromptTemplate, StreamParser, StripSegment, TextDelta, ToolCallStart,
    announce_named_call,
)
from functionary.templates._tokens import EOT, LLAMA3_END, LLAMA3_SPECIAL, header
from functionary.turn_syntax import NAME, TurnSyntax
from functionary.typescript import tools_to_namespace

SYSTEM_HEADER = header("system")
SYSTEM_PROMPT = (
    SYSTEM_HEADER + "You are capable of executing available function(s) if required.\n"
    "Only execute function(s) when absolutely necessary.\n"
    "Ask for the required input to:recipient==all\n"
    "Use JSON for function arguments.\n"
    "Respond in this format:\n"
    ">>>${recipient}\n"
    "${content}\n"
    "Available functions:\n"
)
CODE_INTERPRETER_SYSTEM = (
    SYSTEM_HEADER + "When you send a message containing Python code to python, it will be executed in a "
    "stateful Jupyter notebook environment. python will respond with the output of the execution "
    "or time out after 60.0 seconds. The drive at '/mnt/data' can be used to save and persist user "
    "files." + EOT
)
SEPARATOR = ">>>"
GENERATION_PROMPT = header("assistant") + SEPARATOR


class V3Llama3Template(PromptTemplate):
    version = "v3.llama3"
    stop_tokens = LLAMA3_END
    eos_tokens = LLAMA3_END
    special_tokens = LLAMA3_SPECIAL

    def render(self, prepared: PreparedRequest) -> str:
        tools = prepared.tools
        parts = [SYSTEM_PROMPT, tools_to_namespace(tools), EOT]
        if any(t.get("type") == "code_interpreter" for t in tools):
            parts.append(CODE_INTERPRETER_SYSTEM)
        for message in prepared.messages:
            role = message["role"]
            if role in ("user", "system", "tool"):
                parts.append(f"{header(role)}{message['content'] or ''}{EOT}")
                continue
            # assistant, and anything else (a legacy ``function`` result renders like this too)
            parts.append(header(role))
            if message["content"]:
                parts.append(f">>>all\n{message['content']}")
            for call in message["tool_calls"] or ():
                parts.append(f">>>{call['function']['name']}\n{call['function']['arguments']}")
            parts.append(EOT)
        parts.append(GENERATION_PROMPT)
        parts.append(self.choice_prefix(prepared))
        return "".join(parts)

    @staticmethod
    def choice_prefix(prepared: PreparedRequest) -> str:
        choice = prepared.choice
        if choice.kind == "none":
            return "all\n"
        if choice.is_named:
            return f"{choice.name}\n"
        return ""

    def turn_syntax(self, prepared: PreparedRequest) -> TurnSyntax:
        # every segment opens with ">>>"; the generation prompt wrote the first one
        return TurnSyntax(
            tail=SEPARATOR + self.choice_prefix(prepared), text_open=f"{SEPARATOR}all\n", text_avoid=(SEPARATOR,),
            call_open=f"{SEPARATOR}{NAME}\n", code_open=f"{SEPARATOR}python\n", code_body=(SEPARATOR,),
            args_avoid=(SEPARATOR,), end=self.end_tokens(),
        )

    def make_parser(self, prepared: PreparedRequest) -> StreamParser:
        known = {"all", "python"}
        for tool in prepared.tools:
            fn = tool.get("function") or tool
            if fn.get("name"):
                known.add(fn["name"])
        parser = RecipientParser(prepared.choice.kind, frozenset(known))
        return announce_named_call(prepared.choice, parser)


# ---------------------------------------------------------------------------------------------
# Parser


class _Body(Enum):
    TEXT = "text"  # an ``all`` segment
    ARGS = "args"  # a call's arguments, before their first non-blank character
    JSON = "json"  # arguments that opened with ``{``: ends where the object closes
    RAW = "raw"  # other arguments (python code, invalid JSON): end at the next separator
    AFTER = "after"  # text after a closed JSON object (becomes content)


_MAX_RECIPIENT = 128


def _recipient_char(c: str) -> bool:
    return c.isalnum() or c in "_-."


class RecipientParser(StreamParser):
    """Splits ``name\\nbody>>>name\\nbody...`` (the first ``>>>`` is in the prompt).

    A separator is ``>>>`` + a recipient (letters, digits, ``_-.``) + a newline, so ``>>>`` in
    text or code ("type >>> print(1)") stays where it is. Each body is stripped, like upstream's
    per-segment ``strip()``. Arguments that open with ``{`` end where that JSON value closes;
    text the model writes after it (outside the format) becomes content instead of corrupting
    the arguments. ``python`` bodies are code and never JSON-tracked.
    """

    __slots__ = ("_known", "_pending", "_initial", "_body", "_segment",
                 "_depth", "_in_string", "_escape")

    def __init__(self, choice: str, known: frozenset[str]) -> None:
        self._known = known
        self._pending: str | None = None  # a possible separator: ">", ">>", ">>>name"
        self._initial = False  # the pending recipient was opened by the prompt, not the model
        self._segment = StripSegment()  # the current body, stripped at both ends
        self._depth = 0
        self._in_string = False
        self._escape = False
        self._body = _Body.TEXT
        if choice in ("auto", "required"):
            self._pending, self._initial = SEPARATOR, True
        elif choice == "named":
            self._body = _Body.ARGS  # the prompt opened the call (announce_named_call names it)

    # -- public --------------------------------------------------------------------------------

    def feed(self, text: str) -> list[Event]:
        out: list[Event] = []
        i, n = 0, len(text)
        while i < n:
            if self._pending is not None:
                i = self._extend_pending(text, i, out)
                continue
            j = text.find(">", i)
            stop = n if j < 0 else j
            if stop > i:
                self._body_text(text[i:stop], out)
            if j < 0:
                break
            self._pending = ">"
            i = j + 1
        return out

    def finish(self) -> list[Event]:
        out: list[Event] = []
        pending, self._pending = self._pending, None
        if pending is not None:
            recipient = pending[len(SEPARATOR):] if pending.startswith(SEPARATOR) else None
            if recipient and recipient in self._known:
                # cut right after a recipient: a call (or text) with an empty body
                self._start_segment(recipient, out)
            elif self._initial:
                self._body_text(pending[len(SEPARATOR):], out)
            else:
                self._body_text(pending, out)
        self._segment = StripSegment()
        return out

    # -- segments ------------------------------------------------------------------------------

    def _extend_pending(self, text: str, i: int, out: list[Event]) -> int:
        """Consume ``text[i]`` into the pending separator, or give the pending text back."""
        pending = self._pending
        c = text[i]
        if len(pending) < 3:
            if c == ">":
                self._pending = pending + c
                return i + 1
        elif c == "\n":
            if len(pending) > 3:
                self._pending = None
                self._initial = False
                self._start_segment(pending[3:], out)
                return i + 1
        elif _recipient_char(c):
            room = 3 + _MAX_RECIPIENT - len(pending)
            if room > 0:
                j = i + 1
                limit = min(len(text), i + room)
                while j < limit and _recipient_char(text[j]):
                    j += 1
                self._pending = pending + text[i:j]
                return j
        elif c == ">" and pending == SEPARATOR and not self._initial:
            # ">>>>": the first ">" is text, the last three may still open a segment
            self._body_text(">", out)
            return i + 1
        # not a separator: the held characters belong to the current body
        self._pending = None
        if self._initial:
            self._initial = False
            self._body_text(pending[3:], out)
        else:
            self._body_text(pending, out)
        return i

    def _start_segment(self, recipient: str, out: list[Event]) -> None:
        self._segment = StripSegment()
        self._depth, self._in_string, self._escape = 0, False, False
        if recipient == "all":
            self._body = _Body.TEXT
        else:
            out.append(ToolCallStart(recipient))
            # python bodies are code: never JSON-tracked
            self._body = _Body.RAW if recipient == "python" else _Body.ARGS

    # -- bodies --------------------------------------------------------------------------------

    def _body_text(self, text: str, out: list[Event]) -> None:
        if not text:
            return
        if self._body is _Body.ARGS:
            stripped = text.lstrip()
            if not stripped:
                return
            self._body = _Body.JSON if stripped[0] == "{" else _Body.RAW
            text = stripped
        if self._body is _Body.JSON:
            end = self._json_end(text)
            if end < 0:
                self._emit(text, out, call=True)
                return
            self._emit(text[:end], out, call=True)
            self._segment = StripSegment()
            self._body = _Body.AFTER
            text = text[end:]
            if not text:
                return
        self._emit(text, out, call=self._body is _Body.RAW)

    def _json_end(self, text: str) -> int:
        """Index just past the character that closes the top-level JSON value, or -1."""
        depth, in_string, escape = self._depth, self._in_string, self._escape
        for k, c in enumerate(text):
            if in_string:
                if escape:
                    escape = False
                elif c == "\\":
                    escape = True
                elif c == '"':
                    in_string = False
            elif c == '"':
                in_string = True
            elif c in "{[":
                depth += 1
            elif c in "}]":
                depth -= 1
                if depth <= 0:
                    self._depth, self._in_string, self._escape = 0, False, False
                    return k + 1
        self._depth, self._in_string, self._escape = depth, in_string, escape
        return -1

    def _emit(self, text: str, out: list[Event], *, call: bool) -> None:
        """Emit body text with the body stripped at both ends, under any chunking."""
        piece = self._segment.push(text)
        if piece:
            out.append(ArgumentsDelta(piece) if call else TextDelta(piece))
