"""``POST /v1/responses``, one call: the Responses request translated (``tgi/api/responses.py``), planned and run
by the chat pipeline, and the answer translated back, as one object or as the event stream
(``tgi/api/responses_stream.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from functionary.errors import GatewayError
from tgi.api.responses import from_completion, new_id, new_response, parse_request, rename_param, to_chat
from tgi.api.responses_stream import stream_events

__all__ = ["create"]


async def create(runtime, data: dict, *, record=None, body_bytes: int = 0) -> dict | AsyncIterator[bytes]:
    """One ``POST /v1/responses``: the response object as JSON-ready dict, or (``stream``) the SSE bytes of
    its events. Everything that can fail before generation raises (an HTTP error)."""
    request = parse_request(data)
    runtime.check_model(request.model)
    chat_service = runtime.chat
    translated = to_chat(request)
    response_id = new_id("resp")
    try:
        # a large body is planned off the event loop, as for chat (ChatService.plan_async)
        plan = await chat_service.plan_async(translated.chat, request_id=response_id, record=record,
                                             body_bytes=body_bytes)
    except GatewayError as exc:
        raise rename_param(exc, translated.origins) from None
    if record is not None:  # ops hook
        record.completion_id, record.model, record.stream = response_id, plan.model, bool(request.stream)
    response = new_response(request, response_id=response_id, model=plan.model)
    if request.stream:
        return stream_events(response, await chat_service.results(plan), plan=plan)
    completion = await chat_service.complete(plan)
    return from_completion(response, completion).model_dump(mode="json")
