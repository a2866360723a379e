"""Stop-string trimming for streamed text.

TGI leaves the matched stop sequence (and the EOS token's literal text) in the output; OpenAI
clients must never see it. Text that could still become a stop string is held back until the
next token decides; at the end a complete stop string at the tail is dropped. TGI ends the
stream at the first match, so a complete stop can only stand at the very end.
"""

from __future__ import annotations


class StopTrimmer:
    __slots__ = ("_stops", "_prefixes", "_longest", "_firsts", "_tail")

    def __init__(self, stops: tuple[str, ...] | list[str]) -> None:
        self._stops = tuple(sorted({s for s in stops if s}, key=len, reverse=True))
        self._prefixes = frozenset(s[:i] for s in self._stops for i in range(1, len(s)))
        self._longest = max((len(s) for s in self._stops), default=0)
        self._firsts = tuple({s[0] for s in self._stops})  # a held suffix starts with one of these
        self._tail = ""

    def feed(self, text: str) -> str:
        """Text that is safe to pass on now."""
        if not self._stops:
            return text
        tail = self._tail + text
        if not tail:
            return ""
        window = tail[-self._longest :]
        for first in self._firsts:
            if first in window:
                break
        else:  # the common token: nothing in reach of a stop's first character
            self._tail = ""
            return tail
        keep = 0
        # the longest suffix of ``tail`` that is a prefix of a stop (or a whole stop) is held back
        for n in range(min(len(tail), self._longest), 0, -1):
            suffix = tail[-n:]
            if suffix in self._prefixes or suffix in self._stops:
                keep = n
                break
        self._tail = tail[len(tail) - keep :] if keep else ""
        return tail[: len(tail) - keep]

    def finish(self) -> str:
        tail, self._tail = self._tail, ""
        for stop in self._stops:
            if tail.endswith(stop):
                return tail[: len(tail) - len(stop)]
        return tail
