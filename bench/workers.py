"""Throughput by ``--workers`` count: the bench's non-streamed tool call, closed loop, through a gateway with 1
and with 2 workers over one emulator, interleaved (1, 2, 1, 2 ...) so that a noisy machine hurts both alike.

    python bench/workers.py                      # workers 1 and 2, c=64, 3 rounds of 6 s
    python bench/workers.py --workers 1,2,4 --concurrency 128 --seconds 10 --rounds 2

Prints requests per second and the gateway's CPU seconds per request (supervisor and workers together) for
each count. On a machine with fewer free cores than workers + emulator + load generator, the extra worker
can only show what the cores left over allow: read the CPU column with it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from bench import workload  # noqa: E402
from bench.loadgen import Target, run_closed_loop  # noqa: E402
from bench.procs import cpu_seconds  # noqa: E402
from functionary.templates import get_template  # noqa: E402
from tests.support.model_fixture import make_model_dir  # noqa: E402
from tests.support.gateway_proc import start_gateway  # noqa: E402
from tests.support.emulator_proc import start_emulator  # noqa: E402

TEMPLATE = "v3.llama3"


def tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and its children (the workers)."""
    total = cpu_seconds(pid)
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            children = [int(c) for c in fh.read().split()]
    except OSError:
        children = []
    for child in children:
        try:
            total += cpu_seconds(child)
        except OSError:
            pass
    return total


async def measure_once(port: int, pid: int, *, concurrency: int, seconds: float) -> tuple[float, float, int]:
    target = Target("127.0.0.1", port, "/v1/chat/completions", workload.encode(workload.tool_request(stream=False)))
    cpu0 = tree_cpu(pid)
    samples, rate = await run_closed_loop(target, concurrency=concurrency, duration=seconds, min_each=3)
    cpu = tree_cpu(pid) - cpu0
    errors = sum(s.status != 200 for s in samples)
    return rate, cpu / max(len(samples), 1), errors


def measure(*, counts: tuple[int, ...] = (1, 2), concurrency: int = 64, seconds: float = 6.0,
            rounds: int = 3) -> dict:
    """Per worker count: req/s (median of the rounds), every round's rate, gateway CPU ms a request, errors."""
    spec = get_template(TEMPLATE)
    specials = tuple(dict.fromkeys((*spec.special_tokens, *spec.stop_tokens, *spec.eos_tokens)))
    results: dict[int, list[tuple[float, float, int]]] = {n: [] for n in counts}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp, \
            start_emulator(max_total_tokens=40000, max_input_tokens=20000, max_concurrent_requests=4096,
                           demo=True) as emulator:
        model_dir = make_model_dir(Path(tmp) / "model", special_tokens=specials)
        base = ["--model", str(model_dir), "--endpoint", emulator.base_url, "--prompt-template", TEMPLATE,
                "--no-launch", "--served-model-name", "functionary", "--grammar", "off", "--log-level", "warning"]
        for _ in range(rounds):
            for n in counts:  # interleaved: 1, 2, 1, 2 ...
                with start_gateway([*base, "--workers", str(n)]) as gw:
                    time.sleep(1.0 + 0.5 * n)  # every worker listening (the first /health may come from one)
                    asyncio.run(measure_once(gw.port, gw.process.pid, concurrency=concurrency, seconds=1.0))
                    results[n].append(asyncio.run(measure_once(gw.port, gw.process.pid, concurrency=concurrency,
                                                               seconds=seconds)))
    rows = []
    for n in counts:
        rates = sorted(r for r, _, _ in results[n])
        cpu = sorted(c for _, c, _ in results[n])
        rows.append({"workers": n, "rps": rates[len(rates) // 2], "rounds": rates,
                     "cpu_ms": cpu[len(cpu) // 2] * 1e3, "errors": sum(e for _, _, e in results[n])})
    return {"concurrency": concurrency, "seconds": seconds, "cores": os.cpu_count(), "rows": rows,
            "load": [load_before, os.getloadavg()[0]]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    out = measure(counts=tuple(int(c) for c in args.workers.split(",")), concurrency=args.concurrency,
                  seconds=args.seconds, rounds=args.rounds)
    print(f"cores: {out['cores']}, load average {out['load'][0]:.1f} -> {out['load'][1]:.1f}; "
          f"c={out['concurrency']}, {args.rounds} x {args.seconds:g} s per count")
    print("workers | req/s (median) | rounds            | gateway CPU ms/request | errors")
    for row in out["rows"]:
        print(f"{row['workers']:7d} | {row['rps']:14.1f} | {', '.join(f'{r:.0f}' for r in row['rounds']):17s} | "
              f"{row['cpu_ms']:22.2f} | {row['errors']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
