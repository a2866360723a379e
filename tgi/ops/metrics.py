"""Per-request records and the gateway's Prometheus metrics.

Every HTTP request under ``/v1/`` gets a :class:`RequestRecord`; the pipeline writes into it as it goes (the
pool: endpoint, retries, time of the first token; the chat service: token counts and tool calls; the error
handlers: the error type) and, when the response is done, :meth:`Metrics.finish` folds it into the counters.
That is all the hot path pays: attribute writes and a few integer additions per request, nothing per token,
no locks (everything runs on the one event loop thread).

``/metrics`` is rendered on demand in Prometheus' text exposition format (version 0.0.4). It is written here
rather than with ``prometheus_client``: a dozen series do not need a dependency whose counters take a lock on
every increment, and the format is short (https://prometheus.io/docs/instrumenting/exposition_formats/).
Per-endpoint series (in flight, admitted, attempts, retries, ejections) are read from the pool at scrape time.

Under ``--workers N`` every worker keeps its own counters and pool; the worker that gets a scrape asks the
others for a :meth:`Metrics.snapshot` (``tgi/ops/siblings.py``) and renders :func:`render_merged`: counters,
histograms and in-flight gauges are sums over the workers, ``functionary_endpoint_healthy`` is 1 only when every
worker's pool admits the endpoint, and ``functionary_gateway_workers`` says how many workers answered.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Histogram", "Metrics", "RequestRecord", "ROUTES", "render_merged"]

# The routes that get their own label value; anything else under /v1/ is "other" (bounded label values).
ROUTES = frozenset({"/v1/chat/completions", "/v1/responses", "/v1/models"})

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class RequestRecord:
    """What one request did; written by whoever knows, read once at the end (log line and metrics)."""

    __slots__ = (
        "request_id", "method", "path", "started", "status", "error_type", "error_code", "first_token_at",
        "prompt_tokens", "completion_tokens", "tool_calls", "endpoint", "retries", "stream", "completion_id",
        "model", "finished", "lost",
    )

    def __init__(self, request_id: str, method: str, path: str) -> None:
        self.request_id = request_id
        self.method = method
        self.path = path
        self.started = time.perf_counter()
        self.status: int | None = None
        self.error_type: str | None = None
        self.error_code: str | None = None
        self.first_token_at: float | None = None
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.tool_calls = 0
        self.endpoint: str | None = None
        self.retries = 0
        self.stream: bool | None = None
        self.completion_id: str | None = None
        self.model: str | None = None
        self.finished = False  # the last body part was sent
        self.lost: list[str] = []  # endpoints lost mid-generation (a retry avoids them)

    def usage(self, prompt_tokens: int, completion_tokens: int, tool_calls: int) -> None:
        self.prompt_tokens, self.completion_tokens, self.tool_calls = prompt_tokens, completion_tokens, tool_calls

    def fields(self, now: float) -> dict:
        """The log line's fields; ``now`` is ``time.perf_counter()`` at the end."""
        out = {
            "request_id": self.request_id, "method": self.method, "path": self.path, "status": self.status,
            "latency_s": round(now - self.started, 4),
        }
        if self.error_type is not None:
            out["error_type"] = self.error_type
            if self.error_code is not None:
                out["error_code"] = self.error_code
        if self.completion_id is not None:
            out.update(
                completion_id=self.completion_id, model=self.model, stream=self.stream,
                ttft_s=round(self.first_token_at - self.started, 4) if self.first_token_at is not None else None,
                prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens,
                tool_calls=self.tool_calls, endpoint=self.endpoint, retries=self.retries,
            )
        return out


class Histogram:
    __slots__ = ("buckets", "counts", "sum", "count")

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # per bucket, not cumulative; the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def add(self, counts: list[int], total: float, count: int) -> None:
        """Adds another histogram's state (same buckets), as :meth:`Metrics.snapshot` writes it."""
        self.counts = [a + b for a, b in zip(self.counts, counts)]
        self.sum += total
        self.count += count

    def lines(self, name: str) -> list[str]:
        out = []
        total = 0
        for bound, count in zip(self.buckets, self.counts):
            total += count
            out.append(f'{name}_bucket{{le="{bound:g}"}} {total}')
        out.append(f'{name}_bucket{{le="+Inf"}} {self.count}')
        out.append(f"{name}_sum {self.sum!r}")
        out.append(f"{name}_count {self.count}")
        return out


class Metrics:
    def __init__(self) -> None:
        self.requests: dict[tuple[str, int, str], int] = {}
        self.in_flight = 0
        self.latency = Histogram(LATENCY_BUCKETS)
        self.ttft = Histogram(TTFT_BUCKETS)
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.tool_calls = 0

    def finish(self, record: RequestRecord, now: float) -> None:
        route = record.path if record.path in ROUTES else "other"
        key = (route, record.status or 0, record.error_type or "none")
        self.requests[key] = self.requests.get(key, 0) + 1
        if record.completion_id is None:  # not a generation: no latency, tokens or calls to count
            return
        self.latency.observe(now - record.started)
        if record.first_token_at is not None:
            self.ttft.observe(record.first_token_at - record.started)
        self.prompt_tokens += record.prompt_tokens
        self.completion_tokens += record.completion_tokens
        self.tool_calls += record.tool_calls

    def snapshot(self, endpoints: Iterable) -> dict:
        """Everything :meth:`render` shows, as JSON-ready data (for the worker that renders a scrape)."""
        return {
            "requests": [[*key, count] for key, count in self.requests.items()],
            "in_flight": self.in_flight,
            "latency": [self.latency.counts, self.latency.sum, self.latency.count],
            "ttft": [self.ttft.counts, self.ttft.sum, self.ttft.count],
            "tokens": [self.prompt_tokens, self.completion_tokens, self.tool_calls],
            "endpoints": [[e.url, e.in_flight, bool(e.admitted), e.attempts, e.retried, e.ejections]
                          for e in endpoints],
        }

    def add(self, snapshot: dict) -> None:
        for route, status, error_type, count in snapshot["requests"]:
            key = (route, int(status), error_type)
            self.requests[key] = self.requests.get(key, 0) + count
        self.in_flight += snapshot["in_flight"]
        self.latency.add(*snapshot["latency"])
        self.ttft.add(*snapshot["ttft"])
        prompt, completion, calls = snapshot["tokens"]
        self.prompt_tokens += prompt
        self.completion_tokens += completion
        self.tool_calls += calls

    def render(self, endpoints: Iterable, *, workers: int | None = None) -> str:
        """The exposition text; ``endpoints`` are the pool's :class:`tgi.cluster.pool.EndpointStats`;
        ``workers`` (under ``--workers``) is how many workers the figures sum."""
        out: list[str] = []

        def family(name: str, kind: str, help_text: str) -> None:
            out.append(f"# HELP {name} {help_text}")
            out.append(f"# TYPE {name} {kind}")

        family("functionary_requests_total", "counter",
               "Finished HTTP requests under /v1/ by route, status and OpenAI error type (none on success).")
        for (route, status, error_type), count in sorted(self.requests.items()):
            out.append(f'functionary_requests_total{{route="{route}",status="{status}",'
                       f'error_type="{_escape(error_type)}"}} {count}')
        family("functionary_requests_in_flight", "gauge", "HTTP requests under /v1/ being served.")
        out.append(f"functionary_requests_in_flight {self.in_flight}")
        family("functionary_request_duration_seconds", "histogram",
               "Chat completion latency, from the request to the last byte of the answer.")
        out += self.latency.lines("functionary_request_duration_seconds")
        family("functionary_time_to_first_token_seconds", "histogram",
               "Time from the request to the first token received from TGI.")
        out += self.ttft.lines("functionary_time_to_first_token_seconds")
        for name, value, help_text in (
            ("functionary_prompt_tokens_total", self.prompt_tokens, "Prompt tokens of finished chat completions."),
            ("functionary_completion_tokens_total", self.completion_tokens, "Tokens generated for chat completions."),
            ("functionary_tool_calls_total", self.tool_calls, "Tool (and legacy function) calls returned."),
        ):
            family(name, "counter", help_text)
            out.append(f"{name} {value}")
        endpoints = list(endpoints)
        for name, kind, attr, help_text in (
            ("functionary_endpoint_in_flight", "gauge", "in_flight", "Generations in flight on a TGI endpoint."),
            ("functionary_endpoint_healthy", "gauge", "admitted",
             "1 when the endpoint takes requests, 0 when health checks ejected it."),
            ("functionary_endpoint_attempts_total", "counter", "attempts", "Generations sent to the endpoint."),
            ("functionary_endpoint_retries_total", "counter", "retried",
             "Generations that failed on the endpoint before their first token and moved to another."),
            ("functionary_endpoint_ejections_total", "counter", "ejections", "Times the endpoint was ejected."),
        ):
            family(name, kind, help_text)
            for e in endpoints:
                out.append(f'{name}{{endpoint="{_escape(e.url)}"}} {int(getattr(e, attr))}')
        if workers is not None:
            family("functionary_gateway_workers", "gauge", "Gateway worker processes whose figures this scrape sums.")
            out.append(f"functionary_gateway_workers {workers}")
        return "\n".join(out) + "\n"


@dataclass(slots=True)
class _MergedEndpoint:
    url: str
    in_flight: int = 0
    admitted: bool = True
    attempts: int = 0
    retried: int = 0
    ejections: int = 0


def render_merged(snapshots: list[dict]) -> str:
    """The exposition text of several workers' :meth:`Metrics.snapshot` together (see the module docstring)."""
    total = Metrics()
    endpoints: dict[str, _MergedEndpoint] = {}
    for snap in snapshots:
        total.add(snap)
        for url, in_flight, admitted, attempts, retried, ejections in snap["endpoints"]:
            e = endpoints.setdefault(url, _MergedEndpoint(url))
            e.in_flight += in_flight
            e.admitted = e.admitted and admitted
            e.attempts += attempts
            e.retried += retried
            e.ejections += ejections
    return total.render(endpoints.values(), workers=len(snapshots))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
