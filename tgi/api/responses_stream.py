"""Streamed ``/v1/responses``: the chat pipeline's structured stream -> Responses events -> SSE bytes.

    response.created, response.in_progress,
    per item: response.output_item.added, (message) response.content_part.added, response.output_text.delta*,
              response.output_text.done, response.content_part.done / (call) response.function_call_arguments.delta*,
              response.function_call_arguments.done; then response.output_item.done
    response.completed | response.incomplete | response.failed

Every event carries ``sequence_number`` (0, 1, ...) and is sent as ``event: TYPE`` + ``data: JSON``. The
answer's text is one message item, opened at its first text and closed at the end (Functionary may write text
around its calls; the non-streamed answer carries all of it in one message too); each call is one
``function_call`` item, closed when the next one starts. The final response is built from the same items, so
the openai client's stream helpers assemble what the non-streamed call returns.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

from functionary.errors import GatewayError
from functionary.openai_types import Delta
from functionary.responses_types import (
    OutputFunctionCall,
    OutputItem,
    OutputMessage,
    OutputText,
    Response,
    ResponseError,
)
from tgi.api.responses import finished, new_id

log = logging.getLogger("gateway.responses")

_DUMPS = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


class EventWriter:
    """Holds the output items of one streamed response and writes each event with its sequence number."""

    def __init__(self, response: Response) -> None:
        self.response = response
        self.sequence = 0
        self.items: list[OutputItem] = []
        self.open: set[int] = set()  # output indexes whose item is not done yet
        self.message: int | None = None  # output index of the message item
        self.call: int | None = None  # output index of the call whose arguments are streaming
        self.calls = 0

    def event(self, kind: str, **fields) -> bytes:
        data = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + _DUMPS(data).encode() + b"\n\n"

    def lifecycle(self, kind: str, response: Response) -> bytes:
        return self.event(kind, response=response.model_dump(mode="json"))

    def _add(self, item: OutputItem) -> tuple[int, bytes]:
        index = len(self.items)
        self.items.append(item)
        self.open.add(index)
        return index, self.event("response.output_item.added", output_index=index, item=item.model_dump(mode="json"))

    def _open_message(self) -> list[bytes]:
        item = OutputMessage(id=new_id("msg"), status="in_progress", content=[])
        self.message, added = self._add(item)
        part = self.event("response.content_part.added", item_id=item.id, output_index=self.message,
                          content_index=0, part=OutputText(text="").model_dump(mode="json"))
        item.content.append(OutputText(text=""))
        return [added, part]

    def text(self, text: str) -> list[bytes]:
        out = self._open_message() if self.message is None else []
        item = self.items[self.message]
        item.content[0].text += text
        out.append(self.event("response.output_text.delta", item_id=item.id, output_index=self.message,
                              content_index=0, delta=text, logprobs=[]))
        return out

    def call_delta(self, *, call_id: str | None, name: str | None, arguments: str) -> list[bytes]:
        out = []
        if call_id is not None:  # a new call: the previous one is complete
            if self.call is not None:
                out += self._close(self.call, "completed")
            item = OutputFunctionCall(id=new_id("fc"), call_id=call_id, name=name or "", arguments="",
                                      status="in_progress")
            self.call, added = self._add(item)
            self.calls += 1
            out.append(added)
        if arguments and self.call is not None:
            item = self.items[self.call]
            item.arguments += arguments
            out.append(self.event("response.function_call_arguments.delta", item_id=item.id, output_index=self.call,
                                  delta=arguments))
        return out

    def delta(self, delta: Delta) -> list[bytes]:
        out = []
        if delta.content:
            out += self.text(delta.content)
        for call in delta.tool_calls or ():
            out += self.call_delta(call_id=call.id, name=call.function.name, arguments=call.function.arguments or "")
        return out

    def _close(self, index: int, status: str) -> list[bytes]:
        self.open.discard(index)
        item = self.items[index]
        item.status = status
        if isinstance(item, OutputFunctionCall):
            out = [self.event("response.function_call_arguments.done", item_id=item.id, output_index=index,
                              arguments=item.arguments)]
        else:
            part = item.content[0]
            out = [
                self.event("response.output_text.done", item_id=item.id, output_index=index, content_index=0,
                           text=part.text, logprobs=[]),
                self.event("response.content_part.done", item_id=item.id, output_index=index, content_index=0,
                           part=part.model_dump(mode="json")),
            ]
        out.append(self.event("response.output_item.done", output_index=index, item=item.model_dump(mode="json")))
        return out

    def finish(self, finish_reason: str, *, prompt_tokens: int, completion_tokens: int) -> list[bytes]:
        out = [] if self.items else self._open_message()  # an empty answer is an empty message, as non-streamed
        last = len(self.items) - 1
        for index in sorted(self.open):
            out += self._close(index, "incomplete" if finish_reason == "length" and index == last else "completed")
        final = finished(self.response, self.items, finish_reason=finish_reason, prompt_tokens=prompt_tokens,
                         completion_tokens=completion_tokens)
        out.append(self.lifecycle("response." + final.status, final))
        return out

    def fail(self, exc: GatewayError) -> bytes:
        code = "rate_limit_exceeded" if exc.status_code == 429 else "server_error"
        error = ResponseError(code=code, message=exc.message, type=exc.error_type, param=exc.param)
        output = [item.model_copy(update={"status": "incomplete"}) if i in self.open else item
                  for i, item in enumerate(self.items)]
        failed = self.response.model_copy(update={"status": "failed", "error": error, "output": output})
        return self.lifecycle("response.failed", failed)


async def stream_events(response: Response, results: AsyncIterator, *, plan) -> AsyncIterator[bytes]:
    """SSE bytes for one streamed response, from ``ChatService.results(plan)`` (one choice). A failure after
    the stream started is a ``response.failed`` event; closing this generator closes the TGI stream."""
    writer = EventWriter(response)
    prompt_tokens, completion_tokens = plan.prompt_tokens, 0
    try:
        yield writer.lifecycle("response.created", response)
        yield writer.lifecycle("response.in_progress", response)
        async for _, result in results:
            for delta in result.deltas:
                for chunk in writer.delta(delta):
                    yield chunk
            if result.finish_reason is not None:
                completion_tokens = result.completion_tokens
                if result.prompt_tokens is not None:
                    prompt_tokens = result.prompt_tokens
                for chunk in writer.finish(result.finish_reason, prompt_tokens=prompt_tokens,
                                           completion_tokens=completion_tokens):
                    yield chunk
    except GatewayError as exc:
        log.warning("request %s: error after the stream started: %s", plan.request_id, exc.message)
        if plan.record is not None:  # ops hook
            plan.record.error_type, plan.record.error_code = exc.error_type, exc.code
        yield writer.fail(exc)
    finally:
        await results.aclose()
        if plan.record is not None:  # ops hook
            plan.record.usage(prompt_tokens, completion_tokens, writer.calls)
