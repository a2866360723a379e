"""The chat stream's HTTP response: the SSE chunks that the events of one TGI read make go out in one write.

Starlette's ``StreamingResponse`` sends every chunk as its own ASGI message, and uvicorn writes each to the
socket at once: one ``send`` system call (and one wake-up of the client) per token, the largest single cost of a
streamed token in the profile (bench/PERF-NOTES.md). :class:`SSEResponse` keeps the chunks made since the last
write and writes them when the TGI client is about to wait for the network (``tgi.protocol.flush``), at the end,
and every ``max_pending`` chunks; the first two chunks (the role, then the first content or tool call: the first
result of a stream always carries one) are written as soon as they are made. Nothing made is held back while the gateway waits for TGI, so time to first
token and per-token latency do not change; only the number of writes does.

Disconnects are StreamingResponse's own: the body runs in the same task as before, which is cancelled when the
client leaves (or a write raises), so the TGI stream under it is closed. With ``coalesce=False`` (several
choices, merged by tasks that are not the writer) every chunk is written at once, as before.
"""

from __future__ import annotations

from starlette.responses import StreamingResponse
from starlette.types import Send

from tgi.protocol.flush import flushing

__all__ = ["SSEResponse"]

_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


class SSEResponse(StreamingResponse):
    max_pending = 64  # chunks; a bound on what is held, for answers whose events all arrive in one read

    def __init__(self, content, *, coalesce: bool = True) -> None:
        super().__init__(content, media_type="text/event-stream", headers=_HEADERS)
        self.coalesce = coalesce

    async def stream_response(self, send: Send) -> None:
        if not self.coalesce:
            return await super().stream_response(send)
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        pending: list[bytes] = []

        async def flush() -> None:
            if pending:
                body = b"".join(pending)
                pending.clear()
                await send({"type": "http.response.body", "body": body, "more_body": True})

        eager = True  # the role chunk and the first content chunk go out at once: time to first token
        with flushing(flush):
            async for chunk in self.body_iterator:
                pending.append(chunk)
                if (eager and len(pending) >= 2) or len(pending) >= self.max_pending:
                    eager = False
                    await flush()
        await send({"type": "http.response.body", "body": b"".join(pending), "more_body": False})
