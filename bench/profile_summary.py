"""What bounds each figure: py-spy samples of the gateway under the bench's workloads, self time by component.

    python -m bench.profile_summary [--quick] [--json]

One stack (emulator on CPU 0, gateway on CPU 1, as ``bench/run.py``), three workloads, each the load behind one
figure of bench/RESULTS.md: the non-streamed tool call at concurrency 64 (CPU per request, throughput), the
streamed tool call at concurrency 1 (added time to first token) and 1k-token streamed answers at concurrency 16
(CPU per streamed token). ``bench/profile.py`` prints the full function list of one workload.
"""

from __future__ import annotations

import asyncio
import collections
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from bench import workload  # noqa: E402
from bench.phase_cli import run_phase  # noqa: E402
from bench.loadgen import Target, run_closed_loop  # noqa: E402
from bench.procs import running  # noqa: E402

WORKLOADS = {  # figure: (body, reply, concurrency)
    "per request and throughput (tool call, non-stream, c=64)":
        (lambda: workload.tool_request(stream=False), workload.TOOL_REPLY, 64),
    "added time to first token (tool call, stream, c=1)":
        (lambda: workload.tool_request(stream=True), workload.TOOL_REPLY, 1),
    "per streamed token (1k-token answers, stream, c=16)":
        (lambda: workload.chat_request(stream=True), workload.long_reply(1000), 16),
}
# self time by the file of the innermost frame: the first component whose marks appear in its path
COMPONENTS = (
    ("event loop, sockets (asyncio, uvloop, selectors)", ("/asyncio/", "uvloop", "selectors.py", "/socket.py")),
    ("HTTP server (uvicorn, httptools, h11, starlette, fastapi, anyio)",
     ("uvicorn", "httptools", "/h11/", "starlette", "fastapi", "anyio")),
    ("TGI client and pool (tgi/protocol, tgi/cluster)", ("/tgi/protocol/", "/tgi/cluster/")),
    ("gateway pipeline and API (tgi/pipeline, tgi/api, server_tgi.py)", ("/tgi/", "server_tgi.py")),
    ("templates, parsers, request planning (functionary/)", ("/functionary/",)),
    ("pydantic", ("pydantic",)),
    ("JSON (json, msgspec, orjson)", ("/json/", "msgspec", "orjson")),
    ("tokenizer", ("tokenizers",)),
    ("logging", ("/logging/",)),
)
FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


def component(path: str) -> str:
    for name, marks in COMPONENTS:
        if any(mark in path for mark in marks):
            return name
    return "other stdlib" if "/lib/python3" in path and "site-packages" not in path else "other"


def buckets(collapsed: str, top: int = 5) -> dict:
    """Self-time shares by component and the ``top`` functions, from py-spy's raw (collapsed) stacks."""
    by_component: collections.Counter = collections.Counter()
    by_function: collections.Counter = collections.Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        leaf = stack.rsplit(";", 1)[-1]
        match = FRAME.match(leaf)
        path = match.group("file") if match else leaf
        n = int(count)
        total += n
        by_component[component(path)] += n
        name = f"{match.group('func')} ({path.rsplit('/', 1)[-1]})" if match else leaf
        by_function[name] += n
    if not total:
        return {"samples": 0, "components": {}, "functions": {}}
    return {"samples": total,
            "components": {k: n / total for k, n in by_component.most_common()},
            "functions": {k: n / total for k, n in by_function.most_common(top)}}


def measure(*, quick: bool = False) -> dict:
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists() and not shutil.which(spy):
        return {"error": "py-spy not found"}
    seconds = 3 if quick else 8
    out: dict = {"seconds": seconds, "workloads": {}}
    with tempfile.TemporaryDirectory() as tmp, running(template=workload.TEMPLATE, workdir=Path(tmp),
                                                       emulator_cpus={0}, gateway_cpus={1},
                                                       gateway_args=("--grammar", "off")) as (emulator, gateway, _):
        for label, (make_body, reply, concurrency) in WORKLOADS.items():
            stacks = Path(tmp) / "stacks.txt"
            batch = max(1, min(2000, 1_500_000 // (len(reply.encode()) + 20)))
            for _ in range(max(1, 3000 * seconds // batch) if len(reply) < 1000 else 4):
                emulator.script([{"text": reply}] * batch)  # queued before the samples start
            target = Target("127.0.0.1", gateway.port, "/v1/chat/completions", workload.encode(make_body()))
            asyncio.run(run_closed_loop(target, concurrency=concurrency, duration=1.0))  # warm
            spy_proc = subprocess.Popen([spy, "record", "--pid", str(gateway.process.pid), "--format", "raw",
                                         "--rate", "250", "--duration", str(seconds), "--output", str(stacks),
                                         "--nonblocking", "--full-filenames"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            asyncio.run(run_closed_loop(target, concurrency=concurrency, duration=seconds + 1.5))
            try:
                _, err = spy_proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                spy_proc.kill()
                _, err = spy_proc.communicate()
            emulator.control("DELETE", "/emulator/script")
            if not stacks.is_file():
                out["workloads"][label] = {"error": (err or b"").decode(errors="replace")[-300:] or "no samples"}
                continue
            out["workloads"][label] = buckets(stacks.read_text())
            stacks.unlink()
    return out


def _show(out: dict) -> None:
    for label, found in out["workloads"].items():
        print(label, found.get("samples"), found.get("error", ""))
        for name, share in {**found.get("components", {}), **found.get("functions", {})}.items():
            print(f"  {share:6.1%}  {name}")


def main(argv=None) -> int:
    return run_phase("python -m bench.profile_summary", __doc__, measure, _show, argv)


if __name__ == "__main__":
    sys.exit(main())
