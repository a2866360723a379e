"""TGI's ``/generate_stream`` token events, decoded with msgspec: the per-token hot path.

The attribute names and shapes are those of :class:`tgi.protocol.types.StreamResponse` (which stays the
documented pydantic model of TGI's JSON), so the pipeline reads either. One ``msgspec`` decode of an event costs
about a tenth of ``StreamResponse.model_validate_json`` (bench/PERF-NOTES.md). Unknown fields are ignored and
the fields older TGI releases lack are optional, as in ``types.py``; ints are accepted for floats.
"""

from __future__ import annotations

import msgspec

__all__ = ["StreamDetailsEvent", "StreamEvent", "TokenEvent", "decode_event"]


class TokenEvent(msgspec.Struct, frozen=True):
    id: int
    text: str
    logprob: float | None = None
    special: bool = False


class StreamDetailsEvent(msgspec.Struct, frozen=True):
    finish_reason: str
    generated_tokens: int
    seed: int | None = None
    input_length: int | None = None  # 2.3.0+


class StreamEvent(msgspec.Struct, frozen=True):
    token: TokenEvent
    index: int = 0  # from 1; absent in very old servers
    top_tokens: list[TokenEvent] | None = None
    generated_text: str | None = None  # only on the last event
    details: StreamDetailsEvent | None = None  # only on the last event, when details were asked for

    @property
    def is_final(self) -> bool:
        return self.generated_text is not None


decode_event = msgspec.json.Decoder(StreamEvent).decode
"""``decode_event(data: str | bytes) -> StreamEvent``; raises ``msgspec.ValidationError`` or
``msgspec.DecodeError`` (both ``msgspec.MsgspecError``)."""
