"""Replicas: one TGI stand-in against two pooled behind one gateway (issue 14 point 3, without Docker).

    python -m bench.replicas [--quick] [--json]

Two TGI emulators stand in for two GPU replicas; one gateway gets ``--endpoint`` for the first only, another one
``--endpoint`` for both (the pool: health, ejection, least-loaded routing). The bench's non-streamed tool call, closed
loop, the two gateways' blocks interleaved (1, 2, 1, 2 ...), two series:

- **TGI-bound** (concurrency 32): each emulator writes 5 ms a token and the gateway lets at most 16 generations run
  on one endpoint (``--max-in-flight-per-endpoint 16``, the way a GPU's batch is bounded): a second replica should
  double the rate (one: 16 / 0.29 s = 56 req/s at most; two: 112).
- **instant** (concurrency 64): the emulators answer at once, so the gateway bounds the rate: a second endpoint
  must not cost the gateway CPU per request.

Each row also says how the pool spread the requests (each emulator's request count over the blocks).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from bench import workload  # noqa: E402
from bench.phase_cli import run_phase  # noqa: E402
from bench.loadgen import Target, run_closed_loop  # noqa: E402
from bench.workers import tree_cpu  # noqa: E402
from functionary.templates import get_template  # noqa: E402
from tests.support.emulator_proc import start_emulator  # noqa: E402
from tests.support.gateway_proc import start_gateway  # noqa: E402
from tests.support.model_fixture import make_model_dir  # noqa: E402

# label: (emulator seconds a token, --max-in-flight-per-endpoint, client concurrency)
SERIES = {"TGI-bound (5 ms/token, 16 in flight an endpoint, c=32)": (0.005, 16, 32),
          "instant (c=64)": (0.0, None, 64)}


def _queue(emulators, count: int) -> None:
    reply = workload.TOOL_REPLY
    for emulator in emulators:
        emulator.control("DELETE", "/emulator/script")
        for start in range(0, count, 2000):
            emulator.script([{"text": reply}] * min(2000, count - start))


async def _block(gateway, emulators, *, concurrency: int, seconds: float, expect: float) -> dict:
    target = Target("127.0.0.1", gateway.port, "/v1/chat/completions",
                    workload.encode(workload.tool_request(stream=False)))
    _queue(emulators, int(expect * (seconds + 2) * 1.5) + 4 * concurrency)
    before = [e.state()["requests"] for e in emulators]
    cpu0 = tree_cpu(gateway.process.pid)
    samples, rate = await run_closed_loop(target, concurrency=concurrency, duration=seconds, min_each=3)
    cpu = tree_cpu(gateway.process.pid) - cpu0
    spread = [e.state()["requests"] - b for e, b in zip(emulators, before)]
    return {"rate": rate, "cpu_ms": cpu / max(len(samples), 1) * 1e3, "spread": spread,
            "errors": sum(s.status != 200 for s in samples)}


def _series(base: list[str], emulators, *, token_delay: float, in_flight: int | None, concurrency: int,
            seconds: float, rounds: int) -> list[dict]:
    for emulator in emulators:
        emulator.faults(token_delay=token_delay)
    extra = ["--max-in-flight-per-endpoint", str(in_flight)] if in_flight else []
    blocks: dict[int, list[dict]] = {1: [], 2: []}
    with contextlib.ExitStack() as stack:
        gateways = {n: stack.enter_context(start_gateway(
            [*base, *extra, *(a for e in emulators[:n] for a in ("--endpoint", e.base_url))])) for n in (1, 2)}
        guess = {n: 800.0 if not token_delay else n * (in_flight or concurrency) / (token_delay * 60) for n in (1, 2)}
        for n, gw in gateways.items():  # warm-up
            asyncio.run(_block(gw, emulators, concurrency=concurrency, seconds=1.0, expect=guess[n]))
        for _ in range(rounds):
            for n, gw in gateways.items():
                block = asyncio.run(_block(gw, emulators, concurrency=concurrency, seconds=seconds, expect=guess[n]))
                guess[n] = max(block["rate"], 1.0)
                blocks[n].append(block)
    rows = []
    for n, got in blocks.items():
        rates = sorted(b["rate"] for b in got)
        rows.append({"replicas": n, "concurrency": concurrency, "token_delay": token_delay, "in_flight": in_flight,
                     "rps": rates[len(rates) // 2], "rounds": rates,
                     "cpu_ms": sorted(b["cpu_ms"] for b in got)[len(got) // 2],
                     "spread": [sum(b["spread"][i] for b in got) for i in range(len(emulators))],
                     "errors": sum(b["errors"] for b in got)})
    rows[1]["ratio"] = rows[1]["rps"] / rows[0]["rps"]
    return rows


def measure(*, quick: bool = False) -> dict:
    seconds, rounds = (2.0, 1) if quick else (4.0, 2)
    spec = get_template(workload.TEMPLATE)
    specials = tuple(dict.fromkeys((*spec.special_tokens, *spec.stop_tokens, *spec.eos_tokens)))
    out: dict = {"seconds": seconds, "rounds": rounds, "series": {}}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        model_dir = make_model_dir(Path(tmp) / "model", special_tokens=specials)
        emulators = [stack.enter_context(start_emulator(max_total_tokens=40000, max_input_tokens=20000,
                                                        max_concurrent_requests=4096)) for _ in range(2)]
        base = ["--model", str(model_dir), "--prompt-template", workload.TEMPLATE, "--no-launch",
                "--served-model-name", "functionary", "--grammar", "off", "--log-level", "warning"]
        for label, (token_delay, in_flight, concurrency) in SERIES.items():
            out["series"][label] = _series(base, emulators, token_delay=token_delay, in_flight=in_flight,
                                           concurrency=concurrency, seconds=seconds, rounds=rounds)
    return out


def _show(out: dict) -> None:
    for label, rows in out["series"].items():
        for row in rows:
            print(f"{label:50} replicas {row['replicas']}: {row['rps']:7.1f} req/s, gateway CPU "
                  f"{row['cpu_ms']:.2f} ms/request, spread {row['spread']}, errors {row['errors']}"
                  + (f", ratio {row['ratio']:.2f}x" if "ratio" in row else ""))


def main(argv=None) -> int:
    return run_phase("python -m bench.replicas", __doc__, measure, _show, argv)


if __name__ == "__main__":
    sys.exit(main())
