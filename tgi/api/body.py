"""Reading a request body into ``ChatCompletionRequest`` with exact 400s (size, UTF-8, JSON, surrogates, fields),
and the OpenAPI description of that body (the route reads it itself, so FastAPI cannot see its schema)."""

from __future__ import annotations

import asyncio
import json
import logging
import re

from fastapi import FastAPI, Request
from pydantic import ValidationError

from functionary.errors import InvalidRequestError, PayloadTooLargeError
from functionary.openai_types import ChatCompletionRequest
from tgi.pipeline.chat import OFF_LOOP_BYTES

__all__ = ["document_body", "read_chat_request", "read_json"]

log = logging.getLogger("gateway")


def _validation_param(exc: ValidationError, data: object) -> tuple[str, str]:
    """The field of the error that reaches deepest into the request (for a union, the member the client meant)."""
    best, loc = None, ""
    for err in exc.errors():
        path = _client_path(err.get("loc", ()), data)
        if best is None or path.count(".") + path.count("[") > loc.count(".") + loc.count("["):
            best, loc = err, path
    return loc or "body", f"Invalid request: {loc or 'body'}: {best.get('msg')}"


def _client_path(loc: tuple, data: object) -> str:
    """pydantic's error location as the client wrote the field (``tools[0].function.parameters``): the location
    is walked through the request itself, so the names pydantic adds (a union member such as ``str`` or
    ``NamedToolChoice``, a discriminator's tag) are left out; a missing key at the end is kept."""
    path = ""
    node = data
    for i, part in enumerate(loc):
        if isinstance(part, int) and isinstance(node, list) and 0 <= part < len(node):
            path, node = f"{path}[{part}]", node[part]
        elif isinstance(part, str) and isinstance(node, dict) and part in node:
            path, node = f"{path}.{part}" if path else part, node[part]
        elif i == len(loc) - 1 and isinstance(part, str) and part.isidentifier() and isinstance(node, dict):
            path = f"{path}.{part}" if path else part
    return path


# JSON may spell a lone surrogate (``"\ud800"``), which no UTF-8 encoder, tokenizer or TGI accepts; a valid
# pair is joined by json.loads. The cheap byte search keeps the full check off ordinary bodies.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")



def _has_lone_surrogate(data: object) -> bool:
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


async def _read_bytes(request: Request, max_body_bytes: int) -> bytearray:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > max_body_bytes:
        raise PayloadTooLargeError(f"request body is larger than {max_body_bytes} bytes")
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > max_body_bytes:
            raise PayloadTooLargeError(f"request body is larger than {max_body_bytes} bytes")
    request.scope["state"]["body_bytes"] = len(body)
    return body


async def _off_loop(parse, body: bytearray):
    # from the size at which the plan also leaves the loop: decoding megabytes must not hold up other requests
    if len(body) >= OFF_LOOP_BYTES:
        return await asyncio.to_thread(parse, bytes(body))
    return parse(body)


def _decode_json(body: bytes | bytearray) -> dict:
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
    return data


def _parse_chat(body: bytes | bytearray) -> ChatCompletionRequest:
    data = _decode_json(body)
    try:
        req = ChatCompletionRequest.model_validate(data)
    except ValidationError as exc:
        param, message = _validation_param(exc, data)
        raise InvalidRequestError(message, param=param) from None
    except RecursionError:
        raise InvalidRequestError("request body is nested too deeply", param="body") from None
    if req.model_extra:
        log.debug("ignoring unknown request fields: %s", ", ".join(sorted(req.model_extra)))
    return req


async def read_json(request: Request, *, max_body_bytes: int) -> dict:
    """The request body as a JSON object (size-limited, valid UTF-8 and Unicode), or a 4xx."""
    return await _off_loop(_decode_json, await _read_bytes(request, max_body_bytes))


async def read_chat_request(request: Request, *, max_body_bytes: int) -> ChatCompletionRequest:
    """The body as a checked ``ChatCompletionRequest``, or a 400 naming the field as the client wrote it."""
    return await _off_loop(_parse_chat, await _read_bytes(request, max_body_bytes))


def document_body(app: FastAPI, model=ChatCompletionRequest) -> dict:
    """The POST routes read their raw body themselves (for exact 400s), so FastAPI cannot see its schema: publish
    the request model's JSON schema in the OpenAPI document by hand (clients and schemathesis use it)."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    defs = {model.__name__: schema, **schema.pop("$defs", {})}
    base = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            base().setdefault("components", {}).setdefault("schemas", {}).update(defs)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}
