"""Gateway CPU per request and per streamed token, quickly, on a busy machine: CPU time (``/proc``) is what the
gateway itself spent, whatever else ran, so these figures hold where wall-clock ratios do not.

    python bench/cpu_probe.py [--n 300] [--concurrency 4] [--spy tool-stream]

Prints, for the bench's workloads (bench/workload.py), the gateway's CPU ms per request, the emulator's CPU ms
per request as the reference, and the per-token slope (1k-token stream against a 50-token one). ``--spy W``
also records workload W with py-spy and prints the top self-time frames (see bench/profile.py).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from bench import workload  # noqa: E402
from bench.loadgen import Target, run_closed_loop  # noqa: E402
from bench.procs import cpu_seconds, running  # noqa: E402
from bench.run import GATEWAY_MARK  # noqa: E402

CASES = {
    "tool": (lambda: workload.tool_request(stream=False), lambda: workload.TOOL_REPLY),
    "tool-stream": (lambda: workload.tool_request(stream=True), lambda: workload.TOOL_REPLY),
    "chat-stream-50": (lambda: workload.chat_request(stream=True), lambda: workload.long_reply(workload.SHORT_TOKENS)),
    "chat-stream-1k": (lambda: workload.chat_request(stream=True), lambda: workload.long_reply(1000)),
    "chat-1k": (lambda: workload.chat_request(stream=False), lambda: workload.long_reply(1000)),
}


async def measure(emulator, gateway, case: str, n: int, concurrency: int) -> tuple[float, float]:
    make_body, make_reply = CASES[case]
    body, reply = make_body(), make_reply()
    emulator.control("DELETE", "/emulator/script")
    warm = max(n // 10, 10)
    batch = max(1, min(500, 1_500_000 // (len(reply.encode()) + 20)))  # the emulator takes 2 MB a body
    for start in range(0, n + warm + 2 * concurrency, batch):
        emulator.script([{"text": reply}] * batch)
    target = Target("127.0.0.1", gateway.port, "/v1/chat/completions", workload.encode(body),
                    GATEWAY_MARK if body.get("stream") else None)
    await run_closed_loop(target, concurrency=concurrency, count=warm)
    gw0, em0 = cpu_seconds(gateway.process.pid), cpu_seconds(emulator.process.pid)
    samples, _ = await run_closed_loop(target, concurrency=concurrency, count=n)
    bad = sum(s.status != 200 for s in samples)
    if bad:
        raise RuntimeError(f"{case}: {bad} errors")
    return ((cpu_seconds(gateway.process.pid) - gw0) / n * 1e3, (cpu_seconds(emulator.process.pid) - em0) / n * 1e3)


def spy(gateway, emulator, case: str, seconds: float, concurrency: int, top: int) -> None:
    from bench.profile import summarize

    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "stacks.txt"
        proc = subprocess.Popen([exe, "record", "--pid", str(gateway.process.pid), "--format", "raw", "--rate", "250",
                                 "--duration", str(int(seconds)), "--output", str(out), "--nonblocking"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        async def load() -> None:
            deadline = asyncio.get_running_loop().time() + seconds
            while asyncio.get_running_loop().time() < deadline:
                await measure(emulator, gateway, case, 200, concurrency)

        asyncio.run(load())
        proc.wait(timeout=120)
        print(summarize(out.read_text(), top))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--cases", default="tool,tool-stream,chat-stream-50,chat-stream-1k")
    p.add_argument("--spy", default=None, help="a case to profile with py-spy")
    p.add_argument("--seconds", type=float, default=15)
    p.add_argument("--top", type=int, default=40)
    p.add_argument("--gateway-arg", action="append", default=[])
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp, running(template=workload.TEMPLATE, workdir=Path(tmp), emulator_cpus=None,
                                                       gateway_cpus=None,
                                                       gateway_args=("--grammar", "off", *args.gateway_arg)) as (
            emulator, gateway, _):
        results = {}
        for case in args.cases.split(","):
            n = args.n if "1k" not in case else max(args.n // 10, 20)
            results[case] = asyncio.run(measure(emulator, gateway, case, n, args.concurrency))
            print(f"{case:16s} gateway {results[case][0]:7.3f} ms CPU/request   emulator {results[case][1]:7.3f}",
                  flush=True)
        if "chat-stream-50" in results and "chat-stream-1k" in results:
            slope = (results["chat-stream-1k"][0] - results["chat-stream-50"][0]) / (1000 - workload.SHORT_TOKENS)
            em = (results["chat-stream-1k"][1] - results["chat-stream-50"][1]) / (1000 - workload.SHORT_TOKENS)
            print(f"per token: gateway {slope * 1e3:.1f} us CPU, emulator {em * 1e3:.1f} us", flush=True)
        if args.spy:
            spy(gateway, emulator, args.spy, args.seconds, args.concurrency, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
