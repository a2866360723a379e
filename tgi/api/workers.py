"""``--workers N``: N gateway processes serving one port, and the supervisor that runs them.

The supervisor (the process the user started) does what must happen once per gateway: it reserves the port,
starts the backends (``start_backends``: the emulator, TGI containers, replicas) and waits until they are up;
then it starts N workers, each ``server_tgi.py`` again with ``FUNCTIONARY_GATEWAY_WORKER=<index>`` and the
settings as JSON on its stdin (not in its environment or command line, where other users' ``ps`` could read
an API key). A worker never launches anything: it attaches to the endpoints like ``--no-launch``.

Why SO_REUSEPORT rather than one listening socket shared by all workers (gunicorn's and uvicorn's
``--workers``): with one shared socket every idle worker is woken for each new connection and whichever wins
takes it, so a busy loop can end up with most connections; with SO_REUSEPORT each worker has its own listening
socket and the kernel spreads new connections over them evenly (by a hash of the addresses), and a worker
listens only once its start-up is done, so no connection waits on a worker that is still starting. The
supervisor binds the port too (never listening: it gets no connections), so a port in use fails at once and no
other program can take the port between worker restarts. Linux, BSD and macOS have SO_REUSEPORT.

Per worker: its own event loop, endpoint pool (routing, health checks, ejection, in-flight limits: a
``--max-in-flight-per-endpoint`` limit applies per worker, so the gateway's limit is N times it), and
``/health`` (the answering worker's pool; the ``gateway`` section names the worker). ``/metrics`` sums all
workers (``tgi/ops/siblings.py``). Responses carry ``x-gateway-worker: <index>``.

Start-up failures end as without ``--workers`` (one clean line, the exit codes of tgi/api/startup.py): the
supervisor reports its own (the port, the backends); worker 0 starts alone before the others, so that an error
every worker would meet (the endpoints, the model, the template) is reported once, by it, and the gateway
exits with its code. A worker that exits after its start-up is started again (logged); one that fails during
start-up stops the gateway with its exit code (another try would fail the same way). SIGINT/SIGTERM stop the
workers gracefully (each finishes its requests, uvicorn's 10 s), then the backends; before worker 0 has
started they end the start-up with 130. A worker still starting is killed: it serves nothing and holds nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import json
import logging
import os
import signal
import socket
import tempfile
import typing
from dataclasses import dataclass
from pathlib import Path

from tgi.api.startup import EXIT_LISTEN, EXIT_UNEXPECTED, StartupError, exit_code_for, report_startup_failure

log = logging.getLogger("gateway.workers")

__all__ = ["WORKER_DIR_ENV", "WORKER_ENV", "WorkerSlot", "bind_port", "decode_settings", "encode_settings",
           "listen_failure", "supervise", "worker_slot"]

WORKER_ENV = "FUNCTIONARY_GATEWAY_WORKER"
WORKER_DIR_ENV = "FUNCTIONARY_GATEWAY_WORKER_DIR"
_STOP_GRACE = 20.0  # seconds a worker gets to finish (uvicorn's graceful shutdown is 10 s)


@dataclass(frozen=True)
class WorkerSlot:
    """Which worker this process is, and where the workers of its gateway meet (``tgi/ops/siblings.py``)."""

    index: int
    count: int
    directory: str


def worker_slot(settings, environ=os.environ) -> WorkerSlot | None:
    index = environ.get(WORKER_ENV)
    if index is None:
        return None
    return WorkerSlot(int(index), settings.workers, environ[WORKER_DIR_ENV])


def encode_settings(settings) -> str:
    return json.dumps(dataclasses.asdict(settings))


def decode_settings(cls, text: str):
    """The frozen settings dataclass back from :func:`encode_settings` (JSON lists become tuples again)."""
    data = json.loads(text)
    hints = typing.get_type_hints(cls)
    for name, value in data.items():
        if isinstance(value, list) and typing.get_origin(hints.get(name)) is tuple:
            data[name] = tuple(value)
    return cls(**data)


def bind_port(host: str, port: int, *, first: bool = False) -> socket.socket:
    """A TCP socket bound to ``host:port`` with SO_REUSEPORT, not yet listening (uvicorn listens on it after the
    lifespan start-up). ``first`` (the supervisor): fail when anything holds the port already, even another
    gateway with SO_REUSEPORT, which would otherwise silently share the port with this one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if first:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no conflict
            probe.bind((host, port))
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(False)
    return sock


def listen_failure(host: str, port: int, exc: OSError) -> StartupError:
    """Why the gateway cannot listen on ``host:port``, as the start-up error of exit code 6."""
    reason = exc.strerror or str(exc)
    if exc.errno == errno.EADDRINUSE:
        reason += " (another program listens there: find it with ss -ltnp)"
    elif exc.errno == errno.EADDRNOTAVAIL:
        reason += " (not an address of this machine)"
    return StartupError(f"cannot listen on {host}:{port}: {reason}", exit_code=EXIT_LISTEN)


def supervise(settings, *, command: list[str]) -> int:
    """Runs the gateway as ``settings.workers`` processes of ``command``; returns the exit code (a failed
    start-up ends like one without ``--workers``: tgi/api/startup.py)."""
    debug = settings.log_level.lower() == "debug"
    try:
        reserved = bind_port(settings.host, settings.port, first=True)
    except OSError as exc:
        return report_startup_failure(listen_failure(settings.host, settings.port, exc), debug=debug)
    with reserved, tempfile.TemporaryDirectory(prefix="functionary-gateway-") as directory:
        os.chmod(directory, 0o700)
        try:
            return asyncio.run(_supervise(settings, command, directory))
        except KeyboardInterrupt as exc:  # a second Ctrl-C while the backends start (the first is reported there)
            return exit_code_for(exc)


async def _supervise(settings, command: list[str], directory: str) -> int:
    from tgi.api.runtime import start_backends

    async with contextlib.AsyncExitStack() as stack:
        try:
            await stack.enter_async_context(start_backends(settings))
        except BaseException as exc:  # noqa: BLE001 (a Ctrl-C here cancels this task: reported, then ended)
            return report_startup_failure(exc, debug=settings.log_level.lower() == "debug")
        body = encode_settings(dataclasses.replace(settings, no_launch=True)).encode()  # attach, never launch
        env = {**os.environ, WORKER_DIR_ENV: directory}

        async def spawn(index: int) -> asyncio.subprocess.Process:
            with contextlib.suppress(FileNotFoundError):
                _ready_file(directory, index).unlink()
            proc = await asyncio.create_subprocess_exec(
                *command, stdin=asyncio.subprocess.PIPE, env={**env, WORKER_ENV: str(index)})
            proc.stdin.write(body)
            await proc.stdin.drain()
            proc.stdin.close()
            return proc

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        procs = {0: await spawn(0)}
        try:
            # worker 0 alone first: a start-up error (the endpoints, the model, ...) is then reported once, by it
            failed = await _until_started(0, procs[0], stop, directory)
            if failed is not None:
                return failed
            procs.update({i: await spawn(i) for i in range(1, settings.workers)})
            log.info("gateway on http://%s:%d: %d workers (pids %s)", settings.host, settings.port,
                     settings.workers, ", ".join(str(p.pid) for p in procs.values()))
            return await _watch(procs, spawn, stop, directory)
        finally:
            await _stop_all(procs, directory)


def _ready_file(directory: str, index: int) -> Path:
    """Made by the worker once its start-up is done (tgi/ops/siblings.py's socket)."""
    return Path(directory) / f"worker-{index}.sock"


async def _until_started(index: int, proc, stop: asyncio.Event, directory: str) -> int | None:
    """None once the worker has finished its start-up; else the exit code: the worker's when it failed during
    its start-up (it has said why), or 130 when the gateway is stopped meanwhile."""
    stopped = asyncio.ensure_future(stop.wait())
    exited = asyncio.ensure_future(proc.wait())
    try:
        while not _ready_file(directory, index).exists():
            done, _ = await asyncio.wait([stopped, exited], timeout=0.05, return_when=asyncio.FIRST_COMPLETED)
            if stopped in done:
                return report_startup_failure(KeyboardInterrupt(), debug=False)
            if exited in done:
                return _startup_exit(index, proc.returncode)
        return None
    finally:
        stopped.cancel()
        exited.cancel()


def _startup_exit(index: int, code: int) -> int:
    """The exit code of a worker that ended during its start-up. One that exited by itself has logged why
    (tgi/api/startup.py); one killed by a signal could not."""
    if code > 0:
        log.debug("worker %d exited with code %d during its start-up: stopping the gateway", index, code)
        return code
    reason = f"killed by {signal.Signals(-code).name}" if code < 0 else "exited with code 0"
    return report_startup_failure(StartupError(f"worker {index} {reason} during its start-up",
                                               exit_code=EXIT_UNEXPECTED), debug=False)


async def _watch(procs: dict, spawn, stop: asyncio.Event, directory: str) -> int:
    """Until ``stop``: restarts a worker that exits after its start-up; returns the exit code of one that
    failed during its start-up (0 when stopped)."""
    while not stop.is_set():
        exits = {asyncio.ensure_future(proc.wait()): i for i, proc in procs.items()}
        stopped = asyncio.ensure_future(stop.wait())
        done, pending = await asyncio.wait([*exits, stopped], return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        for task in done:
            if task is stopped:
                continue
            index = exits[task]
            code = procs[index].returncode
            if stop.is_set():
                break
            if not _ready_file(directory, index).exists():  # started again, it never finished starting
                log.error("worker %d exited with code %s during its start-up: stopping the gateway", index, code)
                return code if code > 0 else EXIT_UNEXPECTED
            log.warning("worker %d (pid %d) exited with code %s: starting it again", index, procs[index].pid, code)
            procs[index] = await spawn(index)
    return 0


async def _stop_all(procs: dict, directory: str) -> None:
    """SIGTERM to the workers that serve (each finishes its requests); a worker still in its start-up serves
    nothing and holds nothing (it attaches, never launches), and its start-up may wait long for TGI: killed."""
    running = [(i, p) for i, p in procs.items() if p.returncode is None]
    for index, proc in running:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM if _ready_file(directory, index).exists() else signal.SIGKILL)
    try:
        await asyncio.wait_for(asyncio.gather(*(p.wait() for _, p in running)), _STOP_GRACE)
    except asyncio.TimeoutError:
        for _, proc in running:
            if proc.returncode is None:
                log.warning("worker pid %d did not stop in %gs: killing it", proc.pid, _STOP_GRACE)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
        await asyncio.gather(*(p.wait() for _, p in running))
