"""The Qwen-style call format and its streaming parser.

qwen2.5-text-only, cogito, gemma3 and r1_distilled_qwen models write a call as a JSON object
between two special tokens::

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Lima"}}
    </tool_call>

The parser streams the ``arguments`` value as the model writes it (never re-serialised): a small
incremental scanner walks the outer object (keys, strings with escapes, nesting depth) and knows
where the arguments value starts and where it ends, without rescanning. A ``python`` call of the
code interpreter is streamed as the decoded ``code`` string, which is what OpenAI clients of
functionary expect in ``arguments``.

Rules (see docs/parsing-decisions-qwen.md for why):
  * text before the first call is the content (trailing whitespace dropped); text after a call
    is dropped, as upstream's non-streaming parser does;
  * ``</tool_call>`` always ends a call, ``<tool_call>`` inside a call starts the next one;
  * a call is announced once its name is known and its arguments value has begun, so an output
    cut right after ``"arguments":`` yields no call; a closed call with no arguments gets ``{}``;
  * malformed JSON is passed through as far as it goes, never raised.
"""

from __future__ import annotations

import json
import re
from enum import Enum, auto

from functionary.templates._call_stream import (
    STR_STOP,
    CodeDecoder,
    EventList,
    decode_json_string,
    partial_marker_start,
)
from functionary.templates.base import Event, StreamParser, ToolChoice

CALL_OPEN = "<tool_call>"
CALL_CLOSE = "</tool_call>"

_OPEN_RE = re.compile(re.escape(CALL_OPEN))
_ANY_RE = re.compile("</?tool_call>")
_SCALAR_END = frozenset(',}] \t\r\n')


# ---------------------------------------------------------------------------------------------
# One call: the JSON object between <tool_call> and </tool_call>


class _Obj(Enum):
    OPEN = auto()  # before the object's "{" (anything else, e.g. a code fence, is skipped)
    KEY_OR_END = auto()  # expecting a key, "," or "}"
    KEY = auto()  # inside a key string
    COLON = auto()
    VALUE = auto()  # before a value
    NAME = auto()  # inside the "name" string
    ARGS = auto()  # inside the "arguments" value: streamed
    SKIP = auto()  # inside any other value: ignored
    AFTER_VALUE = auto()
    DONE = auto()  # object closed, or broken beyond repair: ignore the rest


class _CallBody:
    __slots__ = (
        "_state", "_sbuf", "_sesc", "_key", "_name", "_started", "_args_seen", "_pending",
        "_decoder", "_depth", "_in_str", "_esc", "_scalar", "_closed", "_code_names",
    )

    def __init__(self, code_names: frozenset[str]) -> None:
        self._code_names = code_names
        self._state = _Obj.OPEN
        self._sbuf: list[str] = []  # raw body of the key / name string being read
        self._sesc = False
        self._key = ""
        self._name: str | None = None
        self._started = False
        self._args_seen = False
        self._pending: list[str] = []  # arguments written before the name
        self._decoder: CodeDecoder | None = None
        self._depth = 0
        self._in_str = False
        self._esc = False
        self._scalar = False
        self._closed = False

    def feed(self, s: str, events: EventList) -> None:
        i, n = 0, len(s)
        while i < n:
            state = self._state
            if state is _Obj.ARGS or state is _Obj.SKIP:
                j, done = self._scan_value(s, i)
                if state is _Obj.ARGS and j > i:
                    self._args_out(s[i:j], events)
                i = j
                if done:
                    self._state = _Obj.AFTER_VALUE
                continue
            if state is _Obj.DONE:
                return
            if state is _Obj.KEY or state is _Obj.NAME:
                i = self._read_string(s, i, events)
                continue
            ch = s[i]
            if ch in " \t\r\n":
                i += 1
                continue
            if state is _Obj.VALUE:
                if ch in ",}":
                    self._state = _Obj.AFTER_VALUE
                    continue
                if self._key == "name" and ch == '"':
                    self._state = _Obj.NAME
                    self._sbuf = []
                    i += 1
                    continue
                self._depth, self._in_str, self._esc, self._scalar = 0, False, False, False
                self._state = _Obj.ARGS if self._key == "arguments" and not self._args_seen else _Obj.SKIP
                if self._state is _Obj.ARGS:
                    self._args_seen = True
                continue
            i += 1
            if state is _Obj.OPEN:
                if ch == "{":
                    self._state = _Obj.KEY_OR_END
            elif state is _Obj.KEY_OR_END:
                if ch == '"':
                    self._state = _Obj.KEY
                    self._sbuf = []
                elif ch == "}":
                    self._close_object()
                elif ch != ",":
                    self._state = _Obj.DONE
            elif state is _Obj.COLON:
                self._state = _Obj.VALUE if ch == ":" else _Obj.DONE
            elif state is _Obj.AFTER_VALUE:
                if ch == ",":
                    self._state = _Obj.KEY_OR_END
                elif ch == "}":
                    self._close_object()
                else:
                    self._state = _Obj.DONE

    def _close_object(self) -> None:
        self._state = _Obj.DONE
        self._closed = True

    def _read_string(self, s: str, i: int, events: EventList) -> int:
        n = len(s)
        buf = self._sbuf
        while i < n:
            if self._sesc:
                buf.append(s[i])
                self._sesc = False
                i += 1
                continue
            m = STR_STOP.search(s, i)
            j = m.start() if m else n
            if j > i:
                buf.append(s[i:j])
            i = j
            if i == n:
                break
            i += 1
            if s[j] == "\\":
                buf.append("\\")
                self._sesc = True
                continue
            value = decode_json_string("".join(buf))
            if self._state is _Obj.KEY:
                self._key = value
                self._state = _Obj.COLON
            else:
                self._set_name(value, events)
                self._state = _Obj.AFTER_VALUE
            break
        return i

    def _scan_value(self, s: str, i: int) -> tuple[int, bool]:
        """Consume the value from ``s[i:]``; return where it stopped and whether the value ended
        (a scalar ends before its delimiter, which is left for the caller)."""
        n = len(s)
        depth, in_str, esc, scalar = self._depth, self._in_str, self._esc, self._scalar
        done = False
        while i < n:
            if in_str:
                if esc:
                    esc = False
                    i += 1
                    continue
                m = STR_STOP.search(s, i)
                if m is None:
                    i = n
                    break
                i = m.start() + 1
                if s[i - 1] == "\\":
                    esc = True
                    continue
                in_str = False
                if depth == 0:
                    done = True
                    break
                continue
            ch = s[i]
            if scalar:
                if ch in _SCALAR_END:
                    done = True
                    break
                i += 1
                continue
            i += 1
            if ch == '"':
                in_str = True
            elif ch == "{" or ch == "[":
                depth += 1
            elif ch == "}" or ch == "]":
                depth -= 1
                if depth <= 0:
                    done = True
                    break
            elif depth == 0 and ch not in " \t\r\n":
                scalar = True
        self._depth, self._in_str, self._esc, self._scalar = depth, in_str, esc, scalar
        return i, done

    def _set_name(self, name: str, events: EventList) -> None:
        if self._name is not None:
            return
        self._name = name
        if name in self._code_names:
            self._decoder = CodeDecoder()
        if self._pending:
            pending, self._pending = "".join(self._pending), []
            self._args_out(pending, events)

    def _args_out(self, raw: str, events: EventList) -> None:
        if self._name is None:
            self._pending.append(raw)
            return
        if not self._started:
            self._started = True
            events.start(self._name)
        events.args(self._decoder.feed(raw) if self._decoder is not None else raw)

    def close(self, events: EventList) -> None:
        """``</tool_call>`` arrived: a call with a name is complete, whatever its JSON looked like."""
        if self._started:
            if self._decoder is not None:
                events.args(self._decoder.finish())
        elif self._name is not None:
            events.start(self._name)
            events.args("" if self._decoder is not None else "{}")

    def finish(self, events: EventList) -> None:
        """The output ended inside the call (cut on length): keep what was streamed."""
        if self._started or self._closed:
            self.close(events)


# ---------------------------------------------------------------------------------------------
# The whole output


class _Stage(Enum):
    TEXT = auto()  # before the first call: content
    CALL = auto()  # inside <tool_call> ... </tool_call>
    AFTER = auto()  # after a call: text is dropped until the next <tool_call>


class QwenCallParser(StreamParser):
    """Streaming parser for the Qwen-style output (fed text already stripped at both ends)."""

    __slots__ = ("_stage", "_held", "_ws", "_call", "_code_names")

    def __init__(self, *, choice: ToolChoice, code_names: frozenset[str]) -> None:
        self._code_names = code_names
        self._stage = _Stage.TEXT
        self._held = ""  # a marker that may still be arriving
        self._ws = ""  # trailing whitespace of the content, dropped if a call follows
        self._call: _CallBody | None = None
        if choice.kind == "required":  # the prompt ends with "<tool_call>\n"
            self._open_call()
        elif choice.kind == "named":  # ... and the start of the object up to "arguments"
            self._open_call()
            primer = '{"name": ' + json.dumps(choice.name, ensure_ascii=False) + ', "arguments'
            self._call.feed(primer, EventList())

    def _open_call(self) -> None:
        self._stage = _Stage.CALL
        self._call = _CallBody(self._code_names)

    def feed(self, text: str) -> list[Event]:
        events = EventList()
        buf = self._held + text if self._held else text
        self._held = ""
        pos, n = 0, len(buf)
        while pos < n:
            inside = self._stage is _Stage.CALL
            m = (_ANY_RE if inside else _OPEN_RE).search(buf, pos)
            if m is None:
                cut = partial_marker_start(buf, pos, (CALL_OPEN, CALL_CLOSE) if inside else (CALL_OPEN,))
                self._consume(buf[pos:cut], events)
                self._held = buf[cut:]
                break
            self._consume(buf[pos : m.start()], events)
            pos = m.end()
            if inside:
                self._call.close(events)
                self._stage = _Stage.AFTER
                self._call = None
                if m.group() == CALL_CLOSE:
                    continue
            self._ws = ""
            self._open_call()
        return events

    def _consume(self, segment: str, events: EventList) -> None:
        if not segment:
            return
        if self._stage is _Stage.CALL:
            self._call.feed(segment, events)
        elif self._stage is _Stage.TEXT:
            body = segment.rstrip()
            if body:
                events.text(self._ws + body)
                self._ws = segment[len(body):]
            else:
                self._ws += segment

    def finish(self) -> list[Event]:
        events = EventList()
        held, self._held = self._held, ""
        if self._stage is _Stage.TEXT:
            if held:
                events.text(self._ws + held)
            self._ws = ""
        elif self._stage is _Stage.CALL:
            if held:
                self._call.feed(held, events)
            self._call.finish(events)
        return events
