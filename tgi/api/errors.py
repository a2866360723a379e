"""Every error leaves as OpenAI's ``{"error": {"message", "type", "param", "code"}}``: the handlers, registered once."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from functionary.errors import GatewayError, InvalidRequestError
from tgi.api.disconnect import ClientGone

__all__ = ["error_response", "install_error_handlers", "note_error", "request_id_of"]

log = logging.getLogger("gateway")


def error_response(exc: GatewayError) -> JSONResponse:
    headers = {}
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        headers["Retry-After"] = str(int(retry_after))
    return JSONResponse(exc.to_dict(), status_code=exc.status_code, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(GatewayError)
    async def gateway_error(request: Request, exc: GatewayError):
        if exc.status_code >= 500:
            log.warning("request %s: %s", request_id_of(request), exc.message)
        note_error(request, exc.error_type, exc.code)
        return error_response(exc)

    @app.exception_handler(ClientDisconnect)
    @app.exception_handler(ClientGone)
    async def client_gone(request: Request, exc: Exception):
        # the client left while its body was read or its answer made: nobody gets this answer, and it is no
        # server error (TGI's work for it is cancelled: tgi/api/disconnect.py)
        log.info("request %s: the client went away before its answer was ready", request_id_of(request))
        note_error(request, "client_disconnected", None)
        return Response(status_code=499)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        note_error(request, "invalid_request_error", None)
        return error_response(InvalidRequestError(str(exc), param=None))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        note_error(request, "invalid_request_error", code)
        body = {"error": {"message": str(exc.detail), "type": "invalid_request_error", "param": None, "code": code}}
        return JSONResponse(body, status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        log.exception("request %s: unexpected error", request_id_of(request))
        note_error(request, "server_error", None)
        body = {"error": {"message": "internal error", "type": "server_error", "param": None, "code": None}}
        return JSONResponse(body, status_code=500)


def request_id_of(request: Request) -> str:
    return request.scope.get("state", {}).get("request_id", "-")


def note_error(request: Request, error_type: str, code: str | None) -> None:
    record = request.scope.get("state", {}).get("record")
    if record is not None:
        record.error_type, record.error_code = error_type, code
