"""Soak: many requests at high concurrency through the real gateway over the emulator.

A mix of streaming and non-streaming requests, with and without tools, and a share of clients that go away
early (a stream closed after its first content chunk, a plain request abandoned mid-generation). It counts
every answer that is not what the emulator's demo reply must give, samples the gateway's resident memory,
and checks afterwards that TGI has nothing in flight and holds no more connections than the gateway's
keep-alive pool allows.
"""

from __future__ import annotations

import asyncio
import collections
import json
import random
import time
from pathlib import Path

import httpx

from tests.reliability.report import Report
from tests.reliability.stack import CHAT, rss_bytes, running_stack, unexpected_errors

DEMO_TEXT = "Hello! How can I help you today?"
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
KEEPALIVE_POOL = 64  # tgi/protocol/client.py: max_keepalive_connections


def _body(rng: random.Random, stream: bool) -> tuple[dict, bool]:
    tools = rng.random() < 0.35
    body: dict = {"messages": [{"role": "user", "content": f"Weather in city {rng.randrange(10**6)}?"}],
                  "stream": stream}
    if tools:
        body["tools"] = [WEATHER]
    if stream and rng.random() < 0.3:
        body["stream_options"] = {"include_usage": True}
    return body, tools


def _check_plain(data: dict, tools: bool) -> str | None:
    message = data["choices"][0]["message"]
    if tools:
        calls = message.get("tool_calls") or []
        if len(calls) != 1 or calls[0]["function"]["name"] != "get_weather":
            return f"tool call expected: {json.dumps(message)[:200]}"
        json.loads(calls[0]["function"]["arguments"])
    elif message.get("content") != DEMO_TEXT:
        return f"demo text expected: {json.dumps(message)[:200]}"
    return None


def _check_stream(lines: list[str], tools: bool) -> str | None:
    events = [line[6:] for line in lines if line.startswith("data: ")]
    if not events or events[-1] != "[DONE]":
        return "stream without [DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    if any("error" in c for c in chunks):
        return f"error event: {[c for c in chunks if 'error' in c][0]}"
    deltas = [c["choices"][0] for c in chunks if c.get("choices")]
    finish = [d["finish_reason"] for d in deltas if d.get("finish_reason")]
    if finish != ["tool_calls" if tools else "stop"]:
        return f"finish reasons {finish}"
    if tools:
        names = [tc["function"].get("name") for d in deltas for tc in d["delta"].get("tool_calls") or ()]
        if [n for n in names if n] != ["get_weather"]:
            return f"tool call names {names}"
    elif "".join(d["delta"].get("content") or "" for d in deltas) != DEMO_TEXT:
        return "streamed text differs from the demo text"
    return None


async def _one(client: httpx.AsyncClient, rng: random.Random, tally: collections.Counter, report: Report,
               disconnect_share: float) -> None:
    stream = rng.random() < 0.5
    disconnect = rng.random() < disconnect_share
    body, tools = _body(rng, stream)
    kind = ("stream" if stream else "plain") + (" disconnect" if disconnect else "")
    lines: list[str] = []
    try:
        if stream:
            async with client.stream("POST", CHAT, json=body) as response:
                if response.status_code != 200:
                    raw = await response.aread()
                    tally[f"{kind} HTTP {response.status_code}"] += 1
                    report.fail(f"{kind}: HTTP {response.status_code} {raw[:200]!r}")
                    return
                async for line in response.aiter_lines():
                    lines.append(line)
                    first_output = ('"content"' in line and '"content":""' not in line) or '"tool_calls"' in line
                    if disconnect and first_output:
                        tally[kind] += 1
                        return  # leaving the block closes the connection mid-stream
                problem = _check_stream(lines, tools)
        else:
            if disconnect:  # its own connection: an abandoned request must not touch the shared pool's
                async with httpx.AsyncClient(base_url=client.base_url) as own:
                    try:
                        async with asyncio.timeout(rng.uniform(0.001, 0.05)):
                            await own.post(CHAT, json=body)
                    except TimeoutError:
                        pass
                tally[kind] += 1
                return
            response = await client.post(CHAT, json=body)
            if response.status_code != 200:
                tally[f"{kind} HTTP {response.status_code}"] += 1
                report.fail(f"{kind}: HTTP {response.status_code} {response.text[:200]}")
                return
            problem = _check_plain(response.json(), tools)
    except httpx.HTTPError as exc:
        tally[f"{kind} {type(exc).__name__}"] += 1
        got = f" after {len(lines)} lines" if lines else " before the answer"
        report.fail(f"{kind}: {exc!r}{got}")
        return
    tally[kind if problem is None else f"{kind} wrong"] += 1
    if problem is not None:
        report.fail(f"{kind}: {problem}")


async def _drive(base_url: str, *, requests: int, concurrency: int, disconnect_share: float, seed: int,
                 report: Report, on_progress) -> collections.Counter:
    rng = random.Random(seed)
    tally: collections.Counter = collections.Counter()
    # httpx's default 5 s keep-alive, as openai-python has: the gateway keeps idle connections longer than that
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    queue: asyncio.Queue = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)
    done = 0

    async with httpx.AsyncClient(base_url=base_url, timeout=httpx.Timeout(60.0), limits=limits) as client:

        async def worker() -> None:
            nonlocal done
            while True:
                try:
                    queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                await _one(client, random.Random(rng.random()), tally, report, disconnect_share)
                done += 1
                on_progress(done)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return tally


def run_soak(report: Report, *, requests: int, concurrency: int, disconnect_share: float = 0.05,
             seed: int = 1234, emulator_concurrency: int | None = None, token_delay: float = 0.05,
             grammar: str | None = None) -> None:
    """``requests`` requests, ``concurrency`` at a time; fills the report's cases, failures and figures.

    TGI (the emulator) admits twice ``concurrency`` by default: when it admits exactly as many as the clients
    send, the close of an abandoned stream races the next request and TGI answers an honest 429 now and then
    (a capacity effect, not a leak; a leak shows as requests still in flight afterwards)."""
    emulator_concurrency = emulator_concurrency or 2 * concurrency
    with running_stack(token_delay=token_delay, max_concurrent_requests=emulator_concurrency,
                       grammar=grammar) as stack:
        pid = stack.gateway.process.pid
        samples: list[tuple[int, int]] = [(0, rss_bytes(pid))]
        step = max(requests // 20, 1)

        def on_progress(done: int) -> None:
            if done % step == 0:
                samples.append((done, rss_bytes(pid)))

        started = time.monotonic()
        tally = asyncio.run(_drive(stack.url, requests=requests, concurrency=concurrency,
                                   disconnect_share=disconnect_share, seed=seed, report=report,
                                   on_progress=on_progress))
        elapsed = time.monotonic() - started
        state = stack.tgi.wait_state(lambda s: s["in_flight"] == 0, timeout=5)
        time.sleep(2.0)  # the load generator's connections finish closing
        fds = len(list(Path(f"/proc/{pid}/fd").iterdir()))
        logs = stack.gateway.logs()
    report.cases += requests
    unexpected = unexpected_errors(logs) + [line for line in logs.splitlines() if "Exception in ASGI" in line]
    if unexpected:
        report.fail(f"gateway logged {len(unexpected)} unexpected errors, first: {unexpected[0]}")
    if state["in_flight"] != 0:
        report.fail(f"TGI still has {state['in_flight']} requests in flight after the soak")
    if state["connections"] > KEEPALIVE_POOL:
        report.fail(f"gateway holds {state['connections']} TGI connections, more than its keep-alive pool of {KEEPALIVE_POOL}")
    # memory: from the first 20% (warm: pools, caches, tokenizer pieces) to the end
    warm = next(rss for done, rss in samples if done >= requests * 0.2)
    end = samples[-1][1]
    growth = (end - warm) / warm
    if growth > 0.10:
        report.fail(f"gateway RSS grew {growth:.1%} after warm-up ({warm >> 20} MiB -> {end >> 20} MiB)")
    report.figures.update({
        "requests": requests, "concurrency": concurrency, "TGI max_concurrent_requests": emulator_concurrency,
        "seconds": round(elapsed, 1),
        "requests/s": round(requests / elapsed, 1), "outcomes": dict(sorted(tally.items())),
        # cancelled upstream: client disconnects
        "TGI generations": state["requests"], "TGI generations cancelled": state["cancelled"],
        "TGI in flight after": state["in_flight"], "TGI connections held after": state["connections"],
        "gateway open fds after": fds,
        "gateway RSS MiB (start, 20%, end)": (samples[0][1] >> 20, warm >> 20, end >> 20),
        "RSS growth after warm-up": f"{growth:+.1%}",
        "gateway RSS MiB every 5%": [rss >> 20 for _, rss in samples],
    })
