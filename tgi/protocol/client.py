"""An async client for one TGI endpoint: a keep-alive connection pool (``http1.py``), TGI's errors raised as ours.

Timeouts: ``connect_timeout`` bounds reaching TGI (and waiting for a free pooled connection); a stream has no
overall limit but fails when TGI sends nothing for ``idle_timeout`` seconds (TGI writes a ``:`` keep-alive every
15 s, so the default 45 s only trips on a stuck server); a non-streaming ``generate`` may take
``generate_timeout`` seconds (TGI sends nothing until the whole generation is done).

Errors: a connect failure, or a reset or close before TGI answered, is :class:`UpstreamUnavailableError`;
any non-200 answer and any error event inside a 200 stream go through :func:`error_from_tgi`; a stream that
ends (or breaks) without its final event is :class:`UpstreamGenerationError` with code
``incomplete_generation_stream``.

Cancellation: :meth:`TGIClient.generate_stream` closes the upstream connection in ``finally`` unless the answer
was read through, so a consumer that stops early or is cancelled closes the connection and TGI stops
generating. Close the generator deterministically (``async with contextlib.aclosing(client.generate_stream(req))
as events``) rather than leaving it to garbage collection.

Events are :class:`tgi.protocol.events.StreamEvent` (msgspec; the attributes of ``types.StreamResponse``).
Before waiting for TGI's next read, a stream awaits :func:`tgi.protocol.flush.flush_pending`, so the response
writer sends what the events of the last read made in one write (``tgi/api/streaming.py``).
"""

from __future__ import annotations

import asyncio
import collections
import json
from collections.abc import AsyncIterator, Mapping
from types import TracebackType

import msgspec

from tgi.protocol.errors import (
    UpstreamError,
    UpstreamGenerationError,
    UpstreamUnavailableError,
    error_from_tgi,
)
from tgi.protocol.events import StreamEvent, decode_event
from tgi.protocol.flush import flush_pending
from tgi.protocol.http1 import Disconnected, HTTPPool, PoolTimeout, ReadTimeout, Response, TransportError
from tgi.protocol.sse import SSEDecoder
from tgi.protocol.types import TOKENIZE_RESPONSE, GenerateRequest, GenerateResponse, Info, SimpleToken

__all__ = ["TGIClient"]

_MAX_ERROR_BODY = 64 * 1024
_DRAIN_TIMEOUT = 1.0  # what the end of a body may take after TGI's final event before the connection is dropped


class TGIClient:
    """Talks to one TGI base URL. Use as ``async with TGIClient(url) as tgi: ...``."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        connect_timeout: float = 5.0,
        idle_timeout: float = 45.0,
        generate_timeout: float | None = 600.0,
        max_connections: int = 256,
        max_keepalive_connections: int = 256,  # = max_connections: a burst of answers must not close them
        keepalive_expiry: float = 30.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._idle_timeout = idle_timeout
        self._generate_timeout = generate_timeout
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = HTTPPool(self.base_url, connect_timeout=connect_timeout, pool_timeout=connect_timeout,
                              max_connections=max_connections, max_keepalive=max_keepalive_connections,
                              keepalive_expiry=keepalive_expiry, headers=headers)

    async def __aenter__(self) -> TGIClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def health(self) -> bool:
        """Whether ``GET /health`` answers 200; never raises for an unreachable or starting server."""
        timeout = min(self._idle_timeout, 10.0)
        try:
            response = await self._http.request("GET", "/health", timeout=timeout)
            try:
                await response.read(timeout)
            finally:
                response.release()
        except TransportError:
            return False
        return response.status == 200

    async def info(self) -> Info:
        body = await self._request("GET", "/info", read_timeout=min(self._idle_timeout, 30.0))
        return Info.model_validate_json(body)

    async def generate(self, request: GenerateRequest | Mapping) -> GenerateResponse:
        body = await self._request("POST", "/generate", content=_body(request), read_timeout=self._generate_timeout)
        return GenerateResponse.model_validate_json(body)

    async def tokenize(self, text: str) -> list[SimpleToken]:
        """TGI's own tokenization of ``text`` (BOS included, as ``/generate`` counts it)."""
        body = GenerateRequest(inputs=text).to_json()
        answer = await self._request("POST", "/tokenize", content=body, read_timeout=self._idle_timeout)
        return TOKENIZE_RESPONSE.validate_json(answer)

    async def generate_stream(self, request: GenerateRequest | Mapping, *,
                              buffered: bool = False) -> AsyncIterator[StreamEvent]:
        """Yield TGI's token events up to and including the final one (``event.is_final``). ``buffered``: the
        consumer needs the events only at the end (a non-streamed answer), so the stream is woken once when the
        answer is complete rather than at every read (the idle timeout still applies between reads)."""
        idle = self._idle_timeout
        await flush_pending()  # a request that waits for a pool slot or a retry: what was made goes out first
        try:
            response = await self._http.request("POST", "/generate_stream", _body(request), timeout=idle)
        except TransportError as exc:
            raise _unreachable(exc) from exc
        try:
            if response.status != 200:
                raise await _error_response(response, idle)
            decoder = SSEDecoder()
            pending: collections.deque = collections.deque()
            while True:
                while not pending:
                    if not response.buffered:
                        await flush_pending()  # what the last read made goes out before we wait
                    chunk = await _next_chunk(response, idle, buffered)
                    if chunk is None:
                        raise UpstreamGenerationError(
                            "TGI's stream ended before its final event", code="incomplete_generation_stream")
                    pending.extend(decoder.feed(chunk))
                event = _parse_event(pending.popleft().data)
                if event.is_final:
                    # Read the body to its end before handing out the last event: the connection is pooled only
                    # when its answer was read through, and a consumer usually stops right at this event.
                    await _drain(response, decoder)
                    yield event
                    return
                yield event
        finally:
            response.release()  # pooled when read through, else closed: TGI stops generating

    async def _request(self, method: str, path: str, *, content: bytes | None = None,
                       read_timeout: float | None) -> bytes:
        try:
            response = await self._http.request(method, path, content, timeout=read_timeout)
            try:
                if response.status != 200:
                    raise await _error_response(response, read_timeout)
                return await response.read(read_timeout)
            finally:
                response.release()
        except TransportError as exc:
            raise _unreachable(exc) from exc


def _body(request: GenerateRequest | Mapping) -> bytes:
    """The wire body; a mapping ``{"inputs", "parameters"}`` is checked as a GenerateRequest first."""
    if not isinstance(request, GenerateRequest):
        request = GenerateRequest.model_validate(request)
    return request.to_json()


async def _next_chunk(response: Response, idle: float | None, whole: bool = False) -> bytes | None:
    try:
        return await response.next_chunk(idle, whole=whole)
    except ReadTimeout as exc:
        raise UpstreamGenerationError(
            f"TGI sent nothing for too long mid-stream ({type(exc).__name__})", code="upstream_timeout"
        ) from exc
    except TransportError as exc:  # reset or broken chunked body after the headers
        raise UpstreamGenerationError(
            f"TGI's stream broke before its final event: {exc!r}", code="incomplete_generation_stream"
        ) from exc


async def _drain(response: Response, decoder: SSEDecoder) -> None:
    """Consume what follows TGI's final event (only the chunked body's end, normally). A server that keeps the
    body open, or sends something broken after the final event, only costs the connection's reuse."""
    if not response.buffered:
        await flush_pending()
    try:
        async with asyncio.timeout(None if response.buffered else _DRAIN_TIMEOUT):
            while (chunk := await response.next_chunk(_DRAIN_TIMEOUT)) is not None:
                decoder.feed(chunk)
    except (TimeoutError, TransportError):
        pass


def _parse_event(data: str) -> StreamEvent:
    try:
        return decode_event(data)
    except msgspec.MsgspecError:
        pass
    try:
        payload = json.loads(data)
    except ValueError:
        payload = None
    if isinstance(payload, dict) and "error" in payload:
        raise error_from_tgi(status=None, body=payload)
    raise UpstreamGenerationError(f"TGI sent an event that is not a token: {data[:200]!r}", code="bad_upstream_event")


async def _error_response(response: Response, timeout: float | None) -> UpstreamError:
    try:
        body = await response.read(timeout, limit=_MAX_ERROR_BODY)
    except TransportError:
        body = b""
    retry_after = response.headers.get(b"retry-after")
    return error_from_tgi(status=response.status, body=body,
                          retry_after=_retry_after(retry_after.decode("latin-1") if retry_after else None))


def _retry_after(value: str | None) -> float | None:
    try:
        return max(float(value), 0.0) if value is not None else None
    except ValueError:
        return None


def _unreachable(exc: TransportError) -> UpstreamError:
    """Nothing was answered: refused, reset or closed before the status line, or timed out."""
    if isinstance(exc, ReadTimeout):
        return UpstreamGenerationError(f"TGI did not answer in time ({exc!r})", code="upstream_timeout")
    if isinstance(exc, PoolTimeout):
        return UpstreamUnavailableError("no free connection to TGI in time", code="upstream_pool_exhausted")
    if isinstance(exc, Disconnected) and exc.answered:
        return UpstreamGenerationError(f"TGI's answer broke: {exc}", code="incomplete_generation_stream")
    return UpstreamUnavailableError(f"TGI is unreachable: {type(exc).__name__}: {exc}")
