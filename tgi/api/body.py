"""Reading a request body into ``ChatCompletionRequest`` with exact 400s (size, UTF-8, JSON, surrogates, fields),
and the OpenAPI description of that body (the route reads it itself, so FastAPI cannot see its schema)."""

from __future__ import annotations

import json
import logging
import re

from fastapi import FastAPI, Request
from pydantic import ValidationError

from functionary.errors import InvalidRequestError, PayloadTooLargeError
from functionary.openai_types import ChatCompletionRequest

__all__ = ["document_body", "read_chat_request", "read_json"]

log = logging.getLogger("gateway")


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


async def read_json(request: Request, *, max_body_bytes: int) -> dict:
    """The request body as a JSON object (size-limited, valid UTF-8 and Unicode), or a 4xx."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > max_body_bytes:
        raise PayloadTooLargeError(f"request body is larger than {max_body_bytes} bytes")
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > max_body_bytes:
            raise PayloadTooLargeError(f"request body is larger than {max_body_bytes} bytes")
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


async def read_chat_request(request: Request, *, max_body_bytes: int) -> ChatCompletionRequest:
    data = await read_json(request, max_body_bytes=max_body_bytes)
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
