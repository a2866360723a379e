"""Does a maximum-size body stall the other requests? A one-word chat's latency alone and beside large bodies.

    python -m bench.big_body [--requests 40] [--json]

Over the gateway (template ``v3.llama3``, the tiny test tokenizer) and the TGI emulator, the one-word chat is timed
(p50 / max) three ways: alone; while a client sends, one after another, bodies just under ``--max-body-bytes``
(8 MiB) whose prompt is hopeless (refused from its byte size, never tokenized); and while a client sends ~300 kB
prompts that pass the size bound and must be tokenized (on a worker thread) before they are refused as too long.
The ratio beside the big bodies / alone is the figure of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from bench.procs import running

CHAT = "/v1/chat/completions"
ONE_WORD = {"model": "functionary", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def _big(content_bytes: int) -> bytes:
    text = "Weather in Istanbul is sunny, " * (content_bytes // 30)
    return json.dumps({"model": "functionary", "messages": [{"role": "user", "content": text}]}).encode()


def _timed(client: httpx.Client, n: int) -> list[float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        r = client.post(CHAT, json=ONE_WORD)
        out.append((time.perf_counter() - started) * 1000)
        assert r.status_code == 200, r.text
    return out


def _beside(url: str, body: bytes, n: int) -> tuple[list[float], int, float]:
    """One-word latencies while another client keeps sending ``body``; (latencies, big bodies sent, their mean s)."""
    stop = threading.Event()
    big_times: list[float] = []

    def pound() -> None:
        with httpx.Client(base_url=url, timeout=120) as big:
            while not stop.is_set():
                started = time.perf_counter()
                r = big.post(CHAT, content=body, headers={"content-type": "application/json"})
                big_times.append(time.perf_counter() - started)
                assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded", r.text

    thread = threading.Thread(target=pound, daemon=True)
    thread.start()
    time.sleep(0.3)  # the first big body is on its way
    with httpx.Client(base_url=url, timeout=120) as client:
        latencies = _timed(client, n)
    stop.set()
    thread.join()
    return latencies, len(big_times), statistics.mean(big_times) if big_times else 0.0


def measure(requests: int = 40) -> dict:
    with tempfile.TemporaryDirectory() as tmp, running(template="v3.llama3", workdir=Path(tmp), emulator_cpus=None,
                                                       gateway_cpus=None) as (emulator, gateway, _):
        emulator.faults(demo=True)
        with httpx.Client(base_url=gateway.base_url, timeout=60) as client:
            _timed(client, 5)  # warm-up
            alone = _timed(client, requests)
        hopeless, n_hopeless, t_hopeless = _beside(gateway.base_url, _big(8 * 1024 * 1024 - 4096), requests)
        long, n_long, t_long = _beside(gateway.base_url, _big(300_000), requests)
    p50 = statistics.median(alone)
    return {
        "one-word chat alone p50 ms": round(p50, 2), "alone max ms": round(max(alone), 2),
        "beside 8 MiB hopeless bodies p50 ms": round(statistics.median(hopeless), 2),
        "beside 8 MiB max ms": round(max(hopeless), 2), "8 MiB bodies sent": n_hopeless,
        "8 MiB body answered in s (mean)": round(t_hopeless, 3),
        "ratio p50 beside 8 MiB / alone": round(statistics.median(hopeless) / p50, 2),
        "beside 300 kB tokenized prompts p50 ms": round(statistics.median(long), 2),
        "beside 300 kB max ms": round(max(long), 2), "300 kB bodies sent": n_long,
        "300 kB body answered in s (mean)": round(t_long, 3),
        "ratio p50 beside 300 kB / alone": round(statistics.median(long) / p50, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.big_body", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = measure(args.requests)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key:40} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
