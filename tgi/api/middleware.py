"""The outermost ASGI layer: request ids, the per-request record, one access-log line and the metrics per call."""

from __future__ import annotations

import logging
import re
import time
import uuid

from tgi.api.startup import without_startup_traceback
from tgi.ops.metrics import RequestRecord

__all__ = ["RequestContextMiddleware"]


_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:+=/-]{1,128}")
access_log = logging.getLogger("gateway.access")


class RequestContextMiddleware:
    """Request ids: a client's ``x-request-id`` (when it is 1-128 characters of ``A-Za-z0-9._:+=/-``;
    otherwise a new one) is returned on every response. Each request under ``/v1/`` ends with one log line
    and its ``/metrics`` counters. Plain ASGI: no per-request task or body buffering on the hot path."""

    def __init__(self, app, metrics, *, worker=None) -> None:
        self.app = app
        self.metrics = metrics
        # under --workers: which process answered, for operators matching a response to a worker's log lines
        self.worker = None if worker is None else worker.index
        self._extra = [] if worker is None else [(b"x-gateway-worker", str(worker.index).encode())]

    def __getattr__(self, name):  # ``app.state`` and friends stay reachable for tests
        return getattr(self.app, name)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            return await self.app(scope, receive, without_startup_traceback(send))
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        rid = None
        for key, value in scope["headers"]:
            if key == b"x-request-id":
                rid = value.decode("latin-1")
                break
        if not rid or not _SAFE_REQUEST_ID.fullmatch(rid):
            rid = uuid.uuid4().hex
        record = RequestRecord(rid, scope["method"], scope["path"])
        state = scope.setdefault("state", {})
        state["request_id"], state["record"] = rid, record
        raw = rid.encode("ascii")

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                record.status = message["status"]
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", raw), *self._extra]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                record.finished = True
            await send(message)

        if not scope["path"].startswith("/v1/") or scope["method"] == "OPTIONS":  # CORS preflights are no calls
            return await self.app(scope, receive, send_with_id)
        self.metrics.in_flight += 1
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self.metrics.in_flight -= 1
            self._finish(record)

    def _finish(self, record) -> None:
        if not record.finished and record.error_type is None:
            record.error_type = "client_disconnected"  # the client left before the whole answer was sent
            record.status = record.status or 499
        now = time.perf_counter()
        self.metrics.finish(record, now)
        level = logging.WARNING if (record.status or 500) >= 500 else logging.INFO
        fields = record.fields(now)
        if self.worker is not None:
            fields["worker"] = self.worker
        access_log.log(level, "request", extra={"fields": fields})
