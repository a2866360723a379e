"""Guided generation: one answer over several TGI requests, the calls' arguments under their tools' grammars.

A TGI grammar constrains a whole generation, and only the arguments of a call should be constrained, so an
answer is written in segments, each one TGI request whose ``inputs`` are the prompt plus everything written so
far (TGI's prefix cache makes that re-prefill cheap):

* **free**: no grammar. When the parser announces a call of a tool that has a grammar (or, with
  ``response_format``, the first text of the answer), the generation is stopped (its TGI stream closed, which
  cancels it), the text is cut right where the arguments (the answer) begin, and the next segment takes over;
* **arguments** of one call under its tool's schema, then the template's call suffix is added
  (``</function>``) and a free segment follows: the model may add more calls, text, or stop;
* **name** (``tool_choice: required``): a regex that allows exactly one declared tool's call opening;
* **content** (``response_format``): the answer under its grammar; the answer ends with it.

A named choice starts with the arguments; ``required`` with the name. The client sees one stream: one logical
parser reads the concatenated text (:class:`Transcript`), so deltas, ids and ``index`` follow the usual rules;
usage adds up the segments' tokens. Closing the generator closes whichever TGI stream is open.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Container
from contextlib import aclosing
from dataclasses import dataclass, field
from enum import Enum

from functionary.stops import StopTrimmer
from functionary.templates.base import Event, PreparedRequest, PromptTemplate, TextDelta, ToolCallStart
from tgi.protocol.errors import UpstreamGenerationError, UpstreamValidationError
from tgi.pipeline.grammar import GrammarPlan, GrammarSupport, literal_regex, rejection_kind
from tgi.pipeline.params import Limits
from tgi.protocol.types import GenerateParameters, GenerateRequest, Grammar, StreamResponse

log = logging.getLogger("gateway.grammar")

__all__ = ["Cut", "GuidedGeneration", "Step", "Transcript", "overlap"]


def _model_text(event: StreamResponse) -> str:
    """The text a TGI event adds to the model's output (an EOS that ended the generation adds none, whatever
    its text: a constrained generation ends with whichever EOS the model picks)."""
    token = event.token
    if token.special and event.details is not None and event.details.finish_reason == "eos_token":
        return ""
    return token.text


def overlap(prompt: str, opening: str) -> int:
    """How much of ``opening`` the prompt already ends with (the longest prefix of it that is a suffix of
    ``prompt``)."""
    for size in range(min(len(opening), len(prompt)), 0, -1):
        if prompt.endswith(opening[:size]):
            return size
    return 0


# -- the text side (pure) ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cut:
    """Where a free segment stops: a call of ``name`` (its arguments begin at the cut) or the answer."""

    kind: str  # "call" | "content"
    name: str | None = None


class Transcript:
    """Everything the model side wrote after the prompt (generated or forced), read by one logical parser.

    A cut drops the text after the cut point and rebuilds the parser by feeding it the text up to there (once
    per cut, never per token); the events the rebuilt parser owes again (a call it announces once more) are
    swallowed, so the client sees each event once, as from one unconstrained stream."""

    __slots__ = ("template", "prepared", "prompt", "_parser", "_parts", "_size", "_calls", "_owed", "_text", "mark")

    def __init__(self, template: PromptTemplate, prepared: PreparedRequest, prompt: str) -> None:
        self.template, self.prepared, self.prompt = template, prepared, prompt
        self._parser = template.stream_parser(prepared)
        self._parts: list[str] = []
        self._size = 0
        self._calls = 0  # calls announced to the client
        self._owed = 0  # ToolCallStart events the rebuilt parser will announce again
        self._text = False  # text of the answer announced to the client
        self.mark = 0  # where the running segment's text starts: a cut lies after it

    @property
    def text(self) -> str:
        if len(self._parts) > 1:
            self._parts = ["".join(self._parts)]
        return self._parts[0] if self._parts else ""

    @property
    def size(self) -> int:
        return self._size

    @property
    def calls(self) -> int:
        return self._calls

    def feed(self, piece: str, *, watch: Container[str] = (), content: bool = False) -> tuple[list[Event], Cut | None]:
        """Events for ``piece``; with ``watch`` (call names) or ``content``, stops at the first call of a watched
        tool (the call's start is kept) or at the first text of the answer (dropped), cutting the text there."""
        if not piece:
            return [], None
        self._parts.append(piece)
        self._size += len(piece)
        events = self._parser.feed(piece)
        if self._owed:
            events = self._drop_owed(events)
        cut, boundary = None, None
        if watch or content:
            for k, event in enumerate(events):
                kind = type(event)
                if kind is ToolCallStart:
                    if event.name in watch:
                        boundary = self._after(self.template.call_prefix(event.name) or "")
                        if boundary is not None:
                            cut, events = Cut("call", event.name), events[: k + 1]
                            break
                    content = False  # the answer begins with a call
                elif kind is TextDelta and content:
                    prefix = self.template.content_prefix()
                    boundary = (0 if self.mark == 0 else None) if prefix == "" else self._after(prefix or "")
                    if boundary is not None:
                        cut, events = Cut("content"), events[:k]
                        break
                    content = False
        self._count(events)
        if cut is not None:
            self._cut(boundary)
        return events, cut

    def finish(self) -> list[Event]:
        events = self._parser.finish()
        if self._owed:
            events = self._drop_owed(events)
        self._count(events)
        return events

    def answer_started(self) -> bool:
        return self._calls > 0 or self._text

    def _drop_owed(self, events: list[Event]) -> list[Event]:
        kept = []
        for event in events:
            if self._owed and type(event) is ToolCallStart:
                self._owed -= 1
            else:
                kept.append(event)
        return kept

    def _count(self, events: list[Event]) -> None:
        for event in events:
            kind = type(event)
            if kind is ToolCallStart:
                self._calls += 1
            elif kind is TextDelta:
                self._text = True

    def _after(self, opening: str) -> int | None:
        """Position in the text right after the last ``opening`` that ends in the running segment (the opening
        may begin in the prompt: v3.llama3's ``>>>``)."""
        if not opening:
            return None
        head = self.prompt[-len(opening):]
        haystack = head + self.text
        at = haystack.rfind(opening, max(0, len(head) + self.mark - len(opening)))
        if at < 0:
            return None
        return at + len(opening) - len(head)

    def _cut(self, boundary: int) -> None:
        text = self.text[:boundary]
        self._parts, self._size = [text], len(text)
        self._parser = self.template.stream_parser(self.prepared)
        again = sum(1 for event in self._parser.feed(text) if type(event) is ToolCallStart)
        self._owed = max(0, self._calls - again)


# -- the TGI side ------------------------------------------------------------------------------------


class _Kind(Enum):
    FREE = "free"
    ARGS = "arguments"
    NAME = "name"
    CONTENT = "content"


@dataclass(frozen=True, slots=True)
class _Target:
    kind: _Kind
    name: str | None = None  # ARGS: the call
    watch: bool = True  # FREE: cut at calls / the answer


@dataclass(slots=True)
class Step:
    """What one TGI event (or the end) produced: parser events, the TGI event itself (for logprobs), and, on
    the last step (``done``), TGI's finish reason and the answer's token counts."""

    events: list[Event] = field(default_factory=list)
    token: StreamResponse | None = None
    done: bool = False
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int = 0


class _SegmentRecord:
    """What the pool writes about one TGI request (endpoint, retries, first token) for segments after the
    first: the request's own record counts the first segment only, so segments are not taken for retries."""

    __slots__ = ("endpoint", "retries", "first_token_at")

    def __init__(self) -> None:
        self.endpoint = None
        self.retries = 0
        self.first_token_at = None


class GuidedGeneration:
    """One choice of one request, guided by a :class:`GrammarPlan`; iterate :meth:`steps` once."""

    def __init__(
        self, *, plan: GrammarPlan, template: PromptTemplate, prepared: PreparedRequest, prompt: str,
        parameters: GenerateParameters, stops: tuple[str, ...], pool, support: GrammarSupport, limits: Limits,
        count_tokens: Callable[[str], int], record=None, buffered: bool = False,
    ) -> None:
        self.plan, self.template, self.prepared = plan, template, prepared
        self.parameters, self.stops, self.pool, self.support = parameters, stops, pool, support
        self.limits, self.count_tokens = limits, count_tokens
        self.transcript = Transcript(template, prepared, prompt)
        self.calls = dict(plan.calls)  # tools whose arguments are constrained (one refused is taken out)
        self.response = plan.response
        self.max_new_tokens = parameters.max_new_tokens or limits.max_total_tokens
        self.prompt_tokens: int | None = None
        self.completion_tokens = 0
        self.segments = 0
        self._record, self._buffered = record, buffered
        self._unguided = False  # TGI refused grammars: the rest is unconstrained
        self._endpoint: str | None = None  # the endpoint of the last segment

    async def steps(self) -> AsyncIterator[Step]:
        self.support.stats.requests += 1
        target, forced = self._first()
        if forced:
            events, _ = self.transcript.feed(forced)
            if events:
                yield Step(events)
        while True:
            grammar = self._grammar(target)
            budget = self._budget()
            if budget < 1:
                yield self._done("length")
                return
            outcome: list = []
            async with aclosing(self._segment(target, grammar, budget, outcome)) as steps:
                async for step in steps:
                    yield step
            target, reason = outcome
            if target is None:
                yield self._done(reason)
                return

    # -- planning the segments -----------------------------------------------------------------

    def _first(self) -> tuple[_Target, str]:
        choice = self.prepared.choice
        prompt = self.transcript.prompt
        if choice.is_named and choice.name in self.calls:
            opening = self.template.call_prefix(choice.name) or ""
            return _Target(_Kind.ARGS, choice.name), opening[overlap(prompt, opening):]
        if choice.kind == "required" and self.plan.names:
            return _Target(_Kind.NAME), ""
        if self.response is not None and (choice.kind == "none" or not self.prepared.tools):
            prefix = self.template.content_prefix() or ""
            return _Target(_Kind.CONTENT), prefix[overlap(prompt, prefix):]
        return _Target(_Kind.FREE), ""

    def _grammar(self, target: _Target) -> Grammar | None:
        if self._unguided:
            return None
        if target.kind is _Kind.ARGS:
            return self.calls.get(target.name)
        if target.kind is _Kind.CONTENT:
            return self.response
        if target.kind is _Kind.NAME:
            return Grammar(type="regex", value=literal_regex(self._name_texts().values()))
        return None

    def _name_texts(self) -> dict[str, str]:
        """name -> what the model writes, after the prompt, to open a call of it."""
        prompt = self.transcript.prompt
        out = {}
        for name in self.plan.names:
            opening = self.template.call_prefix(name) or ""
            out[name] = opening[overlap(prompt, opening):]
        return out

    def _budget(self) -> int:
        left = self.max_new_tokens - self.completion_tokens
        if (self.segments == 0 and not self.transcript.size) or left < 1:
            return left
        used = self.count_tokens(self.transcript.prompt + self.transcript.text)
        if used > self.limits.max_input_tokens:
            return 0
        return min(left, self.limits.max_total_tokens - used)

    def _next(self, target: _Target, reason: str, start: int) -> tuple[_Target | None, list[Event]]:
        """After a segment that ended by itself: the next target (None: the answer is complete) and the events
        of the text added in between."""
        if reason != "eos_token" or target.kind in (_Kind.FREE, _Kind.CONTENT):
            return None, []
        if target.kind is _Kind.ARGS:
            events, _ = self.transcript.feed(self.template.call_suffix(target.name or ""))
            return _Target(_Kind.FREE), events
        written = self.transcript.text[start:]
        for name, text in self._name_texts().items():
            if written == text:
                return (_Target(_Kind.ARGS, name) if name in self.calls else _Target(_Kind.FREE)), []
        return None, []  # the name was not constrained after all (a scripted reply): the answer is what it is

    def _done(self, reason: str) -> Step:
        return Step(self.transcript.finish(), done=True, finish_reason=reason, prompt_tokens=self.prompt_tokens,
                    completion_tokens=self.completion_tokens)

    # -- one segment ---------------------------------------------------------------------------

    async def _segment(self, target: _Target, grammar: Grammar | None, budget: int,
                       outcome: list) -> AsyncIterator[Step]:
        """Run ``target`` as TGI requests until it ends; a grammar TGI refuses is dropped and the segment sent
        again without it (the refusal comes before any token). ``outcome`` gets (next target, finish reason)."""
        while True:
            try:
                async for step in self._generate(target, grammar, budget, outcome):
                    yield step
                return
            except UpstreamValidationError as exc:
                kind = rejection_kind(exc) if grammar is not None else None
                if kind is None:
                    raise
                # the segment goes again without the refused grammar (sending it again loops on the refusal)
                target, grammar = self._refused(target, grammar, kind, exc), None

    def _refused(self, target: _Target, grammar: Grammar, kind: str, exc: UpstreamValidationError) -> _Target:
        self.support.stats.degraded += 1
        if kind == "unsupported":
            self.support.record(self._endpoint, False)
            if self.support.mode == "on":
                raise UpstreamGenerationError(
                    f"TGI at {self._endpoint or 'an endpoint'} refuses grammars (--disable-grammar-support) and the "
                    "gateway runs with --grammar on", code="grammar_unsupported",
                ) from exc
            self._unguided = True
            return _Target(_Kind.FREE, watch=False)
        self.support.refuse(grammar, exc.message)
        if target.kind is _Kind.ARGS:
            self.calls.pop(target.name, None)
            return _Target(_Kind.FREE)
        if target.kind is _Kind.CONTENT:
            self.response = None
            return _Target(_Kind.FREE, watch=False)
        return _Target(_Kind.FREE)

    async def _generate(self, target: _Target, grammar: Grammar | None, budget: int,
                        outcome: list) -> AsyncIterator[Step]:
        transcript = self.transcript
        transcript.mark = start = transcript.size
        watch = self.calls if target.kind is _Kind.FREE and target.watch and not self._unguided else ()
        content = (target.kind is _Kind.FREE and target.watch and self.response is not None and not self._unguided
                   and self.prepared.choice.kind == "auto" and not transcript.answer_started())
        parameters = self.parameters.model_copy(update={"max_new_tokens": budget, "grammar": grammar})
        body = GenerateRequest(inputs=transcript.prompt + transcript.text, parameters=parameters)
        first = self.segments == 0
        record = self._record if first and self._record is not None else _SegmentRecord()
        self.segments += 1
        stats = self.support.stats
        stats.tgi_requests += 1
        stats.constrained += grammar is not None
        trimmer = StopTrimmer(self.stops)
        last: Step | None = None
        tokens = 0
        self._endpoint = None
        # a held-back (buffered) generation could not be cut where a call begins
        buffered = self._buffered and not (watch or content)
        try:
            async with aclosing(self.pool.generate_stream(body, record=record, buffered=buffered)) as events:
                async for event in events:
                    tokens += 1
                    piece = trimmer.feed(_model_text(event))
                    produced, cut = transcript.feed(piece, watch=watch, content=content)
                    if cut is not None:
                        stats.cuts += 1
                        self.completion_tokens += tokens
                        last = Step(produced, event)
                        following = _Target(_Kind.ARGS, cut.name) if cut.kind == "call" else _Target(_Kind.CONTENT)
                        outcome[:] = [following, None]
                        break  # leaving the block closes the stream: TGI stops generating
                    if event.details is not None or event.generated_text is not None:
                        more, _ = transcript.feed(trimmer.finish())
                        details = event.details
                        reason = details.finish_reason if details is not None else "eos_token"
                        self.completion_tokens += details.generated_tokens if details is not None else tokens
                        if first and details is not None:  # later segments' inputs hold the answer too
                            self.prompt_tokens = details.input_length
                        following, added = self._next(target, reason, start)
                        last = Step(produced + more + added, event)
                        outcome[:] = [following, reason]
                        break
                    yield Step(produced, event)
                else:
                    raise UpstreamGenerationError(
                        "TGI ended the stream without a final event", code="incomplete_generation_stream"
                    )
        finally:
            self._endpoint = record.endpoint
        yield last
