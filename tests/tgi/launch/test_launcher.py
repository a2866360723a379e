"""The TGI launcher on the real Docker Engine, with the emulator image standing in for TGI.

The image runs the emulator behind an entrypoint chained like TGI's, so these containers are created,
started, polled, logged, stopped and removed exactly as a real TGI container would be.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import docker.errors
import httpx
import pytest

from tests.support.docker_fixtures import (  # noqa: F401 - fixtures
    TEST_LABELS,
    LocalRegistry,
    cleanup,
    containers_of_this_run,
    docker_client,
    emulator_image,
    make_spec,
    model_dir,
)
from tgi.launch.errors import (
    ContainerConflictError,
    DockerUnavailableError,
    GPURuntimeError,
    ImagePullError,
    PortInUseError,
    TGIExitedError,
    TGIStartupTimeoutError,
)
from tgi.launch.launcher import launch_tgi
from tgi.launch.spec import (
    DEFAULT_TGI_IMAGE,
    LABEL_GATEWAY,
    LABEL_IMAGE,
    LABEL_MODEL,
    LABEL_REVISION,
    LaunchSpec,
    parse_gpus,
    publish_address,
)

REPO_ROOT = Path(__file__).resolve().parents[3]


# --- pure helpers ---------------------------------------------------------------------------------


def test_docker_args_are_a_list_mirroring_the_launcher_flags(tmp_path):
    spec = LaunchSpec(
        model="meetkai/functionary-small-v3.2", model_dir=tmp_path, revision="abc", host_port=8080,
        max_total_tokens=8192, max_input_tokens=4096, num_shard=2, quantize="fp8",
        extra_args=("--max-batch-prefill-tokens", "8192", "--disable-grammar-support"),
    )
    assert spec.docker_args() == [
        "--model-id", "/models/meetkai/functionary-small-v3.2", "--hostname", "0.0.0.0", "--port", "80",
        "--max-input-tokens", "4096", "--max-total-tokens", "8192", "--num-shard", "2", "--quantize", "fp8",
        "--max-batch-prefill-tokens", "8192", "--disable-grammar-support",
    ]
    assert "--revision" not in spec.docker_args()  # with a local path it would make TGI call the Hub
    assert spec.image == DEFAULT_TGI_IMAGE and DEFAULT_TGI_IMAGE.rsplit(":", 1)[1][0].isdigit()
    kwargs = spec.create_kwargs()
    mount = {"bind": "/models/meetkai/functionary-small-v3.2", "mode": "ro"}
    assert kwargs["volumes"] == {str(tmp_path.resolve()): mount}
    assert kwargs["environment"] == {"HF_HUB_OFFLINE": "1"}
    assert kwargs["ports"] == {"80/tcp": ("127.0.0.1", 8080)}


def test_name_and_labels_are_deterministic(tmp_path):
    a = LaunchSpec(model="meetkai/functionary-small-v3.2", model_dir=tmp_path, host_port=8080, revision="r1")
    b = LaunchSpec(model="meetkai/functionary-small-v3.2", model_dir=tmp_path, host_port=8080, revision="r1")
    assert a.container_name() == b.container_name() == "functionary-tgi-meetkai-functionary-small-v3.2-8080"
    assert a.labels() == b.labels()
    assert a.labels()[LABEL_MODEL] == "meetkai/functionary-small-v3.2"
    assert a.labels()[LABEL_REVISION] == "r1"
    assert a.labels()[LABEL_IMAGE] == DEFAULT_TGI_IMAGE
    assert a.labels()[LABEL_GATEWAY] == "functionary-tgi"
    other = LaunchSpec(model="meetkai/functionary-small-v3.2", model_dir=tmp_path, host_port=8080, dtype="bfloat16")
    assert other.settings_hash() != a.settings_hash() and other.container_name() == a.container_name()
    local = LaunchSpec(model=str(tmp_path), model_dir=tmp_path, host_port=9000)
    assert local.container_name() == f"functionary-tgi-{tmp_path.name.lower()}-9000"
    assert local.container_model_path == f"/models/{tmp_path.name.lower()}"


def test_parse_gpus_maps_to_device_requests():
    assert parse_gpus("none") is None and parse_gpus(None) is None
    (all_gpus,) = parse_gpus("all")
    assert all_gpus["Count"] == -1 and all_gpus["Capabilities"] == [["gpu"]]
    (two,) = parse_gpus("2")
    assert two["Count"] == 2
    (ids,) = parse_gpus("0,1")
    assert ids["DeviceIDs"] == ["0", "1"] and not ids["Count"]
    (by_device,) = parse_gpus("device=GPU-3a9f")
    assert by_device["DeviceIDs"] == ["GPU-3a9f"]
    for bad in ("0", "two gpus", "device="):
        with pytest.raises(ValueError):
            parse_gpus(bad)


def test_spec_rejects_what_tgi_would_refuse(tmp_path):
    with pytest.raises(ValueError, match="--quantize"):
        LaunchSpec(model="m/n", model_dir=tmp_path, quantize="awq", dtype="float16")
    with pytest.raises(ValueError, match="smaller"):
        LaunchSpec(model="m/n", model_dir=tmp_path, max_input_tokens=4096, max_total_tokens=4096)
    with pytest.raises(ValueError):
        LaunchSpec(model="m/n", model_dir=tmp_path, gpus="0")


def test_publish_address_from_endpoint():
    assert publish_address("http://127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert publish_address("http://localhost:9000/") == ("127.0.0.1", 9000)
    assert publish_address("http://127.0.0.1") == ("127.0.0.1", 80)


# --- on the engine --------------------------------------------------------------------------------


async def test_launch_healthy_serves_through_container_and_leaves_nothing(
    emulator_image, model_dir, cleanup, docker_client
):
    spec = make_spec(emulator_image, model_dir, max_total_tokens=4096, max_input_tokens=3000, shm_size="256m")
    lines: list[str] = []
    async with launch_tgi(spec, startup_timeout=60, log=lines.append) as tgi:
        assert tgi.started_by_us and tgi.container_name == spec.container_name()
        async with httpx.AsyncClient() as http:
            info = (await http.get(f"{tgi.endpoint}/info")).json()
        assert info["model_id"] == spec.container_model_path
        attrs = docker_client.api.inspect_container(tgi.container_name)
        assert attrs["Args"] == spec.docker_args()
        assert attrs["Config"]["Labels"][LABEL_MODEL] == str(model_dir)
        assert attrs["Config"]["Labels"]["functionary.test"] == TEST_LABELS[0][1]
        assert "HF_HUB_OFFLINE=1" in attrs["Config"]["Env"]
        assert not any(e.startswith(("HF_TOKEN=", "HUGGING_FACE_HUB_TOKEN=")) for e in attrs["Config"]["Env"])
        (mount,) = attrs["Mounts"]
        assert mount["Source"] == str(model_dir) and mount["RW"] is False
        assert attrs["HostConfig"]["ShmSize"] == 256 * 1024 * 1024
        binding = {"HostIp": "127.0.0.1", "HostPort": str(spec.host_port)}
        assert attrs["HostConfig"]["PortBindings"] == {"80/tcp": [binding]}
        assert not attrs["HostConfig"].get("DeviceRequests")
        assert await tgi.logs_tail(5)
    assert any(line.startswith("[tgi] ") for line in lines)
    assert containers_of_this_run(docker_client) == []


async def test_running_container_is_reused_stopped_one_recreated(emulator_image, model_dir, cleanup, docker_client):
    spec = make_spec(emulator_image, model_dir, keep_container=True)
    async with launch_tgi(spec, startup_timeout=60, log=lambda _: None) as first:
        assert first.started_by_us
    first_id = docker_client.containers.get(spec.container_name()).id  # kept running (--keep-container)

    lines: list[str] = []
    attach_spec = make_spec(emulator_image, model_dir, host_port=spec.host_port)  # same settings, no keep
    async with launch_tgi(attach_spec, startup_timeout=60, log=lines.append) as attached:
        assert not attached.started_by_us
    assert any("attaching" in line for line in lines)
    container = docker_client.containers.get(spec.container_name())
    assert container.id == first_id and container.status == "running"  # never stops what it attached to

    container.stop(timeout=5)
    async with launch_tgi(attach_spec, startup_timeout=60, log=lambda _: None) as recreated:
        assert recreated.started_by_us
        assert docker_client.containers.get(spec.container_name()).id != first_id
    assert containers_of_this_run(docker_client) == []


async def test_other_settings_conflict_names_the_container_or_replace(
    emulator_image, model_dir, cleanup, docker_client
):
    spec = make_spec(emulator_image, model_dir, keep_container=True)
    async with launch_tgi(spec, startup_timeout=60, log=lambda _: None):
        pass
    changed = make_spec(emulator_image, model_dir, host_port=spec.host_port, max_total_tokens=2048)
    with pytest.raises(ContainerConflictError) as err:
        async with launch_tgi(changed, startup_timeout=60, log=lambda _: None):
            pass
    assert spec.container_name() in str(err.value) and "--replace" in str(err.value)
    assert "max-total-tokens" in str(err.value) or "args" in str(err.value)

    replacing = make_spec(emulator_image, model_dir, host_port=spec.host_port, max_total_tokens=2048, replace=True)
    async with launch_tgi(replacing, startup_timeout=60, log=lambda _: None) as tgi:
        assert tgi.started_by_us
        labels = docker_client.containers.get(spec.container_name()).labels
        assert labels["functionary.settings-hash"] == replacing.settings_hash()
    assert containers_of_this_run(docker_client) == []


async def test_crash_while_loading_fails_fast_with_exit_code_and_log_tail(
    emulator_image, model_dir, cleanup, docker_client
):
    spec = make_spec(emulator_image, model_dir, extra_args=("--crash-on-start", "3"))
    started = time.monotonic()
    with pytest.raises(TGIExitedError) as err:
        async with launch_tgi(spec, startup_timeout=120, log=lambda _: None):
            pass
    assert time.monotonic() - started < 15
    assert err.value.exit_code == 3
    assert err.value.log_tail and len(err.value.log_tail) <= 50
    assert "code 3" in str(err.value) and err.value.log_tail[-1] in str(err.value)
    assert containers_of_this_run(docker_client) == []


async def test_startup_timeout_stops_and_removes_the_container(emulator_image, model_dir, cleanup, docker_client):
    spec = make_spec(emulator_image, model_dir, extra_args=("--startup-delay", "120"))
    lines: list[str] = []
    started = time.monotonic()
    with pytest.raises(TGIStartupTimeoutError) as err:
        async with launch_tgi(spec, startup_timeout=3, log=lines.append):
            pass
    assert 3 <= time.monotonic() - started < 15
    assert "--startup_timeout" in str(err.value) and spec.container_name() in str(err.value)
    assert any(line.startswith("[tgi] ") for line in lines)  # logs streamed while waiting
    assert containers_of_this_run(docker_client) == []


async def test_keep_container_survives_a_timeout(emulator_image, model_dir, cleanup, docker_client):
    spec = make_spec(emulator_image, model_dir, extra_args=("--startup-delay", "120"), keep_container=True)
    with pytest.raises(TGIStartupTimeoutError, match="kept"):
        async with launch_tgi(spec, startup_timeout=1, log=lambda _: None):
            pass
    assert docker_client.containers.get(spec.container_name()).status == "running"


async def test_port_in_use(emulator_image, model_dir, cleanup, docker_client):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:
        spec = make_spec(emulator_image, model_dir, host_port=holder.getsockname()[1])
        with pytest.raises(PortInUseError, match=str(spec.host_port)):
            async with launch_tgi(spec, startup_timeout=30, log=lambda _: None):
                pass
    finally:
        holder.close()
    assert containers_of_this_run(docker_client) == []


async def test_port_held_by_another_container_is_named(emulator_image, model_dir, cleanup, docker_client):
    port = make_spec(emulator_image, model_dir).host_port
    other = docker_client.containers.run(
        emulator_image, ["--port", "80"], detach=True, name=f"functionary-test-holder-{TEST_LABELS[0][1]}",
        labels=dict(TEST_LABELS), ports={"80/tcp": ("127.0.0.1", port)},
    )
    spec = make_spec(emulator_image, model_dir, host_port=port)
    with pytest.raises(PortInUseError, match=other.name):
        async with launch_tgi(spec, startup_timeout=30, log=lambda _: None):
            pass
    assert [c.id for c in containers_of_this_run(docker_client)] == [other.id]


async def test_missing_image_that_cannot_be_pulled(model_dir, cleanup, docker_client):
    image = "functionary-test-missing/tgi:never-built"
    spec = make_spec(image, model_dir)
    lines: list[str] = []
    with pytest.raises(ImagePullError) as err:
        async with launch_tgi(spec, startup_timeout=30, log=lines.append):
            pass
    assert image in str(err.value) and "--tgi-image" in str(err.value)
    assert any(line.startswith("[pull]") for line in lines)
    assert containers_of_this_run(docker_client) == []


@pytest.mark.parametrize(
    ("gpus", "expected"),
    [("all", {"Count": -1, "DeviceIDs": None}), ("2", {"Count": 2, "DeviceIDs": None}),
     ("device=0,1", {"Count": 0, "DeviceIDs": ["0", "1"]})],
)
async def test_gpu_device_request_on_host_config(emulator_image, model_dir, cleanup, docker_client, gpus, expected):
    # keep_container leaves the container that failed to start (no GPU runtime here) for inspection.
    spec = make_spec(emulator_image, model_dir, gpus=gpus, keep_container=True)
    try:
        async with launch_tgi(spec, startup_timeout=30, log=lambda _: None):
            pass  # a GPU host: it simply starts
    except GPURuntimeError as exc:
        assert "--gpus none" in str(exc) and "NVIDIA Container Toolkit" in str(exc)
    (request,) = docker_client.api.inspect_container(spec.container_name())["HostConfig"]["DeviceRequests"]
    assert request["Capabilities"] == [["gpu"]]
    assert {"Count": request["Count"], "DeviceIDs": request["DeviceIDs"] or None} == expected


async def test_docker_unreachable_names_docker_host(model_dir, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/functionary-test/docker.sock")
    spec = make_spec("any", model_dir)
    with pytest.raises(DockerUnavailableError) as err:
        async with launch_tgi(spec, startup_timeout=5, log=lambda _: None):
            pass
    message = str(err.value)
    assert "DOCKER_HOST=unix:///nonexistent/functionary-test/docker.sock" in message
    assert "--endpoint" in message and "--no-launch" in message


_SIGNAL_DRIVER = """
import asyncio, json, sys
from pathlib import Path
from tgi.launch.launcher import launch_tgi
from tgi.launch.spec import LaunchSpec
values = json.loads(sys.argv[1])
values["model_dir"] = Path(values["model_dir"])
values["extra_args"] = tuple(values["extra_args"])
values["extra_labels"] = tuple(tuple(kv) for kv in values["extra_labels"])
async def main():
    async with launch_tgi(LaunchSpec(**values), startup_timeout=120, log=lambda l: print(l, flush=True)):
        print("READY", flush=True)
        await asyncio.Event().wait()
asyncio.run(main())
"""


def _spawn(spec: LaunchSpec) -> subprocess.Popen:
    values = {
        "model": spec.model, "model_dir": str(spec.model_dir), "image": spec.image, "host_port": spec.host_port,
        "gpus": spec.gpus, "extra_args": list(spec.extra_args), "extra_labels": [list(kv) for kv in spec.extra_labels],
        "stop_timeout": spec.stop_timeout,
    }
    return subprocess.Popen(
        [sys.executable, "-c", _SIGNAL_DRIVER, json.dumps(values)], cwd=REPO_ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )


async def _wait_for(predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.2)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_signal_while_loading_removes_the_container(emulator_image, model_dir, cleanup, docker_client, signum):
    spec = make_spec(emulator_image, model_dir, extra_args=("--startup-delay", "120"))
    proc = _spawn(spec)
    try:
        await _wait_for(lambda: containers_of_this_run(docker_client), 30)
        await asyncio.sleep(0.5)
        proc.send_signal(signum)
        output, _ = await asyncio.to_thread(proc.communicate, timeout=30)
    finally:
        proc.kill()
    assert proc.returncode != 0
    assert "stopped and removed" in output
    assert containers_of_this_run(docker_client) == []


async def test_sigint_after_healthy_removes_only_what_it_started(emulator_image, model_dir, cleanup, docker_client):
    spec = make_spec(emulator_image, model_dir)
    proc = _spawn(spec)
    try:
        line = await asyncio.to_thread(lambda: next(l for l in proc.stdout if "READY" in l))
        assert "READY" in line
        proc.send_signal(signal.SIGINT)
        output, _ = await asyncio.to_thread(proc.communicate, timeout=30)
    finally:
        proc.kill()
    assert "stopped and removed" in output
    assert containers_of_this_run(docker_client) == []

    kept = make_spec(emulator_image, model_dir, keep_container=True)
    async with launch_tgi(kept, startup_timeout=60, log=lambda _: None):
        pass
    attach = _spawn(make_spec(emulator_image, model_dir, host_port=kept.host_port))
    try:
        await asyncio.to_thread(lambda: next(l for l in attach.stdout if "READY" in l))
        attach.send_signal(signal.SIGINT)
        output, _ = await asyncio.to_thread(attach.communicate, timeout=30)
    finally:
        attach.kill()
    assert "stopped and removed" not in output
    assert docker_client.containers.get(kept.container_name()).status == "running"


async def test_absent_image_is_pulled_with_progress(emulator_image, model_dir, cleanup, docker_client, tmp_path):
    registry = LocalRegistry(docker_client, emulator_image, tmp_path)
    image = registry.image(f"functionary-test/tgi-emulator:pull-{TEST_LABELS[0][1]}")
    spec = make_spec(image, model_dir)
    lines: list[str] = []
    try:
        async with launch_tgi(spec, startup_timeout=60, log=lines.append) as tgi:
            assert tgi.started_by_us
    finally:
        registry.close()
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_client.images.remove(image)
    pulls = [line for line in lines if line.startswith("[pull]")]
    assert any(" MB of " in line and "layers done" in line for line in pulls) and pulls[-1].endswith("done")
    assert any("/blobs/" in r for r in registry.requests)
