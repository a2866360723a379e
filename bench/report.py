"""bench/RESULTS.md and bench/results.png from the figures ``bench/run.py`` collected."""

from __future__ import annotations

import datetime
from pathlib import Path

from bench import report_sections as sections

# issue 14: gateway CPU ≤ 1.5 ms a non-streamed request, added TTFT p50 ≤ 1 ms, ≤ 25 µs of gateway CPU a streamed
# token, throughput at c=64 ≥ 60 % of direct per core
TARGETS = {
    "cpu_ms": 1.5, "latency_p50": 1.0, "latency_p99": 3.0, "ratio_64": 0.6, "us_per_token": 25.0,
    "parse_ratio": 17.0, "rss_mb": 200.0,
}


def _ok(value: float, limit: float, *, higher: bool = False) -> str:
    if value != value:  # NaN
        return "n/a"
    return "yes" if (value >= limit if higher else value <= limit) else "**no**"


def _lat(results: dict, name: str) -> dict | None:
    return next((row for row in results.get("latency", []) if row["name"] == name), None)


def issue_rows(r: dict) -> list[tuple[str, str, str, str]]:
    """The four targets of issue 14, first in the table."""
    rows = []
    row = _lat(r, "tool call, non-stream")
    if row:
        rows.append(("**gateway CPU per non-streamed request** (tool call, c=1)", "≤ 1.5 ms",
                     f"{row['gateway_cpu_ms']:.2f} ms", _ok(row["gateway_cpu_ms"], TARGETS["cpu_ms"])))
    row = _lat(r, "tool call, stream")
    if row:
        rows.append(("**added time to first token p50** (tool call)", "≤ 1 ms", f"{row['added_p50']:.2f} ms",
                     _ok(row["added_p50"], TARGETS["latency_p50"])))
    pt = r.get("per_token")
    if pt:
        rows.append(("**gateway CPU per streamed token** (1k-token answer)", "≤ 25 µs",
                     f"{pt['cpu_us_per_token']:.1f} µs", _ok(pt["cpu_us_per_token"], TARGETS["us_per_token"])))
    for t in r.get("throughput", []):
        if t["concurrency"] == 64 and not t.get("token_delay") and "ratio_per_core" in t:
            rows.append(("**throughput at c=64, gateway / direct per core** (instant)", "≥ 60 %",
                         f"{t['ratio_per_core']:.0%} ({t['gateway_per_core']:.0f} vs {t['emulator_per_core']:.0f} "
                         "req/s per core)", _ok(t["ratio_per_core"], TARGETS["ratio_64"], higher=True)))
    return rows


def summary_rows(r: dict) -> list[tuple[str, str, str, str]]:
    rows = issue_rows(r)
    for name, label in (("tool call, non-stream", "added latency, tool call, non-stream"),
                        ("tool call, stream", "added time to first token, tool call"),
                        ("plain chat, non-stream", "added latency, plain chat, non-stream"),
                        ("plain chat, stream", "added time to first token, plain chat")):
        row = _lat(r, name)
        if row and name != "tool call, stream":  # its p50 is above
            rows.append((label + " p50", "≤ 1 ms", f"{row['added_p50']:.2f} ms",
                         _ok(row["added_p50"], TARGETS["latency_p50"])))
        if row:
            rows.append((label + " p99", "≤ 3 ms", f"{row['added_p99']:.2f} ms",
                         _ok(row["added_p99"], TARGETS["latency_p99"])))
    for t in r.get("throughput", []):
        if t["concurrency"] == 64:
            rows.append((f"throughput at concurrency 64, {t['label']}, gateway / direct, raw (gateway waited for a "
                         f"CPU {t['gateway_gw_wait']:.0%} of the time)", "(per core: above)",
                         f"{t['ratio']:.0%} ({t['gateway_rps']:.0f} vs {t['direct_rps']:.0f} req/s)", "—"))
    pt = r.get("per_token")
    if pt:
        rows.append(("streaming cost per token, added wall time", "≤ 25 µs",
                     f"{pt['added_wall_us_per_token']:.1f} µs",
                     _ok(pt["added_wall_us_per_token"], TARGETS["us_per_token"])))
    pe = r.get("parse_e2e")
    if pe:
        rows.append(("parse cost 16k / 1k tokens, gateway CPU end to end", "≤ 17×", f"{pe['ratio']:.1f}×",
                     _ok(pe["ratio"], TARGETS["parse_ratio"])))
    ip = r.get("inproc")
    if ip:
        for label in ("stream", "complete"):
            rows.append((f"parse cost 16k / 1k tokens, in process ({label} path)", "≤ 17×",
                         f"{ip[label + '_ratio']:.1f}×", _ok(ip[label + "_ratio"], TARGETS["parse_ratio"])))
    rss = r.get("rss") or []
    if rss:
        warm, last = rss[0], rss[-1]
        peak = max(v for _, v in rss)
        soak = rss[_soak_start(r):]
        rows.append(("gateway RSS after warm-up", "≤ 200 MB", f"{warm[1]:.0f} MB", _ok(warm[1], TARGETS["rss_mb"])))
        rows.append((f"gateway RSS after {last[0]:,} requests (peak over the run)", "≤ 200 MB",
                     f"{last[1]:.0f} MB ({peak:.0f} MB peak)", _ok(peak, TARGETS["rss_mb"])))
        rows.append((f"gateway RSS over the last {soak[-1][0] - soak[0][0]:,} requests (the soak)", "no growth",
                     f"{soak[0][1]:.1f} → {soak[-1][1]:.1f} MB ({soak[-1][1] - soak[0][1]:+.1f} MB)",
                     "yes" if soak[-1][1] - soak[0][1] <= 2.0 else "**no**"))
    rows += sections.target_rows(r)
    return rows


def _soak_start(r: dict) -> int:
    """Index of the first RSS reading of the soak (older results: the trailing run of 1,000-request steps)."""
    if "soak_start" in r:
        return r["soak_start"]
    rss = r.get("rss") or []
    i = len(rss) - 1
    while i > 0 and rss[i][0] - rss[i - 1][0] == 1000:
        i -= 1
    return i


def _load(values) -> str:
    return "/".join(f"{v:.1f}" for v in values) if values else "?"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c).replace("|", "\\|").replace("\n", "\\n") for c in row) + " |" for row in rows]
    return out


def markdown(r: dict) -> str:
    c = r["config"]
    pin = c["pinning"]
    lines = [
        "# Benchmark results",
        "",
        f"Generated by `{c['command']}` on {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC "
        f"({r.get('elapsed_s', 0) / 60:.0f} min).",
        "",
        f"- Machine: {c['machine']}. The machine is shared: load average {_load(c.get('load_before'))} at the "
        f"start, {_load(c.get('load_after'))} at the end. Every gateway figure is taken next to its direct figure, "
        "interleaved, so ratios and differences hold better than absolute values; CPU times (per request, per "
        "token) hold best.",
        f"- Pinning: gateway on CPU {pin['gateway'] or 'any'}, emulator on CPU {pin['emulator'] or 'any'}, load "
        f"generator on CPU {pin['loadgen'] or 'any'}; in the direct throughput blocks and the load-generator check "
        f"(the gateway idle) the load generator, wrk and hey run on CPU {pin.get('loadgen_direct') or 'any'}.",
        "- Gateway: `server_tgi.py`, one uvicorn worker, template `v3.llama3`, emulator backend `--no-launch`. "
        "Direct: the same TGI body (read from the emulator's request log) to the emulator's `/generate_stream`.",
        f"- Emulator: answers instantly unless a token delay is named ({c['token_delay'] * 1e3:g} ms/token series).",
        "- Workload: tool call = 3 tools, 6 messages, a 57-token answer with text and one call; plain chat = 2 "
        "messages, a 43-token text answer. See `bench/workload.py`.",
        "",
        "## Against the targets",
        "",
        *_table(["figure", "target", "measured", "holds"], [list(row) for row in summary_rows(r)]),
        "",
    ]
    if r.get("latency"):
        lines += ["## Latency at concurrency 1 (interleaved direct / gateway)", ""]
        rows = [[x["name"], x["metric"], x["n"], f"{x['direct_p50']:.2f}", f"{x['gateway_p50']:.2f}",
                 f"**{x['added_p50']:.2f}**", f"{x['direct_p99']:.2f}", f"{x['gateway_p99']:.2f}",
                 f"**{x['added_p99']:.2f}**", f"{x['gateway_cpu_ms']:.2f}", f"{x.get('gateway_wait_ms', 0):.2f}",
                 x["errors"]] for x in r["latency"]]
        lines += _table(["workload", "measured", "n", "direct p50 ms", "gateway p50 ms", "added p50 ms",
                         "direct p99 ms", "gateway p99 ms", "added p99 ms", "gateway CPU ms / request",
                         "gateway waited for a CPU, ms / request", "errors"], rows)
        lines += ["", "Time to first token: direct = the first token event; gateway = the first chunk carrying "
                  "content or a tool call (the parser must see the recipient line first).", ""]
    if r.get("throughput"):
        lines += ["## Throughput (tool call, non-stream; closed loop; blocks interleaved)", ""]
        rows = []
        for t in r["throughput"]:
            g = t["gateway_cpu"]
            d = t["direct_cpu"]
            rows.append([t["label"], t["concurrency"], f"{t['direct_rps']:.0f}", f"{t['gateway_rps']:.0f}",
                         f"**{t['ratio']:.0%}**", f"{t['direct_p50_ms']:.1f}", f"{t['gateway_p50_ms']:.1f}",
                         f"{g[0]:.0%} / {g[1]:.0%} / {g[2]:.0%}", f"{d[1]:.0%} / {d[2]:.0%}",
                         f"{t.get('gateway_gw_wait', 0):.0%}",
                         f"{t.get('gateway_per_core', 0):.0f} / {t.get('emulator_per_core', 0):.0f}",
                         f"{t.get('ratio_per_core', 0):.0%}", t["direct_errors"] + t["gateway_errors"]])
        lines += _table(["emulator", "concurrency", "direct req/s", "gateway req/s", "ratio", "direct p50 ms",
                         "gateway p50 ms", "CPU in gateway blocks: gateway / emulator / loadgen",
                         "CPU in direct blocks: emulator / loadgen", "gateway waited for a CPU",
                         "req/s per core: gateway / emulator", "ratio per core", "errors"], rows)
        lines += ["", "Rate = per connection, answers after its first one over the time from its first answer to "
                  "its last, summed; every connection gets at least 3 answers. CPU = share of one core. "
                  "\"Waited for a CPU\" = the gateway's run-queue time (`/proc/PID/schedstat`) as a share of the "
                  "block: CPU the shared machine did not give it. \"Per core\" divides each path's rate by the CPU "
                  "share of the process that bounds it (the gateway; the emulator on the direct path); \"ratio per "
                  "core\" = min(gateway, emulator) / emulator, the ratio if each had a core to itself.", ""]
    pt, pe, ip = r.get("per_token"), r.get("parse_e2e"), r.get("inproc")
    if pt or pe or ip:
        lines += ["## Streaming and parsing cost", ""]
    if pt:
        rows = [[f"{k} tokens", f"{v['gateway_cpu_ms']:.2f}", f"{v['direct_ms']:.2f}", f"{v['gateway_ms']:.2f}"]
                for k, v in pt["by_tokens"].items()]
        lines += _table(["streamed plain-chat answer", "gateway CPU ms / request", "direct p50 ms",
                         "gateway p50 ms"], rows)
        lines += ["", f"Per token (the slope between the two): **{pt['cpu_us_per_token']:.1f} µs** of gateway CPU, "
                  f"**{pt['added_wall_us_per_token']:.1f} µs** of added wall time.", ""]
    if pe:
        lines += [f"Non-streamed answers, gateway CPU per request: 1k tokens {pe['1k']['gateway_cpu_ms']:.1f} ms, "
                  f"16k tokens {pe['16k']['gateway_cpu_ms']:.1f} ms: **{pe['ratio']:.1f}×**.", ""]
    if ip:
        lines += ["In process (`bench/inproc.py`: the gateway's own code on the emulator's exact event bytes, no "
                  "sockets):", ""]
        rows = [["plan a request (validate, prepare, render, count tokens), tool call",
                 f"{ip['plan_us (tool call)']:.0f} µs"],
                ["plan a request, plain chat", f"{ip['plan_us (plain chat)']:.0f} µs"],
                ["stream path per token (1k answer)", f"{ip['stream_us_per_token']:.2f} µs"],
                ["complete (non-stream) path per token (1k answer)", f"{ip['complete_us_per_token']:.2f} µs"],
                ["stream path 1k → 16k tokens", f"{ip['stream_1k_ms']:.1f} → {ip['stream_16k_ms']:.1f} ms "
                                                f"({ip['stream_ratio']:.1f}×)"],
                ["complete path 1k → 16k tokens", f"{ip['complete_1k_ms']:.1f} → {ip['complete_16k_ms']:.1f} ms "
                                                  f"({ip['complete_ratio']:.1f}×)"]]
        for key in ("stages_us_per_token (1k text)", "stages_us_per_token (tool reply)"):
            for stage, us in ip[key].items():
                rows.append([f"{stage}, per token, {key.split('(')[1].rstrip(')')}", f"{us:.2f} µs"])
        lines += _table(["what", "cost"], rows) + [""]
    rss = r.get("rss") or []
    if rss:
        lines += ["## Gateway memory (RSS)", "",
                  "After the warm-up, then after each phase and every 1,000 soak requests (tool call, "
                  "concurrency 16):", ""]
        lines += _table(["requests served", "RSS MB"], [[f"{n:,}", f"{v:.1f}"] for n, v in rss]) + [""]
    lc = r.get("loadgen_check")
    if lc:
        lines += ["## Load generator check", "",
                  "Direct to the emulator, tool-call body, `/generate_stream`, concurrency 64, same CPU pinning:", ""]
        rows = [["bench/loadgen.py (ours)", f"{lc['loadgen']:.0f}"]]
        if lc.get("wrk") is not None:
            rows.append([f"wrk (`{lc.get('wrk_cmd', 'wrk')}`)", f"{lc['wrk']:.0f}"])
        if lc.get("hey") is not None:
            rows.append(["hey", f"{lc['hey']:.0f}"])
        lines += _table(["load generator", "req/s"], rows)
        lines += ["", "Each generator runs on the CPU the emulator does not use, so the emulator alone bounds these "
                  "figures; in the gateway blocks our generator reads one answer a request and uses about 1 % of a "
                  "core (throughput table).", ""]
    cl = r.get("clients")
    if cl:
        lines += _clients(cl)
    for w in r.get("warnings", []):
        lines.append(f"- warning: {w}")
    wk = r.get("workers")
    if wk:
        lines += [f"## Throughput by worker count (`--workers`, `bench/workers.py`; tool call, non-stream, "
                  f"c={wk['concurrency']}, unpinned)", ""]
        lines += _table(["workers", "req/s (median)", "rounds", "gateway CPU ms / request", "errors"],
                        [[row["workers"], f"{row['rps']:.0f}", ", ".join(f"{v:.0f}" for v in row["rounds"]),
                          f"{row['cpu_ms']:.2f}", row["errors"]] for row in wk["rows"]])
        lines += ["", f"{wk['cores']} CPUs, load average {_load(wk['load'])}. Each count runs a new gateway over "
                  "one emulator, counts interleaved; CPU is the supervisor's and the workers' together. More workers "
                  "help only as far as free cores remain beside the emulator and the load generator.", ""]
    if r.get("replicas"):
        lines += sections.replicas(r["replicas"])
    if r.get("guarantees"):
        lines += sections.guarantees(r["guarantees"])
    if r.get("big_body"):
        lines += sections.big_body(r["big_body"])
    if r.get("profile") or r.get("latency"):
        lines += sections.bounds(r)
    lines += sections.timings(r)
    lines += ["", "![results](results.png)", ""]
    return "\n".join(lines)


def _clients(cl: dict) -> list[str]:
    clients = cl["clients"]
    kinds = [k for k in ("thin", "hub", "textgen") if k in clients]
    lines = ["## TGI client choice", "", "Each client in its own process against the emulator "
             "(`bench/clients.py`; `text-generation` from a throwaway venv under /tmp).", ""]
    lines += _table(["client", "what"], [[k, clients[k]["label"]] for k in kinds]) + [""]
    traps = [t["trap"] for t in next((clients[k]["traps"] for k in kinds if "traps" in clients[k]), [])]
    rows = []
    for i, trap in enumerate(traps):
        row = [trap]
        for k in kinds:
            t = clients[k].get("traps", [None] * len(traps))[i]
            row.append("n/a" if t is None else ("ok" if t["ok"] else "**fails**: " + t["note"][:90]))
        rows.append(row)
    lines += _table(["protocol trap", *kinds], rows) + [""]
    rows = []
    for k in kinds:
        o = clients[k].get("overhead")
        if o:
            rows.append([k, o["requests"], o["tokens"], f"{o['p50_ms']:.2f}", f"{o['p99_ms']:.2f}",
                         f"{o['cpu_ms_per_request']:.2f}"])
    lines += _table(["client", "streamed requests", "tokens each", "p50 ms", "p99 ms", "client CPU ms / request"],
                    rows) + [""]
    return lines


def plot(r: dict, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    ax = axes[0][0]
    for label in dict.fromkeys(t["label"] for t in r.get("throughput", [])):
        rows = [t for t in r["throughput"] if t["label"] == label]
        xs = [t["concurrency"] for t in rows]
        ax.plot(xs, [t["direct_rps"] for t in rows], "o--", label=f"direct ({label})")
        ax.plot(xs, [t["gateway_rps"] for t in rows], "s-", label=f"gateway ({label})")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrency")
    ax.set_ylabel("requests / s")
    ax.set_title("Throughput, tool call (non-stream)")
    ax.legend(fontsize=8)
    ax = axes[0][1]
    lat = r.get("latency", [])
    if lat:
        names = [x["name"] for x in lat]
        xs = range(len(names))
        ax.bar([x - 0.2 for x in xs], [x["added_p50"] for x in lat], 0.4, label="added p50")
        ax.bar([x + 0.2 for x in xs], [x["added_p99"] for x in lat], 0.4, label="added p99")
        ax.axhline(1.0, color="green", ls=":", label="target p50")
        ax.axhline(3.0, color="red", ls=":", label="target p99")
        ax.set_xticks(list(xs), [n.replace(", ", "\n") for n in names], fontsize=8)
        ax.set_ylabel("ms")
        ax.set_title("Added latency at concurrency 1 (stream: time to first token)")
        ax.legend(fontsize=8)
    ax = axes[1][0]
    rss = r.get("rss") or []
    if rss:
        ax.plot([n for n, _ in rss], [v for _, v in rss], "o-")
        ax.axhline(200, color="red", ls=":", label="target 200 MB")
        ax.set_ylim(0, max(220, max(v for _, v in rss) * 1.1))
        ax.set_xlabel("requests served")
        ax.set_ylabel("RSS MB")
        ax.set_title("Gateway memory")
        ax.legend(fontsize=8)
    ax = axes[1][1]
    ip = r.get("inproc")
    if ip:
        stages = ip["stages_us_per_token (1k text)"]
        names = list(stages) + ["whole in-process path"]
        values = list(stages.values()) + [ip["stream_us_per_token"]]
        if r.get("per_token"):
            names.append("end to end (gateway CPU)")
            values.append(r["per_token"]["cpu_us_per_token"])
        ax.barh(names, values)
        ax.axvline(25, color="red", ls=":", label="target 25 µs")
        ax.set_xlabel("µs per streamed token")
        ax.set_title("Streaming cost per token")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


# Sections other tools own (the reliability suites' figures: tests/reliability/run.py) lie between these markers
# and are carried over when the benchmark part is written again (what follows the end marker is not: the big-body
# section once written by hand there is now the bench's own).
KEEP_MARKER = "<!-- reliability:start -->"
END_MARKER = "<!-- reliability:end -->"


def write(results: dict, out: Path) -> None:
    path = out / "RESULTS.md"
    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    kept = old[old.index(KEEP_MARKER):] if KEEP_MARKER in old else ""
    if END_MARKER in kept:
        kept = kept[: kept.index(END_MARKER) + len(END_MARKER)] + "\n"
    path.write_text(markdown(results).rstrip("\n") + ("\n\n" + kept if kept else "\n"), encoding="utf-8")
    plot(results, out / "results.png")
