"""``chat.completion.chunk`` bytes, shaped as OpenAI's:

* each choice's first chunk carries ``role: "assistant"`` together with its first real delta (a call-only
  answer's first delta has ``content: null``, never ``""``); a choice that wrote nothing gets the role in its
  finish chunk;
* ``"usage": null`` on every chunk when ``stream_options.include_usage`` is set, the last chunk holding the usage;
* tool-call deltas: ``index`` always, ``id``/``type``/``name`` only in a call's first delta, arguments as strings.
"""

from __future__ import annotations

import json

from functionary.openai_types import Delta

DUMPS = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_json_str = json.encoder.encode_basestring  # what DUMPS writes for a str (C speed-up when available)


class ChunkWriter:
    """SSE ``data:`` lines of one completion. ``head``: its id, object, created and model."""

    __slots__ = ("_prefix", "_end", "_started")

    def __init__(self, head: dict, *, n: int, include_usage: bool) -> None:
        self._prefix = DUMPS(head)[:-1].encode() + b',"system_fingerprint":null,"choices":['
        self._end = b'],"usage":null}\n\n' if include_usage else b"]}\n\n"
        self._started = [False] * n

    def delta(self, index: int, delta: Delta, logprobs: dict | None) -> bytes:
        if not self._started[index]:
            self._started[index] = True
            body = {"role": "assistant", **delta_dict(delta)}
            body.setdefault("content", None)
            return self.chunk(index, body, None, logprobs)
        if logprobs is None and delta.function_call is None:  # the common token, without building dicts
            calls = delta.tool_calls
            if calls is None and delta.content is not None:
                return b'data: %s{"index":%d,"delta":{"content":%s},"logprobs":null,"finish_reason":null}%s' % (
                    self._prefix, index, _json_str(delta.content).encode(), self._end)
            if delta.content is None and calls is not None and len(calls) == 1:
                call = calls[0]
                if call.id is None and call.function.name is None:
                    return (b'data: %s{"index":%d,"delta":{"tool_calls":[{"index":%d,"function":{"arguments":%s}}]},'
                            b'"logprobs":null,"finish_reason":null}%s'
                            % (self._prefix, index, call.index, _json_str(call.function.arguments or "").encode(),
                               self._end))
        return self.chunk(index, delta_dict(delta), None, logprobs)

    def bare(self, index: int, finish: str | None, logprobs: dict | None) -> bytes:
        """A chunk without a delta of its own: logprobs alone, or the finish reason."""
        if not self._started[index]:
            self._started[index] = True
            return self.chunk(index, {"role": "assistant", "content": None}, finish, logprobs)
        return self.chunk(index, {}, finish, logprobs)

    def chunk(self, index: int, delta: dict, finish: str | None, logprobs: dict | None) -> bytes:
        choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        return b"data: " + self._prefix + DUMPS(choice).encode() + self._end

    def usage(self, usage: dict) -> bytes:
        return b"data: " + self._prefix + b'],"usage":' + DUMPS(usage).encode() + b"}\n\n"


def delta_dict(delta: Delta) -> dict:
    out: dict = {}
    if delta.content is not None:
        out["content"] = delta.content
    if delta.tool_calls is not None:
        calls = []
        for call in delta.tool_calls:
            c: dict = {"index": call.index}
            if call.id is not None:
                c["id"] = call.id
                c["type"] = "function"
            fn: dict = {}
            if call.function.name is not None:
                fn["name"] = call.function.name
            fn["arguments"] = call.function.arguments or ""
            c["function"] = fn
            calls.append(c)
        out["tool_calls"] = calls
    if delta.function_call is not None:
        fc: dict = {}
        if delta.function_call.name is not None:
            fc["name"] = delta.function_call.name
        fc["arguments"] = delta.function_call.arguments or ""
        out["function_call"] = fc
    return out


def calls_started(delta: Delta) -> int:
    """How many calls a delta opens (ops: the tool-call count of the log line and /metrics)."""
    if delta.function_call is not None:
        return delta.function_call.name is not None
    return sum(call.id is not None for call in delta.tool_calls)


def usage_of(prompt_tokens: int, completion_tokens: int) -> dict:
    """OpenAI's ``usage`` object."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
