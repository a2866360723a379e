"""The gateway's error tree. Errors are raised, never returned; the app maps each one to an
OpenAI-shaped body ``{"error": {"message", "type", "param", "code"}}`` with its ``status_code``.

    GatewayError                         500 server_error
    ├── InvalidRequestError              400 invalid_request_error   (param names the field)
    │   ├── ContextLengthExceededError   400 code=context_length_exceeded
    │   └── UnsupportedRequestError      400 code=unsupported  (valid OpenAI, but the template cannot do it)
    ├── AuthenticationError              401 invalid_request_error  code=invalid_api_key
    ├── ModelNotFoundError               404 invalid_request_error  code=model_not_found
    ├── PayloadTooLargeError             413 invalid_request_error  code=payload_too_large
    ├── UnknownTemplateError             (start-up only: no HTTP status is ever sent for it)
    └── UpstreamError (tgi/protocol/errors.py)    errors that come from TGI or from reaching it
        ├── UpstreamValidationError      400 invalid_request_error
        ├── UpstreamOverloadedError      429 rate_limit_error      code=overloaded
        ├── UpstreamUnavailableError     503 server_error          code=service_unavailable (Retry-After)
        ├── UpstreamGenerationError      502 server_error          (generation failed, stream cut)
        └── UpstreamTimeoutError         504 server_error          code=request_timeout (--request-timeout)

Every ``type`` is one OpenAI sends: a bad key (401) and an unknown model (404) are ``invalid_request_error`` with
the codes ``invalid_api_key`` and ``model_not_found``, exactly as OpenAI answers them; ``code`` tells cases apart.

``functionary/`` raises only the request-side errors; ``tgi/protocol/errors.py`` defines the Upstream branch
and the single function that maps TGI's ``error_type`` to it.
"""

from __future__ import annotations


class GatewayError(Exception):
    status_code: int = 500
    error_type: str = "server_error"
    default_code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code

    def to_dict(self) -> dict:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequestError(GatewayError):
    status_code = 400
    error_type = "invalid_request_error"


class ContextLengthExceededError(InvalidRequestError):
    default_code = "context_length_exceeded"


class UnsupportedRequestError(InvalidRequestError):
    default_code = "unsupported"


class AuthenticationError(GatewayError):
    status_code = 401
    error_type = "invalid_request_error"
    default_code = "invalid_api_key"


class ModelNotFoundError(GatewayError):
    status_code = 404
    error_type = "invalid_request_error"
    default_code = "model_not_found"


class PayloadTooLargeError(GatewayError):
    status_code = 413
    error_type = "invalid_request_error"
    default_code = "payload_too_large"


class UnknownTemplateError(GatewayError):
    """No prompt template fits a model (or an unknown version was asked for)."""
