"""TGI endpoints found in DNS: one name that resolves to many addresses (a Kubernetes headless Service, a
round-robin record), re-resolved every ``interval`` seconds, its addresses joining and leaving the pool.

``--endpoint-dns http://tgi-headless.ns.svc:80`` stands for ``http://ADDRESS:80`` for every address the name
resolves to. Each round compares the answer with the addresses this discovery put in the pool: new ones go
through :meth:`EndpointPool.add_endpoint` (they are admitted after a good health check and the ``/info`` model
check, so a pod that is still loading waits outside), vanished ones through
:meth:`EndpointPool.remove_endpoint` (running generations finish there). Endpoints given with ``--endpoint`` are
never touched.

A failed lookup (no answer, NXDOMAIN) or an empty one keeps the current members: a DNS hiccup must not empty
the pool, and an endpoint that really is gone fails its health checks and is ejected anyway.

Lookups go through ``loop.getaddrinfo`` (the resolver runs in the loop's thread pool: the event loop never
waits on DNS); tests inject ``resolve``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable, Iterable
from urllib.parse import urlsplit

from tgi.cluster.pool import stop_task

log = logging.getLogger("gateway.discovery")

__all__ = ["DnsDiscovery", "Resolve", "lookup_urls", "parse_dns_url", "resolve_addresses", "urls_for"]

# (host, port) -> the addresses the name resolves to now
Resolve = Callable[[str, int], Awaitable[list[str]]]


async def resolve_addresses(host: str, port: int) -> list[str]:
    """Every TCP address of ``host``, in the resolver's order, without repeats."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def parse_dns_url(url: str) -> tuple[str, str, int]:
    """``http://NAME:PORT`` -> (scheme, name, port); ValueError for anything else (a path, query, no name)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path.strip("/") or parts.query:
        raise ValueError(f"not a DNS endpoint: {url!r} (expected http://NAME:PORT)")
    return parts.scheme, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


async def lookup_urls(url: str, *, resolve: Resolve = resolve_addresses) -> list[str]:
    """The endpoint URLs ``http://NAME:PORT`` stands for now; [] when the lookup fails."""
    scheme, host, port = parse_dns_url(url)
    try:
        return urls_for(scheme, port, await resolve(host, port))
    except (OSError, UnicodeError) as exc:
        log.warning("DNS lookup of %s failed: %s", host, exc)
        return []


def urls_for(scheme: str, port: int, addresses: Iterable[str]) -> list[str]:
    out = []
    for address in addresses:
        try:
            bracket = ipaddress.ip_address(address.split("%", 1)[0]).version == 6
        except ValueError:
            bracket = False
        out.append(f"{scheme}://[{address}]:{port}" if bracket else f"{scheme}://{address}:{port}")
    return out


class DnsDiscovery:
    """Keeps ``pool``'s members for ``url`` in step with DNS. Use as ``async with DnsDiscovery(...)``: one round
    runs on entry, then one every ``interval`` seconds in a background task."""

    def __init__(self, pool, url: str, *, interval: float = 10.0, resolve: Resolve = resolve_addresses,
                 initial: Iterable[str] = ()) -> None:
        """``initial``: URLs of this name already in the pool (the start-up lookup's), managed from now on."""
        self._pool = pool
        self._scheme, self._host, self._port = parse_dns_url(url)
        self._interval = interval
        self._resolve = resolve
        self.members: set[str] = set(initial)  # the URLs this discovery manages and that are in the pool
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> DnsDiscovery:
        await self.refresh()
        if self._interval > 0:
            self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc) -> None:
        await stop_task(self._task)

    async def lookup(self) -> list[str] | None:
        """The endpoint URLs the name stands for now; None when the lookup failed."""
        try:
            addresses = await self._resolve(self._host, self._port)
        except (OSError, UnicodeError) as exc:  # socket.gaierror is an OSError
            log.warning("DNS lookup of %s failed (%s): keeping %d endpoints", self._host, exc, len(self.members))
            return None
        return urls_for(self._scheme, self._port, addresses)

    async def refresh(self) -> None:
        """One round: add the new addresses, remove the vanished ones."""
        urls = await self.lookup()
        if urls is None:
            return
        if not urls:
            log.warning("%s resolves to no address: keeping %d endpoints", self._host, len(self.members))
            return
        wanted = set(urls)
        for url in sorted(self.members - wanted):
            await self._pool.remove_endpoint(url)
            self.members.discard(url)
        new = [url for url in urls if url not in self.members]
        # joining means a health check and an /info each: concurrently, so one slow pod delays nobody
        added = await asyncio.gather(*(self._pool.add_endpoint(url) for url in new))
        self.members.update(url for url, ok in zip(new, added) if ok)  # not one given with --endpoint

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.refresh()
            except Exception:  # a bug here must not end discovery for good
                log.exception("DNS discovery round failed")
