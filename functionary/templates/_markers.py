"""Scanning helpers for parsers that look for markers in a growing buffer (a marker may arrive split
across tokens): used by the legacy family (v1, v2, v2.llama3)."""

from __future__ import annotations


def find_first(text: str, markers: tuple[str, ...], start: int = 0) -> tuple[int, str]:
    """Index and text of the earliest complete marker at or after ``start``; (-1, "") if none."""
    best, found = -1, ""
    for marker in markers:
        i = text.find(marker, start)
        if i >= 0 and (best < 0 or i < best):
            best, found = i, marker
    return best, found


def partial_marker_len(text: str, markers: tuple[str, ...]) -> int:
    """Length of the longest end of ``text`` that could still grow into one of ``markers``."""
    best = 0
    for marker in markers:
        for k in range(min(len(marker) - 1, len(text)), best, -1):
            if text.endswith(marker[:k]):
                best = k
                break
    return best


def rescan_from(text: str, markers: tuple[str, ...]) -> int:
    """Where the next search of a growing buffer must restart to still see a split marker."""
    return max(0, len(text) - max(len(m) for m in markers) + 1)


def take_until(buf: str, markers: tuple[str, ...], *, final: bool) -> tuple[str, str, bool]:
    """Splits a growing buffer at its first complete marker: ``(before, after, True)``. Without one,
    ``(safe, held, False)``: ``held`` is an end that could still grow into a marker (nothing once the
    output is ``final``)."""
    i, marker = find_first(buf, markers)
    if i < 0:
        keep = 0 if final else partial_marker_len(buf, markers)
        return buf[: len(buf) - keep], buf[len(buf) - keep:], False
    return buf[:i], buf[i + len(marker):], True
