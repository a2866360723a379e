"""The Upstream branch of the gateway's error tree (see ``functionary/errors.py``) and its one mapping.

    GatewayError
    └── UpstreamError                       502 server_error          anything else from TGI or reaching it
        ├── UpstreamValidationError         400 invalid_request_error TGI refused the request (validation,
        │   │                                                         template/tool errors, axum 4xx bodies)
        │   └── UpstreamContextLengthError  400 code=context_length_exceeded  (input + max_new_tokens too long)
        ├── UpstreamOverloadedError         429 rate_limit_error      code=overloaded
        ├── UpstreamUnavailableError        503 server_error          code=service_unavailable: TGI cannot be
        │                                                             reached; ``retry_after``
        ├── UpstreamGenerationError         502 server_error          generation failed or the stream was cut
        │                                                             (code=incomplete_generation_stream)
        └── UpstreamTimeoutError            504 server_error          code=request_timeout: the request ran past
                                                                      --request-timeout (TGI too slow)

``type`` is always one of OpenAI's (invalid_request_error, rate_limit_error, server_error); ``code`` tells the
cases apart.

:func:`error_from_tgi` is the only place that reads TGI's ``error_type``; the client calls it for non-200
answers and for an error event inside a 200 stream (``status=None``).
"""

from __future__ import annotations

import json
import re

from functionary.errors import GatewayError

__all__ = [
    "UpstreamContextLengthError",
    "UpstreamError",
    "UpstreamGenerationError",
    "UpstreamOverloadedError",
    "UpstreamTimeoutError",
    "UpstreamUnavailableError",
    "UpstreamValidationError",
    "error_from_tgi",
]


class UpstreamError(GatewayError):
    """An error that comes from TGI or from reaching it.

    ``upstream_status`` is TGI's HTTP status (``None`` inside a stream or when nothing was answered) and
    ``upstream_type`` TGI's ``error_type``, kept for logs.
    """

    status_code = 502
    error_type = "server_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        upstream_status: int | None = None,
        upstream_type: str | None = None,
    ) -> None:
        super().__init__(message, param=param, code=code)
        self.upstream_status = upstream_status
        self.upstream_type = upstream_type


class UpstreamValidationError(UpstreamError):
    status_code = 400
    error_type = "invalid_request_error"


class UpstreamContextLengthError(UpstreamValidationError):
    default_code = "context_length_exceeded"


class UpstreamOverloadedError(UpstreamError):
    status_code = 429
    error_type = "rate_limit_error"
    default_code = "overloaded"


class UpstreamUnavailableError(UpstreamError):
    """TGI cannot be reached (refused, reset before any byte, starting, 502/503/504)."""

    status_code = 503
    error_type = "server_error"
    default_code = "service_unavailable"

    def __init__(self, message: str, *, retry_after: float | None = 1.0, **kwargs) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after  # seconds, for a Retry-After header


class UpstreamGenerationError(UpstreamError):
    status_code = 502
    error_type = "server_error"


class UpstreamTimeoutError(UpstreamError):
    """The gateway's own deadline for one request passed while TGI was still working on it."""

    status_code = 504
    error_type = "server_error"
    default_code = "request_timeout"


# TGI error_type -> (class, code)
_BY_TYPE: dict[str, tuple[type[UpstreamError], str | None]] = {
    "validation": (UpstreamValidationError, None),
    "template_error": (UpstreamValidationError, "template_error"),
    "missing_template_variable": (UpstreamValidationError, "template_error"),
    "tool_error": (UpstreamValidationError, "tool_error"),
    "suffix not supported": (UpstreamValidationError, "unsupported"),
    "batch size exceeded": (UpstreamValidationError, "batch_size_exceeded"),
    "tokenizer": (UpstreamValidationError, "tokenizer_error"),
    "overloaded": (UpstreamOverloadedError, None),
    "generation": (UpstreamGenerationError, "generation_failed"),
    "incomplete_generation": (UpstreamGenerationError, "incomplete_generation"),
    "incomplete_generation_stream": (UpstreamGenerationError, "incomplete_generation_stream"),
    "stream_serialization_error": (UpstreamGenerationError, "stream_serialization_error"),
    "healthcheck": (UpstreamUnavailableError, None),
}

_CONTEXT_LENGTH = re.compile(r"`inputs` tokens \+ `max_new_tokens` must be <=|`inputs` must have less than")
_PARAM = re.compile(r"^(?:Input validation error: )?`(\w+)`")


def _read_body(body: object) -> tuple[str | None, str | None, int | None]:
    """(message, error_type, status inside the body) from a JSON object, JSON text, plain text or bytes."""
    if isinstance(body, (bytes, bytearray)):
        body = bytes(body).decode("utf-8", "replace")
    if isinstance(body, str):
        text = body.strip()
        try:
            parsed = json.loads(text) if text.startswith("{") else None
        except ValueError:
            parsed = None
        if parsed is None:
            return (text or None), None, None
        body = parsed
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):  # OpenAI-style {"error": {"message", "http_status_code"}}
            message, status = error.get("message"), error.get("http_status_code")
            return (str(message) if message is not None else None), body.get("error_type"), (
                status if isinstance(status, int) else None)
        error_type = body.get("error_type")
        return (str(error) if error is not None else None), (
            str(error_type) if error_type is not None else None), None
    return None, None, None


def _by_status(status: int | None) -> tuple[type[UpstreamError], str | None]:
    if status in (400, 413, 415, 422):
        code = {413: "payload_too_large", 415: "unsupported_media_type"}.get(status)
        return UpstreamValidationError, code
    if status == 429:
        return UpstreamOverloadedError, None
    if status == 424:
        return UpstreamGenerationError, "generation_failed"
    if status in (502, 503, 504):
        return UpstreamUnavailableError, None
    if status in (401, 403):
        return UpstreamError, "upstream_unauthorized"
    if status == 404:
        return UpstreamError, "upstream_not_found"
    return UpstreamGenerationError if status is None or status >= 500 else UpstreamError, None


def error_from_tgi(*, status: int | None, body: object, retry_after: float | None = None) -> UpstreamError:
    """The gateway error for a TGI error answer.

    ``status`` is the HTTP status, or ``None`` for an error event inside a 200 stream. ``body`` is TGI's
    ``{"error", "error_type"}`` (as a dict, JSON text or bytes), an OpenAI-style error object, or axum's
    text/plain rejection. ``retry_after`` (seconds, from a Retry-After header) is kept on unavailable errors.
    """
    message, tgi_type, body_status = _read_body(body)
    cls, code = _BY_TYPE.get(tgi_type, (None, None)) if tgi_type else (None, None)
    if cls is None:
        cls, code = _by_status(status if status is not None else body_status)
    if message is None:
        message = f"TGI answered HTTP {status}" if status is not None else "TGI sent an error without a message"
    if cls is UpstreamValidationError and _CONTEXT_LENGTH.search(message):
        cls, code = UpstreamContextLengthError, None
    param = None
    if issubclass(cls, UpstreamValidationError):
        match = _PARAM.match(message)
        param = match.group(1) if match else None
    kwargs = {"code": code, "param": param, "upstream_status": status, "upstream_type": tgi_type}
    if cls is UpstreamUnavailableError:
        return UpstreamUnavailableError(message, retry_after=retry_after if retry_after is not None else 1.0, **kwargs)
    return cls(message, **kwargs)
