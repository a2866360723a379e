"""Request bodies: axum's JSON rejections and serde's reading of ``GenerateRequest``; TGI's error answers."""

from __future__ import annotations

import json
import math
import struct

from .common import DESERIALIZE


class Rejection(Exception):
    """An axum extractor rejection: text/plain, before TGI's handler runs."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status, self.text = status, text


class TgiError(Exception):
    """An answer ``{"error", "error_type"}``: JSON with a status, or one event in a stream."""

    STATUS = {"validation": 422, "generation": 424, "overloaded": 429, "incomplete_generation": 500,
              "incomplete_generation_stream": 500, "template_error": 422, "tool_error": 422}

    def __init__(self, message: str, error_type: str) -> None:
        super().__init__(message)
        self.message, self.error_type = message, error_type
        self.status = self.STATUS.get(error_type, 500)

    def payload(self) -> dict:
        return {"error": self.message, "error_type": self.error_type}


def invalid(text: str) -> TgiError:
    return TgiError("Input validation error: " + text, "validation")


def overloaded() -> TgiError:
    return TgiError("Model is overloaded", "overloaded")


_PARAM_KINDS = {
    "best_of": "usize", "decoder_input_details": "bool", "details": "bool", "do_sample": "bool",
    "frequency_penalty": "f32", "grammar": "grammar", "max_new_tokens": "u32", "repetition_penalty": "f32",
    "return_full_text": "bool", "seed": "u64", "stop": "strings", "temperature": "f32", "top_k": "i32",
    "top_n_tokens": "u32", "top_p": "f32", "truncate": "usize", "typical_p": "f32", "watermark": "bool",
    "adapter_id": "string",
}
_NOT_OPTION = frozenset({"do_sample", "stop", "details", "decoder_input_details", "watermark"})
_EXPECTED = {"bool": "a boolean", "f32": "f32", "u32": "u32", "u64": "u64", "usize": "usize", "i32": "i32",
             "string": "a string", "strings": "a sequence"}
_INT_RANGES = {"u32": (0, 2**32 - 1), "u64": (0, 2**64 - 1), "usize": (0, 2**64 - 1), "i32": (-2**31, 2**31 - 1)}
_GRAMMAR_TYPES = ("json", "json_object", "regex", "json_schema")


def _unexpected(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean `{'true' if value else 'false'}`"
    if isinstance(value, int):
        return f"integer `{value}`"
    if isinstance(value, float):
        return f"floating point `{value!r}`"
    if isinstance(value, str):
        return "string " + json.dumps(value, ensure_ascii=False)
    return "sequence" if isinstance(value, list) else "map"


def _f32(value: float) -> float:
    try:
        return struct.unpack("<f", struct.pack("<f", value))[0]
    except OverflowError:
        return math.copysign(math.inf, value)


def _reject(path: str, message: str) -> Rejection:
    return Rejection(422, DESERIALIZE + (f"{path}: " if path else "") + message)


def _coerce(path: str, kind: str, value):
    """Check one JSON value the way serde reads it into the Rust type ``kind``."""
    if kind == "bool" and isinstance(value, bool):
        return value
    if kind == "f32" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return _f32(value)
    if kind in _INT_RANGES and isinstance(value, int) and not isinstance(value, bool):
        low, high = _INT_RANGES[kind]
        if not low <= value <= high:
            raise _reject(path, f"invalid value: integer `{value}`, expected {kind}")
        return value
    if kind == "string" and isinstance(value, str):
        return value
    if kind == "strings" and isinstance(value, list):
        for index, item in enumerate(value):
            _coerce(f"{path}[{index}]", "string", item)
        return value
    raise _reject(path, f"invalid type: {_unexpected(value)}, expected {_EXPECTED[kind]}")


def _parse_grammar(path: str, value) -> dict:
    if not isinstance(value, dict):
        raise _reject(path, f"invalid type: {_unexpected(value)}, expected adjacently tagged enum GrammarType")
    if "type" not in value:
        raise _reject(path, "missing field `type`")
    kind = value["type"]
    if kind not in _GRAMMAR_TYPES:
        shown = kind if isinstance(kind, str) else _unexpected(kind)
        raise _reject(path, f"unknown variant `{shown}`, expected one of `json`, `regex`, `json_schema`")
    if "value" not in value:
        raise _reject(path, "missing field `value`")
    content = value["value"]
    if kind == "regex":
        _coerce(path + ".value", "string", content)
    if kind == "json_schema":
        if not isinstance(content, dict):
            raise _reject(path + ".value", f"invalid type: {_unexpected(content)}, expected struct JsonSchemaConfig")
        if "schema" not in content:
            raise _reject(path + ".value", "missing field `schema`")
    return {"type": kind, "value": content}


class GenRequest:
    __slots__ = ("inputs", "params", "params_present", "stream")

    def __init__(self, inputs, params, params_present, stream):
        self.inputs, self.params, self.params_present, self.stream = inputs, params, params_present, stream


def parse_generate_request(obj, *, compat: bool) -> GenRequest:
    """A parsed JSON body -> GenRequest, rejecting like axum's ``Json<GenerateRequest>`` (keys in body order)."""
    if not isinstance(obj, dict):
        name = "CompatGenerateRequest" if compat else "GenerateRequest"
        raise _reject("", f"invalid type: {_unexpected(obj)}, expected struct {name}")
    inputs, params, present, stream = None, {}, False, False
    for key, value in obj.items():
        if key == "inputs":
            inputs = _coerce("inputs", "string", value)
        elif key == "parameters":
            if not isinstance(value, dict):
                raise _reject("parameters", f"invalid type: {_unexpected(value)}, expected struct GenerateParameters")
            params, present = _parse_parameters(value), True
        elif key == "stream" and compat:
            stream = _coerce("stream", "bool", value)
    if inputs is None:
        raise _reject("", "missing field `inputs`")
    return GenRequest(inputs, params, present, stream)


def _parse_parameters(raw: dict) -> dict:
    params = {}
    for key, value in raw.items():
        kind = _PARAM_KINDS.get(key)
        if kind is None:
            continue  # TGI ignores unknown keys
        path = "parameters." + key
        if value is None:
            if key in _NOT_OPTION:
                raise _reject(path, f"invalid type: null, expected {_EXPECTED[kind]}")
            params[key] = None
        else:
            params[key] = _parse_grammar(path, value) if kind == "grammar" else _coerce(path, kind, value)
    return params


def _reject_constant(name: str):
    raise ValueError(f"invalid number `{name}`")


def _parse_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError("number out of range")
    return value


def parse_json_body(headers: dict, body: bytes):
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    if not (content_type == "application/json" or (content_type.startswith("application/")
                                                    and content_type.endswith("+json"))):
        raise Rejection(415, "Expected request with `Content-Type: application/json`")
    try:
        return json.loads(body.decode("utf-8"), parse_constant=_reject_constant, parse_float=_parse_float)
    except UnicodeDecodeError as exc:
        raise Rejection(400, f"Failed to parse the request body as JSON: invalid unicode: {exc.reason}") from None
    except ValueError as exc:
        raise Rejection(400, f"Failed to parse the request body as JSON: {exc}") from None
