"""In-process costs of the gateway's own code, without sockets: what one request and one token cost in each
stage of the pipeline (STYLE 7), and whether parsing stays linear (1k vs 16k tokens).

The TGI events are the exact bytes the emulator writes (``data: {compact json}\\n\\n``, one HTTP chunk each);
every stage is the project's real code: ``tgi.protocol.sse.SSEDecoder``, ``tgi.protocol.client._parse_event``,
``functionary.stops.StopTrimmer``, the template's stream parser, ``functionary.assemble.DeltaAssembler`` and
the chunk encoder of ``tgi.pipeline.chat`` (``_delta_chunk``).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from bench import workload
from functionary.assemble import DeltaAssembler, build_message
from functionary.openai_types import ChatCompletionRequest
from functionary.stops import StopTrimmer
from functionary.templates import get_template
from tgi.pipeline import chat as chat_module
from tgi.pipeline.chunks import ChunkWriter
from tgi.protocol.client import _parse_event
from tgi.emulator.replies import tokens_from_text
from tgi.pipeline.params import Limits
from tgi.api.runtime import token_counter
from tgi.protocol.sse import SSEDecoder
from tests.support.model_fixture import make_model_dir


def cycled(events: list[bytes], tokens: int) -> list[bytes]:
    """``tokens`` events made of the same middle events over and over, then the final one: a long answer with
    the working set of a short one, so that the 1k/16k ratio measures the code, not the CPU caches."""
    middle, final = events[:-1], events[-1]
    return [middle[i % len(middle)] for i in range(tokens - 1)] + [final]


def tgi_events(reply: str) -> list[bytes]:
    """The ``/generate_stream`` events for ``reply`` as the emulator writes them."""
    tokens = tokens_from_text(reply, {workload.EOS})
    out = []
    for i, token in enumerate(tokens):
        event = {"index": i + 1, "token": token.as_dict(), "generated_text": None, "details": None}
        if i == len(tokens) - 1:
            event["generated_text"] = "".join(t.text for t in tokens if not t.special)
            event["details"] = {"finish_reason": "eos_token", "generated_tokens": len(tokens), "seed": None,
                                "input_length": 100}
        out.append(b"data: " + json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n")
    return out


def _best(fn, repeat: int) -> float:
    """Best of ``repeat`` runs, CPU seconds of this process (time spent descheduled on a shared machine does not
    count; the best run is the least disturbed one)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best


def _stream_pipeline(template, prepared, stops, chunks: list[bytes]) -> int:
    decoder, trimmer = SSEDecoder(), StopTrimmer(stops)
    parser, assembler = template.stream_parser(prepared), DeltaAssembler(prepared)
    writer = ChunkWriter({"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "m"}, n=1,
                         include_usage=False)
    n = 0
    for chunk in chunks:
        for sse in decoder.feed(chunk):
            event = _parse_event(sse.data)
            text = trimmer.feed(event.token.text)
            deltas = assembler.deltas(parser.feed(text)) if text else []
            if event.is_final:
                deltas += assembler.deltas(parser.feed(trimmer.finish()))
                deltas += assembler.deltas(parser.finish())
            for delta in deltas:
                n += len(writer.delta(0, delta, None))
    return n


def _complete_pipeline(template, prepared, stops, chunks: list[bytes]) -> dict:
    decoder, trimmer = SSEDecoder(), StopTrimmer(stops)
    parts = []
    for chunk in chunks:
        for sse in decoder.feed(chunk):
            parts.append(trimmer.feed(_parse_event(sse.data).token.text))
    parts.append(trimmer.finish())
    parsed = template.parse("".join(parts), prepared)
    return build_message(parsed, prepared).model_dump(exclude_none=True)


def _stages(template, prepared, stops, chunks: list[bytes], repeat: int) -> dict:
    """Per-token microseconds of each streaming stage, each timed alone over the same input."""
    n = len(chunks)
    datas = [e.data for c in chunks for e in SSEDecoder().feed(c)]
    events = [_parse_event(d) for d in datas]
    texts = [e.token.text for e in events]
    parser_events = []
    p = template.stream_parser(prepared)
    for t in texts:
        parser_events.append(p.feed(t))
    deltas = []
    a = DeltaAssembler(prepared)
    for evs in parser_events:
        deltas.extend(a.deltas(evs))
    def sse():
        d = SSEDecoder()
        for c in chunks:
            d.feed(c)

    def validate():
        for d in datas:
            _parse_event(d)

    def trim():
        tr = StopTrimmer(stops)
        for t in texts:
            tr.feed(t)

    def parse():
        pr = template.stream_parser(prepared)
        for t in texts:
            pr.feed(t)

    def assemble():
        asm = DeltaAssembler(prepared)
        for evs in parser_events:
            asm.deltas(evs)

    def encode():
        writer = ChunkWriter({}, n=1, include_usage=False)
        for delta in deltas:
            writer.delta(0, delta, None)

    return {name: _best(fn, repeat) / n * 1e6 for name, fn in
            (("SSE decode", sse), ("event validation", validate), ("stop trimming", trim),
             ("template parser", parse), ("delta assembly", assemble), ("chunk encoding", encode))}


def measure(*, quick: bool = False) -> dict:
    repeat = 5 if quick else 20
    template = get_template(workload.TEMPLATE)
    with tempfile.TemporaryDirectory() as tmp:
        specials = tuple(dict.fromkeys((*template.special_tokens, *template.stop_tokens, *template.eos_tokens)))
        counter = token_counter(make_model_dir(Path(tmp) / "model", special_tokens=specials))
    service = chat_module.ChatService(template=template, pool=None, limits=Limits(40000, 20000),
                                      model_name="functionary", count_tokens=counter)
    out: dict = {}

    # one request: JSON body -> validated request -> plan (checks, prepare, render, token count, parameters)
    for name, body in (("tool call", workload.tool_request(stream=False)),
                       ("plain chat", workload.chat_request(stream=False))):
        raw = workload.encode(body)

        def plan(raw=raw):
            for _ in range(50):
                req = ChatCompletionRequest.model_validate(json.loads(raw))
                service.plan(req, request_id="chatcmpl-x")

        plan()
        out[f"plan_us ({name})"] = _best(plan, repeat) / 50 * 1e6

    prepared = service.plan(ChatCompletionRequest.model_validate(workload.chat_request(stream=True)),
                            request_id="x")
    stops = prepared.stops
    small = tgi_events(workload.long_reply(1000))
    large = cycled(small, 16000)  # the final event's generated_text stays that of 1k tokens (one event)
    for label, fn in (("stream", _stream_pipeline), ("complete", _complete_pipeline)):
        t1 = t16 = float("inf")
        for _ in range(max(repeat // 2, 3)):  # alternated, best of each: a busy moment hits both sizes alike
            t1 = min(t1, _best(lambda: fn(template, prepared.prepared, stops, small), 2))
            t16 = min(t16, _best(lambda: fn(template, prepared.prepared, stops, large), 1))
        out[f"{label}_1k_ms"] = t1 * 1e3
        out[f"{label}_16k_ms"] = t16 * 1e3
        out[f"{label}_ratio"] = t16 / t1
        out[f"{label}_us_per_token"] = t1 / len(small) * 1e6
    tool_plan = service.plan(ChatCompletionRequest.model_validate(workload.tool_request(stream=True)),
                             request_id="x")
    out["stages_us_per_token (1k text)"] = _stages(template, prepared.prepared, stops, small, repeat)
    out["stages_us_per_token (tool reply)"] = _stages(template, tool_plan.prepared, tool_plan.stops,
                                                      tgi_events(workload.TOOL_REPLY), repeat * 20)
    return out


if __name__ == "__main__":
    import sys

    sys.path[:0] = [str(Path(__file__).resolve().parents[1])]
    print(json.dumps(measure(quick="--quick" in sys.argv), indent=1))
