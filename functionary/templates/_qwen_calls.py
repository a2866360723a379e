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

from functionary.templates.base import (
    ArgumentsDelta,
    Event,
    StreamParser,
    TextDelta,
    ToolCallStart,
    ToolChoice,
)

CALL_OPEN = "<tool_call>"
CALL_CLOSE = "</tool_call>"

_OPEN_RE = re.compile(re.escape(CALL_OPEN))
_ANY_RE = re.compile("</?tool_call>")
_STR_STOP = re.compile(r'["\\]')
_SCALAR_END = frozenset(',}] \t\r\n')
_JSON_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


# ---------------------------------------------------------------------------------------------
# Helpers shared with the r1 parser


class EventList(list):
    """Parser events of one ``feed``; adjacent text / argument pieces are merged."""

    def text(self, s: str) -> None:
        if s:
            if self and type(self[-1]) is TextDelta:
                self[-1] = TextDelta(self[-1].text + s)
            else:
                self.append(TextDelta(s))

    def args(self, s: str) -> None:
        if s:
            if self and type(self[-1]) is ArgumentsDelta:
                self[-1] = ArgumentsDelta(self[-1].text + s)
            else:
                self.append(ArgumentsDelta(s))

    def start(self, name: str) -> None:
        self.append(ToolCallStart(name))


def partial_marker_start(buf: str, pos: int, markers: tuple[str, ...]) -> int:
    """Where a marker that may still be completing begins at the end of ``buf[pos:]`` (else
    ``len(buf)``). Every marker starts with ``<`` and holds no other ``<``, so only the last ``<``
    can begin one."""
    longest = max(len(m) for m in markers)
    j = buf.rfind("<", max(pos, len(buf) - longest + 1))
    if j >= 0:
        tail = buf[j:]
        if any(m.startswith(tail) for m in markers):
            return j
    return len(buf)


def decode_json_string(body: str) -> str:
    """The value of a JSON string literal's body; undecodable text is kept as written."""
    try:
        return json.loads('"' + body + '"')
    except ValueError:
        return body


class CodeDecoder:
    """Turns the raw arguments of a code-interpreter call, ``{"code": "..."}``, into the code
    itself as it streams; arguments of any other shape fall back to the raw text."""

    __slots__ = ("_stage", "_seen", "_key", "_esc", "_hi")

    # stages: 0 before "{", 1 before the key, 2 in the key, 3 before ":", 4 before the string,
    # 5 in the string, 6 done (rest ignored), 7 raw fallback
    def __init__(self) -> None:
        self._stage = 0
        self._seen: list[str] = []
        self._key: list[str] = []
        self._esc = ""  # an escape sequence still arriving
        self._hi: int | None = None  # a high surrogate waiting for its pair

    def feed(self, raw: str) -> str:
        out: list[str] = []
        i, n = 0, len(raw)
        while i < n:
            stage = self._stage
            if stage == 7:
                out.append(raw[i:])
                break
            if stage == 6:
                break
            if stage == 5:
                i = self._string(raw, i, out)
                continue
            ch = raw[i]
            self._seen.append(ch)
            i += 1
            if stage == 2:
                if ch == '"':
                    ok = "".join(self._key) == "code"
                    self._stage = 3
                elif ch == "\\":
                    ok = False
                else:
                    self._key.append(ch)
                    ok = True
            elif ch in " \t\r\n":
                ok = True
            else:
                expected = {0: "{", 1: '"', 3: ":", 4: '"'}[stage]
                ok = ch == expected
                if ok:
                    self._stage = 5 if stage == 4 else stage + 1
            if not ok:
                self._stage = 7
                out.append("".join(self._seen))
                out.append(raw[i:])
                break
        return "".join(out)

    def _string(self, raw: str, i: int, out: list[str]) -> int:
        if self._esc:
            self._esc += raw[i]
            i += 1
            esc = self._esc
            if esc[1] != "u":
                self._esc = ""
                self._plain(_JSON_ESCAPES.get(esc[1], esc), out)
            elif len(esc) == 6:
                self._esc = ""
                try:
                    self._unit(int(esc[2:], 16), out)
                except ValueError:
                    self._plain(esc, out)
            return i
        m = _STR_STOP.search(raw, i)
        j = m.start() if m else len(raw)
        if j > i:
            self._plain(raw[i:j], out)
        if j == len(raw):
            return j
        if raw[j] == '"':
            self._flush_hi(out)
            self._stage = 6
        else:
            self._esc = "\\"
        return j + 1

    def _unit(self, unit: int, out: list[str]) -> None:
        if 0xD800 <= unit <= 0xDBFF:
            self._flush_hi(out)
            self._hi = unit
        elif 0xDC00 <= unit <= 0xDFFF and self._hi is not None:
            out.append(chr(0x10000 + ((self._hi - 0xD800) << 10) + (unit - 0xDC00)))
            self._hi = None
        else:
            self._plain(chr(unit), out)

    def _plain(self, text: str, out: list[str]) -> None:
        self._flush_hi(out)
        out.append(text)

    def _flush_hi(self, out: list[str]) -> None:
        if self._hi is not None:
            out.append(chr(self._hi))
            self._hi = None

    def finish(self) -> str:
        out: list[str] = []
        self._flush_hi(out)
        return "".join(out)


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
            m = _STR_STOP.search(s, i)
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
                m = _STR_STOP.search(s, i)
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
