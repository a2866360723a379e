"""Runs TGI in a Docker container for the gateway, through the Docker SDK (never a shell string).

``launch_tgi(spec, startup_timeout=...)`` is an async context manager. It attaches to a running
container of ours with the same settings, or creates one from the frozen ``LaunchSpec`` (pulling the
image with visible progress if it is absent), waits for ``/health`` while streaming the container's
log lines, yields a ``TGIHandle``, and in ``finally`` stops and removes the container it started
(never one it attached to, and none with ``keep_container``). Every docker-py call runs in a thread;
waits are ``asyncio.sleep`` against one deadline.

Containers are named ``functionary-tgi-<model>-<host port>`` and labelled with the model, revision,
image, host port and a hash of all settings, which is how a later start recognises them:

* running, same settings → attach;   stopped → removed and recreated;
* running, other settings (or another model on the same host port) → ``ContainerConflictError``
  naming it, unless ``replace``.

Errors::

    GatewayError (functionary/errors.py)
    └── LaunchError                   TGI could not be started (start-up only, no HTTP status is sent)
        ├── DockerUnavailableError    the engine cannot be reached (names DOCKER_HOST)
        ├── ImagePullError            the image is absent and cannot be pulled
        ├── PortInUseError            the host port of --endpoint is taken
        ├── GPURuntimeError           GPUs requested but the engine has no GPU runtime
        ├── ContainerConflictError    a container of ours with other settings holds the name or port
        ├── TGIExitedError            the container exited while loading (exit code + log tail)
        ├── TGIStartupTimeoutError    not healthy before --startup_timeout
        └── LaunchInterruptedError    SIGINT/SIGTERM while waiting (the container is cleaned up first)

SIGINT/SIGTERM during the wait cancel it even where a server has deferred those signals (uvicorn
does during lifespan start-up); the previous handlers still run and are restored afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import docker
import docker.errors
import httpx
from docker.types import DeviceRequest

from functionary.errors import GatewayError
from tgi.launch.sharing import Lease, leave_container

DEFAULT_TGI_IMAGE = "ghcr.io/huggingface/text-generation-inference:3.3.5"
CONTAINER_PORT = 80
MODELS_MOUNT = PurePosixPath("/models")
LOG_TAIL_LINES = 50

LABEL_GATEWAY = "functionary.gateway"
LABEL_MODEL = "functionary.model"
LABEL_REVISION = "functionary.revision"
LABEL_IMAGE = "functionary.image"
LABEL_HOST_PORT = "functionary.host-port"
LABEL_SETTINGS_HASH = "functionary.settings-hash"
LABEL_SETTINGS = "functionary.settings"
GATEWAY_VALUE = "functionary-tgi"

_POLL_INTERVAL = 0.5
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

Log = Callable[[str], None]


class LaunchError(GatewayError):
    """TGI could not be started in Docker."""


class DockerUnavailableError(LaunchError):
    """The Docker engine cannot be reached."""


class ImagePullError(LaunchError):
    """The TGI image is not present locally and pulling it failed."""


class PortInUseError(LaunchError):
    """The host port taken from --endpoint is already in use."""


class GPURuntimeError(LaunchError):
    """GPUs were requested but the engine cannot provide them (no NVIDIA container toolkit)."""


class ContainerConflictError(LaunchError):
    """A container of this gateway, with other settings, already holds the name or the host port."""


class TGIExitedError(LaunchError):
    """The container exited before TGI became healthy."""

    def __init__(self, message: str, *, exit_code: int | None, log_tail: list[str]) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.log_tail = log_tail


class TGIStartupTimeoutError(LaunchError):
    """TGI did not become healthy before the start-up deadline."""


class LaunchInterruptedError(LaunchError):
    """SIGINT or SIGTERM arrived while waiting for TGI."""


@contextlib.contextmanager
def cancel_on_signals(task: asyncio.Task | None = None) -> Iterator[list[int]]:
    """While inside, SIGINT/SIGTERM cancel ``task`` (default: the current one) and then run the handler
    that was installed before (uvicorn's, asyncio.run's), except Python's KeyboardInterrupt default.
    Yields the list of signals received. A no-op outside the main thread."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    loop = asyncio.get_running_loop()
    task = task or asyncio.current_task()
    previous: dict[int, object] = {}

    def handler(signum: int, frame: object) -> None:
        received.append(signum)
        if task is not None:
            loop.call_soon_threadsafe(task.cancel)
        before = previous.get(signum)
        if callable(before) and before is not signal.default_int_handler:
            before(signum, frame)

    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError, OSError):
            previous[signum] = signal.signal(signum, handler)
    try:
        yield received
    finally:
        for signum, before in previous.items():
            signal.signal(signum, before)  # type: ignore[arg-type]


def only_signals_cancelled(received: list[int]) -> bool:
    """Inside ``except CancelledError`` under ``cancel_on_signals``: True (and the cancellation is consumed)
    when a signal was the only reason, so the caller may raise its own error instead."""
    task = asyncio.current_task()
    if not received or task is None:
        return False
    uncancel = getattr(task, "uncancel", None)  # Python 3.11+
    return uncancel() == 0 if uncancel is not None else True


def parse_gpus(value: str | int | None) -> list[DeviceRequest] | None:
    """``--gpus`` like docker's: ``all``, a count ``N``, device ids ``0,1`` / ``device=0,1`` / ``GPU-<uuid>``,
    or ``none``. Returns the device requests, or None for no GPU."""
    text = str(value).strip() if value is not None else "none"
    if text.lower() in ("none", ""):
        return None
    if text.lower() == "all":
        return [DeviceRequest(count=-1, capabilities=[["gpu"]])]
    if text.isdigit() and "," not in text:
        if int(text) == 0:
            raise ValueError("--gpus 0 is ambiguous: use --gpus none for no GPU, or --gpus device=0 for GPU 0")
        return [DeviceRequest(count=int(text), capabilities=[["gpu"]])]
    ids = text.split("=", 1)[1] if text.startswith("device=") else text
    device_ids = [part.strip() for part in ids.split(",") if part.strip()]
    if not device_ids or not all(re.fullmatch(r"[\w.:-]+", d) for d in device_ids):
        raise ValueError(f"--gpus {value!r}: expected all, none, a count, or device ids such as 0,1")
    return [DeviceRequest(device_ids=device_ids, capabilities=[["gpu"]])]


def publish_address(endpoint: str) -> tuple[str, int]:
    """Host interface and port to publish TGI on, from an ``--endpoint`` URL."""
    parts = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
    host = parts.hostname or "127.0.0.1"
    if host == "localhost":
        host = "127.0.0.1"
    return host, parts.port or (443 if parts.scheme == "https" else 80)


def _slug(text: str, limit: int = 48) -> str:
    slug = re.sub(r"[^a-z0-9_.-]+", "-", text.lower()).strip("-.")
    return slug[:limit].rstrip("-.") or "model"


@dataclass(frozen=True)
class LaunchSpec:
    """Everything that defines the TGI container. ``model_dir`` is the host directory of the weights."""

    model: str
    model_dir: Path
    revision: str | None = None
    image: str = DEFAULT_TGI_IMAGE
    host: str = "127.0.0.1"
    host_port: int = 8080
    gpus: str = "all"
    shm_size: str = "1g"
    num_shard: int | None = None
    quantize: str | None = None
    dtype: str | None = None
    max_total_tokens: int | None = None
    max_input_tokens: int | None = None
    extra_args: tuple[str, ...] = ()
    keep_container: bool = False
    replace: bool = False
    extra_labels: tuple[tuple[str, str], ...] = ()
    stop_timeout: int = 10  # seconds TGI gets to shut its shards down before SIGKILL

    def __post_init__(self) -> None:
        object.__setattr__(self, "model_dir", Path(self.model_dir).expanduser().resolve())
        object.__setattr__(self, "extra_args", tuple(str(a) for a in self.extra_args))
        object.__setattr__(self, "extra_labels", tuple(tuple(kv) for kv in self.extra_labels))
        parse_gpus(self.gpus)  # fail at construction, not at container start
        if self.quantize and self.dtype:
            raise ValueError("--dtype cannot be combined with --quantize (TGI refuses it)")
        if self.max_input_tokens and self.max_total_tokens and self.max_input_tokens >= self.max_total_tokens:
            raise ValueError("--max-input-tokens must be smaller than --max-total-tokens")

    @property
    def endpoint(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.host_port}"

    @property
    def container_model_path(self) -> str:
        """Where the weights appear in the container: ``/models/<org>/<name>`` or ``/models/<dir name>``."""
        parts = [_slug(p, 96) for p in self._model_name().split("/") if p not in ("", ".", "..")]
        return str(MODELS_MOUNT.joinpath(*(parts or ["model"])))

    def container_name(self) -> str:
        return f"functionary-tgi-{_slug(self._model_name())}-{self.host_port}"

    def _model_name(self) -> str:
        """The Hub id, or the directory's name for a local model."""
        is_path = self.model.startswith(("/", ".", "~")) or Path(self.model).expanduser().is_dir()
        return self.model_dir.name if is_path else self.model

    def docker_args(self) -> list[str]:
        """The launcher arguments. No ``--revision``: with a local path it makes TGI call the Hub."""
        args = ["--model-id", self.container_model_path, "--hostname", "0.0.0.0", "--port", str(CONTAINER_PORT)]
        for flag, value in (
            ("--max-input-tokens", self.max_input_tokens),
            ("--max-total-tokens", self.max_total_tokens),
            ("--num-shard", self.num_shard),
            ("--quantize", self.quantize),
            ("--dtype", self.dtype),
        ):
            if value is not None:
                args += [flag, str(value)]
        return args + list(self.extra_args)

    def settings(self) -> dict:
        """What must match for a running container to be reused."""
        return {
            "image": self.image, "model": self.model, "revision": self.revision, "model_dir": str(self.model_dir),
            "args": self.docker_args(), "gpus": str(self.gpus), "shm_size": self.shm_size,
            "host": self.host, "host_port": self.host_port,
        }

    def settings_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.settings(), sort_keys=True).encode()).hexdigest()[:16]

    def labels(self) -> dict[str, str]:
        return {
            LABEL_GATEWAY: GATEWAY_VALUE,
            LABEL_MODEL: self.model,
            LABEL_REVISION: self.revision or "",
            LABEL_IMAGE: self.image,
            LABEL_HOST_PORT: str(self.host_port),
            LABEL_SETTINGS_HASH: self.settings_hash(),
            LABEL_SETTINGS: json.dumps(self.settings(), sort_keys=True),
            **dict(self.extra_labels),
        }

    def create_kwargs(self) -> dict:
        """Keyword arguments of ``client.containers.create`` (pure; what ``docker run`` would be given)."""
        return {
            "image": self.image,
            "command": self.docker_args(),
            "name": self.container_name(),
            "labels": self.labels(),
            "environment": {"HF_HUB_OFFLINE": "1"},  # the weights are mounted; no token enters the container
            "volumes": {str(self.model_dir): {"bind": self.container_model_path, "mode": "ro"}},
            "ports": {f"{CONTAINER_PORT}/tcp": (self.host, self.host_port)},
            "device_requests": parse_gpus(self.gpus),
            "shm_size": self.shm_size,
        }


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

    @property
    def container_id(self) -> str:
        return self._container.id  # type: ignore[attr-defined]

    async def wait_healthy(self, *, timeout: float) -> None:
        """Poll ``/health`` until 200; stream the container's logs meanwhile; fail fast if it exits."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        follower = _LogFollower(self._container, prefix="[tgi] ", log=self._log, since=self._since, loop=loop)
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
                if await _healthy(http, self.endpoint, timeout=min(2.0, max(deadline - loop.time(), 0.1))):
                    self._log(f"[tgi] {self.container_name} is healthy at {self.endpoint}")
                    return
                status, exit_code = await asyncio.to_thread(_state, self._container)
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
        return [_ANSI.sub("", line) for line in text.splitlines()][-n:]

    async def stop(self) -> None:
        """Stop and remove the container (idempotent). ``launch_tgi`` calls it only for a container it started."""
        if self._removed:
            return
        await asyncio.to_thread(_stop_and_remove, self._container, self.spec.stop_timeout)
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

    client = await _connect()
    handle: TGIHandle | None = None
    lease: Lease | None = None
    with contextlib.ExitStack() as leases:
        try:
            handle = await _attach_or_create(client, spec, log)
            lease = leases.enter_context(Lease(handle.container_name))  # other gateways see this one use it
            if handle.started_by_us:
                await asyncio.to_thread(_start, handle._container, spec)
                log(f"[tgi] started container {handle.container_name} ({spec.image}) on {spec.endpoint}")
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
    except ValueError as exc:  # contradictory flags: a command-line error (exit code 2)
        from tgi.api.startup import EXIT_USAGE, StartupError

        raise StartupError(str(exc), exit_code=EXIT_USAGE) from None
    async with launch_tgi(spec, startup_timeout=settings.startup_timeout, log=log) as handle:
        yield handle


def labels_from_env() -> tuple[tuple[str, str], ...]:
    """Extra container labels from ``FUNCTIONARY_TGI_LABELS`` (``key=value,key=value``), e.g. for ops or tests."""
    pairs = (item.partition("=") for item in os.environ.get("FUNCTIONARY_TGI_LABELS", "").split(","))
    return tuple((key.strip(), value.strip()) for key, _, value in pairs if key.strip())


# --- Docker plumbing (synchronous; always called through asyncio.to_thread) -------------------------


async def _connect() -> docker.DockerClient:
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


async def _attach_or_create(client: docker.DockerClient, spec: LaunchSpec, log: Log) -> TGIHandle:
    name = spec.container_name()
    existing = await asyncio.to_thread(_existing, client, spec)
    for container in existing:
        labels = container.labels or {}
        if labels.get(LABEL_GATEWAY) != GATEWAY_VALUE:
            raise ContainerConflictError(
                f"a container named {name} exists that this gateway did not create; remove it "
                f"(docker rm -f {name}) or use another port in --endpoint"
            )
        if container.status != "running":
            log(f"[tgi] removing stopped container {container.name} (status {container.status})")
            await asyncio.to_thread(_stop_and_remove, container, 0)
        elif labels.get(LABEL_SETTINGS_HASH) == spec.settings_hash() and container.name == name:
            log(f"[tgi] attaching to running container {name} ({spec.endpoint})")
            return TGIHandle(spec=spec, container=container, started_by_us=False, log=log, logs_since=int(time.time()))
        elif spec.replace:
            log(f"[tgi] replacing running container {container.name} (--replace)")
            await asyncio.to_thread(_stop_and_remove, container, spec.stop_timeout)
        else:
            raise ContainerConflictError(
                f"container {container.name} is running with other settings "
                f"({_differences(labels.get(LABEL_SETTINGS), spec.settings())}); pass --replace to replace it, "
                f"stop it (docker rm -f {container.name}), or use another port in --endpoint"
            )
    await asyncio.to_thread(_check_port, client, spec)
    await _ensure_image(client, spec.image, log)
    container = await asyncio.to_thread(_create, client, spec)
    return TGIHandle(spec=spec, container=container, started_by_us=True, log=log, logs_since=None)


def _existing(client: docker.DockerClient, spec: LaunchSpec) -> list:
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


def _differences(label: str | None, wanted: dict) -> str:
    try:
        current = json.loads(label or "{}")
    except ValueError:
        current = {}
    keys = [k for k in wanted if current.get(k) != wanted[k]]
    return "differs in " + ", ".join(f"{k}: {current.get(k)!r} vs {wanted[k]!r}" for k in keys) if keys else "unknown"


def _check_port(client: docker.DockerClient, spec: LaunchSpec) -> None:
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


async def _ensure_image(client: docker.DockerClient, image: str, log: Log) -> None:
    try:
        await asyncio.to_thread(client.images.get, image)
        return
    except docker.errors.ImageNotFound:
        pass
    loop = asyncio.get_running_loop()
    log(f"[pull] {image} is not present locally: pulling it (TGI images are large)")
    await asyncio.to_thread(_pull, client, image, lambda line: loop.call_soon_threadsafe(log, line))


def _pull(client: docker.DockerClient, image: str, log: Log) -> None:
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


def _create(client: docker.DockerClient, spec: LaunchSpec):
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


def _start(container, spec: LaunchSpec) -> None:
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


def _state(container) -> tuple[str, int | None]:
    try:
        container.reload()
    except docker.errors.NotFound:
        return "removed", None
    state = container.attrs.get("State", {})
    return container.status, state.get("ExitCode")


def _stop_and_remove(container, timeout: int) -> None:
    with contextlib.suppress(docker.errors.NotFound):
        if timeout:
            with contextlib.suppress(docker.errors.APIError):
                container.stop(timeout=timeout)
        container.remove(force=True, v=True)


async def _healthy(http: httpx.AsyncClient, endpoint: str, *, timeout: float) -> bool:
    try:
        response = await http.get(f"{endpoint}/health", timeout=timeout)
    except (httpx.TransportError, OSError):
        # Port closed, or Docker's proxy accepting then resetting / replying nothing: still starting.
        return False
    return response.status_code == 200


class _LogFollower:
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
        line = _ANSI.sub("", raw.decode("utf-8", "replace")).rstrip("\r")
        with contextlib.suppress(RuntimeError):  # loop already closed
            self._loop.call_soon_threadsafe(self._log, self._prefix + line)
