"""``--replicas`` on the real Docker Engine with the emulator image: the gateway launches one container per
replica on consecutive ports, routes to both, ejects one that stops and keeps answering, and removes every
container on exit."""

from __future__ import annotations

import asyncio
import socket
import time

import httpx

from tests.support.docker_fixtures import (  # noqa: F401 - fixtures
    cleanup,
    containers_of_this_run,
    docker_client,
    emulator_image,
    free_port,
)
from tests.tgi.launch.test_launch_e2e import chat, functionary_dir, gateways, launch_args  # noqa: F401 - fixtures


def two_free_ports() -> int:
    """A port p with p + 1 free too."""
    for _ in range(50):
        port = free_port()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise AssertionError("no two consecutive free ports")


async def healthy_series(url: str) -> dict[str, float]:
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{url}/metrics")).text
    out = {}
    for line in text.splitlines():
        if line.startswith("functionary_endpoint_healthy{"):
            out[line.split('"')[1]] = float(line.rsplit(" ", 1)[1])
    return out


async def generations(port: int) -> int:
    async with httpx.AsyncClient() as http:
        found = (await http.get(f"http://127.0.0.1:{port}/emulator/requests")).json()["requests"]
    return sum(1 for r in found if r["route"] == "/generate_stream")


async def test_two_replicas_serve_one_stops_and_the_pool_ejects_it(
    emulator_image, functionary_dir, cleanup, docker_client, gateways
):
    port = two_free_ports()
    urls = [f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port + 1}"]
    gateway = gateways(launch_args(emulator_image, str(functionary_dir), port, "--replicas", "2",
                                   "--health-interval", "0.3", "--eject-after", "1"))
    await gateway.ready()
    containers = sorted(containers_of_this_run(docker_client), key=lambda c: c.name)
    assert [c.name.rsplit("-", 1)[1] for c in containers] == [str(port), str(port + 1)]
    assert all(c.status == "running" for c in containers)
    assert await healthy_series(gateway.url) == {urls[0]: 1, urls[1]: 1}

    for _ in range(8):
        await chat(gateway, str(functionary_dir))
    assert await generations(port) >= 1 and await generations(port + 1) >= 1  # least-loaded routing uses both

    await asyncio.to_thread(containers[1].stop, timeout=2)
    deadline = time.monotonic() + 20
    while (await healthy_series(gateway.url)).get(urls[1]) != 0:
        assert time.monotonic() < deadline, gateway.output
        await asyncio.sleep(0.2)
    before = await generations(port)
    for _ in range(4):
        await chat(gateway, str(functionary_dir))
    assert await generations(port) == before + 4

    await gateway.stop()  # SIGTERM (uvicorn re-raises it after its graceful shutdown)
    assert containers_of_this_run(docker_client) == []
    assert "2 replicas healthy" in gateway.output


async def test_workers_launch_the_replicas_once(emulator_image, functionary_dir, cleanup, docker_client, gateways):
    port = two_free_ports()
    gateway = gateways(launch_args(emulator_image, str(functionary_dir), port, "--replicas", "2", "--workers", "2"))
    await gateway.ready()
    assert len(containers_of_this_run(docker_client)) == 2  # by the supervisor, not per worker
    for _ in range(4):
        await chat(gateway, str(functionary_dir))
    assert await generations(port) + await generations(port + 1) == 4
    assert await gateway.stop() == 0
    assert containers_of_this_run(docker_client) == []
