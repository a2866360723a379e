"""``POST /v1/responses``: OpenAI's Responses API as a translation over the chat pipeline.

    Responses request -> ChatCompletionRequest -> ChatService.plan -> complete() / results() -> response / events

Nothing here renders, samples, parses or maps sampling parameters: the request becomes the chat request a chat
client would send for the same conversation (so TGI receives the same prompt and parameters), and the chat
result becomes the Responses output. The gateway is stateless (docs/decisions.md, "Responses"): a response is
never stored, so ``previous_response_id`` is refused and a conversation is sent whole in ``input``.
Streaming lives in tgi/api/responses_stream.py; one call, start to end, in tgi/api/responses_call.py.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass

from pydantic import ValidationError

from functionary.errors import GatewayError, InvalidRequestError, UnsupportedRequestError
from functionary.openai_types import ChatCompletionRequest
from functionary.responses_types import (
    FormatJSONObject,
    FormatJSONSchema,
    FunctionCallItem,
    FunctionCallOutputItem,
    FunctionToolParam,
    IncompleteDetails,
    InputText,
    MessageItem,
    OutputFunctionCall,
    OutputItem,
    OutputMessage,
    OutputText,
    Response,
    ResponsesRequest,
    ResponseUsage,
    ToolChoiceFunction,
)


def new_id(prefix: str) -> str:
    return prefix + "_" + secrets.token_hex(24)


# Fields OpenAI defines that a stateless gateway in front of one text model cannot honour: each is accepted
# when absent or at its neutral value, and refused with a 400 naming it otherwise.
_NEUTRAL = {
    "reasoning": lambda v: not v or all(x is None for x in v.values()),
    "include": lambda v: not v,
    "background": lambda v: not v,
    "truncation": lambda v: v in (None, "disabled"),
    "top_logprobs": lambda v: not v,
    "max_tool_calls": lambda v: v is None,
    "conversation": lambda v: v is None,
    "prompt": lambda v: v is None,
    "service_tier": lambda v: v in (None, "auto", "default"),
}


def parse_request(data: dict) -> ResponsesRequest:
    """The request, or a 400 naming the field at fault (an unknown field included, as OpenAI answers it)."""
    try:
        request = ResponsesRequest.model_validate(data)
    except ValidationError as exc:
        param, message = _validation_param(exc)
        raise InvalidRequestError(message, param=param) from None
    except RecursionError:
        raise InvalidRequestError("request body is nested too deeply", param="body") from None
    if isinstance(request.input, list) and not request.input:
        raise InvalidRequestError("'input' must not be empty", param="input")
    unknown = sorted(request.model_extra or ())
    if unknown:
        raise InvalidRequestError(f"Unknown parameter: '{unknown[0]}'.", param=unknown[0])
    if request.previous_response_id is not None:
        raise UnsupportedRequestError(
            "'previous_response_id' is not supported: this gateway is stateless and stores no responses. "
            "Send the whole conversation in 'input' (earlier output items included).",
            param="previous_response_id",
        )
    if request.store:
        raise UnsupportedRequestError(
            "'store: true' is not supported: this gateway is stateless and stores no responses; send 'store: false' "
            "or leave it out.",
            param="store",
        )
    for name, neutral in _NEUTRAL.items():
        if not neutral(getattr(request, name)):
            raise UnsupportedRequestError(f"'{name}' is not supported by this gateway", param=name)
    if request.text is not None and request.text.verbosity is not None:
        raise UnsupportedRequestError("'text.verbosity' is not supported by this gateway", param="text.verbosity")
    return request


def _validation_param(exc: ValidationError) -> tuple[str, str]:
    """The most specific error (a union reports one per member: ``input`` as a string, as a list, ...)."""
    found = []
    for err in exc.errors():
        path = ""
        for part in err.get("loc", ()):
            if isinstance(part, int):
                path += f"[{part}]"
            elif not _NOT_A_FIELD.search(part):
                path += ("." if path else "") + part
        path = _FORMAT_TAG.sub(".format", path)
        found.append((path.count(".") + path.count("["), path or "body", err.get("msg", "")))
    _, path, msg = max(found, key=lambda f: f[0])  # max keeps the first of equals
    return path, f"Invalid request: {path}: {msg}"


_FORMAT_TAG = re.compile(r"\.format\.(json_schema|json_object|text)(?=[.\[]|$)")
# what pydantic puts in an error's location besides field names: union members and tags
_NOT_A_FIELD = re.compile(
    r"[\[(]|^function-|^(str|int|float|bool|dict|list|message|function_call|function_call_output|other)$"
)


# --------------------------------------------------------------------------------------------
# Request -> chat request


@dataclass(frozen=True, slots=True)
class Translated:
    chat: ChatCompletionRequest
    origins: tuple[str, ...]  # for each chat message, the Responses field it came from ("input[3]", ...)


def to_chat(request: ResponsesRequest) -> Translated:
    messages, origins = _messages(request)
    body: dict = {"model": request.model, "messages": messages}
    if request.tools is not None:
        body["tools"] = [_tool(tool, i) for i, tool in enumerate(request.tools)]
    choice = request.tool_choice
    if isinstance(choice, ToolChoiceFunction):
        body["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
    elif isinstance(choice, str) or choice is None:
        body["tool_choice"] = choice
    else:
        raise UnsupportedRequestError(
            f"tool_choice of type {choice.type!r} is not supported: use 'none', 'auto', 'required' or "
            "{'type': 'function', 'name': ...}", param="tool_choice",
        )
    fmt = request.text.format if request.text is not None else None
    if isinstance(fmt, FormatJSONSchema):
        spec = {"name": fmt.name, "schema": fmt.schema_, "strict": fmt.strict, "description": fmt.description}
        spec = {k: v for k, v in spec.items() if v is not None}
        body["response_format"] = {"type": "json_schema", "json_schema": spec}
    elif isinstance(fmt, FormatJSONObject):
        body["response_format"] = {"type": "json_object"}
    body.update(
        parallel_tool_calls=request.parallel_tool_calls, max_completion_tokens=request.max_output_tokens,
        temperature=request.temperature, top_p=request.top_p, user=request.user,
    )
    try:
        chat = ChatCompletionRequest.model_validate({k: v for k, v in body.items() if v is not None})
    except ValidationError as exc:
        err = exc.errors()[0]
        raise InvalidRequestError(f"Invalid request: {err.get('msg')}", param=None) from None
    return Translated(chat, tuple(origins))


def _messages(request: ResponsesRequest) -> tuple[list[dict], list[str]]:
    messages: list[dict] = []
    origins: list[str] = []
    if request.instructions:
        messages.append({"role": "system", "content": request.instructions})
        origins.append("instructions")
    if isinstance(request.input, str):
        messages.append({"role": "user", "content": request.input})
        origins.append("input")
        return messages, origins
    calls: set[str] = set()
    for i, item in enumerate(request.input):
        where = f"input[{i}]"
        if isinstance(item, MessageItem):
            messages.append({"role": item.role, "content": _content(item.content, where)})
        elif isinstance(item, FunctionCallItem):
            function = {"name": item.name, "arguments": item.arguments}
            call = {"id": item.call_id, "type": "function", "function": function}
            calls.add(item.call_id)
            if messages and messages[-1]["role"] == "assistant":  # the text and calls of one turn: one message
                messages[-1].setdefault("tool_calls", []).append(call)
                continue
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif isinstance(item, FunctionCallOutputItem):
            if item.call_id not in calls:
                raise InvalidRequestError(
                    f"No function_call item before this function_call_output has call_id {item.call_id!r}.",
                    param=f"{where}.call_id",
                )
            messages.append({"role": "tool", "tool_call_id": item.call_id, "content": _content(item.output, where)})
        else:
            raise UnsupportedRequestError(
                f"input item type {item.type!r} is not supported: send 'message', 'function_call' and "
                "'function_call_output' items", param=f"{where}.type",
            )
        origins.append(where)
    return messages, origins


def _content(content, where: str):
    if isinstance(content, str):
        return content
    parts = []
    for j, part in enumerate(content):
        if not isinstance(part, InputText):
            raise UnsupportedRequestError(
                f"content part type {part.type!r} is not supported by this text-only model; send 'input_text' parts",
                param=f"{where}.content[{j}].type",
            )
        parts.append({"type": "text", "text": part.text})
    return parts


def _tool(tool, index: int) -> dict:
    if not isinstance(tool, FunctionToolParam):
        raise UnsupportedRequestError(
            f"tool type {tool.type!r} is not supported: this gateway runs no hosted tools; declare 'function' tools",
            param=f"tools[{index}].type",
        )
    fn = {"name": tool.name, "description": tool.description, "parameters": tool.parameters, "strict": tool.strict}
    return {"type": "function", "function": {k: v for k, v in fn.items() if v is not None}}


_CHAT_PARAMS = (
    (re.compile(r"^max_completion_tokens"), "max_output_tokens"),
    (re.compile(r"^response_format(\.json_schema)?(\.schema)?"), "text.format"),
    (re.compile(r"^tool_choice\.function"), "tool_choice"),
    (re.compile(r"^(tools\[\d+\])\.function"), r"\1"),
)


def rename_param(exc: GatewayError, origins: tuple[str, ...]) -> GatewayError:
    """A chat-pipeline error names the chat request's field; name the Responses field it came from."""
    param = exc.param
    if not param:
        return exc
    match = re.match(r"^messages\[(\d+)\]", param)
    if match and int(match.group(1)) < len(origins):
        exc.param = origins[int(match.group(1))] + param[match.end():]
    elif param == "messages":
        exc.param = "input"
    else:
        for pattern, replacement in _CHAT_PARAMS:
            param = pattern.sub(replacement, param)
        exc.param = param
    exc.message = exc.message.replace("'max_completion_tokens'", "'max_output_tokens'").replace(
        "'response_format", "'text.format")
    return exc


# --------------------------------------------------------------------------------------------
# Chat result -> Response


def new_response(request: ResponsesRequest, *, response_id: str, model: str) -> Response:
    """The response object before generation (``in_progress``), with the request's parameters echoed."""
    fmt = request.text.format if request.text is not None else None
    choice = request.tool_choice
    return Response(
        id=response_id, created_at=int(time.time()), status="in_progress", model=model,
        instructions=request.instructions, max_output_tokens=request.max_output_tokens,
        metadata=request.metadata or {}, parallel_tool_calls=request.parallel_tool_calls is not False,
        temperature=request.temperature, top_p=request.top_p, user=request.user,
        text={"format": fmt.model_dump(by_alias=True, exclude_none=True) if fmt is not None else {"type": "text"}},
        tool_choice=choice.model_dump() if isinstance(choice, ToolChoiceFunction) else (choice or "auto"),
        tools=[t.model_dump(exclude_none=True) for t in request.tools or ()],
    )


def finished(response: Response, output: list[OutputItem], *, finish_reason: str, prompt_tokens: int,
             completion_tokens: int) -> Response:
    """The final response. On length the answer is ``incomplete`` and so is its last output item (the one
    that was cut), in the streamed and the non-streamed answer alike."""
    incomplete = finish_reason == "length"
    if not output:  # a message is always there to read, even an empty one
        output = [OutputMessage(id=new_id("msg"), status="completed", content=[OutputText(text="")])]
    output = [item.model_copy(update={"status": "completed"}) for item in output]
    if incomplete:
        output[-1] = output[-1].model_copy(update={"status": "incomplete"})
    usage = ResponseUsage(input_tokens=prompt_tokens, output_tokens=completion_tokens,
                          total_tokens=prompt_tokens + completion_tokens)
    return response.model_copy(update={
        "status": "incomplete" if incomplete else "completed", "output": output, "usage": usage,
        "incomplete_details": IncompleteDetails(reason="max_output_tokens") if incomplete else None,
    })


def from_completion(response: Response, completion: dict) -> Response:
    """The non-streamed answer, from ``ChatService.complete``'s chat completion."""
    choice = completion["choices"][0]
    message = choice["message"]
    output: list[OutputItem] = []
    if message.get("content"):
        text = OutputText(text=message["content"])
        output.append(OutputMessage(id=new_id("msg"), status="completed", content=[text]))
    for call in message.get("tool_calls") or ():
        fn = call["function"]
        output.append(OutputFunctionCall(id=new_id("fc"), call_id=call["id"], name=fn["name"],
                                         arguments=fn["arguments"], status="completed"))
    usage = completion["usage"]
    return finished(response, output, finish_reason=choice["finish_reason"],
                    prompt_tokens=usage["prompt_tokens"], completion_tokens=usage["completion_tokens"])
