"""What a grammar's first use costs: outlines-core's index over a Llama-3-sized vocabulary.

    python -m bench.grammar_index [--vocab 128256] [--repeat 3] [--json]

TGI's server builds an index (regex -> allowed tokens per state) the first time it sees a grammar string, over the
WHOLE vocabulary, and caches it per string; outlines-core is the library it uses. This script times that build for
the whole-turn regexes the gateway sends (functionary/turn_grammar.py) for a typical tool set, per case:
``required`` (every call's arguments under their schema), a named function, ``auto`` with one strict tool (text or
calls), ``parallel_tool_calls: false`` (any JSON object as arguments) and ``response_format: json_object``. It also
times the gateway's own part, building the regex from the request (done per request, no cache).

No real tokenizer is needed (none is available offline): the vocabulary is synthesized, byte-level-BPE-like
(every printable character, then word pieces with and without a leading space, digits, JSON punctuation runs), with
the requested size. The figures are in docs/grammar.md.
"""

from __future__ import annotations

import argparse
import json
import random
import string
import time

import outlines_core

from functionary.openai_types import ChatCompletionRequest
from functionary.request import prepare_request
from functionary.templates import get_template
from functionary.turn_grammar import whole_turn_regex

TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]},
                                         "days": {"type": "integer", "minimum": 1, "maximum": 14}},
        "required": ["city"]}}},
    {"type": "function", "function": {"name": "get_time", "description": "Time in a zone", "parameters": {
        "type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]}}},
    {"type": "function", "function": {"name": "search_web", "description": "Search", "parameters": {
        "type": "object", "properties": {"query": {"type": "string"}, "num_results": {"type": "integer"},
                                         "safe": {"type": "boolean"}}, "required": ["query"]}}},
    {"type": "function", "function": {"name": "send_email", "description": "Email", "parameters": {
        "type": "object", "properties": {"to": {"type": "array", "items": {"type": "string"}},
                                         "subject": {"type": "string"}, "body": {"type": "string"}},
        "required": ["to", "subject", "body"]}}},
]
STRICT = [{**TOOLS[0], "function": {**TOOLS[0]["function"], "strict": True}}, *TOOLS[1:]]
CASES = {
    "required": dict(tools=TOOLS, tool_choice="required"),
    "named": dict(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_weather"}}),
    "auto + one strict tool": dict(tools=STRICT),
    "parallel_tool_calls false": dict(tools=TOOLS, parallel_tool_calls=False),
    "response_format json_object": dict(response_format={"type": "json_object"}),
}
SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
            "<|eom_id|>", "<|python_tag|>"]


def synthetic_vocabulary(size: int, *, seed: int = 0) -> tuple[outlines_core.Vocabulary, int]:
    """A deterministic vocabulary of ``size`` distinct tokens, EOS last."""
    rnd = random.Random(seed)
    tokens: dict[str, None] = dict.fromkeys(SPECIALS[:4] + SPECIALS[5:])
    tokens.update(dict.fromkeys(string.printable))
    tokens.update(dict.fromkeys(chr(c) for c in range(0xA1, 0x250)))
    for piece in ('{"', '":', '", "', '"}', '": "', '},', '],', '[{', '}]', "\n\n", "  ", "    ", "</", "<function=",
                  "function", ">{", "}</"):
        tokens[piece] = None
    for n in range(1000):
        tokens[str(n)] = None
    letters = string.ascii_lowercase
    weights = [8, 2, 3, 4, 12, 2, 2, 6, 7, 1, 1, 4, 2, 7, 8, 2, 1, 6, 6, 9, 3, 1, 2, 1, 2, 1]
    while len(tokens) < size - 1:
        word = "".join(rnd.choices(letters, weights, k=rnd.choice((2, 3, 3, 4, 4, 5, 5, 6, 7, 8, 9, 10))))
        form = rnd.random()
        if form < 0.45:
            word = " " + word
        elif form < 0.55:
            word = word.capitalize()
        elif form < 0.6:
            word = " " + word.capitalize()
        tokens[word] = None
    mapping = {text: [i] for i, text in enumerate(list(tokens)[: size - 1])}
    eos = size - 1
    return outlines_core.Vocabulary(eos, mapping), eos


def regex_for(case: dict, version: str) -> tuple[str, float]:
    request = ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "hi"}], **case)
    template = get_template(version)
    start = time.perf_counter()
    prepared = prepare_request(request)
    regex = whole_turn_regex(template, request, prepared)
    return regex, time.perf_counter() - start


def measure(vocab_size: int, repeat: int, version: str) -> list[dict]:
    vocabulary, _ = synthetic_vocabulary(vocab_size)
    rows = []
    for name, case in CASES.items():
        regex, built = regex_for(case, version)
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            outlines_core.Index(regex, vocabulary)
            times.append(time.perf_counter() - start)
        rows.append({"case": name, "regex_chars": len(regex), "gateway_regex_ms": round(built * 1000, 2),
                     "index_s_min": round(min(times), 2), "index_s_max": round(max(times), 2)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocab", type=int, default=128256, help="vocabulary size (Llama 3: 128,256)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--template", default="v3-llama3.1")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = measure(args.vocab, args.repeat, args.template)
    if args.json:
        print(json.dumps({"vocab": args.vocab, "template": args.template, "rows": rows}, indent=2))
        return
    print(f"outlines-core index build, {args.vocab:,} tokens, template {args.template}")
    print(f"{'case':30} {'regex chars':>12} {'gateway ms':>11} {'index s (min-max)':>18}")
    for row in rows:
        print(f"{row['case']:30} {row['regex_chars']:>12,} {row['gateway_regex_ms']:>11} "
              f"{row['index_s_min']:>8} - {row['index_s_max']:<8}")


if __name__ == "__main__":
    main()
