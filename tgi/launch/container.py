"""Docker plumbing for the launcher: the engine connection, finding our containers, the port check, the
image pull with visible progress, create/start/stop, the container state and a thread following its log.
Everything here is synchronous docker-py, always called through ``asyncio.to_thread`` (``connect`` and
``ensure_image`` do that themselves)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import re
import socket
import threading
import time
from collections.abc import Callable

import docker
import docker.errors
import httpx

from tgi.launch.errors import (
    ContainerConflictError,
    DockerUnavailableError,
    GPURuntimeError,
    ImagePullError,
    LaunchError,
    PortInUseError,
)
from tgi.launch.spec import GATEWAY_VALUE, LABEL_GATEWAY, LABEL_HOST_PORT, LaunchSpec

Log = Callable[[str], None]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


async def connect() -> docker.DockerClient:
    def connect() -> docker.DockerClient:
        client = docker.from_env()
        client.ping()
        return client

    try:
        return await asyncio.to_thread(connect)
    except docker.errors.DockerException as exc:
        where = os.environ.get("DOCKER_HOST")
        where = f"DOCKER_HOST={where}" if where else "unix:///var/run/docker.sock (DOCKER_HOST is not set)"
        hint = " (permission denied: add your user to the docker group)" if "ermission denied" in str(exc) else ""
        raise DockerUnavailableError(
            f"cannot reach the Docker engine at {where}{hint}: {exc}. Start Docker, or pass --endpoint with the "
            "URL of a TGI that is already running, or --no-launch to start without launching one."
        ) from None



def existing_containers(client: docker.DockerClient, spec: LaunchSpec) -> list:
    found = {}
    with contextlib.suppress(docker.errors.NotFound):
        by_name = client.containers.get(spec.container_name())
        found[by_name.id] = by_name
    same_port = client.containers.list(
        all=True, filters={"label": [f"{LABEL_GATEWAY}={GATEWAY_VALUE}", f"{LABEL_HOST_PORT}={spec.host_port}"]}
    )
    for container in same_port:
        found.setdefault(container.id, container)
    return list(found.values())


def differences(label: str | None, wanted: dict) -> str:
    try:
        current = json.loads(label or "{}")
    except ValueError:
        current = {}
    keys = [k for k in wanted if current.get(k) != wanted[k]]
    return "differs in " + ", ".join(f"{k}: {current.get(k)!r} vs {wanted[k]!r}" for k in keys) if keys else "unknown"


def check_port(client: docker.DockerClient, spec: LaunchSpec) -> None:
    probe = socket.socket(socket.AF_INET6 if ":" in spec.host else socket.AF_INET, socket.SOCK_STREAM)
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as docker-proxy does: TIME_WAIT is no conflict
    try:
        probe.bind((spec.host, spec.host_port))
    except OSError as exc:
        if exc.errno == errno.EADDRNOTAVAIL:
            raise LaunchError(
                f"{spec.host} (from --endpoint) is not an address of this machine: TGI can only be launched "
                "locally; start it on that host and pass --no-launch"
            ) from None
        holder = ""
        with contextlib.suppress(docker.errors.APIError):
            users = client.containers.list(filters={"publish": f"{spec.host_port}/tcp"})
            if users:
                holder = f" by container {users[0].name} ({users[0].image.tags[:1] or users[0].image.id})"
        raise PortInUseError(
            f"port {spec.host}:{spec.host_port} (from --endpoint) is already in use{holder}: choose another port in "
            "--endpoint, or stop what holds it; if it is a TGI, its /health did not answer"
        ) from None
    finally:
        probe.close()


async def ensure_image(client: docker.DockerClient, image: str, log: Log) -> None:
    try:
        await asyncio.to_thread(client.images.get, image)
        return
    except docker.errors.ImageNotFound:
        pass
    loop = asyncio.get_running_loop()
    log(f"[pull] {image} is not present locally: pulling it (TGI images are large)")
    await asyncio.to_thread(pull_image, client, image, lambda line: loop.call_soon_threadsafe(log, line))


def pull_image(client: docker.DockerClient, image: str, log: Log) -> None:
    repository, tag = docker.utils.parse_repository_tag(image)
    layers: dict[str, list[int]] = {}
    done: set[str] = set()
    last = 0.0
    try:
        for event in client.api.pull(repository, tag=tag or "latest", stream=True, decode=True):
            if "error" in event:
                raise docker.errors.APIError(event["error"])
            layer, status = event.get("id"), event.get("status", "")
            detail = event.get("progressDetail") or {}
            if layer and status == "Downloading" and detail.get("total"):
                layers[layer] = [detail.get("current", 0), detail["total"]]
            elif layer and status in ("Download complete", "Pull complete", "Already exists"):
                done.add(layer)
                if layer in layers:
                    layers[layer][0] = layers[layer][1]
            now = time.monotonic()
            if now - last >= 2.0:
                last = now
                current, total = (_size(sum(pair[i] for pair in layers.values())) for i in (0, 1))
                log(f"[pull] {image}: {current} of {total}, {len(done)} layers done")
    except docker.errors.APIError as exc:
        reason = getattr(exc, "explanation", None) or str(exc)
        raise ImagePullError(
            f"image {image} is not present and could not be pulled: {reason}. Check the name and tag (TGI tags "
            "have no 'v' prefix), registry access (docker login), or load the image locally (docker load) and "
            "pass its name as --tgi-image"
        ) from None
    log(f"[pull] {image}: done")


def _size(nbytes: int) -> str:
    return f"{nbytes / 1e9:.2f} GB" if nbytes >= 1e9 else f"{nbytes / 1e6:.1f} MB"


def create_container(client: docker.DockerClient, spec: LaunchSpec):
    kwargs = {k: v for k, v in spec.create_kwargs().items() if v is not None}
    try:
        return client.containers.create(**kwargs)
    except docker.errors.ImageNotFound as exc:
        raise ImagePullError(f"image {spec.image} disappeared before the container was created: {exc}") from None
    except docker.errors.APIError as exc:
        if exc.status_code == 409:
            raise ContainerConflictError(
                f"container {spec.container_name()} was created concurrently by another process: {exc.explanation}"
            ) from None
        raise LaunchError(f"docker could not create container {spec.container_name()}: {exc.explanation}") from None


def start_container(container, spec: LaunchSpec) -> None:
    try:
        container.start()
    except docker.errors.APIError as exc:
        reason = str(exc.explanation or exc)
        lowered = reason.lower()
        if "could not select device driver" in lowered or "nvidia" in lowered or "unknown runtime" in lowered:
            raise GPURuntimeError(
                f"--gpus {spec.gpus} needs the NVIDIA Container Toolkit on this Docker host ({reason}). "
                "Install it (see docs/docker.md), or run without GPUs: --gpus none with a CPU image "
                "(e.g. an -intel-cpu TGI tag)"
            ) from None
        if "port is already allocated" in lowered or "address already in use" in lowered:
            raise PortInUseError(
                f"port {spec.host}:{spec.host_port} (from --endpoint) is already in use: {reason}"
            ) from None
        raise LaunchError(f"docker could not start container {spec.container_name()}: {reason}") from None


def container_state(container) -> tuple[str, int | None]:
    try:
        container.reload()
    except docker.errors.NotFound:
        return "removed", None
    state = container.attrs.get("State", {})
    return container.status, state.get("ExitCode")


def stop_and_remove(container, timeout: int) -> None:
    with contextlib.suppress(docker.errors.NotFound):
        if timeout:
            with contextlib.suppress(docker.errors.APIError):
                container.stop(timeout=timeout)
        container.remove(force=True, v=True)


async def healthy(http: httpx.AsyncClient, endpoint: str, *, timeout: float) -> bool:
    try:
        response = await http.get(f"{endpoint}/health", timeout=timeout)
    except (httpx.TransportError, OSError):
        # Port closed, or Docker's proxy accepting then resetting / replying nothing: still starting.
        return False
    return response.status_code == 200


class LogFollower:
    """Forwards the container's log lines to ``log`` from a daemon thread while TGI starts."""

    def __init__(self, container, *, prefix: str, log: Log, since: int | None, loop: asyncio.AbstractEventLoop):
        self._container, self._prefix, self._log, self._since, self._loop = container, prefix, log, since, loop
        self._stream = None
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tgi-log-follower", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._stream is not None:
            with contextlib.suppress(Exception):
                self._stream.close()
        self._thread.join(timeout=2)

    def _run(self) -> None:
        try:
            # A client without read timeout: TGI may print nothing for minutes while loading shards.
            with contextlib.closing(docker.from_env(timeout=None)) as client:
                self._stream = client.api.logs(self._container.id, stream=True, follow=True, since=self._since)
                if self._stopped.is_set():
                    self._stream.close()
                pending = b""
                for chunk in self._stream:
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        self._emit(line)
                if pending:
                    self._emit(pending)
        except Exception:  # the stream ends with the container or with stop(); nothing to report
            pass

    def _emit(self, raw: bytes) -> None:
        if self._stopped.is_set():
            return
        line = ANSI.sub("", raw.decode("utf-8", "replace")).rstrip("\r")
        with contextlib.suppress(RuntimeError):  # loop already closed
            self._loop.call_soon_threadsafe(self._log, self._prefix + line)
