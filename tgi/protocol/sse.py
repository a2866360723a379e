"""Server-sent events: one spec-following decoder and one encoder.

The decoder follows the WHATWG "event stream interpretation" rules: bytes are decoded as UTF-8 (a BOM at the
very start is dropped, bad bytes become U+FFFD), lines end with CRLF, LF or CR, a line is split on its first
``:`` and ONE leading space of the value is dropped, ``data`` lines of one event are joined with ``\\n``, a
blank line dispatches the event, lines starting with ``:`` are comments (TGI's ``:\\n\\n`` keep-alive), and an
event still open when the stream ends is discarded. So both TGI framings, ``data: {json}`` (>= 2.1) and
``data:{json}`` (<= 2.0), decode to the same data.

Incremental: chunks may split a line, a CRLF pair or a UTF-8 character anywhere.
"""

from __future__ import annotations

import codecs
from collections.abc import AsyncIterable, AsyncIterator

__all__ = ["SSEDecoder", "SSEEvent", "aiter_sse", "encode_sse"]


class SSEEvent:
    """One dispatched event. ``event`` is ``"message"`` unless the stream named it."""

    __slots__ = ("data", "event", "id", "retry")

    def __init__(self, data: str, event: str = "message", id: str = "", retry: int | None = None) -> None:
        self.data = data
        self.event = event
        self.id = id
        self.retry = retry

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SSEEvent):
            return NotImplemented
        return (self.data, self.event, self.id, self.retry) == (other.data, other.event, other.id, other.retry)

    def __repr__(self) -> str:
        return f"SSEEvent(data={self.data!r}, event={self.event!r}, id={self.id!r}, retry={self.retry!r})"


class SSEDecoder:
    """Feed it byte chunks; it returns the events each chunk completes."""

    def __init__(self) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._tail = ""  # an unfinished line
        self._skip_lf = False  # the last chunk ended with CR: a LF first in the next one ends no new line
        self._started = False
        self._data: list[str] = []
        self._event = ""
        self._last_id = ""
        self._retry: int | None = None
        self.comments = 0  # comment lines seen (keep-alives)

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        text = self._utf8.decode(chunk)
        if not self._started and text:
            self._started = True
            if text[0] == "\ufeff":
                text = text[1:]
        if self._skip_lf and text:
            self._skip_lf = False
            if text[0] == "\n":
                text = text[1:]
        if not text:
            return []
        if (not self._tail and not self._data and not self._event and text[:5] == "data:" and text[-2:] == "\n\n"
                and text.find("\n") == len(text) - 2 and "\r" not in text):
            # the common chunk, one whole ``data:`` event (TGI writes one per token): what the loop below gives
            value = text[5:-2]
            return [SSEEvent(value[1:] if value[:1] == " " else value, "message", self._last_id, self._retry)]
        data = self._tail + text
        if "\r" in data:
            if data[-1] == "\r":  # maybe the first half of a CRLF split across chunks
                self._skip_lf = True
                data = data[:-1].replace("\r\n", "\n").replace("\r", "\n") + "\n"
            else:
                data = data.replace("\r\n", "\n").replace("\r", "\n")
        lines = data.split("\n")
        self._tail = lines.pop()
        events: list[SSEEvent] = []
        for line in lines:
            event = self._line(line)
            if event is not None:
                events.append(event)
        return events

    def close(self) -> list[SSEEvent]:
        """End of stream: an event without its blank line is discarded, as the spec says. Returns ``[]``."""
        self._utf8.decode(b"", final=True)
        self._tail = ""
        self._data = []
        self._event = ""
        return []

    @property
    def pending(self) -> bool:
        """Whether bytes of an unfinished event are buffered (useful to explain a cut stream)."""
        return bool(self._tail or self._data)

    def _line(self, line: str) -> SSEEvent | None:
        if not line:
            return self._dispatch()
        if line[0] == ":":
            self.comments += 1
            return None
        field, colon, value = line.partition(":")
        if colon and value[:1] == " ":
            value = value[1:]
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        elif field == "id":
            if "\0" not in value:
                self._last_id = value
        elif field == "retry":
            if value.isascii() and value.isdigit():
                self._retry = int(value)
        return None

    def _dispatch(self) -> SSEEvent | None:
        data, event = self._data, self._event
        self._data, self._event = [], ""
        if not data:
            return None
        return SSEEvent("\n".join(data), event or "message", self._last_id, self._retry)


async def aiter_sse(chunks: AsyncIterable[bytes]) -> AsyncIterator[SSEEvent]:
    """Decode an async iterable of byte chunks into events."""
    decoder = SSEDecoder()
    async for chunk in chunks:
        for event in decoder.feed(chunk):
            yield event
    decoder.close()


def encode_sse(data: str | bytes) -> bytes:
    """One ``data`` event: ``data: ...\\n\\n``; a value with line breaks becomes several ``data:`` lines."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if b"\n" in raw or b"\r" in raw:
        lines = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        return b"".join(b"data: " + line + b"\n" for line in lines) + b"\n"
    return b"data: " + raw + b"\n\n"

