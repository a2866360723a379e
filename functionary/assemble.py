"""Parser events -> OpenAI messages and deltas.

The one place that knows OpenAI's rules for the assistant side:
  * every call gets a ``call_…`` id (never null) and ``type: "function"``;
  * streamed calls: ``index`` on every tool-call delta, ``id``/``type``/``name`` only in the first
    delta of each call, then argument fragments (always strings);
  * legacy ``functions`` requests get ``function_call`` (the first call) instead of ``tool_calls``;
  * finish reason: ``length`` when TGI stopped on length; else ``tool_calls`` (``function_call`` for
    legacy requests) when calls were made under an ``auto``/``required`` choice; else ``stop``
    (also for a named choice, as OpenAI does).
"""

from __future__ import annotations

import secrets
import string

from functionary.openai_types import (
    Delta,
    FunctionCallDelta,
    ResponseFunctionCall,
    ResponseMessage,
    ResponseToolCall,
    ToolCallDelta,
)
from functionary.templates.base import (
    ArgumentsDelta,
    Event,
    ParsedOutput,
    PreparedRequest,
    TextDelta,
    ToolCallStart,
)

_ID_ALPHABET = string.ascii_letters + string.digits


def new_call_id() -> str:
    return "call_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


def finish_reason(*, has_calls: bool, prepared: PreparedRequest, stopped_on_length: bool) -> str:
    if stopped_on_length:
        return "length"
    if has_calls and prepared.choice.kind in ("auto", "required"):
        return "function_call" if prepared.legacy_functions else "tool_calls"
    return "stop"


def build_message(parsed: ParsedOutput, prepared: PreparedRequest) -> ResponseMessage:
    calls = parsed.tool_calls
    if not calls:
        return ResponseMessage(content=parsed.content)
    if prepared.legacy_functions:
        first = calls[0]
        return ResponseMessage(
            content=parsed.content,
            function_call=ResponseFunctionCall(name=first.name, arguments=first.arguments),
        )
    return ResponseMessage(
        content=parsed.content,
        tool_calls=[
            ResponseToolCall(id=new_call_id(), function=ResponseFunctionCall(name=c.name, arguments=c.arguments))
            for c in calls
        ],
    )


class DeltaAssembler:
    """Turns the events of one ``feed`` into at most a few :class:`Delta` objects: consecutive text
    is merged into one content delta, consecutive argument fragments of a call into one."""

    __slots__ = ("_legacy", "_index", "_skip_call")

    def __init__(self, prepared: PreparedRequest) -> None:
        self._legacy = prepared.legacy_functions
        self._index = -1
        self._skip_call = False  # legacy requests carry only the first call

    @property
    def has_calls(self) -> bool:
        return self._index >= 0

    def deltas(self, events: list[Event]) -> list[Delta]:
        out: list[Delta] = []
        text: list[str] = []
        args: list[str] = []
        start: str | None = None  # name of a call started in this batch, not yet emitted

        def flush_text() -> None:
            if text:
                out.append(Delta(content="".join(text)))
                text.clear()

        def flush_call() -> None:
            nonlocal start
            if start is None and not args:
                return
            if self._skip_call:
                args.clear()
                start = None
                return
            fragment = "".join(args)
            args.clear()
            if self._legacy:
                fc = FunctionCallDelta(name=start, arguments=fragment) if start is not None else FunctionCallDelta(arguments=fragment)
                out.append(Delta(function_call=fc))
            elif start is not None:
                out.append(
                    Delta(
                        tool_calls=[
                            ToolCallDelta(
                                index=self._index,
                                id=new_call_id(),
                                type="function",
                                function=FunctionCallDelta(name=start, arguments=fragment),
                            )
                        ]
                    )
                )
            else:
                out.append(
                    Delta(tool_calls=[ToolCallDelta(index=self._index, function=FunctionCallDelta(arguments=fragment))])
                )
            start = None

        for ev in events:
            if type(ev) is TextDelta:
                flush_call()
                text.append(ev.text)
            elif type(ev) is ArgumentsDelta:
                flush_text()
                args.append(ev.text)
            elif type(ev) is ToolCallStart:
                flush_text()
                flush_call()
                self._index += 1
                if self._legacy and self._index > 0:
                    self._skip_call = True
                start = ev.name
        flush_text()
        flush_call()
        return out
