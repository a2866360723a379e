"""Start-up probe: is the server at an endpoint TGI?

An endpoint is taken for TGI only when it answers like TGI, in this order (each step only when the one
before did not decide, so a TGI build or stand-in without ``/health`` or ``/info`` still qualifies):

1. ``GET /info`` returns a JSON object with a ``model_id``;
2. ``GET /health`` returns 200 with an empty or JSON body (TGI's is empty);
3. ``POST /generate_stream`` with an empty input answers an event stream, or TGI's JSON error shape
   (``{"error": ..., "error_type": ...}``; a real TGI refuses the empty input with a 422 and generates
   nothing).

Anything else that answers (a web server's 404 page, a 501 for the POST, ...) is ``NOT_TGI``, reported
with what answered: status, ``server`` header and the first bytes of the body. A 502/503/504 is a proxy
or a server that is not ready: ``DOWN``, like a refused connection. A port that accepts connections but
sends nothing within ``timeout`` seconds is ``SILENT``.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from enum import Enum

import httpx

__all__ = ["Kind", "Probe", "probe", "probe_all"]

PROBE_TIMEOUT = 3.0
_NOT_READY = frozenset({502, 503, 504})


class Kind(Enum):
    TGI = "tgi"
    DOWN = "down"  # nothing listens, or a proxy says the server behind it is not ready
    SILENT = "silent"  # accepts connections, never answers
    NOT_TGI = "not TGI"  # answers, but not like TGI


@dataclass(frozen=True)
class Probe:
    url: str
    kind: Kind
    detail: str = ""  # what answered (NOT_TGI), or why it is down / silent

    def describe(self) -> str:
        return f"{self.url} ({self.detail})" if self.detail else self.url


class _Silent(Exception):
    pass


async def probe_all(urls: list[str], *, timeout: float = PROBE_TIMEOUT) -> list[Probe]:
    return list(await asyncio.gather(*(probe(url, timeout=timeout) for url in urls)))


async def probe(url: str, *, timeout: float = PROBE_TIMEOUT) -> Probe:
    url = url.rstrip("/")
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(timeout), trust_env=False) as http:
        try:
            return await _probe(http, url)
        except _Silent:
            return Probe(url, Kind.SILENT, f"accepts connections but sent no answer within {timeout:g} s")
        except httpx.TransportError as exc:
            return Probe(url, Kind.DOWN, _reason(exc))


async def _probe(http: httpx.AsyncClient, url: str) -> Probe:
    info = await _get(http, "GET", "/info")
    if info.status_code in _NOT_READY:
        return Probe(url, Kind.DOWN, f"/info answers HTTP {info.status_code}")
    if info.status_code == 200 and isinstance(_json(info), dict) and "model_id" in _json(info):
        return Probe(url, Kind.TGI)
    health = await _get(http, "GET", "/health")
    if health.status_code in _NOT_READY:
        return Probe(url, Kind.DOWN, f"/health answers HTTP {health.status_code}")
    if health.status_code == 200 and (not health.content.strip() or _json(health) is not None):
        return Probe(url, Kind.TGI)
    stream = await _get(http, "POST", "/generate_stream", json={"inputs": "", "parameters": {"max_new_tokens": 1}})
    if stream.status_code in _NOT_READY:
        return Probe(url, Kind.DOWN, f"/generate_stream answers HTTP {stream.status_code}")
    body = _json(stream)
    if (stream.status_code == 200 and stream.headers.get("content-type", "").startswith("text/event-stream")) or (
        isinstance(body, dict) and isinstance(body.get("error"), str) and 400 <= stream.status_code < 500
    ):
        return Probe(url, Kind.TGI)
    return Probe(url, Kind.NOT_TGI, "answers, but not like TGI: " + _what_answered(info))


@dataclass(frozen=True)
class _Answer:
    status_code: int
    headers: httpx.Headers
    content: bytes


async def _get(http: httpx.AsyncClient, method: str, path: str, **kwargs) -> _Answer:
    try:
        # at most the first 4 KiB of the body: enough to judge, and an event stream is not read to its end
        async with http.stream(method, path, **kwargs) as response:
            chunks = bytearray()
            async for chunk in response.aiter_bytes():
                chunks += chunk
                if len(chunks) >= 4096:
                    break
            return _Answer(response.status_code, response.headers, bytes(chunks))
    except (httpx.ReadTimeout, httpx.WriteTimeout) as exc:
        raise _Silent() from exc


def _json(response: _Answer) -> object:
    try:
        return json.loads(response.content)
    except ValueError:
        return None


def _what_answered(response: _Answer) -> str:
    server = response.headers.get("server")
    text = response.content[:120].decode("utf-8", "replace")
    first = " ".join(text.split())
    parts = [f"GET /info -> HTTP {response.status_code}"]
    if server:
        parts.append(f"server {server!r}")
    parts.append(f"body {first!r}" if first else "empty body")
    return ", ".join(parts)


def _reason(exc: httpx.TransportError) -> str:
    if isinstance(exc, httpx.ConnectTimeout):
        return "connection timed out"
    text = str(exc) or type(exc).__name__
    return "connection refused" if "refused" in text.lower() or "errno 111" in text.lower() else text
