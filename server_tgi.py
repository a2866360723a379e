"""OpenAI-compatible gateway for Functionary models served by text-generation-inference.

    python server_tgi.py --model meetkai/functionary-small-v3.2 --endpoint http://127.0.0.1:8080

This file is the CLI and the app wiring only: prompt formats and parsers live in ``functionary/``,
every exchange with TGI, Docker and the Hub in ``tgi/``.
"""

from __future__ import annotations

import argparse
import hmac
import importlib
import json
import logging
import os
import re
import sys
import time
import uuid
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from functionary.errors import (
    AuthenticationError,
    GatewayError,
    InvalidRequestError,
    ModelNotFoundError,
    PayloadTooLargeError,
)
from functionary.openai_types import ChatCompletionRequest

log = logging.getLogger("gateway")

DEFAULT_SAVE_FOLDER = "/tmp/functionary-tgi-models"


# ---------------------------------------------------------------------------------------------
# Settings and CLI


@dataclass(frozen=True)
class Settings:
    model: str
    endpoints: tuple[str, ...] = ("http://127.0.0.1:8080",)
    host: str = "127.0.0.1"
    port: int = 8000
    prompt_template: str | None = None
    served_model_name: str | None = None
    api_keys: tuple[str, ...] = field(default=(), repr=False)  # never printed
    max_total_tokens: int | None = None
    max_input_tokens: int | None = None
    startup_timeout: float = 600.0
    remote_model_save_folder: str = DEFAULT_SAVE_FOLDER
    no_launch: bool = False
    emulator: bool = False
    revision: str | None = None
    tgi_image: str | None = None
    gpus: str = "all"
    shm_size: str = "1g"
    num_shard: int | None = None
    quantize: str | None = None
    dtype: str | None = None
    keep_container: bool = False
    replace: bool = False
    launcher_args: tuple[str, ...] = ()
    max_body_bytes: int = 8 * 1024 * 1024
    request_timeout: float | None = 600.0
    grammar: str = "off"  # off | auto | on: TGI grammars for tool arguments and response_format (docs/grammar.md)
    cors_origins: tuple[str, ...] = ()
    log_level: str = "info"
    # cluster and operations (README "Cluster and operations")
    max_in_flight_per_endpoint: int | None = None
    queue_timeout: float = 30.0
    health_interval: float = 5.0
    eject_after: int = 2
    log_format: str = "text"
    extra: dict = field(default_factory=dict)

    @property
    def model_name(self) -> str:
        return self.served_model_name or self.model


def _flag(parser: argparse.ArgumentParser, name: str, **kwargs) -> None:
    """Registers ``--a_b`` and ``--a-b`` as one option (the seed's underscore flags keep working)."""
    dashed = "--" + name.replace("_", "-")
    under = "--" + name.replace("-", "_")
    names = [dashed] if dashed == under else [under, dashed]
    parser.add_argument(*names, dest=name.replace("-", "_"), **kwargs)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="server_tgi.py",
        description="OpenAI-compatible API for Functionary models on text-generation-inference.",
    )
    _flag(p, "model", required=True, help="hub id or local directory with tokenizer files")
    _flag(p, "endpoint", action="append", default=None,
          help="TGI base URL; repeat for a cluster (default: --endpoints-file, else FUNCTIONARY_TGI_ENDPOINTS "
               "(comma separated), else http://127.0.0.1:8080)")
    _flag(p, "endpoints_file", default=None, help="file with one TGI base URL a line (# comments)")
    _flag(p, "max_in_flight_per_endpoint", type=int, default=None,
          help="at most this many generations at once on one endpoint; more wait (default: no limit)")
    _flag(p, "queue_timeout", type=float, default=30.0,
          help="seconds a request waits for a free endpoint slot before a 429")
    _flag(p, "health_interval", type=float, default=5.0, help="seconds between endpoint health checks (0 = off)")
    _flag(p, "eject_after", type=int, default=2, help="consecutive failures that take an endpoint out")
    _flag(p, "host", default="127.0.0.1")
    _flag(p, "port", type=int, default=8000)
    _flag(p, "prompt_template", default=None, help="force a template version (see --list-templates)")
    _flag(p, "served_model_name", default=None, help="model name clients use (default: --model)")
    _flag(p, "api_key", action="append", default=None,
          help="accepted API key; repeatable; also FUNCTIONARY_API_KEYS (comma separated)")
    _flag(p, "max_total_tokens", type=int, default=None, help="context size (default: from TGI /info)")
    _flag(p, "max_input_tokens", type=int, default=None)
    _flag(p, "startup_timeout", type=float, default=600.0, help="seconds to wait for TGI to be ready")
    _flag(p, "remote_model_save_folder", default=DEFAULT_SAVE_FOLDER,
          help="where hub weights are downloaded when a container is launched")
    _flag(p, "no_launch", action="store_true", help="never start a TGI container")
    _flag(p, "emulator", action="store_true",
          help="start the bundled TGI emulator (canned answers, no GPU) on the first endpoint's port")
    _flag(p, "revision", default=None, help="hub revision of the model")
    _flag(p, "tgi_image", default=None, help="TGI image to launch")
    _flag(p, "gpus", default="all", help="all | none | N | comma-separated device ids")
    _flag(p, "shm_size", default="1g")
    _flag(p, "num_shard", type=int, default=None)
    _flag(p, "quantize", default=None)
    _flag(p, "dtype", default=None)
    _flag(p, "keep_container", action="store_true", help="leave a launched container running on exit")
    _flag(p, "replace", action="store_true", help="replace a container of ours that has other settings")
    _flag(p, "launcher_arg", action="append", default=None,
          help="extra text-generation-launcher argument, passed through (repeatable)")
    _flag(p, "max_body_bytes", type=int, default=8 * 1024 * 1024)
    _flag(p, "request_timeout", type=float, default=600.0,
          help="seconds a chat request may take in all; then it ends with an OpenAI error (0 = no limit)")
    _flag(p, "grammar", choices=("auto", "on", "off"), default="off",
          help="constrain tool arguments and response_format with TGI grammars: auto = when TGI accepts them")
    _flag(p, "cors_origin", action="append", default=None,
          help="browser origin allowed to call the API (repeatable; * for any); default: no CORS headers")
    _flag(p, "log_level", default="info")
    _flag(p, "log_format", choices=("text", "json"), default="text",
          help="log lines as key=value text or one JSON object a line")
    return p


def _endpoints(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[str, ...]:
    """``--endpoint`` and ``--endpoints-file`` together; else FUNCTIONARY_TGI_ENDPOINTS; else the default."""
    urls = list(args.endpoint or ())
    if args.endpoints_file:
        try:
            text = Path(args.endpoints_file).read_text(encoding="utf-8")
        except OSError as exc:
            parser.error(f"--endpoints-file: {exc}")
        urls += [line.split("#", 1)[0].strip() for line in text.splitlines()]
    if not urls:
        urls = os.environ.get("FUNCTIONARY_TGI_ENDPOINTS", "").split(",")
    urls = [u.strip().rstrip("/") for u in urls if u.strip()] or ["http://127.0.0.1:8080"]
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            parser.error(f"not a TGI base URL: {url!r} (expected http://HOST:PORT)")
    return tuple(dict.fromkeys(urls))


def settings_from_args(argv: list[str] | None = None) -> Settings:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.max_in_flight_per_endpoint is not None and args.max_in_flight_per_endpoint < 1:
        parser.error("--max-in-flight-per-endpoint must be at least 1")
    keys = list(args.api_key or [])
    env_keys = os.environ.get("FUNCTIONARY_API_KEYS", "")
    keys += [k.strip() for k in env_keys.split(",") if k.strip()]
    return Settings(
        model=args.model,
        endpoints=_endpoints(parser, args),
        host=args.host,
        port=args.port,
        prompt_template=args.prompt_template,
        served_model_name=args.served_model_name,
        api_keys=tuple(keys),
        max_total_tokens=args.max_total_tokens,
        max_input_tokens=args.max_input_tokens,
        startup_timeout=args.startup_timeout,
        remote_model_save_folder=args.remote_model_save_folder,
        no_launch=args.no_launch,
        emulator=args.emulator,
        revision=args.revision,
        tgi_image=args.tgi_image,
        gpus=args.gpus,
        shm_size=args.shm_size,
        num_shard=args.num_shard,
        quantize=args.quantize,
        dtype=args.dtype,
        keep_container=args.keep_container,
        replace=args.replace,
        launcher_args=tuple(args.launcher_arg or ()),
        max_body_bytes=args.max_body_bytes,
        request_timeout=args.request_timeout or None,
        grammar=args.grammar,
        cors_origins=tuple(args.cors_origin or ()),
        log_level=args.log_level,
        max_in_flight_per_endpoint=args.max_in_flight_per_endpoint,
        queue_timeout=args.queue_timeout,
        health_interval=args.health_interval,
        eject_after=args.eject_after,
        log_format=args.log_format,
    )


# ---------------------------------------------------------------------------------------------
# The app


def create_app(settings: Settings) -> FastAPI:
    from tgi.api.runtime import open_runtime  # the TGI side: tokenizer, template, pool, launcher

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        async with AsyncExitStack() as stack:
            app.state.runtime = await stack.enter_async_context(open_runtime(settings))
            yield

    from tgi.ops.metrics import Metrics

    app = FastAPI(title="Functionary TGI gateway", lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.settings = settings
    app.state.metrics = Metrics()
    _install_error_handlers(app)
    _install_routes(app, settings)
    if settings.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"],
            allow_headers=["*"], expose_headers=["x-request-id"],
        )
    from tgi.api.fastpath import ChatFastPath  # perf: the chat route without FastAPI's per-request layers

    inner = app if settings.cors_origins else ChatFastPath(app)
    return RequestContextMiddleware(inner, app.state.metrics)  # type: ignore[return-value]


_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:+=/-]{1,128}")
access_log = logging.getLogger("gateway.access")


class RequestContextMiddleware:
    """Request ids: a client's ``x-request-id`` (when it is 1-128 characters of ``A-Za-z0-9._:+=/-``;
    otherwise a new one) is returned on every response. Each request under ``/v1/`` ends with one log line
    and its ``/metrics`` counters. Plain ASGI: no per-request task or body buffering on the hot path."""

    def __init__(self, app: FastAPI, metrics) -> None:
        self.app = app
        self.metrics = metrics

    def __getattr__(self, name):  # ``app.state`` and friends stay reachable for tests
        return getattr(self.app, name)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        from tgi.ops.metrics import RequestRecord

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
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", raw)]
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
        access_log.log(level, "request", extra={"fields": record.fields(now)})


def _error_response(exc: GatewayError) -> JSONResponse:
    headers = {}
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        headers["Retry-After"] = str(int(retry_after))
    return JSONResponse(exc.to_dict(), status_code=exc.status_code, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(GatewayError)
    async def gateway_error(request: Request, exc: GatewayError):
        if exc.status_code >= 500:
            log.warning("request %s: %s", _rid(request), exc.message)
        _note_error(request, exc.error_type, exc.code)
        return _error_response(exc)

    @app.exception_handler(ClientDisconnect)
    async def client_gone(request: Request, exc: ClientDisconnect):
        # the client left while its body was being read: nobody gets this answer, and it is no server error
        log.info("request %s: the client went away before its body was read", _rid(request))
        _note_error(request, "client_disconnected", None)
        return Response(status_code=499)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        _note_error(request, "invalid_request_error", None)
        return _error_response(InvalidRequestError(str(exc), param=None))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        _note_error(request, "invalid_request_error", code)
        body = {"error": {"message": str(exc.detail), "type": "invalid_request_error", "param": None, "code": code}}
        return JSONResponse(body, status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        log.exception("request %s: unexpected error", _rid(request))
        _note_error(request, "server_error", None)
        body = {"error": {"message": "internal error", "type": "server_error", "param": None, "code": None}}
        return JSONResponse(body, status_code=500)


def _rid(request: Request) -> str:
    return request.scope.get("state", {}).get("request_id", "-")


def _note_error(request: Request, error_type: str, code: str | None) -> None:
    record = request.scope.get("state", {}).get("record")
    if record is not None:
        record.error_type, record.error_code = error_type, code


def _check_auth(request: Request, keys: tuple[str, ...]) -> None:
    if not keys:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip().encode()
    ok = False
    for key in keys:  # compare against every key: the time taken tells nothing
        ok |= hmac.compare_digest(token, key.encode())
    if scheme.lower() != "bearer" or not ok:
        raise AuthenticationError(
            "Incorrect API key provided. Send it as 'Authorization: Bearer <key>'."
        )


def _validation_param(exc: ValidationError) -> tuple[str, str]:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ()) if not (isinstance(p, str) and p.startswith(("function-", "literal["))))
    return loc or "body", f"Invalid request: {loc or 'body'}: {err.get('msg')}"


# JSON may spell a lone surrogate (``"\ud800"``), which no UTF-8 encoder, tokenizer or TGI accepts; a valid
# pair is joined by json.loads. The cheap byte search keeps the full check off ordinary bodies.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _has_lone_surrogate(data: object) -> bool:
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


async def _read_request(request: Request, settings: Settings) -> ChatCompletionRequest:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > settings.max_body_bytes:
        raise PayloadTooLargeError(f"request body is larger than {settings.max_body_bytes} bytes")
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > settings.max_body_bytes:
            raise PayloadTooLargeError(f"request body is larger than {settings.max_body_bytes} bytes")
    try:
        data = json.loads(body)
    except UnicodeDecodeError:
        raise InvalidRequestError("request body is not valid UTF-8", param="body") from None
    except (ValueError, RecursionError) as exc:
        raise InvalidRequestError(f"request body is not valid JSON: {exc}", param="body") from None
    if not isinstance(data, dict):
        raise InvalidRequestError("request body must be a JSON object", param="body")
    if _SURROGATE_ESCAPE.search(body) and _has_lone_surrogate(data):
        raise InvalidRequestError(
            "request body is not valid Unicode: it holds a lone UTF-16 surrogate escape (\\ud800-\\udfff)",
            param="body",
        )
    try:
        req = ChatCompletionRequest.model_validate(data)
    except ValidationError as exc:
        param, message = _validation_param(exc)
        raise InvalidRequestError(message, param=param) from None
    except RecursionError:
        raise InvalidRequestError("request body is nested too deeply", param="body") from None
    if req.model_extra:
        log.debug("ignoring unknown request fields: %s", ", ".join(sorted(req.model_extra)))
    return req


def _document_chat_body(app: FastAPI) -> dict:
    """The chat route reads its raw body itself (for exact 400s), so FastAPI cannot see its schema: publish
    ChatCompletionRequest's JSON schema in the OpenAPI document by hand (clients and schemathesis use it)."""
    schema = ChatCompletionRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    defs = {"ChatCompletionRequest": schema, **schema.pop("$defs", {})}
    base = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            base().setdefault("components", {}).setdefault("schemas", {}).update(defs)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    ref = {"$ref": "#/components/schemas/ChatCompletionRequest"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


def _install_routes(app: FastAPI, settings: Settings) -> None:
    @app.post("/v1/chat/completions", openapi_extra=_document_chat_body(app))
    async def chat_completions(request: Request):
        _check_auth(request, settings.api_keys)
        req = await _read_request(request, settings)
        runtime = request.app.state.runtime
        if req.model is not None and req.model not in runtime.model_names:
            raise ModelNotFoundError(
                f"The model '{req.model}' does not exist; this server serves '{settings.model_name}'.",
                param="model",
            )
        from tgi.pipeline.chat import new_request_id

        record = request.scope["state"]["record"]
        plan = runtime.chat.plan(req, request_id=new_request_id(), record=record)
        record.completion_id, record.model, record.stream = plan.request_id, plan.model, bool(req.stream)
        log.debug("request %s: %s, %d prompt tokens, stream=%s", _rid(request), plan.request_id, plan.prompt_tokens, bool(req.stream))
        if req.stream:
            from tgi.api.streaming import SSEResponse

            return SSEResponse(await runtime.chat.stream(plan), coalesce=plan.n == 1)  # perf: one write per TGI read
        return JSONResponse(await runtime.chat.complete(plan))

    @app.get("/v1/models")
    async def models(request: Request):
        _check_auth(request, settings.api_keys)
        runtime = request.app.state.runtime
        card = {
            "id": settings.model_name,
            "object": "model",
            "created": runtime.started,
            "owned_by": "functionary-tgi-gateway",
            "context_length": runtime.limits.max_total_tokens,
            "max_model_len": runtime.limits.max_total_tokens,
        }
        return {"object": "list", "data": [card]}

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request):
        text = request.app.state.metrics.render(request.app.state.runtime.pool.stats())
        return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/health")
    async def health(request: Request):
        runtime = request.app.state.runtime
        status = await runtime.health()
        code = 200 if status["tgi"]["healthy"] else 503
        return JSONResponse({"status": "ok" if code == 200 else "degraded", **status}, status_code=code)


# ---------------------------------------------------------------------------------------------


class _StartupFailure(logging.Filter):
    """A start-up that fails for a known reason (no TGI, Docker unreachable, ...) prints its message,
    not a traceback through uvicorn and starlette (which hand it over as formatted text)."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.msg if isinstance(record.msg, str) else ""
        if not text.startswith("Traceback"):
            return True
        last = text.rstrip().rsplit("\n", 1)[-1]
        name, _, message = last.partition(": ")
        module, _, cls = name.rpartition(".")
        try:
            error_type = getattr(importlib.import_module(module), cls) if module else None
        except ImportError:
            error_type = None
        if isinstance(error_type, type) and issubclass(error_type, GatewayError):
            record.msg, record.args = "start-up failed: %s", (message,)
        return True


def main(argv: list[str] | None = None) -> int:
    settings = settings_from_args(argv)
    from tgi.ops.logs import configure_logging, secrets_from_env

    configure_logging(level=settings.log_level, fmt=settings.log_format,
                      secrets=(*settings.api_keys, *secrets_from_env()))
    import uvicorn

    try:
        app = create_app(settings)
    except GatewayError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    logging.getLogger("uvicorn.error").addFilter(_StartupFailure())
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level=settings.log_level, access_log=False,
        lifespan="on", timeout_graceful_shutdown=10, log_config=None,  # our handler and format (tgi/ops/logs.py)
        # longer than clients keep idle connections (httpx and so openai-python: 5 s): at uvicorn's own 5 s a
        # client reusing a connection races the server closing it and gets a connection error
        timeout_keep_alive=65,
    )
    server = uvicorn.Server(config)
    server.run()
    # uvicorn swallows a failed lifespan start-up (it logs it): report it as a failed run
    return 0 if getattr(server, "started", False) else 1


if __name__ == "__main__":
    sys.exit(main())
