"""The HTTP client to TGI, side by side: CPU of this process per streamed request and per token, for the same
``/generate_stream`` answers from the emulator, read with httpx (the client before), aiohttp, and the lean
asyncio + httptools pool the gateway uses now (``tgi.protocol.http1``). Every variant decodes the SSE events
(``SSEDecoder``) and each event (msgspec), so only the HTTP layer differs.

    python bench/client_cpu.py [--n 200] [--rounds 3]

CPU time (``time.process_time``) of the client process only; the variants run interleaved, best of ``rounds``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from bench import workload  # noqa: E402
from tgi.protocol.client import TGIClient, _parse_event  # noqa: E402
from tgi.protocol.sse import SSEDecoder  # noqa: E402

BODY = {"inputs": "Hi", "parameters": {"max_new_tokens": 2000, "details": True}}


async def via_lean(url: str, n: int) -> None:
    async with TGIClient(url) as client:
        for _ in range(n):
            async with contextlib.aclosing(client.generate_stream(BODY)) as events:
                async for _event in events:
                    pass


async def via_httpx(url: str, n: int) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=url) as client:
        for _ in range(n):
            async with client.stream("POST", "/generate_stream", json=BODY) as response:
                decoder = SSEDecoder()
                async for chunk in response.aiter_bytes():
                    for sse in decoder.feed(chunk):
                        _parse_event(sse.data)


async def via_aiohttp(url: str, n: int) -> None:
    import aiohttp

    async with aiohttp.ClientSession(url) as session:
        for _ in range(n):
            async with session.post("/generate_stream", json=BODY) as response:
                decoder = SSEDecoder()
                async for chunk in response.content.iter_any():
                    for sse in decoder.feed(chunk):
                        _parse_event(sse.data)


VARIANTS = {"httpx": via_httpx, "aiohttp": via_aiohttp, "lean": via_lean}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--token-delay", type=float, default=0.0, help="emulator seconds per token (0: instant)")
    args = p.parse_args()
    from tests.support.emulator_proc import start_emulator

    try:
        import uvloop
        run = uvloop.run
    except ImportError:
        run = asyncio.run
    results: dict = {}
    with start_emulator(max_total_tokens=40000, max_input_tokens=20000) as emulator:
        if args.token_delay:
            emulator.faults(token_delay=args.token_delay)
        for tokens, reply in ((57, workload.TOOL_REPLY), (1000, workload.long_reply(1000))):
            n = args.n if tokens < 100 else max(args.n // 10, 10)
            for _ in range(args.rounds):
                for name, fn in VARIANTS.items():
                    emulator.control("DELETE", "/emulator/script")
                    batch = max(1, min(500, 1_500_000 // (len(reply.encode()) + 20)))
                    for _start in range(0, n + 5, batch):
                        emulator.script([{"text": reply}] * batch)
                    run(fn(emulator.base_url, 2))
                    t0 = time.process_time()
                    run(fn(emulator.base_url, n))
                    cpu = (time.process_time() - t0) / n * 1e3
                    key = (name, tokens)
                    results[key] = min(results.get(key, float("inf")), cpu)
    for name in VARIANTS:
        short, long = results[(name, 57)], results[(name, 1000)]
        print(f"{name:8s} {short:6.3f} ms CPU per 57-token stream, {long:7.3f} ms per 1000-token stream, "
              f"{(long - short) / (1000 - 57) * 1e3:5.1f} us per token")
    return 0


if __name__ == "__main__":
    sys.exit(main())
