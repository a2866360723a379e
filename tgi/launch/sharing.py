"""Several gateways on one launched TGI container (docs/docker.md, "Shared containers").

Every gateway that uses a container of ours (the one that launched it, and any that found its endpoint
answering and attached) holds a *lease*: a file named by its process id in
``<tmp>/functionary-tgi-leases/<container name>/``, removed on exit. The launching gateway, on exit, looks at
the leases: while another gateway that is still alive holds one, it leaves the container running and says
which container, who uses it and how to stop it; otherwise it stops and removes it as usual. Gateways that
attached never stop the container. Leases are per host (they sit in the host's temporary directory): a
gateway on another machine, or in another container, is not seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

__all__ = ["Lease", "LEASE_ROOT", "leave_container", "our_container_on"]

LEASE_ROOT = Path(tempfile.gettempdir()) / "functionary-tgi-leases"
log = logging.getLogger("gateway.launcher")


class Lease:
    """This process's claim on a container: ``with Lease(name): ...``; ``others()`` lists the other live holders."""

    def __init__(self, container_name: str, *, root: Path = LEASE_ROOT, pid: int | None = None) -> None:
        self.dir = Path(root) / container_name
        self.pid = pid if pid is not None else os.getpid()

    def __enter__(self) -> Lease:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / str(self.pid)).write_text("", encoding="utf-8")
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.dir / str(self.pid)).unlink()

    def others(self) -> list[int]:
        """Process ids of the other gateways holding a lease and still alive (stale leases are removed)."""
        alive = []
        for path in sorted(self.dir.glob("*")) if self.dir.is_dir() else ():
            if not path.name.isdigit() or int(path.name) == self.pid:
                continue
            if _alive(int(path.name)):
                alive.append(int(path.name))
            else:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        return alive


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


async def leave_container(handle, lease: Lease | None, log) -> None:
    """On exit (``tgi.launch.launcher.launch_tgi``): stop and remove a container this gateway started, unless it is kept
    (``--keep-container``) or another live gateway holds a lease on it; log which, and how to stop it."""
    name = handle.container_name
    if not handle.started_by_us:
        log(f"[tgi] leaving container {name} running: this gateway attached to it, another started it")
        return
    if handle.spec.keep_container:
        log(f"[tgi] leaving container {name} running (--keep-container); stop it with: docker rm -f {name}")
        return
    others = lease.others() if lease is not None else []
    if others:
        log(f"[tgi] leaving container {name} running: {len(others)} other gateway(s) on this host use it "
            f"(pid {', '.join(map(str, others))}); stop it once they are done with: docker rm -f {name}")
        return
    await handle.stop()


async def our_container_on(endpoint: str, *, timeout: float = 3.0) -> str | None:
    """The name of a running container of ours published on the endpoint's port, when Docker answers within
    ``timeout`` seconds (best effort: ``None`` when there is none, or no Docker)."""
    port = urlsplit(endpoint).port
    if port is None:
        return None

    def find() -> str | None:
        import docker

        from tgi.launch.spec import GATEWAY_VALUE, LABEL_GATEWAY, LABEL_HOST_PORT

        client = docker.from_env(timeout=timeout)
        try:
            found = client.containers.list(filters={
                "label": [f"{LABEL_GATEWAY}={GATEWAY_VALUE}", f"{LABEL_HOST_PORT}={port}"], "status": "running"})
            return found[0].name if found else None
        finally:
            client.close()

    try:
        return await asyncio.wait_for(asyncio.to_thread(find), timeout + 1)
    except Exception as exc:  # no Docker, no permission, a slow engine: attaching works without knowing
        log.debug("could not ask Docker which container serves %s: %s", endpoint, exc)
        return None
