"""The gateway benchmark: one command, results in bench/RESULTS.md and bench/results.png.

    python bench/run.py            # the full run (about 15 minutes on 2 cores)
    python bench/run.py --quick    # the same phases, fewer requests (about 5 minutes)
    python bench/run.py --phases latency,guarantees   # a subset (see ALL_PHASES)

It starts the TGI emulator and the gateway (v3.llama3 template, one uvicorn worker) on 127.0.0.1, and sends
the same workload directly to the emulator (the exact TGI body the gateway sends, to ``/generate_stream``)
and through the gateway, interleaved in one run so that the ratio holds on a noisy machine. See the
README's "Performance" section for what each figure means. The phases after ``soak`` start their own
processes (``bench/phases.py``): workers, replicas, the guarantee modes, the big-body stall, the TGI clients and
the profile summary.
"""

from __future__ import annotations

import argparse
import os
import asyncio
import json
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from bench import workload  # noqa: E402
from bench.loadgen import Target, one_each, run_closed_loop  # noqa: E402
from bench.procs import cpu_seconds, pin, rss_mb, running, self_cpu_seconds, wait_seconds  # noqa: E402

DIRECT_MARK = re.compile(rb'"token"')
GATEWAY_MARK = re.compile(rb'"(?:tool_calls|content":"[^"])')


ALL_PHASES = "check,latency,throughput,tokens,soak,inproc,workers,replicas,guarantees,bigbody,clients,profile"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


class Bench:
    def __init__(self, args, emulator, gateway, another) -> None:
        self.args, self.emulator, self.gateway, self.another = args, emulator, gateway, another
        self.others: list[int] = []
        self.loadgen_cpus = args.loadgen_cpus
        self.gw_pid, self.em_pid = gateway.process.pid, emulator.process.pid
        self.gateway_requests = 0
        self.rss: list[tuple[int, float]] = []
        self.results: dict = {"config": {}}
        self.rate_guess: dict = {}
        self.phase: str | None = None
        self.lap_start = time.time()

    # -- plumbing -----------------------------------------------------------------------------

    def gw_target(self, body: dict) -> Target:
        return Target("127.0.0.1", self.gateway.port, "/v1/chat/completions", workload.encode(body),
                      GATEWAY_MARK if body.get("stream") else None)

    def direct_target(self, gateway_body: dict, reply: str) -> Target:
        """The TGI body the gateway sends for ``gateway_body``, read from the emulator's request log."""
        self.emulator.reset()
        self.emulator.script([{"text": reply}])
        data = json.dumps({**gateway_body, "stream": False}).encode()
        request = urllib.request.Request(self.gateway.base_url + "/v1/chat/completions", data=data,
                                         headers={"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.loads(response.read())
        self.gateway_requests += 1
        body = self.emulator.requests()[-1]["body"]
        self.emulator.reset()
        if len(reply) < 1000:  # what the gateway answered (long answers are left out of results.json)
            self.results.setdefault("answers", {})[reply[:20]] = answer["choices"][0]
        return Target("127.0.0.1", self.emulator.port, "/generate_stream", workload.encode(body), DIRECT_MARK)

    def queue(self, reply: str, count: int) -> None:
        self.emulator.control("DELETE", "/emulator/script")
        batch = max(1, min(2000, 1_500_000 // (len(reply.encode()) + 20)))  # the emulator takes 2 MB a body
        for start in range(0, count, batch):
            self.emulator.script([{"text": reply}] * min(batch, count - start))

    def lap(self, phase: str | None) -> None:
        """The time since the last lap goes to the phase named then, if it ran (``timings``); ``phase`` starts."""
        now = time.time()
        if self.phase in self.args.phases.split(","):
            self.results.setdefault("timings", {})[self.phase] = round(now - self.lap_start, 1)
        self.phase, self.lap_start = phase, now

    def note_rss(self) -> None:
        self.rss.append((self.gateway_requests, rss_mb(self.gw_pid)))

    # -- phases -------------------------------------------------------------------------------

    async def latency(self, name: str, gw_body: dict, reply: str, rounds: int) -> dict:
        direct = self.direct_target(gw_body, reply)
        gateway = self.gw_target(gw_body)
        warm = max(rounds // 10, 20)
        self.queue(reply, 2 * (rounds + warm) + 10)
        await one_each([direct, gateway], rounds=warm)
        cpu0, wait0 = cpu_seconds(self.gw_pid), wait_seconds(self.gw_pid)
        d, g = await one_each([direct, gateway], rounds=rounds)
        cpu = (cpu_seconds(self.gw_pid) - cpu0) / rounds
        waited = (wait_seconds(self.gw_pid) - wait0) / rounds
        self.gateway_requests += rounds + warm
        stream = bool(gw_body.get("stream"))
        key = (lambda s: s.first - s.start) if stream else (lambda s: s.end - s.start)
        dv, gv = [key(s) * 1e3 for s in d], [key(s) * 1e3 for s in g]
        bad = sum(s.status != 200 for s in d + g)
        out = {"name": name, "metric": "time to first token" if stream else "full answer", "n": rounds,
               "errors": bad, "gateway_cpu_ms": cpu * 1e3, "gateway_wait_ms": waited * 1e3}
        for q, label in ((0.5, "p50"), (0.99, "p99")):
            out[f"direct_{label}"] = pct(dv, q)
            out[f"gateway_{label}"] = pct(gv, q)
            out[f"added_{label}"] = pct(gv, q) - pct(dv, q)
        out["paired_added_p50"] = pct([b - a for a, b in zip(dv, gv)], 0.5)
        self.results.setdefault("latency", []).append(out)
        print(f"  latency {name}: added p50 {out['added_p50']:.3f} ms, p99 {out['added_p99']:.3f} ms "
              f"(direct p50 {out['direct_p50']:.3f} ms, gateway p50 {out['gateway_p50']:.3f} ms; gateway CPU "
              f"{out['gateway_cpu_ms']:.2f} ms, waited for a CPU {out['gateway_wait_ms']:.2f} ms a request)",
              flush=True)
        self.note_rss()
        return out

    async def _block(self, target: Target, concurrency: int, duration: float, *, direct: bool) -> dict:
        # direct blocks leave the gateway idle: the load generator takes its CPU instead of sharing the emulator's
        pin(os.getpid(), self.args.direct_loadgen_cpus if direct else self.loadgen_cpus)
        waited = wait_seconds(self.gw_pid)
        before = (cpu_seconds(self.gw_pid), cpu_seconds(self.em_pid), self_cpu_seconds(), time.perf_counter())
        samples, rate = await run_closed_loop(target, concurrency=concurrency, duration=duration, min_each=3)
        after = (cpu_seconds(self.gw_pid), cpu_seconds(self.em_pid), self_cpu_seconds(), time.perf_counter())
        wall = after[3] - before[3]
        waited = (wait_seconds(self.gw_pid) - waited) / wall
        return {"done": len(samples), "rate": rate, "wall": wall, "errors": sum(s.status != 200 for s in samples),
                "cpu": [(a - b) / wall for a, b in zip(after[:3], before[:3])],
                "lat": [s.end - s.start for s in samples], "gw_wait": waited}

    async def throughput(self, label: str, gw_body: dict, reply: str, levels: list[int], *, rounds: int,
                         duration: float, token_delay: float = 0.0) -> list[dict]:
        direct = self.direct_target(gw_body, reply)
        gateway = self.gw_target(gw_body)
        self.emulator.faults(token_delay=token_delay)
        rows = []
        try:
            for concurrency in levels:
                acc = {"direct": [], "gateway": []}
                for r in range(rounds):
                    order = ("direct", "gateway") if r % 2 == 0 else ("gateway", "direct")
                    for mode in order:
                        guess = self.rate_guess.get((mode, concurrency, token_delay))
                        if guess is None:
                            guess = (3000 if mode == "direct" else 800) if token_delay == 0 else (
                                concurrency / (token_delay * 60))
                        span = max(duration, 3.5 * concurrency / guess)  # every worker gets 3 answers
                        self.queue(reply, int(guess * span * 1.5) + 4 * concurrency)
                        block = await self._block(direct if mode == "direct" else gateway, concurrency, duration,
                                                  direct=mode == "direct")
                        self.rate_guess[(mode, concurrency, token_delay)] = block["rate"]
                        if self.emulator.state()["script_remaining"] == 0:
                            self.results.setdefault("warnings", []).append(
                                f"{label} c={concurrency} {mode}: the reply script ran dry")
                        if mode == "gateway":
                            self.gateway_requests += block["done"] + concurrency
                        acc[mode].append(block)
                row = {"label": label, "concurrency": concurrency, "token_delay": token_delay}
                for mode, blocks in acc.items():
                    row[f"{mode}_rps"] = sum(b["rate"] for b in blocks) / len(blocks)
                    row[f"{mode}_errors"] = sum(b["errors"] for b in blocks)
                    row[f"{mode}_cpu"] = [sum(b["cpu"][i] for b in blocks) / len(blocks) for i in range(3)]
                    row[f"{mode}_p50_ms"] = pct([x for b in blocks for x in b["lat"]], 0.5) * 1e3
                    row[f"{mode}_gw_wait"] = sum(b["gw_wait"] for b in blocks) / len(blocks)
                row["ratio"] = row["gateway_rps"] / row["direct_rps"]
                # per core-second of the process that bounds each path: what the ratio would be if each had a
                # core to itself (the machine is shared; see gateway_gw_wait)
                gw_cap = row["gateway_rps"] / max(row["gateway_cpu"][0], 1e-3)
                em_cap = row["direct_rps"] / max(row["direct_cpu"][1], 1e-3)
                row["gateway_per_core"], row["emulator_per_core"] = gw_cap, em_cap
                row["ratio_per_core"] = min(gw_cap, em_cap) / em_cap
                rows.append(row)
                cpu = row["gateway_cpu"]
                print(f"  throughput {label} c={concurrency}: direct {row['direct_rps']:.0f}/s, gateway "
                      f"{row['gateway_rps']:.0f}/s, ratio {row['ratio']:.0%} (CPU during gateway blocks: "
                      f"gateway {cpu[0]:.0%}, emulator {cpu[1]:.0%}, load generator {cpu[2]:.0%}; gateway waited for "
                      f"a CPU {row['gateway_gw_wait']:.0%}; per core: gateway {row['gateway_per_core']:.0f}/s, "
                      f"emulator {row['emulator_per_core']:.0f}/s)", flush=True)
                self.note_rss()
        finally:
            self.emulator.faults(token_delay=None)
            self.emulator.control("DELETE", "/emulator/script")
        self.results.setdefault("throughput", []).extend(rows)
        return rows

    async def per_token(self, n: int) -> dict:
        """Gateway CPU and added wall time per streamed token: 1k-token answers against short ones."""
        out: dict = {}
        for tokens in (workload.SHORT_TOKENS, 1000):
            reply = workload.long_reply(tokens)
            body = workload.chat_request(stream=True)
            direct, gateway = self.direct_target(body, reply), self.gw_target(body)
            self.queue(reply, 4 * n + 20)
            await one_each([direct, gateway], rounds=5)
            cpu0 = cpu_seconds(self.gw_pid)
            d, g = await one_each([direct, gateway], rounds=n)
            cpu = (cpu_seconds(self.gw_pid) - cpu0) / n
            self.gateway_requests += n + 5
            out[tokens] = {"gateway_cpu_ms": cpu * 1e3,
                           "direct_ms": pct([s.end - s.start for s in d], 0.5) * 1e3,
                           "gateway_ms": pct([s.end - s.start for s in g], 0.5) * 1e3}
        short, long = out[workload.SHORT_TOKENS], out[1000]
        span = 1000 - workload.SHORT_TOKENS
        res = {"by_tokens": out,
               "cpu_us_per_token": (long["gateway_cpu_ms"] - short["gateway_cpu_ms"]) * 1e3 / span,
               "added_wall_us_per_token": ((long["gateway_ms"] - long["direct_ms"])
                                           - (short["gateway_ms"] - short["direct_ms"])) * 1e3 / span}
        self.results["per_token"] = res
        print(f"  streaming cost: {res['cpu_us_per_token']:.1f} us CPU per token, "
              f"{res['added_wall_us_per_token']:.1f} us added wall time per token", flush=True)
        self.note_rss()
        return res

    async def parse_scaling(self, n: int) -> dict:
        """Gateway CPU per non-streamed answer of 1k and 16k tokens (the whole parse path, end to end)."""
        out = {}
        for key, tokens, count in (("1k", 1000, n), ("16k", 16000, max(n // 4, 3))):
            reply = workload.long_reply(tokens)
            body = workload.chat_request(stream=False)
            gateway = self.gw_target(body)
            self.direct_target(body, reply)
            self.queue(reply, count + 5)
            await one_each([gateway], rounds=2)
            cpu0 = cpu_seconds(self.gw_pid)
            (g,) = await one_each([gateway], rounds=count)
            out[key] = {"gateway_cpu_ms": (cpu_seconds(self.gw_pid) - cpu0) / count * 1e3,
                           "gateway_ms": pct([s.end - s.start for s in g], 0.5) * 1e3}
            self.gateway_requests += count + 2
        out["ratio"] = out["16k"]["gateway_cpu_ms"] / out["1k"]["gateway_cpu_ms"]
        self.results["parse_e2e"] = out
        print(f"  parse 1k vs 16k tokens end to end: {out['1k']['gateway_cpu_ms']:.1f} ms vs "
              f"{out['16k']['gateway_cpu_ms']:.1f} ms gateway CPU ({out['ratio']:.1f}x)", flush=True)
        self.note_rss()
        return out

    async def soak(self, total: int, concurrency: int = 16) -> dict:
        """Requests through the gateway until ``total`` were served, RSS noted along the way."""
        body = workload.tool_request(stream=False)
        gateway = self.gw_target(body)
        self.emulator.control("DELETE", "/emulator/script")
        self.note_rss()
        self.results["soak_start"] = len(self.rss) - 1
        step = 1000
        while self.gateway_requests < total:
            count = min(step, total - self.gateway_requests)
            self.queue(workload.TOOL_REPLY, count + 10)
            samples, _ = await run_closed_loop(gateway, concurrency=concurrency, count=count)
            self.gateway_requests += count
            errors = sum(s.status != 200 for s in samples)
            if errors:
                raise RuntimeError(f"{errors} errors in the soak")
            self.note_rss()
        self.emulator.control("DELETE", "/emulator/script")
        return {"requests": self.gateway_requests, "rss_mb": self.rss[-1][1]}

    async def loadgen_check(self, duration: float, concurrency: int = 64) -> dict:
        """Direct-to-emulator throughput with our load generator, wrk and hey (same body and route)."""
        direct = self.direct_target(workload.tool_request(stream=False), workload.TOOL_REPLY)
        out: dict = {}
        cpus = self.args.direct_loadgen_cpus
        pin(os.getpid(), cpus)
        self.queue(workload.TOOL_REPLY, int(4000 * duration))
        _, out["loadgen"] = await run_closed_loop(direct, concurrency=concurrency, duration=duration)
        enough = int(out["loadgen"] * 2 * (duration + 1))
        with tempfile.TemporaryDirectory() as tmp:
            body_file = Path(tmp) / "body.json"
            body_file.write_bytes(direct.body)
            url = f"http://127.0.0.1:{self.emulator.port}/generate_stream"
            taskset = ["taskset", "-c", ",".join(map(str, sorted(cpus)))] if cpus else []
            if shutil.which("wrk"):
                lua = Path(tmp) / "post.lua"
                lua.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                               f'wrk.body = io.open("{body_file}", "rb"):read("*a")\n')
                self.queue(workload.TOOL_REPLY, enough)
                cmd = [*taskset, "wrk", "-t1", f"-c{concurrency}", f"-d{int(duration)}s", "-s", str(lua), url]
                text = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30).stdout
                match = re.search(r"Requests/sec:\s*([\d.]+)", text)
                out["wrk"] = float(match.group(1)) if match else None
                out["wrk_cmd"] = shlex.join(cmd[len(taskset):])
            if shutil.which("hey"):
                self.queue(workload.TOOL_REPLY, enough)
                cmd = [*taskset, "hey", "-z", f"{int(duration)}s", "-c", str(concurrency), "-m", "POST",
                       "-T", "application/json", "-D", str(body_file), url]
                text = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30).stdout
                match = re.search(r"Requests/sec:\s*([\d.]+)", text)
                out["hey"] = float(match.group(1)) if match else None
        self.emulator.control("DELETE", "/emulator/script")
        pin(os.getpid(), self.loadgen_cpus)
        self.results["loadgen_check"] = out
        print(f"  load generator check (direct, c={concurrency}): ours {out['loadgen']:.0f}/s, "
              f"wrk {out.get('wrk')}, hey {out.get('hey')}", flush=True)
        return out


async def main_async(args) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp, running(
        template=workload.TEMPLATE, workdir=Path(tmp), emulator_cpus=args.emulator_cpus,
        gateway_cpus=args.gateway_cpus, gateway_args=("--grammar", "off", *(args.gateway_arg or ())),
    ) as (emulator, gateway, another):
        pin(os.getpid(), args.loadgen_cpus)
        bench = Bench(args, emulator, gateway, another)
        bench.results["load_before"] = os.getloadavg()
        quick = args.quick
        n_lat = 300 if quick else 2000
        dur, rounds = (1.5, 1) if quick else (4.0, 2)
        t0 = time.time()
        print("warm-up", flush=True)
        await bench.latency("warm-up", workload.tool_request(stream=False), workload.TOOL_REPLY, 100 if quick else 500)
        bench.results.pop("latency")
        bench.rss.clear()
        bench.note_rss()
        bench.results["rss_warm_mb"] = bench.rss[-1][1]
        run = set(args.phases.split(","))
        bench.lap("check")
        if "check" in run:
            print("load generator check", flush=True)
            await bench.loadgen_check(3.0 if quick else 6.0)
        bench.lap("latency")
        if "latency" in run:
            print("latency, concurrency 1", flush=True)
            await bench.latency("tool call, non-stream", workload.tool_request(stream=False), workload.TOOL_REPLY, n_lat)
            await bench.latency("tool call, stream", workload.tool_request(stream=True), workload.TOOL_REPLY, n_lat)
            await bench.latency("plain chat, non-stream", workload.chat_request(stream=False), workload.CHAT_REPLY,
                                n_lat)
            await bench.latency("plain chat, stream", workload.chat_request(stream=True), workload.CHAT_REPLY, n_lat)
        bench.lap("throughput")
        if "throughput" in run:
            print("throughput", flush=True)
            levels = [1, 16, 64, 256]
            await bench.throughput("instant", workload.tool_request(stream=False), workload.TOOL_REPLY, levels,
                                   rounds=rounds, duration=dur)
            await bench.throughput(f"{args.token_delay * 1e3:g} ms/token", workload.tool_request(stream=False),
                                   workload.TOOL_REPLY, levels, rounds=rounds, duration=max(dur, 3.0),
                                   token_delay=args.token_delay)
        bench.lap("tokens")
        if "tokens" in run:
            print("streaming and parse cost", flush=True)
            await bench.per_token(30 if quick else 100)
            await bench.parse_scaling(12 if quick else 40)
        bench.lap("soak")
        if "soak" in run:
            print("memory soak", flush=True)
            await bench.soak(args.soak if args.soak else (3000 if quick else 10000) + bench.gateway_requests)
        bench.lap(None)
        bench.results["rss"] = bench.rss
        bench.results["elapsed_s"] = time.time() - t0
        return bench.results


def cpus(text: str | None) -> set[int] | None:
    return None if not text or text == "none" else {int(c) for c in text.split(",")}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer requests: a 2-minute smoke run")
    p.add_argument("--gateway-cpus", default="1", help="CPU list for the gateway ('none' = not pinned)")
    p.add_argument("--emulator-cpus", default="0", help="CPU list for the emulator")
    p.add_argument("--loadgen-cpus", default="0", help="CPU list for the load generator")
    p.add_argument("--direct-loadgen-cpus", default="1",
                   help="CPU list for the load generator (and wrk/hey) while the gateway is idle (direct blocks)")
    p.add_argument("--token-delay", type=float, default=0.01, help="emulator seconds per token, second series")
    p.add_argument("--soak", type=int, default=0, help="gateway requests in all before the last RSS reading")
    p.add_argument("--gateway-arg", action="append", help="extra server_tgi.py argument (repeatable)")
    p.add_argument("--no-clients", action="store_true", help="skip the TGI client comparison")
    p.add_argument("--phases", default=ALL_PHASES, help=f"comma-separated subset of {ALL_PHASES}")
    p.add_argument("--no-report", action="store_true", help="print figures only (no RESULTS.md / PNG)")
    p.add_argument("--out", default=str(ROOT / "bench"), help="folder for RESULTS.md, results.json, results.png")
    args = p.parse_args(argv)
    args.gateway_cpus, args.emulator_cpus, args.loadgen_cpus, args.direct_loadgen_cpus = (
        cpus(args.gateway_cpus), cpus(args.emulator_cpus), cpus(args.loadgen_cpus), cpus(args.direct_loadgen_cpus))
    started = time.time()
    results = asyncio.run(main_async(args))
    from bench import phases

    phases.run_separate(results, set(args.phases.split(",")), quick=args.quick, clients=not args.no_clients)
    results["elapsed_s"] = time.time() - started
    results["config"] = {
        "command": "python bench/run.py " + shlex.join(sys.argv[1:] if argv is None else argv),
        "machine": f"{platform.node()}: {platform.processor() or platform.machine()}, "
                   f"{_cpu_model()}, {_cpu_count()} CPUs, Python {platform.python_version()}",
        "pinning": {"gateway": sorted(args.gateway_cpus or []), "emulator": sorted(args.emulator_cpus or []),
                    "loadgen": sorted(args.loadgen_cpus or []),
                    "loadgen_direct": sorted(args.direct_loadgen_cpus or [])},
        "quick": args.quick, "token_delay": args.token_delay, "load_before": results.get("load_before"),
        "load_after": os.getloadavg(),
    }
    if args.no_report:
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    from bench import report

    report.write(results, out)
    print(f"wrote {out / 'RESULTS.md'} and {out / 'results.png'}")
    return 0


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def _cpu_count() -> int:
    return os.cpu_count() or 0


if __name__ == "__main__":
    sys.exit(main())
