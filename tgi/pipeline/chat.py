"""Chat completions over TGI: the composed pipeline (STYLE 7)

    TGI stream events -> stop trimming -> template parser -> OpenAI deltas -> chunks -> SSE bytes

``plan()`` does everything that can fail before TGI is called (request checks, rendering, the
context-length check, parameter mapping); ``complete()`` and ``stream()`` run the plan.
"""

from __future__ import annotations

import asyncio
import json
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
from functionary.templates.base import ParsedOutput, PreparedRequest, PromptTemplate
from tgi.protocol.errors import UpstreamError, UpstreamGenerationError, UpstreamTimeoutError
from tgi.pipeline.deadline import Deadline
from tgi.pipeline.grammar import GrammarPlan, GrammarSupport, plan_grammar
from tgi.pipeline.guided import GuidedGeneration
from tgi.ops.metrics import RequestRecord
from tgi.pipeline.params import Limits, check_supported, generate_parameters, max_new_tokens, user_stops
from tgi.cluster.pool import lost_endpoint
from tgi.protocol.types import GenerateParameters, GenerateRequest

log = logging.getLogger("gateway.chat")

_DUMPS = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_json_str = json.encoder.encode_basestring  # what _DUMPS writes for a str (C speed-up when available)


@dataclass(frozen=True, slots=True)
class Plan:
    request_id: str
    model: str
    created: int
    prepared: PreparedRequest
    prompt: str
    prompt_tokens: int  # local estimate; TGI's input_length wins when it reports one
    parameters: GenerateParameters
    stops: tuple[str, ...]  # everything trimmed from the output: template stops, EOS, user stops
    n: int
    logprobs: bool
    include_usage: bool
    record: RequestRecord | None = None  # ops: filled for the log line and /metrics (tgi/ops/metrics.py)
    grammar: GrammarPlan | None = None  # what TGI grammars constrain (tgi/pipeline/grammar.py); None: one plain generation


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
    ) -> None:
        self.template = template
        self.grammar = grammar if grammar is not None else GrammarSupport("off")
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
        check_supported(request)
        stops = user_stops(request)
        prepared = prepare_request(request)
        self.template.check(prepared)
        prompt = self.template.render(prepared)
        prompt_tokens = self.count_tokens(prompt)
        new_tokens = max_new_tokens(request, prompt_tokens=prompt_tokens, limits=self.limits)
        tgi_stops = list(dict.fromkeys([*self._tgi_stops, *stops]))
        parameters = generate_parameters(request, new_tokens=new_tokens, stops=tgi_stops, limits=self.limits)
        return Plan(
            request_id=request_id,
            model=request.model or self.model_name,
            created=int(time.time()),
            prepared=prepared,
            prompt=prompt,
            prompt_tokens=prompt_tokens,
            parameters=parameters,
            stops=tuple(dict.fromkeys([*self._trim, *stops])),
            n=request.n or 1,
            logprobs=bool(request.logprobs),
            include_usage=bool(request.stream_options and request.stream_options.include_usage),
            record=record,
            grammar=plan_grammar(prepared=prepared, response_format=request.response_format, template=self.template,
                                 support=self.grammar),
        )

    def _body(self, plan: Plan, index: int) -> GenerateRequest:
        params = plan.parameters
        if index and params.do_sample and params.seed is not None:
            params = params.model_copy(update={"seed": (params.seed + index) % (2**64)})
        return GenerateRequest(inputs=plan.prompt, parameters=params)

    # -- one choice -------------------------------------------------------------------------

    async def _choice(self, plan: Plan, index: int) -> AsyncIterator[ChoiceResult]:
        """Yields one ChoiceResult per TGI event that produced something, the last one carrying
        the finish reason and token counts."""
        if plan.grammar is not None:
            async with aclosing(self._guided_choice(plan, index)) as results:
                async for out in results:
                    yield out
            return
        parser = self.template.stream_parser(plan.prepared)
        assembler = DeltaAssembler(plan.prepared)
        trimmer = StopTrimmer(plan.stops)
        async with aclosing(self.pool.generate_stream(self._body(plan, index), record=plan.record)) as events:
            async for event in events:
                out = ChoiceResult()
                text = trimmer.feed(_model_text(event))
                if text:
                    out.deltas = assembler.deltas(parser.feed(text))
                if plan.logprobs and not (event.token.special and event.details is not None):
                    out.logprobs.append(_token_logprob(event))
                details = event.details
                if details is not None or event.generated_text is not None:
                    tail = trimmer.finish()
                    if tail:
                        out.deltas += assembler.deltas(parser.feed(tail))
                    out.deltas += assembler.deltas(parser.finish())
                    reason = details.finish_reason if details is not None else "eos_token"
                    out.finish_reason = finish_reason(
                        has_calls=assembler.has_calls, prepared=plan.prepared, stopped_on_length=reason == "length"
                    )
                    out.completion_tokens = details.generated_tokens if details is not None else event.index
                    out.prompt_tokens = getattr(details, "input_length", None)
                    yield out
                    return
                if out.deltas or out.logprobs:
                    yield out
        raise UpstreamGenerationError(
            "TGI ended the stream without a final event", code="incomplete_generation_stream"
        )

    # -- non-streaming ----------------------------------------------------------------------

    async def complete(self, plan: Plan) -> dict:
        gathered = asyncio.gather(*(self._collect_retried(plan, i) for i in range(plan.n)))
        results = await self._before(self._deadline(), gathered)
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
            "usage": _usage(prompt_tokens, completion_tokens),
            "system_fingerprint": None,
        }

    async def _collect_retried(self, plan: Plan, index: int):
        """pool: the client sees nothing before the end, so a choice whose endpoint was lost midway (which the
        pool could not retry: a guided segment) is run once more; the pool routes around the lost endpoint."""
        try:
            return await self._collect(plan, index)
        except UpstreamError as exc:
            if not lost_endpoint(exc):
                raise
            return await self._collect(plan, index)

    async def _collect(self, plan: Plan, index: int):
        # The complete answer is the full parse of the same text the stream would carry: the
        # parsers guarantee that both agree.
        if plan.grammar is not None:
            return await self._guided_collect(plan, index)
        trimmer = StopTrimmer(plan.stops)
        parts: list[str] = []
        logprobs: list[dict] = []
        final = None
        # buffered: the client sees nothing before the end, so the pool may retry a dead endpoint mid-generation
        stream = self.pool.generate_stream(self._body(plan, index), record=plan.record, buffered=True)
        async with aclosing(stream) as events:
            async for event in events:
                parts.append(trimmer.feed(_model_text(event)))
                if plan.logprobs and not (event.token.special and event.details is not None):
                    logprobs.append(_token_logprob(event))
                if event.details is not None or event.generated_text is not None:
                    final = event
                    break
        if final is None:
            raise UpstreamGenerationError(
                "TGI ended the stream without a final event", code="incomplete_generation_stream"
            )
        parts.append(trimmer.finish())
        parsed = self.template.parse("".join(parts), plan.prepared)
        message = build_message(parsed, plan.prepared).model_dump(exclude_none=True)
        message.setdefault("content", None)
        details = final.details
        tgi_reason = details.finish_reason if details is not None else "eos_token"
        reason = finish_reason(
            has_calls=bool(parsed.tool_calls), prepared=plan.prepared, stopped_on_length=tgi_reason == "length"
        )
        completion_tokens = details.generated_tokens if details is not None else final.index
        return message, reason, logprobs, getattr(details, "input_length", None), completion_tokens

    # -- guided by grammars (tgi/pipeline/guided.py): the same results from several TGI generations ----

    def _guided(self, plan: Plan, index: int, *, buffered: bool) -> GuidedGeneration:
        return GuidedGeneration(
            plan=plan.grammar, template=self.template, prepared=plan.prepared, prompt=plan.prompt,
            parameters=self._body(plan, index).parameters, stops=plan.stops, pool=self.pool, support=self.grammar,
            limits=self.limits, count_tokens=self.count_tokens, record=plan.record, buffered=buffered,
        )

    async def _guided_choice(self, plan: Plan, index: int) -> AsyncIterator[ChoiceResult]:
        assembler = DeltaAssembler(plan.prepared)
        async with aclosing(self._guided(plan, index, buffered=False).steps()) as steps:
            async for step in steps:
                out = ChoiceResult(deltas=assembler.deltas(step.events) if step.events else [])
                event = step.token
                if plan.logprobs and event is not None and not (event.token.special and event.details is not None):
                    out.logprobs.append(_token_logprob(event))
                if step.done:
                    out.finish_reason = finish_reason(
                        has_calls=assembler.has_calls, prepared=plan.prepared,
                        stopped_on_length=step.finish_reason == "length",
                    )
                    out.prompt_tokens, out.completion_tokens = step.prompt_tokens, step.completion_tokens
                    yield out
                    return
                if out.deltas or out.logprobs:
                    yield out

    async def _guided_collect(self, plan: Plan, index: int):
        events: list = []
        logprobs: list[dict] = []
        last = None
        async with aclosing(self._guided(plan, index, buffered=True).steps()) as steps:
            async for step in steps:
                events += step.events
                event = step.token
                if plan.logprobs and event is not None and not (event.token.special and event.details is not None):
                    logprobs.append(_token_logprob(event))
                last = step
        parsed = ParsedOutput.from_events(events)
        message = build_message(parsed, plan.prepared).model_dump(exclude_none=True)
        message.setdefault("content", None)
        reason = finish_reason(
            has_calls=bool(parsed.tool_calls), prepared=plan.prepared, stopped_on_length=last.finish_reason == "length"
        )
        return message, reason, logprobs, last.prompt_tokens, last.completion_tokens

    # -- streaming --------------------------------------------------------------------------

    async def stream(self, plan: Plan) -> AsyncIterator[bytes]:
        """SSE bytes. The first TGI event is awaited before the first byte is produced, so an error
        before generation starts surfaces as an exception (an HTTP error), not as a stream."""
        deadline = self._deadline()
        for attempt in (0, 1):
            sources = [self._choice(plan, i) for i in range(plan.n)]
            merged = _merge(sources) if plan.n > 1 else _tag(sources[0], 0)
            try:
                first = await self._before(deadline, merged.__anext__())
                break
            except UpstreamError as exc:
                # pool: TGI tokens came but no output was made from them when the endpoint was lost; the
                # client has seen nothing, so start over once (the pool routes around the lost endpoint)
                await merged.aclose()
                if attempt or not lost_endpoint(exc):
                    raise
        return self._sse(plan, merged, first, deadline)

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

    async def _sse(self, plan: Plan, merged, first, deadline: float | None = None) -> AsyncIterator[bytes]:
        head = {"id": plan.request_id, "object": "chat.completion.chunk", "created": plan.created, "model": plan.model}
        prefix = _DUMPS(head)[:-1].encode() + b',"system_fingerprint":null,"choices":['
        prompt_tokens = plan.prompt_tokens
        completion_tokens = 0
        calls = 0  # ops: tool calls started, for the log line and /metrics
        timer = Deadline(deadline)
        try:
            for i in range(plan.n):
                yield _chunk(prefix, i, {"role": "assistant", "content": ""}, None, None)
            item = first
            while item is not None:
                index, result = item
                lp = {"content": result.logprobs} if plan.logprobs and result.logprobs else None
                deltas = result.deltas
                for j, delta in enumerate(deltas):
                    if delta.tool_calls is not None or delta.function_call is not None:
                        calls += _calls_started(delta)
                    yield _delta_chunk(prefix, index, delta, lp if j == 0 else None)
                if lp is not None and not deltas:
                    yield _chunk(prefix, index, {}, None, lp)
                if result.finish_reason is not None:
                    completion_tokens += result.completion_tokens
                    if result.prompt_tokens is not None:
                        prompt_tokens = result.prompt_tokens
                    yield _chunk(prefix, index, {}, result.finish_reason, None)
                item = await self._before(deadline, anext(merged, None), timer)
            if plan.include_usage:
                usage = _usage(prompt_tokens, completion_tokens)
                yield b"data: " + prefix + b'],"usage":' + _DUMPS(usage).encode() + b"}\n\n"
        except GatewayError as exc:
            log.warning("request %s: error after the stream started: %s", plan.request_id, exc.message)
            if plan.record is not None:  # ops hook
                plan.record.error_type, plan.record.error_code = exc.error_type, exc.code
            yield b"data: " + _DUMPS(exc.to_dict()).encode() + b"\n\n"
        finally:
            timer.close()
            await merged.aclose()
            if plan.record is not None:  # ops hook
                plan.record.usage(prompt_tokens, completion_tokens, calls)
        yield b"data: [DONE]\n\n"


def _model_text(event) -> str:
    """The text an event adds to the model's output: a final special token that ended generation
    as the EOS is dropped whatever its text (the model's EOS may be one the template never names)."""
    token = event.token
    if token.special and event.details is not None and event.details.finish_reason == "eos_token":
        return ""
    return token.text


def new_request_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex


def _calls_started(delta: Delta) -> int:
    if delta.function_call is not None:
        return delta.function_call.name is not None
    return sum(call.id is not None for call in delta.tool_calls)


def _usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _token_logprob(event) -> dict:
    token = event.token
    logprob = token.logprob if token.logprob is not None else 0.0
    top = [
        {"token": t.text, "logprob": t.logprob if t.logprob is not None else 0.0, "bytes": list(t.text.encode())}
        for t in (event.top_tokens or ())
    ]
    return {"token": token.text, "logprob": logprob, "bytes": list(token.text.encode()), "top_logprobs": top}


def _delta_dict(delta: Delta) -> dict:
    out: dict = {}
    if delta.content is not None:
        out["content"] = delta.content
    if delta.tool_calls is not None:
        calls = []
        for call in delta.tool_calls:
            c: dict = {"index": call.index}
            if call.id is not None:
                c["id"] = call.id
                c["type"] = "function"
            fn: dict = {}
            if call.function.name is not None:
                fn["name"] = call.function.name
            fn["arguments"] = call.function.arguments or ""
            c["function"] = fn
            calls.append(c)
        out["tool_calls"] = calls
    if delta.function_call is not None:
        fc: dict = {}
        if delta.function_call.name is not None:
            fc["name"] = delta.function_call.name
        fc["arguments"] = delta.function_call.arguments or ""
        out["function_call"] = fc
    return out


def _delta_chunk(prefix: bytes, index: int, delta: Delta, logprobs: dict | None) -> bytes:
    """``_chunk(prefix, index, _delta_dict(delta), None, logprobs)``, byte for byte. The delta of nearly every
    token (text, or more arguments of the current call) is written without building and encoding dicts, which
    cost a tenth of a streamed token (bench/RESULTS.md)."""
    if logprobs is None and delta.function_call is None:
        calls = delta.tool_calls
        if calls is None and delta.content is not None:
            return b'data: %s{"index":%d,"delta":{"content":%s},"logprobs":null,"finish_reason":null}]}\n\n' % (
                prefix, index, _json_str(delta.content).encode())
        if delta.content is None and calls is not None and len(calls) == 1:
            call = calls[0]
            if call.id is None and call.function.name is None:
                return (b'data: %s{"index":%d,"delta":{"tool_calls":[{"index":%d,"function":{"arguments":%s}}]},'
                        b'"logprobs":null,"finish_reason":null}]}\n\n'
                        % (prefix, index, call.index, _json_str(call.function.arguments or "").encode()))
    return _chunk(prefix, index, _delta_dict(delta), None, logprobs)


def _chunk(prefix: bytes, index: int, delta: dict, finish: str | None, logprobs: dict | None) -> bytes:
    choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
    return b"data: " + prefix + _DUMPS(choice).encode() + b"]}\n\n"


async def _tag(source: AsyncIterator[ChoiceResult], index: int) -> AsyncIterator[tuple[int, ChoiceResult]]:
    async with aclosing(source):
        async for item in source:
            yield index, item


async def _merge(sources: list[AsyncIterator[ChoiceResult]]) -> AsyncIterator[tuple[int, ChoiceResult]]:
    """Interleaves n choices as their events arrive; the first failure cancels the others."""
    queue: asyncio.Queue = asyncio.Queue()
    done = object()

    async def pump(i: int, source: AsyncIterator[ChoiceResult]) -> None:
        try:
            async with aclosing(source):
                async for item in source:
                    await queue.put((i, item))
            await queue.put(done)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            await queue.put(exc)

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(sources)]
    remaining = len(tasks)
    try:
        while remaining:
            item = await queue.get()
            if item is done:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
