"""Scale: ``--workers`` (one port, several processes, /metrics summed), ``--endpoint-dns`` through the real
gateway process, and the CLI of ``--replicas`` (the launch itself: tests/tgi/launch/test_replicas_e2e.py)."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from server_tgi import settings_from_args
from tests.support.gateway_proc import start_gateway
from tgi.api.startup import EXIT_ENDPOINT
from tgi.launch.spec import LaunchSpec
from tgi.launch.replicas import replica_groups

USER = [{"role": "user", "content": "Weather in Istanbul?"}]


def args_for(model_dirs, *extra: str) -> list[str]:
    return ["--model", str(model_dirs("v3.llama3")), "--prompt-template", "v3.llama3", "--no-launch",
            "--served-model-name", "functionary", "--startup-timeout", "10", *extra]


def ask(gw) -> tuple[str, str]:
    """One completion on a new connection (a new client): (the worker that answered, the reply's text)."""
    with OpenAI(base_url=gw.base_url + "/v1", api_key="none", max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(model="functionary", messages=USER)
        return raw.headers["x-gateway-worker"], raw.parse().choices[0].message.content


def series(gw, name: str) -> dict[str, float]:
    text = httpx.get(gw.base_url + "/metrics").text
    return {m.group(1): float(m.group(2)) for m in re.finditer(rf"^{name}(\S*) (\S+)$", text, re.M)}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def worker_pids(gw, count: int, timeout: float = 30.0) -> dict[int, int]:
    """Index -> pid of every worker, from /health on new connections (the kernel spreads them)."""
    seen: dict[int, int] = {}
    deadline = time.monotonic() + timeout
    while len(seen) < count:
        assert time.monotonic() < deadline, f"workers seen: {seen}\n{gw.logs()[-3000:]}"
        with httpx.Client() as http:
            gateway = http.get(gw.base_url + "/health").json()["gateway"]
        seen[gateway["worker"]] = gateway["pid"]
    return seen


def test_two_workers_serve_one_port_and_metrics_sum_both(model_dirs, emulator) -> None:
    with start_gateway(args_for(model_dirs, "--endpoint", emulator.base_url, "--workers", "2")) as gw:
        pids = worker_pids(gw, 2)
        assert len(set(pids.values())) == 2 and os.getpid() not in pids.values()
        answered: dict[str, int] = {}
        while len(answered) < 2 or sum(answered.values()) < 8:  # both workers answer (new connection each time)
            worker, text = ask(gw)
            assert text
            answered[worker] = answered.get(worker, 0) + 1
            assert sum(answered.values()) < 200, answered
        total = sum(answered.values())

        requests = series(gw, "functionary_requests_total")
        assert requests['{route="/v1/chat/completions",status="200",error_type="none"}'] == total
        assert series(gw, "functionary_gateway_workers")[""] == 2
        assert series(gw, "functionary_endpoint_attempts_total")[f'{{endpoint="{emulator.base_url}"}}'] == total
        assert series(gw, "functionary_endpoint_healthy")[f'{{endpoint="{emulator.base_url}"}}'] == 1
        assert series(gw, "functionary_request_duration_seconds_count")[""] == total

        os.kill(pids[0], signal.SIGKILL)  # a crashed worker is started again; the other serves meanwhile
        assert ask(gw)[1]
        deadline = time.monotonic() + 30
        while (restarted := worker_pids(gw, 2))[0] == pids[0]:
            assert time.monotonic() < deadline, gw.logs()[-3000:]
        assert "worker 0" in gw.logs() and "starting it again" in gw.logs()
        assert gw.stop() == 0
    assert not any(alive(pid) for pid in [*pids.values(), *restarted.values()])


def test_a_worker_that_cannot_start_stops_the_gateway(model_dirs) -> None:
    with start_gateway(args_for(model_dirs, "--endpoint", "http://127.0.0.1:9", "--workers", "2",
                                "--startup-timeout", "1"), wait=False) as gw:
        assert gw.process.wait(timeout=60) == EXIT_ENDPOINT  # worker 0's code (it starts before the others)
        logs = gw.logs()
        assert logs.count("start-up failed") == 1 and "no TGI endpoint answers" in logs, logs


def test_dns_discovery_through_the_gateway(model_dirs, emulator) -> None:
    port = emulator.base_url.rsplit(":", 1)[1]
    with start_gateway(args_for(model_dirs, "--endpoint-dns", f"http://localhost:{port}", "--dns-interval", "1")) as gw:
        with OpenAI(base_url=gw.base_url + "/v1", api_key="none", max_retries=0) as client:
            assert client.chat.completions.create(model="functionary", messages=USER).choices[0].message.content
        healthy = series(gw, "functionary_endpoint_healthy")
        assert healthy[f'{{endpoint="http://127.0.0.1:{port}"}}'] == 1  # localhost's IPv4 address


def test_replica_flags() -> None:
    s = settings_from_args(["--model", "m", "--endpoint", "http://127.0.0.1:8080", "--replicas", "4"])
    assert s.replicas == 4 and s.endpoints == tuple(f"http://127.0.0.1:{8080 + i}" for i in range(4))
    s = settings_from_args(["--model", "m", "--gpus", "0,1,2,3", "--gpus-per-replica", "2"])
    assert s.replicas == 2 and s.endpoints == ("http://127.0.0.1:8080", "http://127.0.0.1:8081")
    s = settings_from_args(["--model", "m", "--gpus", "2,3", "--gpus-per-replica", "2"])
    assert s.replicas == 1 and s.gpus == "2,3"  # one group: a plain launch on those GPUs
    assert replica_groups("all", replicas=2, gpus_per_replica=2) == ["0,1", "2,3"]
    assert replica_groups("4", replicas=None, gpus_per_replica=None) == ["0", "1", "2", "3"]
    assert replica_groups("none", replicas=3, gpus_per_replica=None) == ["none"] * 3
    assert replica_groups("device=0,1,2,3", replicas=2, gpus_per_replica=None) == ["0,1", "2,3"]
    spec = LaunchSpec(model="m", model_dir=Path("/tmp/m"), gpus="2,3", host_port=8081)  # replica 1 of 2 x 2 GPUs
    (request,) = spec.create_kwargs()["device_requests"]
    assert request.device_ids == ["2", "3"] and spec.container_name() == "functionary-tgi-m-8081"
    for bad in (["--gpus", "all", "--gpus-per-replica", "2"], ["--gpus", "0,1,2", "--gpus-per-replica", "2"],
                ["--replicas", "2", "--no-launch"], ["--replicas", "2", "--endpoint", "http://a:1", "--endpoint",
                                                     "http://b:1"], ["--replicas", "0"], ["--workers", "0"],
                ["--endpoint-dns", "tgi:80"], ["--endpoint-dns", "http://tgi:80", "--emulator"]):
        with pytest.raises(SystemExit):
            settings_from_args(["--model", "m", *bad])
    s = settings_from_args(["--model", "m", "--endpoint-dns", "http://tgi.ns.svc:80", "--workers", "3"])
    assert s.endpoints == () and s.endpoint_dns == ("http://tgi.ns.svc:80",) and s.workers == 3


def test_emulator_mode_with_workers_starts_one_emulator(model_dirs) -> None:
    from tests.support.emulator_proc import free_port

    tgi = f"http://127.0.0.1:{free_port()}"
    args = ["--model", str(model_dirs("v3.llama3")), "--prompt-template", "v3.llama3", "--emulator",
            "--endpoint", tgi, "--workers", "2", "--served-model-name", "functionary"]
    with start_gateway(args, timeout=60) as gw:
        health = httpx.get(gw.base_url + "/health").json()
        assert health["gateway"]["backend"].startswith("tgi-emulator") and health["gateway"]["workers"] == 2
        assert ask(gw)[1]
        assert gw.logs().count("EMULATOR MODE") == 1  # the supervisor's, not one per worker
        assert gw.stop() == 0
    with pytest.raises(httpx.TransportError):  # stopped with the gateway
        httpx.get(tgi + "/health")


def test_a_port_in_use_fails_at_once(model_dirs, emulator) -> None:
    from tgi.api.workers import bind_port

    with start_gateway(args_for(model_dirs, "--endpoint", emulator.base_url, "--workers", "2")) as first:
        with pytest.raises(OSError):  # not even a second gateway with SO_REUSEPORT may share the port
            bind_port("127.0.0.1", first.port, first=True)
