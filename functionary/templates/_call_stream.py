"""Pieces every streaming call parser of the Qwen-style family and r1 uses: the event list of one
``feed``, the hold-back of a marker still arriving, and JSON string decoding (whole, or streamed
for a code-interpreter call's ``{"code": "..."}``)."""

from __future__ import annotations

import json
import re

from functionary.templates.base import ArgumentsDelta, TextDelta, ToolCallStart

STR_STOP = re.compile(r'["\\]')  # where a JSON string's plain run ends
_JSON_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


class EventList(list):
    """Parser events of one ``feed``; adjacent text / argument pieces are merged."""

    def text(self, s: str) -> None:
        self._add(TextDelta, s)

    def args(self, s: str) -> None:
        self._add(ArgumentsDelta, s)

    def _add(self, kind: type[TextDelta] | type[ArgumentsDelta], s: str) -> None:
        if s:
            if self and type(self[-1]) is kind:
                self[-1] = kind(self[-1].text + s)
            else:
                self.append(kind(s))

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
        m = STR_STOP.search(raw, i)
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
