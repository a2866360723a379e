"""Profile the gateway under load with py-spy: what the hot-path fixes in bench/RESULTS.md came from.

    python bench/profile.py [--workload tool|tool-stream|chat-stream-1k] [--concurrency 16] [--seconds 10]

Runs the workload through the gateway (emulator answering instantly) while ``py-spy record`` samples the
gateway process, then prints the functions with the most samples, inclusive and self, from the collapsed
stacks (``--keep FILE`` keeps them, e.g. for a flame graph).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from bench import workload  # noqa: E402
from bench.loadgen import Target, run_closed_loop  # noqa: E402
from bench.procs import running  # noqa: E402

WORKLOADS = {
    "tool": (lambda: workload.tool_request(stream=False), workload.TOOL_REPLY),
    "tool-stream": (lambda: workload.tool_request(stream=True), workload.TOOL_REPLY),
    "chat-stream-1k": (lambda: workload.chat_request(stream=True), workload.long_reply(1000)),
}


def summarize(collapsed: str, top: int) -> str:
    inclusive: collections.Counter = collections.Counter()
    own: collections.Counter = collections.Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = [f.split(" (")[0] + " (" + f.split(" (")[-1].split(":")[0].rsplit("/", 1)[-1] + ")"
                  for f in stack.split(";")]
        for frame in set(frames):
            inclusive[frame] += n
        own[frames[-1]] += n
    lines = [f"{total} samples", "", "inclusive:"]
    lines += [f"  {n / total:6.1%}  {frame}" for frame, n in inclusive.most_common(top)]
    lines += ["", "self:"]
    lines += [f"  {n / total:6.1%}  {frame}" for frame, n in own.most_common(top)]
    return "\n".join(lines)


async def load(port: int, body: dict, concurrency: int, seconds: float, emulator, reply: str) -> None:
    batch = max(1, min(2000, 1_500_000 // (len(reply.encode()) + 20)))
    for _ in range(max(1, 30000 // batch) if len(reply) < 1000 else 5):
        emulator.script([{"text": reply}] * batch)
    target = Target("127.0.0.1", port, "/v1/chat/completions", workload.encode(body))
    await run_closed_loop(target, concurrency=concurrency, duration=seconds)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workload", choices=sorted(WORKLOADS), default="tool")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--top", type=int, default=45)
    p.add_argument("--keep", help="write the collapsed stacks here")
    args = p.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    make_body, reply = WORKLOADS[args.workload]
    with tempfile.TemporaryDirectory() as tmp, running(template=workload.TEMPLATE, workdir=Path(tmp),
                                                       emulator_cpus={0}, gateway_cpus={1},
                                                       gateway_args=("--grammar", "off")) as (emulator, gateway, _):
        out = Path(tmp) / "stacks.txt"
        spy_proc = subprocess.Popen([spy, "record", "--pid", str(gateway.process.pid), "--format", "raw",
                                     "--rate", "500", "--duration", str(int(args.seconds)), "--output", str(out),
                                     "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        asyncio.run(load(gateway.port, make_body(), args.concurrency, args.seconds, emulator, reply))
        spy_proc.wait(timeout=60)
        text = out.read_text()
        if args.keep:
            Path(args.keep).write_text(text)
        print(summarize(text, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
