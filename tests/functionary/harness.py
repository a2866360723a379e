"""One parser harness for every template (STYLE 13): full parse, streaming under a chunking, the
OpenAI delta rules, and the assembled stream compared with the full parse."""

from __future__ import annotations

import json

from functionary.assemble import DeltaAssembler, build_message, finish_reason
from functionary.openai_types import Delta
from functionary.templates.base import PreparedRequest, PromptTemplate


def split_at(text: str, cuts: list[int]) -> list[str]:
    """``text`` cut at each of ``cuts`` (taken modulo ``len(text) + 1``, so any integers will do): the chunks a
    stream could deliver it in; empty chunks included."""
    points = sorted({c % (len(text) + 1) for c in cuts})
    pieces, last = [], 0
    for p in points:
        pieces.append(text[last:p])
        last = p
    pieces.append(text[last:])
    return pieces


def full_message(template: PromptTemplate, prepared: PreparedRequest, text: str, *, length: bool) -> tuple[dict, str]:
    parsed = template.parse(text, prepared)
    message = build_message(parsed, prepared)
    reason = finish_reason(has_calls=bool(parsed.tool_calls), prepared=prepared, stopped_on_length=length)
    return normalise(message.model_dump(exclude_none=True)), reason


def stream_deltas(template: PromptTemplate, prepared: PreparedRequest, chunks: list[str]) -> tuple[list[Delta], bool]:
    parser = template.stream_parser(prepared)
    assembler = DeltaAssembler(prepared)
    deltas: list[Delta] = []
    for chunk in chunks:
        deltas.extend(assembler.deltas(parser.feed(chunk)))
    deltas.extend(assembler.deltas(parser.finish()))
    return deltas, assembler.has_calls


def check_delta_rules(deltas: list[Delta]) -> None:
    seen_index = -1
    for d in deltas:
        assert d.role is None  # the role goes in the first chunk only, added by the server
        for call in d.tool_calls or ():
            assert call.index is not None
            assert isinstance(call.function.arguments, str)
            if call.index != seen_index:
                assert call.index == seen_index + 1, "tool-call index must count calls in order"
                seen_index = call.index
                assert call.id and call.id.startswith("call_") and call.type == "function"
                assert call.function.name is not None
            else:
                assert call.id is None and call.type is None and call.function.name is None


def assemble(deltas: list[Delta]) -> dict:
    content: list[str] | None = None
    calls: dict[int, dict] = {}
    function_call: dict | None = None
    for d in deltas:
        if d.content is not None:
            content = (content or []) + [d.content]
        for c in d.tool_calls or ():
            entry = calls.setdefault(c.index, {"type": "function", "function": {"name": c.function.name, "arguments": ""}})
            entry["function"]["arguments"] += c.function.arguments or ""
        if d.function_call is not None:
            if function_call is None:
                function_call = {"name": d.function_call.name, "arguments": ""}
            function_call["arguments"] += d.function_call.arguments or ""
    message: dict = {"role": "assistant", "content": "".join(content) if content is not None else None}
    if calls:
        message["tool_calls"] = [calls[i] for i in sorted(calls)]
    if function_call is not None:
        message["function_call"] = function_call
    return normalise(message)


def normalise(message: dict) -> dict:
    """Ids dropped, the keys of the reference format; content null when absent."""
    out = {"role": "assistant", "content": message.get("content")}
    if message.get("tool_calls"):
        out["tool_calls"] = [
            {"type": "function", "function": {"name": c["function"]["name"], "arguments": c["function"]["arguments"]}}
            for c in message["tool_calls"]
        ]
    if message.get("function_call"):
        out["function_call"] = {"name": message["function_call"]["name"], "arguments": message["function_call"]["arguments"]}
    return out


def _json_or_text(value: str):
    try:
        return ("json", json.loads(value))
    except (ValueError, TypeError):
        return ("text", value)


def comparable(message: dict | None) -> dict | None:
    """Arguments compared as JSON values where both sides are JSON (upstream re-serialised some)."""
    if message is None:
        return None
    out = json.loads(json.dumps(message))
    for call in out.get("tool_calls") or ():
        call["function"]["arguments"] = _json_or_text(call["function"]["arguments"])
    if out.get("function_call"):
        out["function_call"]["arguments"] = _json_or_text(out["function_call"]["arguments"])
    return out
