"""One TGI container per GPU group of this host (``--replicas N`` / ``--gpus-per-replica K``), on consecutive
ports, all pooled by the gateway (``tgi/cluster/pool.py``: health, ejection, least-loaded routing).

Groups come from ``--gpus``: a device list (``0,1,2,3``) is cut into consecutive groups of K; a count ``N`` or
``all`` stands for devices ``0 .. N-1`` (with ``all`` the host's device count is not known here, so
``--replicas`` is needed); ``none`` gives every replica no GPU (CPU images, the emulator). Replica *i* publishes
on the first ``--endpoint``'s port + *i* and sees only its group (a Docker device request with those ids, so TGI
shards over exactly them). Each replica is an ordinary ``launch_for_settings`` launch: its container is named
after its port, attaches to a running container of ours with the same settings, and is stopped and removed on
exit unless ``--keep-container``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

__all__ = ["launch_replicas", "replica_endpoints", "replica_groups"]


def _devices(gpus: str) -> list[str] | None:
    """The device ids ``--gpus`` names; None for ``all`` (unknown here); [] for ``none``."""
    text = str(gpus).strip()
    if text.lower() in ("none", ""):
        return []
    if text.lower() == "all":
        return None
    if text.isdigit():
        return [str(i) for i in range(int(text))]
    ids = text.split("=", 1)[1] if text.startswith("device=") else text
    devices = [part.strip() for part in ids.split(",") if part.strip()]
    if not devices or not all(re.fullmatch(r"[\w.:-]+", d) for d in devices):
        raise ValueError(f"--gpus {gpus!r}: expected all, none, a count, or device ids such as 0,1")
    return devices


def replica_groups(gpus: str, *, replicas: int | None, gpus_per_replica: int | None) -> list[str]:
    """The ``--gpus`` value of each replica (``["0", "1"]``, ``["0,1", "2,3"]``, ``["none", "none"]``)."""
    if replicas is not None and replicas < 1:
        raise ValueError("--replicas must be at least 1")
    if gpus_per_replica is not None and gpus_per_replica < 1:
        raise ValueError("--gpus-per-replica must be at least 1")
    devices = _devices(gpus)
    if devices == []:
        if gpus_per_replica:
            raise ValueError("--gpus-per-replica needs GPUs: --gpus is none")
        return ["none"] * (replicas or 1)
    per = gpus_per_replica or 1
    if devices is None:
        if replicas is None:
            raise ValueError("--gpus all does not say how many GPUs there are: give --replicas N, or list the "
                             "devices (--gpus 0,1,2,3)")
        devices = [str(i) for i in range(replicas * per)]
    if gpus_per_replica is None and replicas is not None:
        per = max(1, len(devices) // replicas)
    count = replicas if replicas is not None else len(devices) // per
    if count < 1 or count * per > len(devices):
        raise ValueError(f"{count} replicas of {per} GPUs need {count * per} GPUs; --gpus {gpus} names "
                         f"{len(devices)}")
    if count * per != len(devices):
        raise ValueError(f"--gpus {gpus} names {len(devices)} GPUs, which {count} replicas of {per} do not use "
                         "up: name exactly the GPUs to use")
    return [",".join(devices[i * per:(i + 1) * per]) for i in range(count)]


def replica_endpoints(first: str, count: int) -> tuple[str, ...]:
    """``first`` and the ``count - 1`` URLs on the ports after it."""
    parts = urlsplit(first)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if port + count - 1 > 65535:
        raise ValueError(f"{count} replicas from port {port} run past port 65535")
    host = parts.hostname or "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    return tuple(urlunsplit((parts.scheme, f"{host}:{port + i}", "", "", "")) for i in range(count))


@contextlib.asynccontextmanager
async def launch_replicas(settings, *, groups: list[str], log=None) -> AsyncIterator[list]:
    """Launches (or attaches to) one TGI per group on ``settings.endpoints[i]``, all at once; yields their
    handles once every one is healthy. When one fails, the others are stopped too and its error is raised."""
    from tgi.launch.launcher import launch_for_settings
    from tgi.launch.weights import ensure_weights

    log = log or logging.getLogger("gateway.launcher").info
    if len(settings.endpoints) != len(groups):
        raise ValueError("one endpoint per replica is needed")
    # once, before the replicas: they would otherwise all fetch the same files at the same time
    await ensure_weights(settings.model, revision=settings.revision,
                         cache_dir=Path(settings.remote_model_save_folder), token=None, log=log)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    ready = [loop.create_future() for _ in groups]

    async def hold(i: int) -> None:
        one = dataclasses.replace(settings, endpoints=(settings.endpoints[i],), gpus=groups[i])
        try:
            async with launch_for_settings(one, log=log) as handle:
                ready[i].set_result(handle)
                await stop.wait()
        except asyncio.CancelledError:
            ready[i].cancel()
            raise
        except BaseException as exc:
            if not ready[i].done():
                ready[i].set_exception(exc)
            raise

    tasks = [asyncio.create_task(hold(i), name=f"tgi-replica-{i}") for i in range(len(groups))]
    try:
        await asyncio.wait(ready, return_when=asyncio.FIRST_EXCEPTION)
        for future in ready:
            if future.done() and not future.cancelled() and future.exception() is not None:
                raise future.exception()
        if any(future.cancelled() for future in ready):
            raise asyncio.CancelledError()
        log(f"[tgi] {len(groups)} replicas healthy: " + ", ".join(settings.endpoints))
        yield [future.result() for future in ready]
    finally:
        stop.set()
        for task, future in zip(tasks, ready):
            if not future.done():  # still waiting for its TGI: its launcher removes the container
                task.cancel()
        await asyncio.shield(asyncio.gather(*tasks, return_exceptions=True))
        for future in ready:
            if future.done() and not future.cancelled():
                future.exception()  # retrieved: no "never retrieved" warning for the ones not raised
