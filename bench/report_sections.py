"""The RESULTS.md sections of the phases that run their own processes (bench/phases.py): rows of the targets
table, replicas, guarantee modes, the big-body stall, the profile summary ("what bounds each figure"), timings."""

from __future__ import annotations


def table(header: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c).replace("|", "\\|").replace("\n", "\\n") for c in row) + " |" for row in rows]
    return out


def target_rows(r: dict) -> list[tuple[str, str, str, str]]:
    """Rows for "Against the targets": figures without a target of their own, shown side by side."""
    rows = []
    wk = r.get("workers")
    if wk and len(wk["rows"]) > 1:
        one, two = wk["rows"][0], wk["rows"][-1]
        rows.append((f"throughput, `--workers {two['workers']}` / `--workers {one['workers']}` "
                     f"(c={wk['concurrency']})", "(no target)",
                     f"{two['rps'] / one['rps']:.2f}× ({two['rps']:.0f} vs {one['rps']:.0f} req/s)", "—"))
    for label, pair in (r.get("replicas") or {}).get("series", {}).items():
        rows.append((f"throughput, 2 replicas / 1 pooled, {label}", "(no target)",
                     f"{pair[1]['ratio']:.2f}× ({pair[1]['rps']:.0f} vs {pair[0]['rps']:.0f} req/s)", "—"))
    for g in (r.get("guarantees") or {}).get("rows", [])[1:]:
        rows.append((f"guarantee `{g['mode']}` / unconstrained, p50 (cached; first use)", "(no target)",
                     f"{g['cached_vs_auto']:.2f}× ({g['cached_p50_ms']:.1f} ms); first use {g['first_p50_ms']:.1f} ms",
                     "yes" if g["fits"] and g["tgi_requests"] == 1 else "**no**: the answer does not fit"))
    bb = r.get("big_body")
    if bb:
        rows.append(("one-word chat p50 beside 8 MiB bodies / alone", "(no target)",
                     f"{bb['ratio p50 beside 8 MiB / alone']:.2f}×", "—"))
    return rows


def guarantees(g: dict) -> list[str]:
    lines = ["## Guarantee modes (emulator's model mode, `--grammar auto`, the default; concurrency 1)", ""]
    rows = [[x["mode"], "yes" if x["fits"] else "**no**", x["tgi_requests"], f"{x['first_p50_ms']:.2f}",
             f"{x['cached_p50_ms']:.2f}", f"**{x['cached_vs_auto']:.2f}×**", f"{x['gateway_cpu_ms']:.2f}",
             f"{x['cpu_vs_auto']:.2f}×", x["errors"]] for x in g["rows"]]
    lines += table(["request", "answer fits", "TGI requests", "first use p50 ms", "cached p50 ms",
                    "cached / unconstrained", "gateway CPU ms / request (cached)", "CPU / unconstrained", "errors"],
                   rows)
    lines += ["", f"`python -m bench.guarantees`: template `{g['template']}`, the tiny test tokenizer; the model "
              "writes an answer that fits every guarantee (one `get_weather` call, or the JSON object), so each mode "
              "returns the same tokens and only the guarantee's cost differs. First use: each request brings a tool "
              "set (or schema) never seen before, so the gateway builds a new regex and the emulator a new "
              "outlines-core index (over a vocabulary of a few hundred tokens); cached: the same body again. "
              f"{g['rows'][0]['n_first']} first uses and {g['rows'][0]['n_cached']} cached requests per mode, "
              "interleaved."]
    ix = g.get("index_128k")
    if ix:
        lines += ["", f"Real TGI's first use of a grammar builds the index over the whole vocabulary: for the named "
                  f"case ({ix['regex_chars']:,}-character regex) over {ix['vocab']:,} synthesized tokens that took "
                  f"**{ix['index_s']:.1f} s** here (the gateway built the regex in {ix['gateway_regex_ms']:.2f} ms). "
                  "TGI caches it per grammar string, and the regex depends only on the tool set and the choice, so "
                  "a repeated tool set pays it once; the other cases (up to ~40 s for `required` over four tools) "
                  "are in docs/grammar.md (`python -m bench.grammar_index`)."]
    return lines + [""]


def replicas(rp: dict) -> list[str]:
    lines = ["## Replicas (two TGI emulators pooled behind one gateway, `bench/replicas.py`)", ""]
    rows = []
    for label, pair in rp["series"].items():
        for x in pair:
            rows.append([label, x["replicas"], f"{x['rps']:.0f}", ", ".join(f"{v:.0f}" for v in x["rounds"]),
                         f"**{x['ratio']:.2f}×**" if "ratio" in x else "1×", f"{x['cpu_ms']:.2f}",
                         " / ".join(str(n) for n in x["spread"][: x["replicas"]]), x["errors"]])
    lines += table(["series", "replicas", "req/s (median)", "rounds", "vs 1 replica", "gateway CPU ms / request",
                    "requests per emulator", "errors"], rows)
    lines += ["", "One gateway with `--endpoint` for one emulator, another with both (the pool: health checks, "
              "ejection, least-loaded routing), unpinned, blocks interleaved. TGI-bound: each emulator writes 5 ms a "
              "token and the gateway runs at most 16 generations on one endpoint (`--max-in-flight-per-endpoint`), "
              "like a GPU's batch: a second replica should come close to 2×. Instant: the gateway bounds the rate; "
              "the second endpoint must cost it nothing per request. `--replicas N` launches the containers on the "
              "real engine (tests/tgi/launch/test_replicas_e2e.py); no Docker here.", ""]
    return lines


def big_body(bb: dict) -> list[str]:
    lines = ["## A maximum-size body beside a one-word chat (`bench/big_body.py`)", ""]
    rows = [["alone", f"{bb['one-word chat alone p50 ms']:.1f}", f"{bb['alone max ms']:.1f}", "1.00", "—", "—"],
            ["beside 8 MiB bodies (refused from their size, never tokenized)",
             f"{bb['beside 8 MiB hopeless bodies p50 ms']:.1f}", f"{bb['beside 8 MiB max ms']:.1f}",
             f"**{bb['ratio p50 beside 8 MiB / alone']:.2f}**", bb["8 MiB bodies sent"],
             f"{bb['8 MiB body answered in s (mean)']:.2f} s"],
            ["beside 300 kB prompts tokenized on a worker thread",
             f"{bb['beside 300 kB tokenized prompts p50 ms']:.1f}",
             f"{bb['beside 300 kB max ms']:.1f}", f"**{bb['ratio p50 beside 300 kB / alone']:.2f}**",
             bb["300 kB bodies sent"], f"{bb['300 kB body answered in s (mean)']:.2f} s"]]
    lines += table(["one-word chat", "p50 ms", "max ms", "ratio p50 / alone", "big bodies sent",
                    "big body answered in (mean)"], rows)
    lines += ["", "The one-word chat (`max_tokens: 4`, emulator demo answer) alone, then while another client sends, "
              "one after another, bodies just under the 8 MiB body limit whose prompt is hopeless, then ~300 kB "
              "prompts that pass the size bound and are tokenized before their 400. Before issue 10 a 6 MB message "
              "stalled every other request for ~12 s; what is left beside an 8 MiB body is reading it and the JSON "
              "decoding and validation, which hold the GIL for tens of milliseconds each.", ""]
    return lines


def _shares(found: dict, key: str, n: int) -> str:
    return ", ".join(f"{name} {share:.0%}" for name, share in list(found.get(key, {}).items())[:n]) or "n/a"


def bounds(r: dict) -> list[str]:
    """What bounds each figure: the measured figure, the machine's share, the profile's largest parts."""
    prof = (r.get("profile") or {}).get("workloads", {})
    lines = ["## What bounds each figure (profile summary)", ""]
    if prof:
        names = list(dict.fromkeys(c for found in prof.values() for c in found.get("components", {})))
        rows = [[name] + [f"{found.get('components', {}).get(name, 0):.0%}" for found in prof.values()]
                for name in names]
        lines += [f"py-spy self time of the gateway process by component ({r['profile']['seconds']} s a workload at "
                  "250 Hz, gateway on CPU 1, emulator on CPU 0; `bench/profile_summary.py`):", ""]
        lines += table(["component", *prof], rows) + [""]
        lines += table(["workload", "samples", "largest functions (self)"],
                       [[k, v.get("samples", 0), v.get("error") or _shares(v, "functions", 5)]
                        for k, v in prof.items()]) + [""]
        lines += ["On a loaded machine py-spy counts a process preempted right after a write as busy in that write "
                  "(`RequestResponseCycle.send`): read those frames as \"a write happened here\" "
                  "(bench/PERF-NOTES.md).", ""]
    lines += [f"- {line}" for line in _bound_lines(r, prof)] + [""]
    lines += ["What was changed for these figures, what each change measured side by side, and what was tried and "
              "dropped (with the levers left): bench/PERF-NOTES.md and the README's Performance section.", ""]
    return lines


def _bound_lines(r: dict, prof: dict) -> list[str]:
    out = []
    lat = {x["name"]: x for x in r.get("latency", [])}
    keys = list(prof)
    pick = lambda i: prof[keys[i]] if len(keys) > i else {}  # noqa: E731
    if "tool call, non-stream" in lat:
        x = lat["tool call, non-stream"]
        out.append(f"**CPU per non-streamed request** ({x['gateway_cpu_ms']:.2f} ms): the gateway's own work, one "
                   f"core; at c=64: {_shares(pick(0), 'components', 3)}.")
    if "tool call, stream" in lat:
        x = lat["tool call, stream"]
        out.append(f"**Added time to first token** ({x['added_p50']:.2f} ms p50): the plan and the first TGI event "
                   f"to the first content chunk, plus {x.get('gateway_wait_ms', 0):.2f} ms a request waiting for a CPU "
                   f"on the shared machine; {_shares(pick(1), 'components', 3)}.")
    pt = r.get("per_token")
    if pt:
        ip = (r.get("inproc") or {}).get("stages_us_per_token (1k text)") or {}
        top = max(ip.items(), key=lambda kv: kv[1]) if ip else None
        out.append(f"**CPU per streamed token** ({pt['cpu_us_per_token']:.1f} µs): "
                   f"{_shares(pick(2), 'components', 3)}"
                   + (f"; in process the largest stage is {top[0]} ({top[1]:.1f} µs)." if top else "."))
    for t in r.get("throughput", []):
        if t["concurrency"] == 64 and not t.get("token_delay"):
            g = t["gateway_cpu"]
            if g[0] >= 0.85:
                bound = "the gateway's one core"
            elif t["gateway_gw_wait"] >= 0.15:
                bound = f"the shared machine (the gateway waited for a CPU {t['gateway_gw_wait']:.0%} of the time)"
            elif g[1] + g[2] >= 0.85:
                bound = f"the other core, shared by the emulator and the load generator ({g[1] + g[2]:.0%})"
            else:
                bound = "the round trips between the processes (none at a full core)"
            out.append(f"**Throughput at c=64** ({t['ratio']:.0%} raw, {t.get('ratio_per_core', 0):.0%} per core): "
                       f"gateway at {g[0]:.0%} of a core, emulator {g[1]:.0%}: bounded by {bound}.")
    wk = r.get("workers")
    if wk:
        out.append(f"**Workers**: {wk['cores']} CPUs hold the emulator, the load generator and the workers, so a "
                   "second worker only gets what is left (see its CPU column).")
    rp = r.get("replicas")
    if rp:
        out.append("**Replicas**: TGI-bound, each endpoint's in-flight limit bounds the rate and a second replica "
                   "doubles it up to the gateway's core; instant, the gateway's core bounds both.")
    g = r.get("guarantees")
    if g:
        out.append("**Guarantees**: cached, the gateway's regex building and the emulator's masked steps; a first use, "
                   "the index build (here a tiny vocabulary; real TGI: seconds over 128k tokens, once per tool set).")
    return out


def timings(r: dict) -> list[str]:
    t = r.get("timings")
    if not t:
        return []
    return ["Phase durations: " + ", ".join(f"{k} {v:.0f} s" for k, v in t.items()) + ".", ""]
