"""Prompt template r1: DeepSeek-R1's own tool-call tokens.

A call is written as::

    <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME
    ```json
    {"city": "Lima"}
    ```<｜tool▁call▁end｜><｜tool▁calls▁end｜>

(```` ```python ```` with the plain code for the code interpreter). Upstream had no streaming
parser and refused a named tool choice; here the parser streams, and a named choice is enforced
by the prefix of exactly that format (docs/parsing-decisions-qwen.md).
"""

from __future__ import annotations

import json
import re
from enum import Enum, auto

from functionary.templates._call_stream import EventList, partial_marker_start
from functionary.templates._qwen_prompt import code_names
from functionary.templates._tokens import R1_ASSISTANT, R1_EOS, R1_SPECIAL, R1_SYSTEM, R1_USER
from functionary.templates.base import Event, PreparedRequest, PromptTemplate, StreamParser
from functionary.turn_syntax import NAME, TurnSyntax

CALLS_BEGIN = "<｜tool▁calls▁begin｜>"
CALLS_END = "<｜tool▁calls▁end｜>"
CALL_BEGIN = "<｜tool▁call▁begin｜>"
CALL_END = "<｜tool▁call▁end｜>"
SEP = "<｜tool▁sep｜>"
OUTPUTS_BEGIN = "<｜tool▁outputs▁begin｜>"
OUTPUTS_END = "<｜tool▁outputs▁end｜>"
OUTPUT_BEGIN = "<｜tool▁output▁begin｜>"
OUTPUT_END = "<｜tool▁output▁end｜>"

_MARKERS = (CALLS_BEGIN, CALLS_END, CALL_BEGIN, CALL_END, SEP)
_MARKER_RE = re.compile("|".join(re.escape(m) for m in _MARKERS))


class R1Template(PromptTemplate):
    version = "r1"
    stop_tokens = (R1_EOS,)
    eos_tokens = (R1_EOS,)
    special_tokens = (
        *R1_SPECIAL,
        CALLS_BEGIN, CALLS_END, CALL_BEGIN, CALL_END, SEP,
        OUTPUTS_BEGIN, OUTPUTS_END, OUTPUT_BEGIN, OUTPUT_END,
    )

    def render(self, prepared: PreparedRequest) -> str:
        parts = [self._system(prepared)]
        is_tool = False  # the last assistant turn called tools: its outputs are still open
        output_first = True
        last_is_tool = False
        for message in prepared.messages:
            role, text = message["role"], message["content"] or ""
            if role == "user":
                is_tool = last_is_tool = False
                parts.append(R1_USER + text)
            elif role == "system":
                last_is_tool = False
                parts.append(R1_SYSTEM + text + "\n")
            elif role == "assistant":
                last_is_tool = False
                if is_tool:
                    parts.append(OUTPUTS_END)
                    is_tool = False
                parts.append(R1_ASSISTANT + text)
                if message["tool_calls"]:
                    is_tool, output_first = True, True
                    parts.append(CALLS_BEGIN)
                    parts.extend(_call_text(c["function"]) for c in message["tool_calls"])
                    parts.append(CALLS_END + R1_EOS)
                elif text:
                    parts.append(R1_EOS)
            elif role == "tool":
                last_is_tool = True
                if output_first:
                    parts.append(OUTPUTS_BEGIN)
                    output_first = False
                parts.append(OUTPUT_BEGIN + text + OUTPUT_END)
            # A legacy function_call / "function" result renders as nothing, as the trained template does.
        if last_is_tool:
            parts.append(OUTPUTS_END)
        if not is_tool:  # after tool outputs the model continues without a new assistant header
            parts.append(R1_ASSISTANT + "\n")
        parts.append(self.choice_prefix(prepared))
        return "".join(parts)

    @staticmethod
    def _system(prepared: PreparedRequest) -> str:
        if prepared.legacy_functions:
            functions, has_code = list(prepared.tools), False
        else:
            functions = [t["function"] for t in prepared.tools if t.get("type") == "function"]
            has_code = any(t.get("type") == "code_interpreter" for t in prepared.tools)
        if not functions and not has_code:
            return ""
        out = [R1_SYSTEM + "\n"]
        if has_code:
            out.append("Environment: ipython\n\n")
        if functions:
            out.append("\nYou have access to the following functions:\n\n")
            for fn in functions:
                out.append(f"Use the function '{fn['name']}' to '{fn.get('description') or ''}'\n")
                out.append(json.dumps(fn, ensure_ascii=False) + "\n\n")
            out.append("\nThink very carefully before calling functions.\n\n")
        return "".join(out)

    @staticmethod
    def choice_prefix(prepared: PreparedRequest) -> str:
        # Upstream raised NotImplementedError for a named choice; the call's own opening, up to
        # its arguments, enforces it in this format just as well. "required" keeps upstream's
        # empty prefix (the prompt fixtures pin it).
        if prepared.choice.kind != "named":
            return ""
        name = prepared.choice.name
        fence = "python" if name in code_names(prepared) else "json"
        return f"{CALLS_BEGIN}{CALL_BEGIN}function{SEP}{name}\n```{fence}\n"

    def turn_syntax(self, prepared: PreparedRequest) -> TurnSyntax:
        head = f"{CALL_BEGIN}function{SEP}"
        return TurnSyntax(
            tail=self.choice_prefix(prepared), text_avoid=(CALLS_BEGIN, CALL_BEGIN), calls_open=CALLS_BEGIN,
            calls_close=CALLS_END, call_open=f"{head}{NAME}\n```json\n", call_close=f"\n```{CALL_END}",
            code_open=f"{head}python\n```python\n", code_close=f"\n```{CALL_END}", code_body=("```",),
            args_avoid=("```",), end=self.end_tokens(),
        )

    def make_parser(self, prepared: PreparedRequest) -> StreamParser:
        parser = R1Parser(code_names=code_names(prepared))
        prefix = self.choice_prefix(prepared)
        if prefix:
            parser.feed(prefix)  # no events: a call is announced with its first argument text
        return parser


def _call_text(function: dict) -> str:
    name = function["name"]
    fence = "python" if name == "python" else "json"
    return f"{CALL_BEGIN}function{SEP}{name}\n```{fence}\n{function['arguments'] or ''}\n```{CALL_END}"


# ---------------------------------------------------------------------------------------------
# Parser


class _Stage(Enum):
    TEXT = auto()  # content, before the calls
    CALLS = auto()  # between calls
    HEAD = auto()  # after <｜tool▁call▁begin｜>: the call type, up to <｜tool▁sep｜>
    NAME = auto()  # the name, up to the end of its line
    FENCE = auto()  # the opening ```json line (optional)
    BODY = auto()  # the arguments, streamed
    AFTER = auto()  # after <｜tool▁calls▁end｜>: dropped


class R1Parser(StreamParser):
    """Streaming parser for DeepSeek-R1 tool calls (fed text already stripped at both ends).

    Content is the text before the calls, kept as written (as upstream); text after the calls
    is dropped (as upstream). Arguments are the text between the fence lines, without the
    surrounding whitespace; a call is announced with its first argument character, or when it
    closes empty (``{}``, or ``""`` for code)."""

    __slots__ = ("_stage", "_held", "_acc", "_name", "_started", "_code_names")

    def __init__(self, *, code_names: frozenset[str]) -> None:
        self._code_names = code_names
        self._stage = _Stage.TEXT
        self._held = ""  # a marker that may still be arriving
        self._acc = ""  # name / fence text so far, or the body's held tail
        self._name: str | None = None
        self._started = False

    def feed(self, text: str) -> list[Event]:
        events = EventList()
        buf = self._held + text if self._held else text
        self._held = ""
        pos = 0
        while pos < len(buf):
            m = _MARKER_RE.search(buf, pos)
            if m is None:
                cut = partial_marker_start(buf, pos, _MARKERS)
                self._consume(buf[pos:cut], events)
                self._held = buf[cut:]
                break
            self._consume(buf[pos : m.start()], events)
            self._marker(m.group(), events)
            pos = m.end()
        return events

    def _marker(self, marker: str, events: EventList) -> None:
        stage = self._stage
        if stage is _Stage.AFTER:
            return
        if stage is _Stage.TEXT:
            if marker == CALLS_BEGIN:
                self._stage = _Stage.CALLS
            elif marker == CALL_BEGIN:
                self._begin_call()
            else:
                events.text(marker)
            return
        if stage is _Stage.HEAD and marker == SEP:
            self._stage, self._acc = _Stage.NAME, ""
            return
        if stage is not _Stage.CALLS and marker in (CALL_END, CALL_BEGIN, CALLS_END):
            self._end_call(events)
        if marker == CALL_BEGIN:
            self._begin_call()
        elif marker == CALLS_END:
            self._stage = _Stage.AFTER

    def _begin_call(self) -> None:
        self._stage, self._acc, self._name, self._started = _Stage.HEAD, "", None, False

    def _end_call(self, events: EventList) -> None:
        stage, self._stage = self._stage, _Stage.CALLS
        if stage is _Stage.NAME:
            self._name = self._acc.strip() or None
        if self._name is None:
            return
        if stage is _Stage.BODY:
            tail = self._acc.rstrip()
            if tail.endswith("```"):
                tail = tail[:-3].rstrip()
            self._args(tail, events)
        if not self._started:
            events.start(self._name)
            events.args("" if self._name in self._code_names else "{}")
        self._acc = ""

    def _args(self, text: str, events: EventList) -> None:
        if not self._started:
            text = text.lstrip()
            if not text:
                return
            self._started = True
            events.start(self._name)
        events.args(text)

    def _consume(self, segment: str, events: EventList) -> None:
        if not segment:
            return
        stage = self._stage
        if stage is _Stage.TEXT:
            events.text(segment)
        elif stage is _Stage.NAME:
            line_end = segment.find("\n")
            if line_end < 0:
                self._acc += segment
                return
            self._name = (self._acc + segment[:line_end]).strip() or None
            self._stage, self._acc = _Stage.FENCE, ""
            self._consume(segment[line_end + 1 :], events)
        elif stage is _Stage.FENCE:
            acc = (self._acc + segment).lstrip()
            if acc.startswith("```"):
                line_end = acc.find("\n")
                if line_end < 0:
                    self._acc = acc
                    return
                rest = acc[line_end + 1 :]
            elif "```".startswith(acc):  # empty, "`" or "``": wait
                self._acc = acc
                return
            else:
                rest = acc
            self._stage, self._acc = _Stage.BODY, ""
            self._consume(rest, events)
        elif stage is _Stage.BODY:
            if self._name is None:
                return
            # A trailing run of whitespace and backticks may be the closing "\n```": held until
            # more text follows or the call ends.
            cut = len(segment)
            while cut and (segment[cut - 1] == "`" or segment[cut - 1].isspace()):
                cut -= 1
            if cut == 0:
                self._acc += segment
                return
            self._args(self._acc + segment[:cut], events)
            self._acc = segment[cut:]

    def finish(self) -> list[Event]:
        events = EventList()
        held, self._held = self._held, ""
        if self._stage is _Stage.TEXT:
            events.text(held)
        elif self._stage is _Stage.BODY and self._started:
            # Cut on length inside the arguments: stream what is there, the held tail included.
            self._consume(held, events)
            self._args(self._acc, events)
            self._acc = ""
        return events
