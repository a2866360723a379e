"""The guarantee modes against the unconstrained path (issue 11 point 6), on the emulator's model mode.

    python -m bench.guarantees [--quick] [--json]

The emulator runs in model mode (``tgi/emulator/model.py``: the tiny test tokenizer, a greedy model given as
rules, grammars masked with outlines-core as TGI's server does, one index cached per regex string). The gateway
runs with its default ``--grammar auto``: a request that asks for no guarantee is one unconstrained TGI request;
``tool_choice`` required / named, ``parallel_tool_calls: false`` and ``response_format: json_schema`` are one TGI
request under a regex of the whole answer. The model writes an answer that already fits every guarantee (one call
to ``get_weather``, or a JSON object), so every mode returns the same tokens and only the guarantee's cost differs.

Per mode: **first use** (every request with a tool set / schema never seen before: an optional property with a
new name and a new tool, so the gateway builds a new regex and the emulator a new index) and **cached** (the same
body again: the gateway's regex and the emulator's index exist). Latency is the full answer at concurrency 1, the modes
interleaved; gateway CPU is read from ``/proc`` over a block of cached requests of one mode. The index over a
Llama-3-sized vocabulary (what real TGI pays on a first use) comes from ``bench/grammar_index.py`` (the named
case; the rest are in docs/grammar.md).
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import sys
import tempfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from bench import workload  # noqa: E402
from bench.phase_cli import run_phase  # noqa: E402
from bench.loadgen import Target, one_each  # noqa: E402
from bench.procs import cpu_seconds  # noqa: E402
from tests.support.emulator_model import make_emulator_model_dir, rule  # noqa: E402
from tests.support.emulator_proc import start_model_emulator  # noqa: E402
from tests.support.gateway_proc import start_gateway  # noqa: E402

TEMPLATE = workload.TEMPLATE
ARGS = '{"location": "New York, NY", "days": 3}'
ANSWER = '{"answer": "yes"}'
# v3.llama3: the prompt ends with ">>>" (auto, required), ">>>get_weather\n" (named); a JSON answer follows "all\n"
RULES = [rule(">>>", "get_weather\n" + ARGS + workload.EOS), rule(">>>get_weather\n", ARGS + workload.EOS),
         rule("all\n", ANSWER + workload.EOS)]
NAMED = {"type": "function", "function": {"name": "get_weather"}}
FORMAT_SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}


def _tools(fresh: int | None) -> list:
    tools = copy.deepcopy(workload.TOOLS)
    if fresh is not None:  # a tool set never seen before (a new name, a new schema): a new regex, a new index
        tools[0]["function"]["parameters"]["properties"][f"note_{fresh}"] = {"type": "string"}
        tools.append({"type": "function", "function": {"name": f"lookup_{fresh}", "description": "Look up",
                                                        "parameters": {"type": "object", "properties": {}}}})
    return tools


def _format(fresh: int | None) -> dict:
    schema = copy.deepcopy(FORMAT_SCHEMA)
    if fresh is not None:
        schema["properties"][f"note_{fresh}"] = {"type": "string"}
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}


MODES = {
    "tool_choice auto (unconstrained)": lambda f: workload.tool_request(stream=False, tools=_tools(f)),
    "tool_choice required": lambda f: workload.tool_request(stream=False, tools=_tools(f), tool_choice="required"),
    "named tool_choice": lambda f: workload.tool_request(stream=False, tools=_tools(f), tool_choice=NAMED),
    "parallel_tool_calls false": lambda f: workload.tool_request(stream=False, tools=_tools(f),
                                                                 parallel_tool_calls=False),
    "response_format json_schema": lambda f: workload.chat_request(stream=False, response_format=_format(f)),
}
BASELINE = next(iter(MODES))


def _check(base_url: str, body: dict, emulator) -> tuple[bool, int]:
    """One answer: does it fit (the call / the JSON the model wrote), and how many TGI requests it took."""
    before = emulator.state()["requests"]
    request = urllib.request.Request(base_url + "/v1/chat/completions", data=json.dumps(body).encode(),
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        message = json.loads(response.read())["choices"][0]["message"]
    tgi_requests = emulator.state()["requests"] - before
    if "response_format" in body:
        return json.loads(message["content"] or "null") == json.loads(ANSWER), tgi_requests
    calls = [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in message.get("tool_calls") or ()]
    return calls == [("get_weather", json.loads(ARGS))], tgi_requests


def _p50(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else float("nan")


async def _measure_stack(gateway, emulator, *, first: int, cached: int) -> list[dict]:
    pid, port = gateway.process.pid, gateway.port
    target = lambda body: Target("127.0.0.1", port, "/v1/chat/completions", workload.encode(body))  # noqa: E731
    fresh = itertools.count()
    rows = {name: {"mode": name} for name in MODES}
    for name, make in MODES.items():
        rows[name]["fits"], rows[name]["tgi_requests"] = _check(gateway.base_url, make(next(fresh)), emulator)
    firsts: dict[str, list[float]] = {name: [] for name in MODES}
    for _ in range(first):  # interleaved: one new tool set per mode, mode after mode
        for name, make in MODES.items():
            (samples,) = await one_each([target(make(next(fresh)))], rounds=1)
            firsts[name] += [(s.end - s.start) * 1e3 for s in samples if s.status == 200]
    targets = [target(make(None)) for make in MODES.values()]
    await one_each(targets, rounds=3)  # the cached regexes and indexes exist
    timed = await one_each(targets, rounds=cached)
    for (name, row), samples in zip(rows.items(), timed):
        cpu0 = cpu_seconds(pid)
        await one_each([targets[list(MODES).index(name)]], rounds=cached)
        row["gateway_cpu_ms"] = (cpu_seconds(pid) - cpu0) / cached * 1e3
        row["first_p50_ms"] = _p50(firsts[name])
        row["cached_p50_ms"] = _p50([(s.end - s.start) * 1e3 for s in samples])
        row["errors"] = sum(s.status != 200 for s in samples) + first - len(firsts[name])
        row["n_first"], row["n_cached"] = first, cached
    base = rows[BASELINE]
    for row in rows.values():
        row["first_vs_auto"] = row["first_p50_ms"] / base["cached_p50_ms"]
        row["cached_vs_auto"] = row["cached_p50_ms"] / base["cached_p50_ms"]
        row["cpu_vs_auto"] = row["gateway_cpu_ms"] / base["gateway_cpu_ms"]
    return list(rows.values())


def _index_128k() -> dict | None:
    """outlines-core's index for the named case over a synthesized 128,256-token vocabulary (real TGI's first use)."""
    try:
        from bench import grammar_index
    except ImportError:
        return None
    vocabulary, _ = grammar_index.synthetic_vocabulary(128256)
    regex, built = grammar_index.regex_for(grammar_index.CASES["named"], TEMPLATE)
    import time

    import outlines_core

    start = time.perf_counter()
    outlines_core.Index(regex, vocabulary)
    return {"case": "named", "vocab": 128256, "regex_chars": len(regex), "gateway_regex_ms": built * 1e3,
            "index_s": time.perf_counter() - start}


def measure(*, quick: bool = False) -> dict:
    first, cached = (5, 40) if quick else (20, 200)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = make_emulator_model_dir(Path(tmp) / "model", TEMPLATE, rules=RULES)
        with start_model_emulator(model_dir) as emulator:
            args = ["--model", str(model_dir), "--endpoint", emulator.base_url, "--prompt-template", TEMPLATE,
                    "--no-launch", "--served-model-name", "functionary", "--log-level", "warning"]
            with start_gateway(args) as gateway:  # the default: --grammar auto
                rows = asyncio.run(_measure_stack(gateway, emulator, first=first, cached=cached))
    return {"template": TEMPLATE, "grammar": "auto (default)", "rows": rows, "index_128k": _index_128k()}


def _show(out: dict) -> None:
    for row in out["rows"]:
        print(f"{row['mode']:34} fits {row['fits']!s:5} TGI requests {row['tgi_requests']}  first p50 "
              f"{row['first_p50_ms']:7.2f} ms  cached p50 {row['cached_p50_ms']:6.2f} ms ({row['cached_vs_auto']:.2f}x)"
              f"  gateway CPU {row['gateway_cpu_ms']:.2f} ms ({row['cpu_vs_auto']:.2f}x)")
    print(out["index_128k"])


def main(argv=None) -> int:
    return run_phase("python -m bench.guarantees", __doc__, measure, _show, argv)


if __name__ == "__main__":
    sys.exit(main())
