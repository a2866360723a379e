"""TGI's request and response types, named and shaped like TGI's JSON (``router/src/lib.rs``).

Requests are ours to build: unknown fields are refused here (TGI would silently ignore a typo) and
:meth:`GenerateRequest.to_json` leaves out every unset field, because TGI answers ``null`` for a non-Option
field (``do_sample``, ``stop``, ``details``, ``decoder_input_details``, ``watermark``) with a 422. The
``parameters`` object is always sent: without it TGI turns sampling on.

Responses are TGI's: unknown fields are ignored and fields that older releases lack are optional.
``StreamResponse`` is parsed once per token; ``model_validate_json`` on the raw event data is the cheapest
pydantic path (it skips building a dict first) and costs a few microseconds per event.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, TypeAdapter

__all__ = [
    "BestOfSequence",
    "Details",
    "ErrorResponse",
    "FinishReason",
    "GenerateParameters",
    "GenerateRequest",
    "GenerateResponse",
    "Grammar",
    "Info",
    "PrefillToken",
    "SimpleToken",
    "StreamDetails",
    "StreamResponse",
    "Token",
    "TopToken",
    "TOKENIZE_RESPONSE",
]

# "length" | "eos_token" | "stop_sequence"; kept a plain str so a new reason does not break parsing.
FinishReason = str


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Response(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Grammar(_Request):
    """``{"type": "json"|"json_object"|"regex"|"json_schema", "value": ...}``.

    For ``json`` the value is a JSON schema (an object, or a string holding one) that needs a top-level
    ``properties``; for ``json_schema`` (3.3.0+) it is ``{"name"?: str, "schema": {...}}``.
    """

    type: Literal["json", "json_object", "regex", "json_schema"]
    value: Any


class GenerateParameters(_Request):
    best_of: int | None = None
    decoder_input_details: bool | None = None
    details: bool | None = None
    do_sample: bool | None = None
    frequency_penalty: float | None = None
    grammar: Grammar | None = None
    max_new_tokens: int | None = None
    repetition_penalty: float | None = None
    return_full_text: bool | None = None
    seed: int | None = None
    stop: list[str] | None = None
    temperature: float | None = None
    top_k: int | None = None
    top_n_tokens: int | None = None
    top_p: float | None = None
    truncate: int | None = None
    typical_p: float | None = None
    watermark: bool | None = None
    adapter_id: str | None = None


class GenerateRequest(_Request):
    """Body of ``/generate``, ``/generate_stream`` and ``/tokenize``."""

    inputs: str
    parameters: GenerateParameters = Field(default_factory=GenerateParameters)

    def to_json(self) -> bytes:
        """The wire body: unset and ``None`` fields left out, ``parameters`` always present."""
        return self.model_dump_json(exclude_none=True).encode("utf-8")


class Token(_Response):
    id: int
    text: str
    logprob: float | None = None
    special: bool = False


TopToken = Token  # TGI sends top-n alternatives with the Token shape


class PrefillToken(_Response):
    id: int
    text: str
    logprob: float | None = None  # the first prefill logprob is NaN, sent as null


class _Sequence(_Response):
    """What TGI reports about one finished sequence: in ``details``, and for each of its
    ``best_of_sequences``."""

    finish_reason: FinishReason
    generated_tokens: int  # counts the EOS token
    seed: int | None = None  # null unless sampling was on
    prefill: list[PrefillToken] = []
    tokens: list[Token] = []
    top_tokens: list[list[Token]] = []


class BestOfSequence(_Sequence):
    generated_text: str


class Details(_Sequence):
    best_of_sequences: list[BestOfSequence] | None = None


class GenerateResponse(_Response):
    generated_text: str  # special tokens skipped; rebuild raw text from details.tokens
    details: Details | None = None


class StreamDetails(_Response):
    finish_reason: FinishReason
    generated_tokens: int
    seed: int | None = None
    input_length: int | None = None  # 2.3.0+


class StreamResponse(_Response):
    index: int = 0  # from 1; absent in very old servers
    token: Token
    top_tokens: list[Token] | None = None
    generated_text: str | None = None  # only on the last event
    details: StreamDetails | None = None  # only on the last event, and only when details were asked for

    @property
    def is_final(self) -> bool:
        return self.generated_text is not None


class Info(_Response):
    """``GET /info`` across versions: ``max_input_length`` (<= 2.0) is read as ``max_input_tokens``."""

    model_id: str
    model_sha: str | None = None
    model_dtype: str | None = None  # <= 2.3
    model_device_type: str | None = None  # <= 2.3
    model_pipeline_tag: str | None = None
    max_concurrent_requests: int | None = None
    max_best_of: int | None = None
    max_stop_sequences: int | None = None
    max_input_tokens: int | None = Field(
        default=None, validation_alias=AliasChoices("max_input_tokens", "max_input_length")
    )
    max_total_tokens: int | None = None
    waiting_served_ratio: float | None = None  # <= 2.2
    max_batch_total_tokens: int | None = None  # <= 2.2
    max_waiting_tokens: int | None = None  # <= 2.2
    max_batch_size: int | None = None  # <= 2.2
    validation_workers: int | None = None
    max_client_batch_size: int | None = None
    router: str | None = None
    version: str | None = None
    sha: str | None = None
    docker_label: str | None = None


class ErrorResponse(_Response):
    error: str
    error_type: str | None = None


class SimpleToken(_Response):
    """One ``/tokenize`` entry; ``start``/``stop`` are offsets into ``inputs``."""

    id: int
    text: str
    start: int
    stop: int


TOKENIZE_RESPONSE: TypeAdapter[list[SimpleToken]] = TypeAdapter(list[SimpleToken])
