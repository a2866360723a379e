"""The endpoint pool: one TGI client per endpoint, least-outstanding-requests routing.

A request that fails before its first token (connect error, 429 overloaded, 503 unavailable) is
retried on another endpoint; once a token was received it is never retried (the client has seen
output). Background health checks eject an endpoint after consecutive failures and re-admit it
once it answers again.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass

from tgi.client import TGIClient
from tgi.errors import UpstreamOverloadedError, UpstreamUnavailableError

log = logging.getLogger("gateway.pool")


@dataclass(slots=True)
class _Endpoint:
    client: TGIClient
    in_flight: int = 0
    healthy: bool = True
    failures: int = 0


class EndpointPool:
    def __init__(
        self,
        clients: list[TGIClient],
        *,
        max_in_flight: int | None = None,
        health_interval: float = 5.0,
        eject_after: int = 2,
    ) -> None:
        if not clients:
            raise ValueError("an endpoint pool needs at least one endpoint")
        self._endpoints = [_Endpoint(c) for c in clients]
        self._max_in_flight = max_in_flight
        self._health_interval = health_interval
        self._eject_after = eject_after
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> "EndpointPool":
        if len(self._endpoints) > 1 and self._health_interval > 0:
            self._task = asyncio.create_task(self._watch())
        return self

    async def __aexit__(self, *exc) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    @property
    def endpoints(self) -> list[str]:
        return [e.client.base_url for e in self._endpoints]

    def in_flight(self) -> dict[str, int]:
        return {e.client.base_url: e.in_flight for e in self._endpoints}

    async def health(self) -> list[dict]:
        results = await asyncio.gather(*(e.client.health() for e in self._endpoints), return_exceptions=True)
        return [
            {"url": e.client.base_url, "healthy": r is True, "in_flight": e.in_flight}
            for e, r in zip(self._endpoints, results)
        ]

    def _pick(self, exclude: set[int]) -> int | None:
        best: list[int] = []
        best_load = None
        for i, e in enumerate(self._endpoints):
            if i in exclude or not e.healthy:
                continue
            if self._max_in_flight is not None and e.in_flight >= self._max_in_flight:
                continue
            if best_load is None or e.in_flight < best_load:
                best, best_load = [i], e.in_flight
            elif e.in_flight == best_load:
                best.append(i)
        if not best:
            # every endpoint is ejected or full: try an ejected one rather than failing outright
            rest = [i for i in range(len(self._endpoints)) if i not in exclude]
            return rest[0] if rest else None
        return random.choice(best) if len(best) > 1 else best[0]

    async def generate_stream(self, body: dict) -> AsyncIterator:
        tried: set[int] = set()
        last_error: Exception | None = None
        while True:
            i = self._pick(tried)
            if i is None:
                raise last_error or UpstreamUnavailableError("no TGI endpoint is available", retry_after=1)
            tried.add(i)
            endpoint = self._endpoints[i]
            endpoint.in_flight += 1
            started = False
            try:
                async with aclosing(endpoint.client.generate_stream(body)) as events:
                    async for event in events:
                        started = True
                        endpoint.failures = 0
                        yield event
                return
            except (UpstreamUnavailableError, UpstreamOverloadedError) as exc:
                if started:
                    raise
                if isinstance(exc, UpstreamUnavailableError):
                    self._failed(endpoint)
                last_error = exc
                log.info("endpoint %s: %s; trying another", endpoint.client.base_url, exc.message)
            finally:
                endpoint.in_flight -= 1

    def _failed(self, endpoint: _Endpoint) -> None:
        endpoint.failures += 1
        if endpoint.healthy and endpoint.failures >= self._eject_after:
            endpoint.healthy = False
            log.warning("endpoint %s ejected after %d failures", endpoint.client.base_url, endpoint.failures)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._health_interval)
            results = await asyncio.gather(*(e.client.health() for e in self._endpoints), return_exceptions=True)
            for e, ok in zip(self._endpoints, results):
                if ok is True:
                    if not e.healthy:
                        log.info("endpoint %s healthy again", e.client.base_url)
                    e.healthy, e.failures = True, 0
                else:
                    self._failed(e)
