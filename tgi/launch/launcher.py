"""Runs TGI in a Docker container for the gateway, through the Docker SDK (never a shell string).

``launch_tgi(spec, startup_timeout=...)`` is an async context manager. It attaches to a running
container of ours with the same settings, or creates one from the frozen ``LaunchSpec`` (pulling the
image with visible progress if it is absent), waits for ``/health`` while streaming the container's
log lines, yields a ``TGIHandle``, and in ``finally`` stops and removes the container it started
(never one it attached to, and none with ``keep_container``). Every docker-py call runs in a thread;
waits are ``asyncio.sleep`` against one deadline.

A running container of ours with the same settings is attached to, a stopped one removed and recreated; a
running one with other settings (or another model on the same host port) is a ``ContainerConflictError``
naming it, unless ``replace``. The spec and naming are ``tgi/launch/spec.py``, the docker-py plumbing
``tgi/launch/container.py``, the errors ``tgi/launch/errors.py``, sharing with other gateways
``tgi/launch/sharing.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import docker.errors
import httpx

from tgi.launch.container import (
    ANSI,
    Log,
    LogFollower,
    check_port,
    connect,
    container_state,
    create_container,
    differences,
    ensure_image,
    existing_containers,
    healthy,
    start_container,
    stop_and_remove,
)
from tgi.launch.errors import (
    ContainerConflictError, LaunchInterruptedError, LaunchUsageError, TGIExitedError, TGIStartupTimeoutError,
)
from tgi.launch.sharing import Lease, leave_container
from tgi.launch.signals import cancel_on_signals, only_signals_cancelled
from tgi.launch.spec import (
    DEFAULT_TGI_IMAGE,
    GATEWAY_VALUE,
    LABEL_GATEWAY,
    LABEL_SETTINGS,
    LABEL_SETTINGS_HASH,
    LaunchSpec,
    labels_from_env,
    publish_address,
)

_POLL_INTERVAL = 0.5
LOG_TAIL_LINES = 50


class TGIHandle:
    """A TGI container this gateway started (``started_by_us``) or attached to."""

    def __init__(self, *, spec: LaunchSpec, container, started_by_us: bool, log: Log, logs_since: int | None):
        self.spec = spec
        self.endpoint = spec.endpoint
        self.container_name = spec.container_name()
        self.started_by_us = started_by_us
        self._container = container
        self._log = log
        self._since = logs_since  # attached: only lines logged from now on
        self._removed = False

    def __repr__(self) -> str:
        return f"TGIHandle({self.container_name!r}, endpoint={self.endpoint!r}, started_by_us={self.started_by_us})"

    async def wait_healthy(self, *, timeout: float) -> None:
        """Poll ``/health`` until 200; stream the container's logs meanwhile; fail fast if it exits."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        follower = LogFollower(self._container, prefix="[tgi] ", log=self._log, since=self._since, loop=loop)
        follower.start()
        try:
            with cancel_on_signals() as received:
                try:
                    await self._poll(deadline, timeout)
                except asyncio.CancelledError:
                    if only_signals_cancelled(received):
                        name = signal.Signals(received[0]).name
                        raise LaunchInterruptedError(
                            f"{name} while waiting for TGI in container {self.container_name}; {self._fate()}"
                        ) from None
                    raise
        finally:
            await asyncio.to_thread(follower.stop)

    async def _poll(self, deadline: float, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        async with httpx.AsyncClient(trust_env=False) as http:  # never through a proxy: it is local
            while True:
                if await healthy(http, self.endpoint, timeout=min(2.0, max(deadline - loop.time(), 0.1))):
                    self._log(f"[tgi] {self.container_name} is healthy at {self.endpoint}")
                    return
                status, exit_code = await asyncio.to_thread(container_state, self._container)
                if status in ("exited", "dead", "removed"):
                    tail = await self.logs_tail(LOG_TAIL_LINES)
                    raise TGIExitedError(
                        f"TGI container {self.container_name} exited with code {exit_code} before it was "
                        f"healthy. Last {len(tail)} log lines:\n" + "\n".join(tail),
                        exit_code=exit_code, log_tail=tail,
                    )
                if loop.time() >= deadline:
                    tail = await self.logs_tail(20)
                    raise TGIStartupTimeoutError(
                        f"TGI container {self.container_name} was not healthy at {self.endpoint} within "
                        f"{timeout:g} s (--startup_timeout); {self._fate()}. Last {len(tail)} log lines:\n"
                        + "\n".join(tail)
                    )
                await asyncio.sleep(min(_POLL_INTERVAL, max(deadline - loop.time(), 0)))

    async def logs_tail(self, n: int = LOG_TAIL_LINES) -> list[str]:
        """The last ``n`` log lines of the container (stdout and stderr), without ANSI colours."""
        def read() -> bytes:
            try:
                return self._container.logs(tail=n)  # type: ignore[attr-defined]
            except docker.errors.APIError:
                return b""
        text = (await asyncio.to_thread(read)).decode("utf-8", "replace")
        return [ANSI.sub("", line) for line in text.splitlines()][-n:]

    async def stop(self) -> None:
        """Stop and remove the container (idempotent). ``launch_tgi`` calls it only for a container it started."""
        if self._removed:
            return
        await asyncio.to_thread(stop_and_remove, self._container, self.spec.stop_timeout)
        self._removed = True
        self._log(f"[tgi] stopped and removed container {self.container_name}")

    def _fate(self) -> str:
        if not self.started_by_us:
            return "it was left running (this gateway did not start it)"
        if self.spec.keep_container:
            return "it was kept (--keep-container)"
        return "it is being stopped and removed"


@contextlib.asynccontextmanager
async def launch_tgi(spec: LaunchSpec, *, startup_timeout: float, log: Log | None = None) -> AsyncIterator[TGIHandle]:
    """Attach to or start TGI for ``spec`` and wait until it is healthy; clean up on exit."""
    log = log or logging.getLogger("gateway.launcher").info

    client = await connect()
    handle: TGIHandle | None = None
    lease: Lease | None = None
    with contextlib.ExitStack() as leases:
        try:
            # a signal while the container is created and started (before wait_healthy listens) interrupts too
            with cancel_on_signals() as received:
                try:
                    handle = await _attach_or_create(client, spec, log)
                    lease = leases.enter_context(Lease(handle.container_name))  # other gateways see this one use it
                    if handle.started_by_us:
                        await asyncio.to_thread(start_container, handle._container, spec)
                        log(f"[tgi] started container {handle.container_name} ({spec.image}) on {spec.endpoint}")
                except asyncio.CancelledError:
                    if only_signals_cancelled(received):
                        raise LaunchInterruptedError(
                            f"{signal.Signals(received[0]).name} while starting TGI container "
                            f"{spec.container_name()}; it is being stopped and removed"
                        ) from None
                    raise
            await handle.wait_healthy(timeout=startup_timeout)
            yield handle
        finally:
            try:
                if handle is not None:
                    # Shielded: a second Ctrl-C must not leave the container behind half-removed.
                    await asyncio.shield(leave_container(handle, lease, log))
            finally:
                client.close()


@contextlib.asynccontextmanager
async def launch_for_settings(settings, *, log: Log | None = None) -> AsyncIterator[TGIHandle]:
    """server_tgi's glue: the weights on the host (``tgi.launch.weights.ensure_weights``), then ``launch_tgi`` published
    on the first ``--endpoint``'s port. ``settings`` has the CLI's fields: model, revision, endpoints,
    remote_model_save_folder, tgi_image, gpus, shm_size, num_shard, quantize, dtype, max_total_tokens,
    max_input_tokens, launcher_args, keep_container, replace, startup_timeout. The HF token comes from the
    environment (HF_TOKEN), read by huggingface_hub; it never reaches the container."""
    from tgi.launch.weights import ensure_weights

    log = log or logging.getLogger("gateway.launcher").info
    weights = await ensure_weights(
        settings.model, revision=settings.revision, cache_dir=Path(settings.remote_model_save_folder), token=None,
        log=log,
    )
    host, port = publish_address(settings.endpoints[0])
    try:
        spec = LaunchSpec(
            model=settings.model, model_dir=weights, revision=settings.revision,
            image=settings.tgi_image or DEFAULT_TGI_IMAGE, host=host, host_port=port, gpus=settings.gpus,
            shm_size=settings.shm_size, num_shard=settings.num_shard, quantize=settings.quantize,
            dtype=settings.dtype, max_total_tokens=settings.max_total_tokens,
            max_input_tokens=settings.max_input_tokens, extra_args=tuple(settings.launcher_args),
            keep_container=settings.keep_container, replace=settings.replace, extra_labels=labels_from_env(),
        )
    except ValueError as exc:  # contradictory flags: a command-line error
        raise LaunchUsageError(str(exc)) from None
    async with launch_tgi(spec, startup_timeout=settings.startup_timeout, log=log) as handle:
        yield handle


async def _attach_or_create(client: docker.DockerClient, spec: LaunchSpec, log: Log) -> TGIHandle:
    name = spec.container_name()
    existing = await asyncio.to_thread(existing_containers, client, spec)
    for container in existing:
        labels = container.labels or {}
        if labels.get(LABEL_GATEWAY) != GATEWAY_VALUE:
            raise ContainerConflictError(
                f"a container named {name} exists that this gateway did not create; remove it "
                f"(docker rm -f {name}) or use another port in --endpoint"
            )
        if container.status != "running":
            log(f"[tgi] removing stopped container {container.name} (status {container.status})")
            await asyncio.to_thread(stop_and_remove, container, 0)
        elif labels.get(LABEL_SETTINGS_HASH) == spec.settings_hash() and container.name == name:
            log(f"[tgi] attaching to running container {name} ({spec.endpoint})")
            return TGIHandle(spec=spec, container=container, started_by_us=False, log=log, logs_since=int(time.time()))
        elif spec.replace:
            log(f"[tgi] replacing running container {container.name} (--replace)")
            await asyncio.to_thread(stop_and_remove, container, spec.stop_timeout)
        else:
            raise ContainerConflictError(
                f"container {container.name} is running with other settings "
                f"({differences(labels.get(LABEL_SETTINGS), spec.settings())}); pass --replace to replace it, "
                f"stop it (docker rm -f {container.name}), or use another port in --endpoint"
            )
    await asyncio.to_thread(check_port, client, spec)
    await ensure_image(client, spec.image, log)
    container = await asyncio.to_thread(create_container, client, spec)
    return TGIHandle(spec=spec, container=container, started_by_us=True, log=log, logs_since=None)
