"""The workers' shared /metrics: snapshots over real Unix sockets, summed by render_merged (counters and
histograms add up, an endpoint is healthy only when every worker admits it, a gone worker is skipped)."""

from __future__ import annotations

import stat
from contextlib import AsyncExitStack

from tgi.cluster.pool import EndpointStats
from tgi.ops.metrics import Metrics, RequestRecord, render_merged
from tgi.ops.siblings import gather_snapshots, serve_snapshots, socket_path

URL = "http://10.0.0.1:80"


def worker_metrics(requests: int, *, admitted: bool, in_flight: int) -> tuple[Metrics, list[EndpointStats]]:
    metrics = Metrics()
    for i in range(requests):
        record = RequestRecord(f"r{i}", "POST", "/v1/chat/completions")
        record.status, record.completion_id = 200, f"chatcmpl-{i}"
        record.first_token_at = record.started + 0.01
        record.usage(10, 5, 1)
        metrics.finish(record, record.started + 0.2)
    metrics.in_flight = in_flight
    return metrics, [EndpointStats(URL, in_flight, admitted, requests, 0, 0 if admitted else 1)]


def sample(text: str, name: str) -> float:
    (line,) = [line for line in text.splitlines() if line.startswith(name + " ")]
    return float(line.rsplit(" ", 1)[1])


async def test_any_worker_renders_the_sum_of_all(tmp_path) -> None:
    workers = [worker_metrics(3, admitted=True, in_flight=1), worker_metrics(2, admitted=False, in_flight=2)]
    async with AsyncExitStack() as stack:
        for index, (metrics, stats) in enumerate(workers):
            await stack.enter_async_context(serve_snapshots(tmp_path, index, lambda m=metrics, s=stats: m.snapshot(s)))
        assert stat.S_IMODE(socket_path(tmp_path, 0).stat().st_mode) == 0o600
        socket_path(tmp_path, 7).touch()  # a worker that died without removing its socket: skipped
        own = workers[1][0].snapshot(workers[1][1])
        text = render_merged(await gather_snapshots(tmp_path, 1, own))

    chat = 'functionary_requests_total{route="/v1/chat/completions",status="200",error_type="none"}'
    assert sample(text, chat) == 5
    assert sample(text, "functionary_gateway_workers") == 2
    assert sample(text, "functionary_requests_in_flight") == 3
    assert sample(text, "functionary_request_duration_seconds_count") == 5
    assert sample(text, 'functionary_time_to_first_token_seconds_bucket{le="0.025"}') == 5
    assert sample(text, "functionary_completion_tokens_total") == 25
    assert sample(text, "functionary_tool_calls_total") == 5
    assert sample(text, f'functionary_endpoint_attempts_total{{endpoint="{URL}"}}') == 5
    assert sample(text, f'functionary_endpoint_in_flight{{endpoint="{URL}"}}') == 3
    assert sample(text, f'functionary_endpoint_healthy{{endpoint="{URL}"}}') == 0  # one worker ejected it
    assert not socket_path(tmp_path, 0).exists()  # removed on exit


def test_one_worker_renders_as_before() -> None:
    metrics, stats = worker_metrics(2, admitted=True, in_flight=0)
    assert render_merged([metrics.snapshot(stats)]) == metrics.render(stats, workers=1)
    assert "functionary_gateway_workers" not in metrics.render(stats)
