"""bench/report.py renders every phase's section and the issue-14 target rows from a results dict; the profile
summary buckets py-spy's collapsed stacks by component. Pure functions: no processes, no timing."""

from __future__ import annotations

import json
from pathlib import Path

from bench import report
from bench.profile_summary import buckets, component

ROOT = Path(__file__).resolve().parents[2]


def _results() -> dict:
    r = json.loads((ROOT / "bench" / "results.json").read_text())  # a full run of the shared-stack phases
    r["workers"] = {"concurrency": 64, "cores": 2, "load": [1.0, 1.2], "rows": [
        {"workers": 1, "rps": 200.0, "rounds": [200.0], "cpu_ms": 4.0, "errors": 0},
        {"workers": 2, "rps": 260.0, "rounds": [260.0], "cpu_ms": 4.4, "errors": 0}]}
    pair = [{"replicas": 1, "rps": 50.0, "rounds": [50.0], "cpu_ms": 4.0, "spread": [100, 0], "errors": 0},
            {"replicas": 2, "rps": 98.0, "rounds": [98.0], "cpu_ms": 4.1, "spread": [50, 50], "errors": 0,
             "ratio": 1.96}]
    r["replicas"] = {"seconds": 4, "rounds": 2, "series": {"TGI-bound": pair, "instant (c=64)": pair}}
    row = {"fits": True, "tgi_requests": 1, "first_p50_ms": 20.0, "cached_p50_ms": 8.0, "cached_vs_auto": 1.1,
           "gateway_cpu_ms": 3.0, "cpu_vs_auto": 1.05, "errors": 0, "n_first": 5, "n_cached": 40}
    r["guarantees"] = {"template": "v3.llama3", "rows": [{**row, "mode": "tool_choice auto (unconstrained)"},
                                                         {**row, "mode": "tool_choice required", "fits": False}],
                       "index_128k": {"case": "named", "vocab": 128256, "regex_chars": 437,
                                      "gateway_regex_ms": 0.5, "index_s": 3.0}}
    r["big_body"] = {"one-word chat alone p50 ms": 30.0, "alone max ms": 40.0,
                     "beside 8 MiB hopeless bodies p50 ms": 90.0, "beside 8 MiB max ms": 150.0,
                     "8 MiB bodies sent": 10, "8 MiB body answered in s (mean)": 0.4,
                     "ratio p50 beside 8 MiB / alone": 3.0, "beside 300 kB tokenized prompts p50 ms": 60.0,
                     "beside 300 kB max ms": 100.0, "300 kB bodies sent": 2, "300 kB body answered in s (mean)": 2.2,
                     "ratio p50 beside 300 kB / alone": 2.0}
    r["profile"] = {"seconds": 3, "workloads": {"per request": buckets(
        "thread;run (/usr/lib/python3.11/asyncio/runners.py:118) 30\n"
        "thread;feed (/work/tgi/protocol/sse.py:40) 10\n")}}
    r["timings"] = {"latency": 60.0, "guarantees": 20.0}
    return r


def test_every_section_and_the_issue_targets_render():
    text = report.markdown(_results())
    for heading in ("## Against the targets", "## Replicas", "## Guarantee modes", "## A maximum-size body",
                    "## What bounds each figure", "## Throughput by worker count"):
        assert heading in text, heading
    for figure, target in (("gateway CPU per non-streamed request", "≤ 1.5 ms"),
                           ("added time to first token p50", "≤ 1 ms"),
                           ("gateway CPU per streamed token", "≤ 25 µs"),
                           ("throughput at c=64, gateway / direct per core", "≥ 60 %")):
        line = next(line for line in text.splitlines() if figure in line)
        assert target in line
    assert "guarantee `tool_choice required`" in text and "**no**: the answer does not fit" in text
    assert "1.96×" in text and "1.30×" in text  # replicas, workers
    assert "Phase durations: latency 60 s, guarantees 20 s." in text
    assert "grammar on" not in text  # the old multi-request phase is gone


def test_the_reliability_block_is_kept_and_what_follows_it_replaced(tmp_path):
    (tmp_path / "RESULTS.md").write_text("old\n<!-- reliability:start -->\nsuites\n<!-- reliability:end -->\n\n"
                                         "## A maximum-size body beside a one-word chat\nby hand\n")
    report.write(_results(), tmp_path)
    text = (tmp_path / "RESULTS.md").read_text()
    assert text.count("<!-- reliability:start -->\nsuites\n<!-- reliability:end -->") == 1
    assert "by hand" not in text and text.count("## A maximum-size body") == 1


def test_profile_components():
    assert component("/usr/lib/python3.11/asyncio/base_events.py").startswith("event loop")
    assert component("/work/tgi/protocol/http1.py").startswith("TGI client")
    assert component("/work/tgi/pipeline/chat.py").startswith("gateway pipeline")
    assert component("/work/functionary/parsers/v3.py").startswith("templates")
    assert component("/venv/lib/python3.11/site-packages/pydantic/main.py") == "pydantic"
    found = buckets("a;f (/x/site-packages/uvicorn/protocols/http/httptools_impl.py:1) 3\n"
                    "a;g (/usr/lib/python3.11/logging/__init__.py:2) 1\n")
    assert found["samples"] == 4
    assert found["components"]["HTTP server (uvicorn, httptools, h11, starlette, fastapi, anyio)"] == 0.75
    assert list(found["functions"]) == ["f (httptools_impl.py)", "g (__init__.py)"]
