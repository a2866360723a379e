"""From an OpenAI request to the :class:`PreparedRequest` every template renders from.

The checks mirror upstream's (same messages, so clients see familiar errors) and add the ones a
gateway owes its users where upstream crashed (a tool result that answers no call, a call with no
result, a named choice that names no tool): those become 400s naming the field.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonref

from functionary.errors import InvalidRequestError, UnsupportedRequestError
from functionary.openai_types import (
    ChatCompletionRequest,
    ChatMessage,
    CodeInterpreterTool,
    FunctionDefinition,
    ImageContentPart,
    NamedFunctionCall,
    NamedToolChoice,
    TextContentPart,
)
from functionary.templates.base import AUTO, NONE, REQUIRED, PreparedRequest, ToolChoice


def prepare_request(request: ChatCompletionRequest) -> PreparedRequest:
    _check_request(request)
    tools, choice, legacy = _tools_and_choice(request)
    messages = _reorder_tool_results([_message_dict(m, i) for i, m in enumerate(request.messages)])
    return PreparedRequest(
        messages=tuple(messages),
        tools=tuple(_resolve_refs(t, legacy) for t in tools),
        choice=choice,
        legacy_functions=legacy,
    )


# ---------------------------------------------------------------------------------------------


def _check_request(request: ChatCompletionRequest) -> None:
    # An empty ``messages`` list is NOT refused: with tools it renders the system turns and the
    # generation prompt, exactly as the reference prompts (case label empty_messages_with_tools).
    if request.tools and request.functions:
        raise InvalidRequestError(
            "'functions' and 'tools' cannot both be provided. 'functions' are deprecated; "
            "use the 'tools' parameter instead.",
            param="functions",
        )
    if request.function_call == "required":
        raise InvalidRequestError(
            "Invalid value: 'required'. Supported values are: 'none' and 'auto'.",
            param="function_call",
        )
    if request.tool_choice is not None and request.tool_choice not in ("none", "auto"):
        if not request.tools:
            raise InvalidRequestError(
                "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are "
                "specified.",
                param="tool_choice",
            )
    if isinstance(request.function_call, NamedFunctionCall) and not request.functions:
        raise InvalidRequestError(
            "Invalid value for 'function_call': 'function_call' is only allowed when "
            "'functions' are specified.",
            param="function_call",
        )
    for i, tool in enumerate(request.tools or ()):
        if isinstance(tool, CodeInterpreterTool):
            continue
        _check_parameters(tool.function, f"tools[{i}].function.parameters")
    for i, fn in enumerate(request.functions or ()):
        _check_parameters(fn, f"functions[{i}].parameters")


def _check_parameters(fn: FunctionDefinition, param: str) -> None:
    if fn.parameters is not None and not isinstance(fn.parameters, dict):
        raise InvalidRequestError("function parameters must be a JSON Schema object", param=param)
    if not fn.name:
        raise InvalidRequestError("function name must not be empty", param=param)


def _tool_dict(fn: FunctionDefinition | Any, *, wrap: bool) -> dict:
    # Field order and defaults as upstream's Function model: description defaults to "" when
    # absent (an explicit null stays null), parameters to null. Qwen-style prompts dump this JSON.
    description = fn.description
    if description is None and "description" not in fn.model_fields_set:
        description = ""
    body = {"name": fn.name, "description": description, "parameters": fn.parameters}
    return {"type": "function", "function": body} if wrap else body


def _tools_and_choice(request: ChatCompletionRequest) -> tuple[list[dict], ToolChoice, bool]:
    if request.tools:
        choice = request.tool_choice or "auto"
        tools = [
            {"type": "code_interpreter"} if isinstance(t, CodeInterpreterTool) else _tool_dict(t.function, wrap=True)
            for t in request.tools
        ]
        if choice == "none":
            return [], NONE, False
        if choice == "required":
            return tools, REQUIRED, False
        if choice == "auto":
            return tools, AUTO, False
        assert isinstance(choice, NamedToolChoice)
        name = choice.function.name
        if choice.function.description or choice.function.parameters is not None:
            # A choice that carries its own definition replaces the tools (upstream rule).
            return [_tool_dict(choice.function, wrap=True)], ToolChoice("named", name), False
        named = [t for t in tools if t["type"] == "function" and t["function"]["name"] == name]
        if not named:
            raise InvalidRequestError(
                f"Invalid value for 'tool_choice': no function named {name} was specified in the "
                "'tools' parameter",
                param="tool_choice",
            )
        return named, ToolChoice("named", name), False
    if request.functions:
        call = request.function_call or "auto"
        functions = [_tool_dict(f, wrap=False) for f in request.functions]
        if call == "none":
            return [], NONE, True
        if call == "auto":
            return functions, AUTO, True
        assert isinstance(call, NamedFunctionCall)
        named = [f for f in functions if f["name"] == call.name]
        if not named:
            raise InvalidRequestError(
                f"Invalid value for 'function_call': no function named {call.name} was specified "
                "in the 'functions' parameter",
                param="function_call",
            )
        return named, ToolChoice("named", call.name), True
    return [], NONE, False


def _content_text(message: ChatMessage, index: int) -> str | None:
    content = message.content
    if content is None or isinstance(content, str):
        return content
    parts: list[str] = []
    for j, part in enumerate(content):
        if isinstance(part, TextContentPart):
            parts.append(part.text)
        elif isinstance(part, ImageContentPart):
            raise UnsupportedRequestError(
                "image content is not supported by this text-only model",
                param=f"messages[{index}].content[{j}]",
            )
        else:
            raise UnsupportedRequestError(
                f"content part type {part.type!r} is not supported; send text parts",
                param=f"messages[{index}].content[{j}]",
            )
    return "".join(parts)


def _message_dict(message: ChatMessage, index: int) -> dict:
    tool_calls = None
    if message.tool_calls:
        if message.role != "assistant":
            raise InvalidRequestError(
                "only assistant messages can carry 'tool_calls'", param=f"messages[{index}].tool_calls"
            )
        tool_calls = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.function.name, "arguments": call.function.arguments},
            }
            for call in message.tool_calls
        ]
    function_call = None
    if message.function_call is not None:
        function_call = {"name": message.function_call.name, "arguments": message.function_call.arguments}
    return {
        "role": "system" if message.role == "developer" else message.role,
        "content": _content_text(message, index),
        "name": message.name,
        "tool_calls": tool_calls,
        "tool_call_id": message.tool_call_id,
        "function_call": function_call,
    }


def _reorder_tool_results(messages: list[dict]) -> list[dict]:
    """Tool results follow their assistant message in the order of its calls (matched by id), as
    the models were trained; a result that answers no call or a call with no result is a 400."""
    out: list[dict] = []
    i = 0
    while i < len(messages):
        message = messages[i]
        out.append(message)
        calls = message["tool_calls"]
        i += 1
        if message["role"] != "assistant" or not calls or calls[0]["id"] is None:
            continue
        results = messages[i : i + len(calls)]
        if len(results) < len(calls) or any(r["role"] != "tool" for r in results):
            # str(): a call after the first may have no id (null), which is missing all the same
            missing = [str(c["id"]) for c in calls if c["id"] not in {r["tool_call_id"] for r in results}]
            raise InvalidRequestError(
                "An assistant message with 'tool_calls' must be followed by tool messages "
                f"responding to each 'tool_call_id'. Missing: {', '.join(missing)}",
                param=f"messages[{i}]",
            )
        by_id = {r["tool_call_id"]: r for r in results}
        for call in calls:
            if call["id"] not in by_id:
                raise InvalidRequestError(
                    f"No tool message answers the tool call {call['id']!r}; tool messages must "
                    "carry the 'tool_call_id' of a call in the preceding assistant message.",
                    param=f"messages[{i}].tool_call_id",
                )
            result = by_id[call["id"]]
            if result["name"] is None:
                # OpenAI clients do not name tool results; formats that show the tool's name
                # (v2: <|from|>NAME) take it from the call the result answers.
                result = {**result, "name": call["function"]["name"]}
            out.append(result)
        i += len(calls)
    return out


def _resolve_refs(tool: dict, legacy: bool) -> dict:
    if not legacy and tool.get("type") != "function":
        return tool
    fn = tool if legacy else tool["function"]
    params = fn.get("parameters")
    if not isinstance(params, dict) or "$ref" not in json.dumps(params):
        return tool
    try:
        # the loader refuses every document but this one: a request must not make the gateway read a
        # URL or a local file (file:// refs would put the file in the prompt)
        resolved = copy.deepcopy(jsonref.JsonRef.replace_refs(params, loader=_refuse_remote_ref))
        size = _expanded_size(resolved, {}, set())
    except (RecursionError, jsonref.JsonRefError, KeyError, TypeError, ValueError) as exc:
        raise InvalidRequestError(
            f"function {fn.get('name')!r}: cannot resolve '$ref' in parameters ({exc.__class__.__name__}); "
            "references must point inside the schema and must not be recursive",
            param="tools",
        ) from None
    if size > MAX_EXPANDED_SCHEMA_NODES:
        raise InvalidRequestError(
            f"function {fn.get('name')!r}: its parameters grow to more than {MAX_EXPANDED_SCHEMA_NODES} "
            "schema nodes once '$ref's are expanded",
            param="tools",
        )
    fn = {**fn, "parameters": resolved}
    return fn if legacy else {**tool, "function": fn}


# Expanding refs can multiply a small schema (each level referring twice to the next doubles it): a bound
# keeps one request from making a prompt of gigabytes.
MAX_EXPANDED_SCHEMA_NODES = 100_000


def _refuse_remote_ref(uri: str) -> Any:
    raise ValueError(f"'$ref' to another document ({uri!r}) is not followed")


def _expanded_size(node: Any, sizes: dict[int, int], open_: set[int]) -> int:
    """Nodes of ``node`` written out as a tree; shared sub-schemas are counted once per use, without
    walking them again. A cycle (a recursive ref) raises ValueError."""
    if not isinstance(node, (dict, list)):
        return 1
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_:
        raise ValueError("recursive '$ref'")
    open_.add(key)
    children = node.values() if isinstance(node, dict) else node
    total = 1 + sum(_expanded_size(child, sizes, open_) for child in children)
    open_.discard(key)
    sizes[key] = min(total, MAX_EXPANDED_SCHEMA_NODES + 1)
    return sizes[key]
