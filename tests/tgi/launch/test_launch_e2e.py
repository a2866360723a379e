"""The whole launch path through ``server_tgi.py``: the gateway process launches the emulator image on
the real Docker Engine (or fails clearly), answers through the container, and cleans up on a signal.

Containers get this run's test label through ``FUNCTIONARY_TGI_LABELS`` and are removed after each test.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.support.docker_fixtures import (  # noqa: F401 - fixtures
    RUN_ID,
    cleanup,
    containers_of_this_run,
    docker_client,
    emulator_image,
)
from tests.support.hub_mirror import HubMirror, Repo, write_safetensors
from tests.support.proc_handle import free_port
from tgi.launch.docker_image import TEST_LABEL
from tgi.api.startup import EXIT_ENDPOINT, EXIT_LAUNCH

REPO_ROOT = Path(__file__).resolve().parents[3]
LLAMA31_SPECIALS = ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|eom_id|>", "<|python_tag|>")


class Gateway:
    """``server_tgi.py`` as a child process; its output is collected line by line."""

    def __init__(self, args: list[str], *, env: dict | None = None) -> None:
        self.port = free_port()
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, str(REPO_ROOT / "server_tgi.py"), "--port", str(self.port), *args],
            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "FUNCTIONARY_TGI_LABELS": f"{TEST_LABEL}={RUN_ID}",
                 **(env or {})},
        )
        self._reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True)
        self._reader.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def output(self) -> str:
        return "".join(self.lines)

    async def ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient() as http:
            while time.monotonic() < deadline:
                assert self.proc.poll() is None, f"gateway exited with {self.proc.returncode}:\n{self.output}"
                try:
                    if (await http.get(f"{self.url}/health", timeout=2)).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.2)
        raise AssertionError(f"gateway not ready in {timeout} s:\n{self.output}")

    async def exit_code(self, timeout: float = 60) -> int:
        code = await asyncio.to_thread(self.proc.wait, timeout)
        self._reader.join(5)
        return code

    async def stop(self, signum: int = signal.SIGTERM) -> int:
        self.proc.send_signal(signum)
        return await self.exit_code(30)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def gateways():
    started: list[Gateway] = []

    def start(args: list[str], **kwargs) -> Gateway:
        gateway = Gateway(args, **kwargs)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.kill()


@pytest.fixture(scope="module")
def functionary_dir(tmp_path_factory) -> Path:
    from tests.support.model_fixture import make_model_dir

    return make_model_dir(tmp_path_factory.mktemp("models") / "tiny-functionary", special_tokens=LLAMA31_SPECIALS)


def launch_args(image: str, model: str, tgi_port: int, *extra: str) -> list[str]:
    return ["--model", model, "--endpoint", f"http://127.0.0.1:{tgi_port}", "--tgi-image", image, "--gpus", "none",
            "--prompt-template", "v3-llama3.1", "--startup_timeout", "60", *extra]


async def chat(gateway: Gateway, model: str) -> dict:
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.post(f"{gateway.url}/v1/chat/completions", json={
            "model": model, "messages": [{"role": "user", "content": "What's the weather like in Istanbul?"}],
            "max_tokens": 32,
        })
    assert response.status_code == 200, response.text
    return response.json()


def our_containers(docker_client) -> list:
    return containers_of_this_run(docker_client)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_launch_answer_through_container_and_shutdown_leaves_nothing(
    emulator_image, functionary_dir, cleanup, docker_client, gateways, signum
):
    tgi_port = free_port()
    gateway = gateways(launch_args(emulator_image, str(functionary_dir), tgi_port))
    await gateway.ready()
    (container,) = our_containers(docker_client)
    assert container.status == "running" and container.image.tags == [emulator_image]
    reply = await chat(gateway, str(functionary_dir))
    assert reply["choices"][0]["message"]["role"] == "assistant"
    async with httpx.AsyncClient() as http:  # the answer came from the container's TGI
        requests = (await http.get(f"http://127.0.0.1:{tgi_port}/emulator/requests")).json()
    assert requests
    assert "[tgi]" in gateway.output
    await gateway.stop(signum)
    assert our_containers(docker_client) == []


async def test_running_container_is_reused_and_not_stopped(
    emulator_image, functionary_dir, cleanup, docker_client, gateways
):
    tgi_port = free_port()
    first = gateways(launch_args(emulator_image, str(functionary_dir), tgi_port, "--keep-container"))
    await first.ready()
    (container,) = our_containers(docker_client)
    await first.stop()
    container.reload()
    assert container.status == "running"  # --keep-container
    assert f"leaving container {container.name} running (--keep-container)" in first.output
    assert f"docker rm -f {container.name}" in first.output

    second = gateways(launch_args(emulator_image, str(functionary_dir), tgi_port))
    await second.ready()
    await chat(second, str(functionary_dir))
    assert [c.id for c in our_containers(docker_client)] == [container.id]
    assert f"attaching to running container {container.name}" in second.output
    await second.stop()
    container.reload()
    assert container.status == "running"  # it did not start it: it does not stop it


async def test_launcher_leaves_a_shared_container_to_the_gateways_attached(
    emulator_image, functionary_dir, cleanup, docker_client, gateways
):
    """Defined behaviour (docs/docker.md, "Shared containers"): the launching gateway, on exit, leaves the
    container running while another gateway on this host uses it, and says which and how to stop it."""
    tgi_port = free_port()
    first = gateways(launch_args(emulator_image, str(functionary_dir), tgi_port))
    await first.ready()
    (container,) = our_containers(docker_client)
    second = gateways(launch_args(emulator_image, str(functionary_dir), tgi_port))
    await second.ready()
    assert f"attaching to running container {container.name}" in second.output
    await first.stop()
    container.reload()
    assert container.status == "running"
    assert f"leaving container {container.name} running: 1 other gateway(s) on this host use it " \
           f"(pid {second.proc.pid})" in first.output
    await chat(second, str(functionary_dir))  # the survivor still answers
    await second.stop()
    assert "leaving container" not in second.output.split("attaching to running container", 1)[0]


async def test_the_only_endpoint_vanishing_is_named(emulator_image, functionary_dir, cleanup, docker_client, gateways):
    tgi_port = free_port()
    first = gateways(launch_args(emulator_image, str(functionary_dir), tgi_port, "--keep-container"))
    await first.ready()
    (container,) = our_containers(docker_client)
    await first.stop()
    second = gateways(launch_args(emulator_image, str(functionary_dir), tgi_port))
    await second.ready()
    container.remove(force=True)
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.post(f"{second.url}/v1/chat/completions", json={
            "model": str(functionary_dir), "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code in (502, 503)
    await asyncio.sleep(0.5)
    assert "the only TGI endpoint" in second.output and "trying another" not in second.output


async def test_crash_while_loading_fails_fast_with_log_tail(
    emulator_image, functionary_dir, cleanup, docker_client, gateways
):
    gateway = gateways(launch_args(emulator_image, str(functionary_dir), free_port(),
                                   "--launcher-arg=--crash-on-start", "--launcher-arg=3"))
    started = time.monotonic()
    assert await gateway.exit_code(60) != 0
    assert time.monotonic() - started < 30
    assert gateway.proc.returncode == EXIT_LAUNCH
    assert "exited with code 3" in gateway.output and "Shard 0 failed to start" in gateway.output
    assert "Traceback" not in gateway.output  # one clean message, the container's log tail under it
    assert "start-up failed (exit code 4): TGI container" in gateway.output
    # the emulator never imitates a real TGI's model loading
    assert "flashinfer" not in gateway.output and "Successfully downloaded" not in gateway.output
    assert our_containers(docker_client) == []


async def test_startup_timeout_leaves_no_container(emulator_image, functionary_dir, cleanup, docker_client, gateways):
    args = launch_args(emulator_image, str(functionary_dir), free_port(), "--launcher-arg=--startup-delay",
                       "--launcher-arg=120")
    args[args.index("--startup_timeout") + 1] = "3"
    gateway = gateways(args)
    assert await gateway.exit_code(60) == EXIT_LAUNCH
    assert "--startup_timeout" in gateway.output and "Traceback" not in gateway.output
    assert our_containers(docker_client) == []


async def test_signal_while_loading_removes_the_container(
    emulator_image, functionary_dir, cleanup, docker_client, gateways
):
    gateway = gateways(launch_args(emulator_image, str(functionary_dir), free_port(),
                                   "--launcher-arg=--startup-delay", "--launcher-arg=120"))
    deadline = time.monotonic() + 60
    # loading: the container is started and TGI is not healthy yet (a signal before that is the launcher's
    # start phase, which cancel_on_signals covers as well)
    while not (our_containers(docker_client) and "started container" in gateway.output):
        assert time.monotonic() < deadline and gateway.proc.poll() is None, gateway.output
        await asyncio.sleep(0.2)
    await asyncio.sleep(0.5)
    started = time.monotonic()
    assert await gateway.stop(signal.SIGTERM) != 0
    assert time.monotonic() - started < 20
    assert our_containers(docker_client) == []


async def test_port_taken(emulator_image, functionary_dir, cleanup, docker_client, gateways):
    # Some other web server holds the endpoint's port: it is not TGI, and the gateway says so at once.
    holder = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    threading.Thread(target=holder.serve_forever, daemon=True).start()
    try:
        gateway = gateways(launch_args(emulator_image, str(functionary_dir), holder.server_address[1]))
        assert await gateway.exit_code(60) == EXIT_ENDPOINT
    finally:
        holder.shutdown()
        holder.server_close()
    assert "not a TGI server" in gateway.output and "HTTP 501" in gateway.output
    assert our_containers(docker_client) == []


async def test_image_missing(functionary_dir, cleanup, docker_client, gateways):
    gateway = gateways(launch_args("functionary-test-missing/tgi:never-built", str(functionary_dir), free_port()))
    assert await gateway.exit_code(60) != 0
    assert "could not be pulled" in gateway.output and "functionary-test-missing/tgi:never-built" in gateway.output
    assert our_containers(docker_client) == []


async def test_gpu_device_request_reaches_host_config(
    emulator_image, functionary_dir, cleanup, docker_client, gateways
):
    args = launch_args(emulator_image, str(functionary_dir), free_port(), "--keep-container")
    args[args.index("--gpus") + 1] = "0,1"
    gateway = gateways(args)
    code = await gateway.exit_code(60) if "nvidia" not in str(docker_client.info().get("Runtimes")) else None
    (container,) = our_containers(docker_client)
    (request,) = container.attrs["HostConfig"]["DeviceRequests"]
    assert request["DeviceIDs"] == ["0", "1"] and request["Capabilities"] == [["gpu"]]
    if code is not None:  # no GPU runtime on this host
        assert code != 0 and "NVIDIA Container Toolkit" in gateway.output and "--gpus none" in gateway.output


async def test_hub_model_is_downloaded_mounted_and_served(
    emulator_image, tmp_path, cleanup, docker_client, gateways, functionary_dir
):
    repo_dir = tmp_path / "hub" / "tiny"
    repo_dir.mkdir(parents=True)
    for item in functionary_dir.iterdir():
        (repo_dir / item.name).write_bytes(item.read_bytes())
    write_safetensors(repo_dir / "model.safetensors", nbytes=1024 * 1024)
    (repo_dir / "pytorch_model.bin").write_bytes(b"duplicate" * 1000)
    save = tmp_path / "saved-models"
    with HubMirror({"acme/tiny-functionary": Repo(repo_dir)}) as hub:
        gateway = gateways(
            launch_args(emulator_image, "acme/tiny-functionary", free_port(), "--remote_model_save_folder", str(save)),
            env={"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_DISABLE_TELEMETRY": "1"},
        )
        await gateway.ready()
        await chat(gateway, "acme/tiny-functionary")
        (container,) = our_containers(docker_client)
        (mount,) = container.attrs["Mounts"]
        assert mount["Source"] == str((save / "acme" / "tiny-functionary").resolve()) and mount["RW"] is False
        assert mount["Destination"] == "/models/acme/tiny-functionary"
        assert (save / "acme" / "tiny-functionary" / "model.safetensors").is_file()
        assert not (save / "acme" / "tiny-functionary" / "pytorch_model.bin").exists()
        await gateway.stop()
    assert our_containers(docker_client) == []


async def test_docker_unreachable_is_a_clear_error(functionary_dir, gateways):
    gateway = gateways(launch_args("any-image", str(functionary_dir), free_port()),
                       env={"DOCKER_HOST": "unix:///nonexistent/functionary-test/docker.sock"})
    assert await gateway.exit_code(60) != 0
    assert "DOCKER_HOST=unix:///nonexistent/functionary-test/docker.sock" in gateway.output
    assert "--no-launch" in gateway.output and "--endpoint" in gateway.output
