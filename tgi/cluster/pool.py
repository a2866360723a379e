"""The endpoint pool: one TGI client per endpoint, least-outstanding-requests routing.

Routing: a generation goes to the admitted endpoint with the fewest requests in flight (ties broken at
random). With ``max_in_flight`` an endpoint takes at most that many at once; when every candidate is full the
request waits (no busy loop: a slot being freed wakes one waiter) for up to ``queue_timeout`` seconds, then
fails as overloaded (429).

Retries: a generation that fails before its first token because the endpoint could not serve it (refused or
reset connection, 502/503/504, no answer in time, TGI's 429 ``overloaded``) is sent to another endpoint, each
endpoint at most once per generation. Once a token was passed on it is never retried: the client has seen
output. A ``buffered`` generation (the non-streaming path, where the client sees nothing until the end) holds
its events until the final one, so an endpoint dying mid-generation is retried too. Errors that TGI itself
reports (validation, a failed generation) are never retried: another endpoint would answer the same. (A stream
whose first TGI tokens made no output yet, e.g. a tool name still being read, is started over by its consumer
when :func:`lost_endpoint` says the endpoint was lost: ``ChatService.stream``.)

Health: a background task polls ``GET /health`` of every endpoint every ``health_interval`` seconds. An
endpoint is ejected (no new requests) after ``eject_after`` consecutive failures, counting both health checks
and requests that could not reach it; it is re-admitted on its first good health check, after its ``/info``
shows that it still serves ``model_id`` (an endpoint that now serves another model stays out, and says so in
:meth:`EndpointPool.health`). Endpoints that did not answer at start-up start ejected and join the same way.
When every endpoint is ejected, requests still go to the ones that were once admitted: a health check may lag
behind a recovery, and a clear 503 after trying is better than refusing outright.

Membership changes at run time (DNS discovery, ``tgi/cluster/discovery.py``): :meth:`EndpointPool.add_endpoint`
opens a client that joins through the same admission (a health check, then the ``/info`` model check), so an
endpoint that is not ready yet simply waits outside; :meth:`EndpointPool.remove_endpoint` takes one out of routing at
once, while generations already running on it finish; its client is closed when the last one is done.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable
from contextlib import aclosing
from dataclasses import dataclass

from tgi.protocol.client import TGIClient
from tgi.protocol.errors import UpstreamError, UpstreamGenerationError, UpstreamOverloadedError, UpstreamUnavailableError

log = logging.getLogger("gateway.pool")

__all__ = ["EndpointPool", "EndpointStats", "lost_endpoint", "same_model", "stop_task"]

# Client-side codes for a connection that broke or went silent: the endpoint, not the request, failed.
_TRANSPORT_CODES = frozenset({"incomplete_generation_stream", "upstream_timeout"})


async def stop_task(task: asyncio.Task | None) -> None:
    """Cancel a background loop (health checks, DNS refresh) and wait until it has ended."""
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@dataclass(slots=True, eq=False)  # compared and hashed by identity: a retry's "tried" set holds them
class _Endpoint:
    client: TGIClient
    in_flight: int = 0
    admitted: bool = True
    verified: bool = True  # admitted at least once with the right model: usable as a last resort
    failures: int = 0  # consecutive
    serves: str | None = None  # the other model it serves, when that keeps it out
    attempts: int = 0
    retried: int = 0  # generations that failed here before their first token and moved on
    ejections: int = 0
    owned: bool = False  # opened by the pool (add_endpoint): closed by it
    removed: bool = False  # out of the pool; in-flight generations still finish on it


@dataclass(frozen=True, slots=True)
class EndpointStats:
    url: str
    in_flight: int
    admitted: bool
    attempts: int
    retried: int
    ejections: int


def same_model(a, b) -> bool:
    """Whether two ``/info`` answers name the same model: the same ``model_id``, or the same ``model_sha``
    (the same weights mounted under two paths)."""
    return a.model_id == b.model_id or (a.model_sha is not None and a.model_sha == b.model_sha)


class EndpointPool:
    """Use as ``async with EndpointPool(clients) as pool`` (the health task runs inside)."""

    def __init__(
        self,
        clients: list[TGIClient],
        *,
        max_in_flight: int | None = None,
        queue_timeout: float = 30.0,
        health_interval: float = 5.0,
        eject_after: int = 2,
        reference=None,
        down: Iterable[str] = (),
    ) -> None:
        """``reference`` is the ``/info`` of an endpoint that serves the right model (re-admitted endpoints are
        compared with it); ``down`` names endpoints that did not answer at start-up (they start ejected)."""
        if not clients:
            raise ValueError("an endpoint pool needs at least one endpoint")
        if max_in_flight is not None and max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self._endpoints = [_Endpoint(c) for c in clients]
        down = set(down)
        for e in self._endpoints:
            if e.client.base_url in down:
                e.admitted = e.verified = False
        self._max_in_flight = max_in_flight
        self._queue_timeout = queue_timeout
        self._health_interval = health_interval
        self._eject_after = max(1, eject_after)
        self._reference = reference
        self._waiters: deque[asyncio.Future] = deque()
        self._task: asyncio.Task | None = None
        self._closing: set[asyncio.Task] = set()
        self._draining: list[_Endpoint] = []  # removed, generations still running on them

    async def __aenter__(self) -> EndpointPool:
        if self._health_interval > 0:
            self._task = asyncio.create_task(self._watch())
        return self

    async def __aexit__(self, *exc) -> None:
        await stop_task(self._task)
        owned = [e.client for e in (*self._endpoints, *self._draining) if e.owned]
        self._draining.clear()
        await asyncio.gather(*(c.aclose() for c in owned), *self._closing, return_exceptions=True)

    # -- membership -----------------------------------------------------------------------------

    async def add_endpoint(self, url: str) -> bool:
        """Opens a client for ``url``, which joins like an ejected endpoint: admitted on a good health check
        (one is made now) once its ``/info`` shows the pool's model. False when it is already a member."""
        url = url.rstrip("/")
        if url in self.endpoints:
            return False
        endpoint = _Endpoint(TGIClient(url), admitted=False, verified=False, owned=True)
        self._endpoints = [*self._endpoints, endpoint]  # a new list: a loop over the old one is not disturbed
        log.info("endpoint %s joins the pool (admitted after a good health check)", url)
        if await endpoint.client.health() and not endpoint.removed:
            await self._readmit(endpoint)
        return True

    async def remove_endpoint(self, url: str) -> bool:
        """Takes ``url`` out of routing now; generations running on it finish, and a client the pool opened is
        closed after the last one. False when it is not a member."""
        url = url.rstrip("/")
        endpoint = next((e for e in self._endpoints if e.client.base_url == url), None)
        if endpoint is None:
            return False
        self._endpoints = [e for e in self._endpoints if e is not endpoint]
        endpoint.removed, endpoint.admitted = True, False
        log.info("endpoint %s leaves the pool (%d generations in flight finish there)", url, endpoint.in_flight)
        if endpoint.in_flight:
            self._draining.append(endpoint)
        else:
            await self._close(endpoint)
        return True

    async def _close(self, endpoint: _Endpoint) -> None:
        if endpoint.owned:
            await endpoint.client.aclose()

    def _close_later(self, endpoint: _Endpoint) -> None:
        self._draining.remove(endpoint)
        task = asyncio.get_running_loop().create_task(self._close(endpoint))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    # -- state ----------------------------------------------------------------------------------

    @property
    def endpoints(self) -> list[str]:
        return [e.client.base_url for e in self._endpoints]

    def in_flight(self) -> dict[str, int]:
        return {e.client.base_url: e.in_flight for e in self._endpoints}

    def stats(self) -> list[EndpointStats]:
        """Counters for ``/metrics``: plain reads, no I/O."""
        return [
            EndpointStats(e.client.base_url, e.in_flight, e.admitted, e.attempts, e.retried, e.ejections)
            for e in self._endpoints
        ]

    async def health(self) -> list[dict]:
        """A live ``/health`` probe of every endpoint plus the pool's view of it."""
        endpoints = self._endpoints
        results = await asyncio.gather(*(e.client.health() for e in endpoints), return_exceptions=True)
        out = []
        for e, r in zip(endpoints, results):
            state = {"url": e.client.base_url, "healthy": r is True, "admitted": e.admitted, "in_flight": e.in_flight}
            if e.serves is not None:
                state["serves_other_model"] = e.serves
            out.append(state)
        return out

    # -- routing --------------------------------------------------------------------------------

    def _choose(self, tried: set[_Endpoint]) -> tuple[_Endpoint | None, bool]:
        """(the endpoint to use, or None; whether waiting for a free slot could help)."""
        candidates = [e for e in self._endpoints if e not in tried and e.admitted]
        if not candidates:  # all ejected: the ones once admitted, as a last resort
            candidates = [e for e in self._endpoints if e not in tried and e.verified and e.serves is None]
        if not candidates:
            return None, False
        limit = self._max_in_flight
        best: list[_Endpoint] = []
        best_load = None
        for i in candidates:
            load = i.in_flight
            if limit is not None and load >= limit:
                continue
            if best_load is None or load < best_load:
                best, best_load = [i], load
            elif load == best_load:
                best.append(i)
        if not best:
            return None, True
        return (best[0] if len(best) == 1 else random.choice(best)), False

    async def _acquire(self, tried: set[_Endpoint]) -> _Endpoint | None:
        deadline: float | None = None
        while True:
            endpoint, full = self._choose(tried)
            if endpoint is not None:
                tried.add(endpoint)
                endpoint.in_flight += 1
                endpoint.attempts += 1
                return endpoint
            if not full:
                return None
            if deadline is None:
                deadline = time.monotonic() + self._queue_timeout
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise UpstreamOverloadedError(
                    f"every TGI endpoint is at its limit of {self._max_in_flight} requests in flight "
                    f"and none freed up within {self._queue_timeout:g}s; try again later"
                )
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, remaining)
            except asyncio.TimeoutError:
                pass
            finally:
                if not waiter.done():
                    waiter.cancel()

    def _release(self, endpoint: _Endpoint) -> None:
        endpoint.in_flight -= 1
        if endpoint.removed and not endpoint.in_flight and endpoint in self._draining:
            self._close_later(endpoint)
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def generate_stream(self, body: dict, *, record=None, buffered: bool = False) -> AsyncIterator:
        """TGI's events for ``body`` from one endpoint (see the module docstring for retries).

        ``record`` (a :class:`tgi.ops.metrics.RequestRecord`, or anything with ``endpoint``, ``retries`` and
        ``first_token_at``) gets the endpoint used, the retry count and the time of the first token; its ``lost``
        list, when it has one, names the endpoints lost mid-generation, which a new call avoids. ``buffered``
        holds the events back until the final one."""
        tried = self._lost_by(record)
        last_error: UpstreamError | None = None
        while True:
            endpoint = await self._acquire(tried)
            if endpoint is None:
                raise last_error or UpstreamUnavailableError("no TGI endpoint is available", retry_after=1)
            if record is not None:
                if record.endpoint is not None:
                    record.retries += 1
                record.endpoint = endpoint.client.base_url
            started = False
            held: list = []
            try:
                async with aclosing(endpoint.client.generate_stream(body, buffered=buffered)) as events:
                    async for event in events:
                        if not started:
                            started = True
                            endpoint.failures = 0
                            if record is not None and record.first_token_at is None:
                                record.first_token_at = time.perf_counter()
                        if buffered:
                            held.append(event)
                        else:
                            yield event
            except UpstreamError as exc:
                if started and not buffered:
                    if lost_endpoint(exc):
                        self._failed(endpoint)
                        lost = getattr(record, "lost", None)
                        if lost is not None:  # a consumer that starts over avoids it (ChatService.stream)
                            lost.append(endpoint.client.base_url)
                    raise
                if not _endpoint_failed(exc):
                    raise
                if not isinstance(exc, UpstreamOverloadedError) and exc.code != "upstream_pool_exhausted":
                    self._failed(endpoint)
                endpoint.retried += 1
                last_error = exc
                when = "after" if started else "before"
                if len(self._endpoints) == 1:
                    log.warning("the only TGI endpoint, %s, failed %s its first token (%s): no other endpoint to "
                                "try", endpoint.client.base_url, when, exc.message)
                else:
                    log.info("endpoint %s failed %s its first token (%s); trying another",
                             endpoint.client.base_url, when, exc.message)
                continue
            finally:
                self._release(endpoint)
            for event in held:
                yield event
            return

    def _lost_by(self, record) -> set[_Endpoint]:
        """The endpoints this request already lost mid-generation, unless that is all of them."""
        urls = getattr(record, "lost", None)
        if not urls:
            return set()
        lost = {e for e in self._endpoints if e.client.base_url in urls}
        return lost if len(lost) < len(self._endpoints) else set()

    # -- health ---------------------------------------------------------------------------------

    def _failed(self, endpoint: _Endpoint) -> None:
        endpoint.failures += 1
        if endpoint.admitted and endpoint.failures >= self._eject_after:
            endpoint.admitted = False
            endpoint.ejections += 1
            if len(self._endpoints) == 1:
                log.warning("the only TGI endpoint, %s, is gone (%d consecutive failures): requests fail with 503 "
                            "until it answers again", endpoint.client.base_url, endpoint.failures)
            else:
                log.warning("endpoint %s ejected after %d consecutive failures", endpoint.client.base_url,
                            endpoint.failures)

    async def _readmit(self, endpoint: _Endpoint) -> None:
        if self._reference is not None:
            try:
                info = await endpoint.client.info()
            except UpstreamError as exc:
                log.info("endpoint %s answers /health but not /info (%s); keeping it out", endpoint.client.base_url,
                         exc.message)
                return
            if not same_model(info, self._reference):
                if endpoint.serves != info.model_id:
                    log.error("endpoint %s serves %r, not %r: keeping it out of the pool", endpoint.client.base_url,
                              info.model_id, self._reference.model_id)
                endpoint.serves = info.model_id
                return
        if endpoint.removed:  # left the pool while its /info was read
            return
        endpoint.serves = None
        endpoint.admitted = endpoint.verified = True
        endpoint.failures = 0
        log.info("endpoint %s admitted", endpoint.client.base_url)
        for _ in range(self._max_in_flight or 1):
            self._wake()

    async def check_once(self) -> None:
        """One round of health checks (the background task runs this every ``health_interval`` seconds)."""
        endpoints = self._endpoints
        results = await asyncio.gather(*(e.client.health() for e in endpoints), return_exceptions=True)
        for e, ok in zip(endpoints, results):
            if e.removed:
                continue
            if ok is not True:
                self._failed(e)
            elif e.admitted:
                e.failures = 0
            else:
                await self._readmit(e)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._health_interval)
            try:
                await self.check_once()
            except Exception:  # a bug here must not end health checking for good
                log.exception("endpoint health check failed")


def lost_endpoint(exc: BaseException) -> bool:
    """Whether ``exc`` is a connection to TGI that broke or went silent after TGI had answered: the endpoint
    was lost mid-generation (not an error that TGI itself reported)."""
    return isinstance(exc, UpstreamGenerationError) and exc.upstream_type is None and exc.code in _TRANSPORT_CODES


def _endpoint_failed(exc: UpstreamError) -> bool:
    """Whether ``exc`` says the endpoint could not serve (worth another endpoint), not that TGI refused or
    failed the request itself."""
    return isinstance(exc, (UpstreamUnavailableError, UpstreamOverloadedError)) or lost_endpoint(exc)
