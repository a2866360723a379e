"""The content stage: what the gateway itself ends or reports on the text the client sees (docs/decisions.md).

    template parser events -> ContentStage -> events for the assembler (+ the content's logprobs)

* **User stop sequences** are matched here, in the content text, never in Functionary's markup (the parser
  has already taken recipient lines, call names and arguments out): anywhere in a run of content text, across
  token boundaries; the answer is cut before the first occurrence and the stage is ``done`` (the caller closes
  TGI's stream, which cancels the generation). At most ``len(longest stop) - 1`` characters are held back,
  and trailing whitespace (the answer is ``.strip()``-ed: text cut by a stop too).
  A tool call separates runs: text held when a call starts is passed on first.
* **One call** (``parallel_tool_calls: false``): a second call's start ends the answer after the first call.
* **logprobs** (:class:`TokenLedger`): each piece of content text is traced back to the tokens that wrote it,
  and a token is reported for its content part only, so the reported ``token`` strings spell the content.
"""

from __future__ import annotations

from bisect import bisect_right

from functionary.templates.base import Event, TextDelta, ToolCallStart


class TokenLedger:
    """The model's raw output (the text fed to the parser) with each token's span in it, so that the content
    text the parser emits can be traced back to tokens.

    A content piece is looked for as the LAST occurrence of its text in the raw output not yet attributed:
    a parser emits content as soon as it knows it is content, so only a marker prefix or a call name it still
    holds can follow it (docs/decisions.md, "logprobs")."""

    __slots__ = ("_starts", "_entries", "_raw", "_base", "_end")

    def __init__(self) -> None:
        self._starts: list[int] = []  # raw offset where each token's text starts
        self._entries: list[dict] = []  # each token's logprob entry (as TGI reported it)
        self._raw = ""  # raw output from offset ``_base`` on (older text is attributed already)
        self._base = 0
        self._end = 0

    def add(self, text: str, entry: dict) -> None:
        """One more token (its text as TGI sent it)."""
        self._starts.append(self._end)
        self._entries.append(entry)
        self._end += len(text)

    def fed(self, text: str) -> None:
        """Text handed to the parser: a prefix of the tokens' texts (the template's stop trimmer holds some
        back and drops a final stop), so offsets agree."""
        self._raw += text

    def attribute(self, text: str) -> list[tuple[int, str]]:
        """(token number, part of ``text``) pieces that spell ``text``, in order."""
        if not text:
            return []
        at = self._raw.rfind(text)
        if at < 0:  # never seen in practice; keep the contract that the pieces spell the content
            return [(max(len(self._entries) - 1, 0), text)]
        start = self._base + at
        stop = start + len(text)
        self._raw = self._raw[at + len(text):]
        self._base = stop
        pieces = []
        k = bisect_right(self._starts, start) - 1
        pos = start
        while pos < stop:
            end = self._starts[k + 1] if k + 1 < len(self._starts) else self._end
            cut = min(end, stop)
            if cut > pos:
                pieces.append((k, text[pos - start:cut - start]))
            pos = cut
            k += 1
        return pieces

    def entries(self, pieces: list[tuple[int, str]]) -> list[dict]:
        """OpenAI logprob entries for content pieces: consecutive pieces of one token are one entry."""
        out: list[dict] = []
        last = -1
        for k, part in pieces:
            if k == last:
                out[-1]["token"] += part
            else:
                out.append({**self._entries[k], "token": part})
                last = k
        for entry in out:
            entry["bytes"] = list(entry["token"].encode())
        return out


class ContentStage:
    """See the module docstring. ``push(events)`` -> events to pass on; ``done`` says why the answer ended
    early (``"stop"``: a stop sequence; ``"one_call"``: a second call began) or is None."""

    __slots__ = ("_stops", "_longest", "_prefixes", "_one_call", "_ledger", "_held", "_calls", "done", "logprobs")

    def __init__(self, stops: tuple[str, ...] | list[str], *, one_call: bool, ledger: TokenLedger | None) -> None:
        self._stops = tuple(dict.fromkeys(s for s in stops if s))
        self._longest = max((len(s) for s in self._stops), default=0)
        self._prefixes = frozenset(s[:i] for s in self._stops for i in range(1, len(s)))
        self._one_call = one_call
        self._ledger = ledger
        self._held: list[tuple[int, str]] = []  # content pieces held back (could begin a stop)
        self._calls = 0
        self.done: str | None = None
        self.logprobs: list[dict] = []  # entries for the content passed on by the last push/finish

    @property
    def passthrough(self) -> bool:
        return not self._stops and not self._one_call and self._ledger is None

    def push(self, events: list[Event]) -> list[Event]:
        self.logprobs = []
        if self.passthrough:
            return events
        out: list[Event] = []
        for ev in events:
            if self.done is not None:
                break
            if type(ev) is TextDelta:
                self._text(ev.text, out)
            elif type(ev) is ToolCallStart:
                if self._one_call and self._calls:
                    self.done = "one_call"
                    break
                self._calls += 1
                self._release(len(self._joined()), out)
                out.append(ev)
            else:
                out.append(ev)
        return out

    def finish(self) -> list[Event]:
        """End of output: what is still held is content."""
        self.logprobs = []
        out: list[Event] = []
        if self.done is None:
            self._release(len(self._joined()), out)
        return out

    # -- text ---------------------------------------------------------------------------------

    def _joined(self) -> str:
        return "".join(part for _, part in self._held)

    def _text(self, text: str, out: list[Event]) -> None:
        pieces = self._ledger.attribute(text) if self._ledger is not None else [(-1, text)]
        self._held += pieces
        if not self._stops:
            self._release(len(self._joined()), out)
            return
        held = self._joined()
        first = min((i for i in (held.find(s) for s in self._stops) if i >= 0), default=-1)
        if first >= 0:  # the model's text ends here, and is .strip()-ed as any answer (docs/decisions.md)
            self._release(len(held[:first].rstrip()), out)
            self._held = []
            self.done = "stop"
            return
        keep = 0
        for n in range(min(len(held), self._longest - 1), 0, -1):
            if held[-n:] in self._prefixes:
                keep = n
                break
        # trailing whitespace waits too (as the parser's strip does): if a stop follows, the answer ends before it
        self._release(len(held[:len(held) - keep].rstrip()), out)

    def _release(self, count: int, out: list[Event]) -> None:
        """Passes on the first ``count`` characters held."""
        if count <= 0:
            return
        given: list[tuple[int, str]] = []
        rest: list[tuple[int, str]] = []
        left = count
        for k, part in self._held:
            if left >= len(part):
                given.append((k, part))
                left -= len(part)
            elif left > 0:
                given.append((k, part[:left]))
                rest.append((k, part[left:]))
                left = 0
            else:
                rest.append((k, part))
        self._held = rest
        text = "".join(part for _, part in given)
        if out and type(out[-1]) is TextDelta:
            out[-1] = TextDelta(out[-1].text + text)
        else:
            out.append(TextDelta(text))
        if self._ledger is not None:
            self.logprobs += self._ledger.entries([p for p in given if p[1]])


def model_text(event) -> str:
    """The text an event adds to the model's output: a final special token that ended generation
    as the EOS is dropped whatever its text (the model's EOS may be one the template never names)."""
    token = event.token
    if token.special and event.details is not None and event.details.finish_reason == "eos_token":
        return ""
    return token.text


def token_logprob(event) -> dict:
    token = event.token
    logprob = token.logprob if token.logprob is not None else 0.0
    top = [
        {"token": t.text, "logprob": t.logprob if t.logprob is not None else 0.0, "bytes": list(t.text.encode())}
        for t in (event.top_tokens or ())
    ]
    return {"token": token.text, "logprob": logprob, "bytes": list(token.text.encode()), "top_logprobs": top}
