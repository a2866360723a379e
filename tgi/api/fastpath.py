"""The hot route without FastAPI's per-request layers: ``POST /v1/chat/completions`` goes straight to its
endpoint function.

FastAPI runs every request through ServerErrorMiddleware, its telemetry and body-limit middlewares,
ExceptionMiddleware, an AsyncExitStack middleware, the router, the route's request/response wrapper and its
dependency solver: ~0.3 ms of CPU a request on the bench's 2-core VM (a trivial route: 0.46 ms against 0.13 ms
for a raw ASGI app; bench/PERF-NOTES.md). The chat route uses none of it (it reads its own body and takes
only the ``Request``), so :class:`ChatFastPath` calls the same endpoint function with a Starlette ``Request``
and maps its exceptions with the app's own exception handlers (the nearest class in the exception's MRO, as
Starlette does). Every other path, and every method other than POST, goes to the app. Not used with CORS
(whose middleware must see every response).
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.requests import Request

__all__ = ["ChatFastPath"]


class ChatFastPath:
    def __init__(self, app: FastAPI, path: str = "/v1/chat/completions") -> None:
        self.app = app
        self.path = path
        self.endpoint = next(route.endpoint for route in app.router.routes
                             if getattr(route, "path", None) == path and "POST" in getattr(route, "methods", ()))

    def __getattr__(self, name):  # ``app.state`` and friends stay reachable
        return getattr(self.app, name)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        scope["app"] = self.app
        request = Request(scope, receive, send)
        try:
            response = await self.endpoint(request)
        except Exception as exc:  # the app's handlers: GatewayError, ClientDisconnect, ..., Exception (500)
            response = await self._handler(exc)(request, exc)
        await response(scope, receive, send)

    def _handler(self, exc: Exception):
        handlers = self.app.exception_handlers
        for cls in type(exc).__mro__:
            if cls in handlers:
                return handlers[cls]
        raise exc
