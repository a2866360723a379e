"""What grammar-guided tool calls cost: TGI generations per answer and the latency they add.

    python -m bench.grammar_cost [--requests 20] [--token-delay 0.01] [--prefill-delay 0.01] [--json]

For each template family and tool choice (``auto``, ``required``, a named function), the same streamed requests
go through a gateway with ``--grammar off`` and one with ``--grammar auto``, over the TGI emulator in demo mode
(a demo answer fits the grammar it is given; a free generation is cut where a call begins, as with TGI). The
emulator charges ``--prefill-delay`` before the first token of every generation and ``--token-delay`` per token:
with TGI's prefix cache the re-prefill of a segment is short, so a small prefill delay is the fair model; raise
it to see the cost without the cache. Per configuration: TGI generations per answer (cut ones included), median
and p90 latency of the whole answer, median time to the first chunk with a call or text, completion tokens.

``measure(template=..., choice=..., grammar=...)`` is the building block (bench/run.py may call it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from openai import OpenAI

from functionary.templates import get_template
from tests.support.model_fixture import make_model_dir
from tests.support.gateway_proc import start_gateway
from tests.support.emulator_proc import start_emulator

TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
        "required": ["city", "unit"]}}},
    {"type": "function", "function": {"name": "get_time", "description": "Time in a zone", "parameters": {
        "type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]}}},
]
CHOICES = {"auto": "auto", "required": "required", "named": {"type": "function", "function": {"name": "get_weather"}}}
TEMPLATES = ("v3.llama3", "v3-llama3.1", "qwen2.5-text-only")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _one(client: OpenAI, choice) -> tuple[float, float, int]:
    start = time.perf_counter()
    first = None
    usage = 0
    stream = client.chat.completions.create(
        model="functionary", messages=[{"role": "user", "content": "Weather in Paris?"}], tools=TOOLS,
        tool_choice=choice, stream=True, stream_options={"include_usage": True})
    for chunk in stream:
        if first is None and chunk.choices and (chunk.choices[0].delta.tool_calls or chunk.choices[0].delta.content):
            first = time.perf_counter()
        if chunk.usage is not None:
            usage = chunk.usage.completion_tokens
    end = time.perf_counter()
    return end - start, (first or end) - start, usage


def measure(*, template: str, choice: str, grammar: str, requests: int = 20, token_delay: float = 0.01,
            prefill_delay: float = 0.01, emulator=None, model_dir: Path | None = None) -> dict:
    """One configuration: ``requests`` streamed answers, one after another. Starts its own emulator (and model
    directory) unless given one."""
    with tempfile.TemporaryDirectory() as tmp:
        if model_dir is None:
            spec = get_template(template)
            specials = tuple(dict.fromkeys((*spec.special_tokens, *spec.stop_tokens, *spec.eos_tokens)))
            model_dir = make_model_dir(Path(tmp) / "model", special_tokens=specials)
        if emulator is None:
            with start_emulator(demo=True, max_total_tokens=65536, max_input_tokens=60000, token_delay=token_delay,
                                prefill_delay=prefill_delay) as own:
                return measure(template=template, choice=choice, grammar=grammar, requests=requests,
                               emulator=own, model_dir=model_dir)
        args = ["--model", str(model_dir), "--endpoint", emulator.base_url, "--prompt-template", template,
                "--no-launch", "--served-model-name", "functionary", "--grammar", grammar]
        with start_gateway(args) as gateway:
            client = OpenAI(base_url=gateway.base_url + "/v1", api_key="unused", max_retries=0)
            _one(client, CHOICES[choice])  # warm-up
            emulator.control("DELETE", "/emulator/requests")
            samples = [_one(client, CHOICES[choice]) for _ in range(requests)]
            log = [r for r in emulator.requests() if (r["body"] or {}).get("inputs") != "grammar probe"]
    latency = [s[0] for s in samples]
    return {
        "template": template, "choice": choice, "grammar": grammar, "requests": requests,
        "tgi_generations_per_answer": len(log) / requests,
        "constrained_per_answer": sum("grammar" in r["body"]["parameters"] for r in log) / requests,
        "cut_per_answer": sum(r["outcome"] == "cancelled" for r in log) / requests,
        "latency_ms_p50": statistics.median(latency) * 1e3,
        "latency_ms_p90": _percentile(latency, 0.9) * 1e3,
        "first_chunk_ms_p50": statistics.median(s[1] for s in samples) * 1e3,
        "completion_tokens": statistics.median(s[2] for s in samples),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--token-delay", type=float, default=0.01)
    parser.add_argument("--prefill-delay", type=float, default=0.01)
    parser.add_argument("--templates", nargs="*", default=list(TEMPLATES))
    parser.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    args = parser.parse_args(argv)
    rows = []
    with start_emulator(demo=True, max_total_tokens=65536, max_input_tokens=60000, token_delay=args.token_delay,
                        prefill_delay=args.prefill_delay) as emulator:
        for template in args.templates:
            for choice in CHOICES:
                for grammar in ("off", "auto"):
                    row = measure(template=template, choice=choice, grammar=grammar, requests=args.requests,
                                  emulator=emulator)
                    rows.append(row)
                    if args.json:
                        print(json.dumps(row), flush=True)
    if not args.json:
        print(f"token delay {args.token_delay * 1e3:g} ms, prefill delay {args.prefill_delay * 1e3:g} ms, "
              f"{args.requests} streamed requests each\n")
        print("| template | tool_choice | grammar | TGI generations / answer (cut) | p50 ms | p90 ms "
              "| first chunk ms | completion tokens |")
        print("|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['template']} | {r['choice']} | {r['grammar']} | {r['tgi_generations_per_answer']:.2f} "
                  f"({r['cut_per_answer']:.2f}) | {r['latency_ms_p50']:.1f} | {r['latency_ms_p90']:.1f} | "
                  f"{r['first_chunk_ms_p50']:.1f} | {r['completion_tokens']:g} |")
    return 0


if __name__ == "__main__":
    sys.path[:0] = [str(Path(__file__).resolve().parents[1])]
    sys.exit(main())
