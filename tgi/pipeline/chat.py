"""Chat completions over TGI: the composed pipeline (STYLE 7)

    TGI stream events -> template-stop trimming -> template parser -> content stage (user stops, one call,
    logprobs: tgi/pipeline/content.py) -> OpenAI deltas -> chunks (tgi/pipeline/chunks.py) -> SSE bytes

``plan()`` does everything that can fail before TGI is called (request checks, rendering, the
context-length check, parameter mapping); ``complete()`` and ``stream()`` run the plan.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field

from functionary.assemble import DeltaAssembler, build_message, finish_reason
from functionary.errors import GatewayError
from functionary.openai_types import ChatCompletionRequest, Delta
from functionary.request import prepare_request
from functionary.stops import StopTrimmer
from functionary.templates.base import (
    Event, ParsedOutput, PreparedRequest, PromptTemplate, TextDelta, ToolCallStart,
)
from tgi.pipeline.deadline import Deadline
from tgi.ops.metrics import RequestRecord
from tgi.pipeline.chunks import DUMPS, ChunkWriter, calls_started, usage_of
from tgi.pipeline.content import ContentStage, TokenLedger, model_text, token_logprob
from tgi.pipeline.fanout import all_or_none, merge, tag
from tgi.pipeline.grammar import GRAMMAR_TOKEN_LIMIT, GrammarSupport, GrammarUnsupportedError, rejection_kind
from tgi.pipeline.params import Limits, check_prompt_size, check_supported, generate_parameters, max_new_tokens, user_stops
from tgi.cluster.pool import lost_endpoint
from tgi.protocol.errors import UpstreamError, UpstreamGenerationError, UpstreamTimeoutError, UpstreamValidationError
from tgi.protocol.types import GenerateParameters, GenerateRequest

log = logging.getLogger("gateway.chat")

# request bodies from this size on are planned off the event loop (ChatService.plan_async)
OFF_LOOP_BYTES = 64 * 1024



@dataclass(frozen=True, slots=True)
class Plan:
    request_id: str
    model: str
    created: int
    prepared: PreparedRequest
    prompt: str
    prompt_tokens: int  # local estimate; TGI's input_length wins when it reports one
    parameters: GenerateParameters
    stops: tuple[str, ...]  # trimmed from the model's output: the template's stops and EOS texts
    n: int
    logprobs: bool
    include_usage: bool
    record: RequestRecord | None = None  # ops: filled for the log line and /metrics (tgi/ops/metrics.py)
    user_stops: tuple[str, ...] = ()  # the client's stop sequences: matched in the content (tgi/pipeline/content.py)
    one_call: bool = False  # parallel_tool_calls: false: the answer ends after its first call


@dataclass(slots=True)
class Step:
    """What one TGI event added to a choice, as parser events (tgi/pipeline/content.py has passed them)."""

    events: list[Event]
    logprobs: list[dict] = field(default_factory=list)
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int = 0


@dataclass(slots=True)
class ChoiceResult:
    deltas: list[Delta] = field(default_factory=list)
    finish_reason: str | None = None
    logprobs: list[dict] = field(default_factory=list)
    prompt_tokens: int | None = None
    completion_tokens: int = 0


class ChatService:
    """Holds what every request needs: the template, the token counter, TGI's limits and the
    endpoint pool (anything with ``generate_stream(body)``)."""

    def __init__(
        self,
        *,
        template: PromptTemplate,
        pool,
        limits: Limits,
        model_name: str,
        count_tokens: Callable[[str], int],
        request_timeout: float | None = None,
        grammar: GrammarSupport | None = None,
        bytes_per_token: int | None = None,
    ) -> None:
        self.bytes_per_token = bytes_per_token  # no token covers more prompt bytes (tgi/pipeline/prompt_size.py)
        self.template = template
        self.grammar = grammar if grammar is not None else GrammarSupport("auto")
        self.request_timeout = request_timeout  # seconds for a whole request (None = no limit)
        self.pool = pool
        self.limits = limits
        self.model_name = model_name
        self.count_tokens = count_tokens
        self._trim = tuple(dict.fromkeys((*template.stop_tokens, *template.eos_tokens)))
        eos = set(template.eos_tokens)
        self._tgi_stops = [s for s in template.stop_tokens if s not in eos]

    # -- planning ---------------------------------------------------------------------------

    def plan(self, request: ChatCompletionRequest, *, request_id: str, record: RequestRecord | None = None) -> Plan:
        check_supported(request, self.limits)
        stops = user_stops(request)
        prepared = prepare_request(request)
        self.template.check(prepared)
        prompt = self.template.render(prepared)
        check_prompt_size(prompt, bytes_per_token=self.bytes_per_token, limits=self.limits)
        prompt_tokens = self.count_tokens(prompt)
        new_tokens = max_new_tokens(request, prompt_tokens=prompt_tokens, limits=self.limits)
        # only the template's own stops go to TGI: TGI would match the user's in Functionary's markup too
        parameters = generate_parameters(request, new_tokens=new_tokens, stops=self._tgi_stops, limits=self.limits)
        grammar = self.grammar.grammar_for(template=self.template, request=request, prepared=prepared)
        if grammar is not None:  # one request, the whole answer under the grammar (docs/grammar.md)
            parameters = parameters.model_copy(
                update={"grammar": grammar, "max_new_tokens": min(parameters.max_new_tokens or new_tokens,
                                                                   GRAMMAR_TOKEN_LIMIT)})
        return Plan(
            request_id=request_id,
            model=request.model or self.model_name,
            created=int(time.time()),
            prepared=prepared,
            prompt=prompt,
            prompt_tokens=prompt_tokens,
            parameters=parameters,
            stops=self._trim,
            user_stops=tuple(dict.fromkeys(stops)),
            one_call=request.parallel_tool_calls is False and prepared.choice.kind in ("auto", "required"),
            n=request.n or 1,
            logprobs=bool(request.logprobs),
            include_usage=bool(request.stream_options and request.stream_options.include_usage),
            record=record,
        )

    async def plan_async(self, request: ChatCompletionRequest, *, request_id: str, body_bytes: int,
                         record: RequestRecord | None = None) -> Plan:
        """``plan()``; for a large body on a worker thread, so that rendering and tokenizing a long prompt (the
        counter releases the GIL for long texts: tgi/api/runtime.py) never stalls the other requests."""
        if body_bytes < OFF_LOOP_BYTES:
            return self.plan(request, request_id=request_id, record=record)
        return await asyncio.to_thread(self.plan, request, request_id=request_id, record=record)

    def _body(self, plan: Plan, index: int) -> GenerateRequest:
        params = plan.parameters
        if index and params.do_sample and params.seed is not None:
            params = params.model_copy(update={"seed": (params.seed + index) % (2**64)})
        return GenerateRequest(inputs=plan.prompt, parameters=params)

    # -- one choice -------------------------------------------------------------------------

    async def _events(self, plan: Plan, index: int, *, buffered: bool) -> AsyncIterator[Step]:
        """One generation as parser events through the content stage (tgi/pipeline/content.py): one Step per TGI event
        that produced something, the last one carrying the finish reason and token counts. An answer the stage
        ends early (a user stop, a second call under ``parallel_tool_calls: false``) returns at once, which
        closes TGI's stream: TGI cancels the generation."""
        parser = self.template.stream_parser(plan.prepared)
        trimmer = StopTrimmer(plan.stops)
        ledger = TokenLedger() if plan.logprobs else None
        stage = ContentStage(plan.user_stops, one_call=plan.one_call, ledger=ledger)
        has_calls = False
        async with aclosing(self._generate(plan, index, buffered=buffered)) as events:
            async for event in events:
                text = model_text(event)
                if ledger is not None:
                    ledger.add(text, token_logprob(event))
                details = event.details
                final = details is not None or event.generated_text is not None
                fed = trimmer.feed(text)
                if final:
                    fed += trimmer.finish()
                if ledger is not None:
                    ledger.fed(fed)
                parsed = parser.feed(fed) if fed else []
                tgi_reason = (details.finish_reason if details is not None else "eos_token") if final else None
                if final:
                    tail = parser.finish()
                    if tgi_reason == "length":  # text the parser still held is cut markup (a name), not content
                        tail = [ev for ev in tail if type(ev) is not TextDelta]
                    parsed += tail
                out = Step(stage.push(parsed))
                out.logprobs = stage.logprobs
                if final and stage.done is None:
                    out.events += stage.finish()
                    out.logprobs = out.logprobs + stage.logprobs
                if not has_calls and out.events:
                    has_calls = any(type(ev) is ToolCallStart for ev in out.events)
                if stage.done is not None or final:
                    out.finish_reason = finish_reason(
                        has_calls=has_calls, prepared=plan.prepared,
                        stopped_on_length=stage.done is None and tgi_reason == "length",
                    )
                    out.completion_tokens = details.generated_tokens if details is not None else event.index
                    out.prompt_tokens = getattr(details, "input_length", None)
                    yield out
                    return
                if out.events or out.logprobs:
                    yield out
        raise UpstreamGenerationError(
            "TGI ended the stream without a final event", code="incomplete_generation_stream"
        )

    async def _choice(self, plan: Plan, index: int) -> AsyncIterator[ChoiceResult]:
        """Yields one ChoiceResult per TGI event that produced something, the last one carrying
        the finish reason and token counts."""
        assembler = DeltaAssembler(plan.prepared)
        async with aclosing(self._events(plan, index, buffered=False)) as steps:
            async for step in steps:
                yield ChoiceResult(
                    deltas=assembler.deltas(step.events) if step.events else [], finish_reason=step.finish_reason,
                    logprobs=step.logprobs, prompt_tokens=step.prompt_tokens, completion_tokens=step.completion_tokens,
                )

    # -- non-streaming ----------------------------------------------------------------------

    async def complete(self, plan: Plan) -> dict:
        choices_done = all_or_none([self._collect_retried(plan, i) for i in range(plan.n)])
        results = await self._before(self._deadline(), choices_done)
        choices = []
        prompt_tokens = plan.prompt_tokens
        completion_tokens = 0
        for i, (message, reason, logprobs, p_tokens, c_tokens) in enumerate(results):
            choice = {"index": i, "message": message, "logprobs": {"content": logprobs} if plan.logprobs else None, "finish_reason": reason}
            choices.append(choice)
            completion_tokens += c_tokens
            if p_tokens is not None:
                prompt_tokens = p_tokens
        if plan.record is not None:  # ops hook
            calls = sum(len(c["message"].get("tool_calls") or ()) + ("function_call" in c["message"]) for c in choices)
            plan.record.usage(prompt_tokens, completion_tokens, calls)
        return {
            "id": plan.request_id,
            "object": "chat.completion",
            "created": plan.created,
            "model": plan.model,
            "choices": choices,
            "usage": usage_of(prompt_tokens, completion_tokens),
            "system_fingerprint": None,
        }

    async def _collect_retried(self, plan: Plan, index: int):
        """pool: the client sees nothing before the end, so a choice whose endpoint was lost midway (which the
        pool could not retry: an answer the gateway may end early) is run once more; the pool routes around
        the lost endpoint."""
        try:
            return await self._collect(plan, index)
        except UpstreamError as exc:
            if not lost_endpoint(exc):
                raise
            return await self._collect(plan, index)

    async def _collect(self, plan: Plan, index: int):
        # The complete answer is the same parse as the stream's (the parsers guarantee that any split of the
        # text gives the same events), through the same content stage.
        events: list = []
        logprobs: list[dict] = []
        last = None
        # buffered: the client sees nothing before the end, so the pool may retry a dead endpoint mid-generation;
        # not when the gateway may end the answer early (it must see the tokens as they come to cancel TGI)
        buffered = not plan.user_stops and not plan.one_call
        async with aclosing(self._events(plan, index, buffered=buffered)) as steps:
            async for step in steps:
                events += step.events
                logprobs += step.logprobs
                last = step
        parsed = ParsedOutput.from_events(events)
        message = build_message(parsed, plan.prepared).model_dump(exclude_none=True)
        message.setdefault("content", None)
        return message, last.finish_reason, logprobs, last.prompt_tokens, last.completion_tokens

    async def _generate(self, plan: Plan, index: int, *, buffered: bool):
        """The TGI events of one choice. An endpoint that turns out to refuse grammars (not known at start-up)
        is remembered, and the request gets the same 400 as where every endpoint refuses them."""
        stream = self.pool.generate_stream(self._body(plan, index), record=plan.record, buffered=buffered)
        try:
            async with aclosing(stream) as events:
                async for event in events:
                    yield event
        except UpstreamValidationError as exc:
            if plan.parameters.grammar is None or rejection_kind(exc) != "unsupported":
                raise
            self.grammar.record(getattr(plan.record, "endpoint", None), False)
            raise GrammarUnsupportedError(
                "this request asks for a guarantee that needs a TGI grammar, and the TGI that took it refuses "
                f"grammars (--disable-grammar-support): {exc.message}"
            ) from exc

    # -- streaming --------------------------------------------------------------------------

    async def results(self, plan: Plan) -> AsyncIterator[tuple[int, ChoiceResult]]:
        """The structured stream: ``(choice index, ChoiceResult)`` as TGI produces them, which each API encodes
        (chat chunks here, Responses events in tgi/api/responses_stream.py). The first TGI event is awaited
        before this returns, so an error before generation starts surfaces as an exception (an HTTP error), not
        as a stream. Closing the iterator closes the TGI streams (a client that goes away cancels TGI's work);
        the request's deadline holds between items."""
        deadline = self._deadline()
        for attempt in (0, 1):
            sources = [self._choice(plan, i) for i in range(plan.n)]
            merged = merge(sources) if plan.n > 1 else tag(sources[0], 0)
            try:
                first = await self._before(deadline, merged.__anext__())
                break
            except UpstreamError as exc:
                # pool: TGI tokens came but no output was made from them when the endpoint was lost; the
                # client has seen nothing, so start over once (the pool routes around the lost endpoint)
                await merged.aclose()
                if attempt or not lost_endpoint(exc):
                    raise
        return self._results(merged, first, deadline)

    async def stream(self, plan: Plan) -> AsyncIterator[bytes]:
        """SSE bytes of ``/v1/chat/completions`` (see ``results``)."""
        return self._sse(plan, await self.results(plan))

    async def _results(self, merged, first, deadline: float | None) -> AsyncIterator[tuple[int, ChoiceResult]]:
        timer = Deadline(deadline)  # perf: one timer for all the waits of a stream (tgi/pipeline/deadline.py)
        try:
            item = first
            while item is not None:
                yield item
                item = await self._before(deadline, anext(merged, None), timer)
        finally:
            timer.close()
            await merged.aclose()

    def _deadline(self) -> float | None:
        if self.request_timeout is None:
            return None
        return asyncio.get_running_loop().time() + self.request_timeout

    async def _before(self, deadline: float | None, awaitable, timer: Deadline | None = None):
        """``await awaitable`` within the request's deadline. The wait is cancelled in this task (never across a
        ``yield``), so the TGI stream under it is closed and TGI stops generating."""
        try:
            if timer is not None:  # perf: one timer for all the waits of a stream (tgi/pipeline/deadline.py)
                return await timer.run(awaitable)
            async with asyncio.timeout_at(deadline):
                return await awaitable
        except TimeoutError:
            raise UpstreamTimeoutError(
                f"the request took longer than {self.request_timeout:g} s (the gateway's --request-timeout)"
            ) from None

    async def _sse(self, plan: Plan, results: AsyncIterator[tuple[int, ChoiceResult]]) -> AsyncIterator[bytes]:
        head = {"id": plan.request_id, "object": "chat.completion.chunk", "created": plan.created, "model": plan.model}
        out = ChunkWriter(head, n=plan.n, include_usage=plan.include_usage)
        prompt_tokens = plan.prompt_tokens
        completion_tokens = 0
        calls = 0  # ops: tool calls started, for the log line and /metrics
        try:
            async for index, result in results:
                lp = {"content": result.logprobs} if plan.logprobs and result.logprobs else None
                deltas = result.deltas
                for j, delta in enumerate(deltas):
                    if delta.tool_calls is not None or delta.function_call is not None:
                        calls += calls_started(delta)
                    yield out.delta(index, delta, lp if j == 0 else None)
                if lp is not None and not deltas:
                    yield out.bare(index, None, lp)
                if result.finish_reason is not None:
                    completion_tokens += result.completion_tokens
                    if result.prompt_tokens is not None:
                        prompt_tokens = result.prompt_tokens
                    yield out.bare(index, result.finish_reason, None)
            if plan.include_usage:
                yield out.usage(usage_of(prompt_tokens, completion_tokens))
        except GatewayError as exc:
            log.warning("request %s: error after the stream started: %s", plan.request_id, exc.message)
            if plan.record is not None:  # ops hook
                plan.record.error_type, plan.record.error_code = exc.error_type, exc.code
            yield b"data: " + DUMPS(exc.to_dict()).encode() + b"\n\n"
        finally:
            await results.aclose()
            if plan.record is not None:  # ops hook
                plan.record.usage(prompt_tokens, completion_tokens, calls)
        yield b"data: [DONE]\n\n"


def new_request_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex
