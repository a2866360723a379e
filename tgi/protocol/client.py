"""An async client for one TGI endpoint: one pooled ``httpx.AsyncClient``, TGI's errors raised as ours.

Timeouts: ``connect_timeout`` bounds reaching TGI; a stream has no overall limit but fails when TGI sends
nothing for ``idle_timeout`` seconds (TGI writes a ``:`` keep-alive every 15 s, so the default 45 s only trips
on a stuck server); a non-streaming ``generate`` may take ``generate_timeout`` seconds (TGI sends nothing
until the whole generation is done).

Errors: a connect failure, or a reset or close before TGI answered, is :class:`UpstreamUnavailableError`;
any non-200 answer and any error event inside a 200 stream go through :func:`error_from_tgi`; a stream that
ends (or breaks) without its final event is :class:`UpstreamGenerationError` with code
``incomplete_generation_stream``.

Cancellation: :meth:`TGIClient.generate_stream` closes the upstream response in ``finally``, so a consumer
that stops early or is cancelled closes the connection and TGI stops generating. Close the generator
deterministically (``async with contextlib.aclosing(client.generate_stream(req)) as events``) rather than
leaving it to garbage collection.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from types import TracebackType

import httpx
from pydantic import ValidationError

from tgi.protocol.errors import (
    UpstreamError,
    UpstreamGenerationError,
    UpstreamUnavailableError,
    error_from_tgi,
)
from tgi.protocol.sse import SSEDecoder
from tgi.protocol.types import TOKENIZE_RESPONSE, GenerateRequest, GenerateResponse, Info, SimpleToken, StreamResponse

__all__ = ["TGIClient"]

_JSON = {"content-type": "application/json"}
_MAX_ERROR_BODY = 64 * 1024


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
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._idle_timeout = idle_timeout
        self._generate_timeout = generate_timeout
        self._connect_timeout = connect_timeout
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(connect=connect_timeout, read=idle_timeout, write=idle_timeout, pool=connect_timeout),
            limits=httpx.Limits(
                max_connections=max_connections,
                max_keepalive_connections=max_keepalive_connections,
                keepalive_expiry=keepalive_expiry,
            ),
            transport=transport,
            trust_env=False,
        )

    async def __aenter__(self) -> TGIClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    def _timeout(self, read: float | None) -> httpx.Timeout:
        return httpx.Timeout(connect=self._connect_timeout, read=read, write=self._idle_timeout,
                             pool=self._connect_timeout)

    async def health(self) -> bool:
        """Whether ``GET /health`` answers 200; never raises for an unreachable or starting server."""
        try:
            response = await self._http.get("/health", timeout=self._timeout(min(self._idle_timeout, 10.0)))
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def info(self) -> Info:
        response = await self._request("GET", "/info", read_timeout=min(self._idle_timeout, 30.0))
        return Info.model_validate_json(response.content)

    async def generate(self, request: GenerateRequest | Mapping) -> GenerateResponse:
        response = await self._request("POST", "/generate", content=_body(request),
                                       read_timeout=self._generate_timeout)
        return GenerateResponse.model_validate_json(response.content)

    async def tokenize(self, text: str) -> list[SimpleToken]:
        """TGI's own tokenization of ``text`` (BOS included, as ``/generate`` counts it)."""
        body = GenerateRequest(inputs=text).to_json()
        response = await self._request("POST", "/tokenize", content=body, read_timeout=self._idle_timeout)
        return TOKENIZE_RESPONSE.validate_json(response.content)

    async def generate_stream(self, request: GenerateRequest | Mapping) -> AsyncIterator[StreamResponse]:
        """Yield TGI's token events up to and including the final one (``event.is_final``)."""
        http_request = self._http.build_request("POST", "/generate_stream", content=_body(request), headers=_JSON)
        try:
            response = await self._http.send(http_request, stream=True)
        except _CONNECT_ERRORS as exc:
            raise _unreachable(exc) from exc
        events = _events(response)
        try:
            if response.status_code != 200:
                raise await _error_response(response)
            async for event in events:
                if event.is_final:
                    # Read the body to its end before handing out the last event: httpx pools a connection only
                    # when its response was read through, and a consumer usually stops right at this event.
                    await _drain(events)
                    yield event
                    return
                yield event
            raise UpstreamGenerationError(
                "TGI's stream ended before its final event", code="incomplete_generation_stream"
            )
        finally:
            await events.aclose()
            await response.aclose()

    async def _request(self, method: str, path: str, *, content: bytes | None = None,
                       read_timeout: float | None) -> httpx.Response:
        try:
            response = await self._http.request(
                method, path, content=content, headers=_JSON if content is not None else None,
                timeout=self._timeout(read_timeout),
            )
        except _CONNECT_ERRORS as exc:
            raise _unreachable(exc) from exc
        if response.status_code != 200:
            raise await _error_response(response)
        return response


def _body(request: GenerateRequest | Mapping) -> bytes:
    """The wire body; a mapping ``{"inputs", "parameters"}`` is checked as a GenerateRequest first."""
    if not isinstance(request, GenerateRequest):
        request = GenerateRequest.model_validate(request)
    return request.to_json()


async def _drain(events: AsyncIterator[StreamResponse], *, timeout: float = 1.0) -> None:
    """Consume what follows TGI's final event (only the chunked body's end, normally). A server that keeps the
    body open, or sends something broken after the final event, only costs the connection's reuse."""
    try:
        async with asyncio.timeout(timeout):
            async for _ in events:
                pass
    except (TimeoutError, UpstreamError):
        pass


async def _events(response: httpx.Response) -> AsyncIterator[StreamResponse]:
    """Decoded token events of a 200 stream; error events and broken streams raise."""
    decoder = SSEDecoder()
    try:
        async for chunk in response.aiter_bytes():
            for sse in decoder.feed(chunk):
                yield _parse_event(sse.data)
    except httpx.TimeoutException as exc:
        raise UpstreamGenerationError(
            f"TGI sent nothing for too long mid-stream ({type(exc).__name__})", code="upstream_timeout"
        ) from exc
    except httpx.HTTPError as exc:  # reset or broken chunked body after the headers
        raise UpstreamGenerationError(
            f"TGI's stream broke before its final event: {exc!r}", code="incomplete_generation_stream"
        ) from exc


def _parse_event(data: str) -> StreamResponse:
    try:
        return StreamResponse.model_validate_json(data)
    except ValidationError:
        pass
    try:
        payload = json.loads(data)
    except ValueError:
        payload = None
    if isinstance(payload, dict) and "error" in payload:
        raise error_from_tgi(status=None, body=payload)
    raise UpstreamGenerationError(f"TGI sent an event that is not a token: {data[:200]!r}", code="bad_upstream_event")


async def _error_response(response: httpx.Response) -> UpstreamError:
    try:
        body = b""
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > _MAX_ERROR_BODY:
                break
    except httpx.HTTPError:
        pass
    return error_from_tgi(status=response.status_code, body=body,
                          retry_after=_retry_after(response.headers.get("retry-after")))


def _retry_after(value: str | None) -> float | None:
    try:
        return max(float(value), 0.0) if value is not None else None
    except ValueError:
        return None


# A TGI killed while a connection to it is being made can surface from inside httpx/anyio as an OSError or an
# AttributeError (a socket already gone when its peer name is read) rather than an httpx error: it is the
# same "unreachable" for the pool (retry elsewhere), never a 500.
_CONNECT_ERRORS = (httpx.HTTPError, OSError, AttributeError)


def _unreachable(exc: Exception) -> UpstreamError:
    """Nothing was answered: refused, reset or closed before the status line, or timed out."""
    if isinstance(exc, httpx.ReadTimeout):
        return UpstreamGenerationError(f"TGI did not answer in time ({exc!r})", code="upstream_timeout")
    if isinstance(exc, httpx.PoolTimeout):
        return UpstreamUnavailableError("no free connection to TGI in time", code="upstream_pool_exhausted")
    return UpstreamUnavailableError(f"TGI is unreachable: {type(exc).__name__}: {exc}")
