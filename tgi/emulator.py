#!/usr/bin/env python3
"""An emulator of Hugging Face text-generation-inference (TGI 3.3.x router), for tests and benchmarks.

One file, standard library only, Python >= 3.9, no imports from this project: it is copied alone into a minimal
image and run as ``python3 /emulator.py --model-id /data --port 80``; ``python -m tgi.emulator`` and
``python tgi/emulator.py`` run it too. The wire facts it follows are those of ``shared/reference/tgi-protocol.md``:

* routes: ``GET /health`` ``/`` ``/ping`` ``/info`` ``/metrics`` ``/v1/models``; ``POST /generate``
  ``/generate_stream`` ``/`` (compat: ``stream`` picks the mode, ``return_full_text`` defaults to true unless
  ``--pipeline-tag`` names something other than ``text-generation``) and ``/tokenize``.
* ``/generate_stream`` answers 200 at once and sends every error as ONE ``data: {"error","error_type"}`` event;
  ``/generate`` answers errors as JSON with TGI's status; body rejections are axum's text/plain 400/413/415/422.
* events are ``data: {compact json}\\n\\n`` (``data:{json}`` with ``--legacy-sse``), ``index`` from 1, explicit
  nulls before the last event, the EOS streamed last with its text and ``special: true``, ``generated_text``
  without special tokens, stop sequences untrimmed, ``length`` checked before EOS, ``:\\n\\n`` keep-alives.

Tokenizer (``/tokenize`` and every input length): a BOS token (``--bos-token``, default ``<|begin_of_text|>``;
``""`` for none) as TGI adds it, then each special-looking token (``<|...|>``, ``<｜...｜>``, ``<s>``, ``</s>``,
``<tool_call>``, ``<think>``, ``<start_of_turn>`` ...) as one token (``<tool_call>``/``<think>`` pairs are not
flagged special, as Qwen's tokenizer reports them), and the rest in word-like pieces: up to 10
letters with one optional leading space (and a leading ``_``), up to 3 digits, up to 3 punctuation characters,
a newline, a run of blanks. Ids are stable (well-known ids for common special tokens, a CRC otherwise).

Where replies come from: a FIFO script of replies (``--script FILE`` or ``POST /emulator/script``), each
generation popping one; when the script is empty (always with ``--demo``) a demo reply: a Functionary-style call
of the prompt's first tool in the format the prompt's special tokens show (v1, v2, v2.llama3, v3.llama3,
v3-llama3.1, Qwen-style ``<tools>``, DeepSeek-R1), or a short text when there is no tool; under a ``grammar``
the demo reply fits it (a valid instance of a json schema, a regex's literal alternative or the part of the
natural reply that matches) and ends with the family's EOS, and a prompt that ends right after a complete call
gets the EOS alone. Scripted replies are sent as written, grammar or not. A reply is
``{"tokens": [{"text", "special"?, "id"?, "logprob"?, "delay_s"?, "eos"?}], "finish_reason"?, "delay_s"?,
"prefill_delay_s"?, "fail_after"?, "cut_after"?, "reset_after"?, "incomplete_after"?, "split_utf8"?,
"error"?: {"error", "error_type"}}`` or ``{"text": "Hi!<|eot_id|>"}`` (tokenized as above). A token is an EOS
when ``eos`` says so, else when it is special and its text is an ``--eos-token``. Generation cuts a reply where
TGI would stop (``max_new_tokens``, an EOS, a stop sequence matched at the end of the output); a reply that runs
out first finishes with its ``finish_reason`` (default ``length``).

Control endpoints (``/emulator/...``): ``requests`` (GET ``{"requests": [{"seq", "route", "method", "headers",
"body", "received_at", "outcome", "input_length", "finish_reason", "generated_tokens"}]}``, DELETE), ``state``
(GET ``{"in_flight", "cancelled", "completed", "requests", "connections", "script_remaining", "faults"}``),
``faults`` (GET; POST a JSON object of switches named like the CLI flags, ``null`` = back to the CLI value;
DELETE = all back), ``script`` (GET; POST ``{"replies": [...]}`` appends; DELETE), ``reset`` (POST: empty script
and log, zero counters, CLI faults).

Runtime switches (also CLI flags): ``demo``, ``legacy_sse``, ``overload`` (every generation gets TGI's 429
overloaded), ``unhealthy`` (``/health`` 503), ``split_utf8`` (a ``""`` token before each token holding a
non-ASCII character, as ``decode_token`` does for a cut UTF-8 sequence), ``token_delay`` and ``prefill_delay``
(seconds), ``keep_alive`` (seconds of silence before a ``:`` comment, 15 like TGI; 0 = never),
``max_concurrent_requests``, and the faults ``fail_after`` (a ``generation`` error), ``incomplete_after`` (TGI's
``incomplete_generation_stream`` event), ``cut_after`` (the body ends with no final event) and ``reset_after``
(TCP reset), each firing after N token events (before the final one at the latest). CLI only:
``--startup-delay S`` (the port stays closed while loading lines are logged), ``--crash-on-start CODE``.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    # Run as ``python tgi/emulator.py`` the script's folder comes first on sys.path, where tgi/types.py would
    # shadow the standard library's ``types``: take that folder off before importing anything else.
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [entry for entry in sys.path if os.path.abspath(entry or ".") != _here]

import argparse
import asyncio
import collections
import datetime
import html
import ipaddress
import json
import math
import random
import re
import signal
import socket
import struct
import time
import zlib

VERSION = "3.3.6-dev0"
DEFAULT_EOS_TOKENS = (
    "</s>", "<|eot_id|>", "<|end_of_text|>", "<|eom_id|>", "<|im_end|>", "<|endoftext|>", "<end_of_turn>",
    "<eos>", "<｜end▁of▁sentence｜>",
)
GENERATION_CHUNK = 1024  # 3.1.1+: the router generates in chunks of at most this many tokens
GENERATION_FAILURE = (
    "Request failed during generation: Server error: CUDA out of memory. Tried to allocate 2.00 GiB. "
    "GPU 0 has a total capacity of 79.10 GiB of which 1.06 GiB is free."
)
DESERIALIZE = "Failed to deserialize the JSON body into the target type: "
TEXT_PLAIN = "text/plain; charset=utf-8"
APPLICATION_JSON = "application/json"

# Runtime switches: name -> (kind, default). CLI flags use the same names with dashes.
FAULT_SWITCHES = {
    "demo": ("bool", False),
    "legacy_sse": ("bool", False),
    "overload": ("bool", False),
    "unhealthy": ("bool", False),
    "split_utf8": ("bool", False),
    "token_delay": ("float", 0.0),
    "prefill_delay": ("float", 0.0),
    "keep_alive": ("float", 15.0),
    "fail_after": ("count", None),
    "cut_after": ("count", None),
    "reset_after": ("count", None),
    "incomplete_after": ("count", None),
    "max_concurrent_requests": ("int", 128),
}
REPLY_FAULTS = ("fail_after", "incomplete_after", "cut_after", "reset_after")


# ------------------------------------------------------------------------------------------------ logging


class Log:
    """TGI-like log lines on stderr: the launcher's compact text format, or JSON with ``--json-output``."""

    def __init__(self, json_output: bool) -> None:
        self.json_output = json_output

    def __call__(self, message: str, *, level: str = "INFO", target: str = "text_generation_launcher",
                 span: str | None = None, **fields: object) -> None:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        if self.json_output:
            record = {"timestamp": stamp, "level": level, "fields": {"message": message, **fields},
                      "target": target}
            if span:
                record["span"] = {"name": span}
            line = json.dumps(record, ensure_ascii=False)
        else:
            extra = "".join(f" {key}={value}" for key, value in fields.items())
            line = f"{stamp} {level:>5} {span + ': ' if span else ''}{target}: {message}{extra}"
        sys.stderr.write(line + "\n")
        sys.stderr.flush()


ROUTER = "text_generation_router::server"


# ------------------------------------------------------------------------------------------------ tokenizer

SPECIAL_TOKEN_IDS = {
    "<unk>": 0, "<s>": 1, "</s>": 2, "<|begin_of_text|>": 128000, "<|end_of_text|>": 128001,
    "<|start_header_id|>": 128006, "<|end_header_id|>": 128007, "<|eom_id|>": 128008, "<|eot_id|>": 128009,
    "<|python_tag|>": 128010, "<|reserved_special_token_249|>": 128254, "<|endoftext|>": 151643,
    "<|im_start|>": 151644, "<|im_end|>": 151645, "<tool_call>": 151657, "</tool_call>": 151658,
    "<think>": 151667, "</think>": 151668, "<start_of_turn>": 105, "<end_of_turn>": 106,
}
_SPECIAL_RE = re.compile(
    r"<\|[A-Za-z0-9_]{1,64}\|>|<｜[^｜\s]{1,64}｜>|</?s>|</?tool_call>|</?think>|<(?:start|end)_of_turn>"
    r"|<(?:bos|eos|pad|unk)>|\[/?(?:INST|TOOL_CALLS|AVAILABLE_TOOLS|TOOL_RESULTS)\]"
)
# Added tokens kept whole that real tokenizers (Qwen2.5) do not flag as special.
NOT_SPECIAL = frozenset({"<tool_call>", "</tool_call>", "<think>", "</think>"})
_PIECE_RE = re.compile(r" ?_?[^\W\d_]{1,10}| ?\d{1,3}| ?[^\s\w]{1,3}|_+|\n|[^\S\n]+?(?= ?\S)|[^\S\n]+|[\s\S]")


class Tokenizer:
    """The deterministic stand-in tokenizer described in the module docstring."""

    def __init__(self, bos: str) -> None:
        self.bos = bos
        self._counts: dict[str, int] = {}

    @staticmethod
    def token_id(text: str, special: bool) -> int:
        known = SPECIAL_TOKEN_IDS.get(text)
        if known is not None:
            return known
        crc = zlib.crc32(text.encode("utf-8"))
        return (200000 + crc % 50000) if special else (1000 + crc % 120000)

    @staticmethod
    def pieces(text: str) -> list:
        """``[(text, special)]`` whose texts concatenate back to ``text``."""
        out: list = []
        pos = 0
        for match in _SPECIAL_RE.finditer(text):
            if match.start() > pos:
                out.extend((piece, False) for piece in _PIECE_RE.findall(text, pos, match.start()))
            out.append((match.group(), match.group() not in NOT_SPECIAL))
            pos = match.end()
        if pos < len(text):
            out.extend((piece, False) for piece in _PIECE_RE.findall(text, pos))
        return out

    def count(self, text: str) -> int:
        cached = self._counts.get(text)
        if cached is None:
            cached = len(self.pieces(text)) + (1 if self.bos else 0)
            if len(self._counts) > 4096:
                self._counts.clear()
            self._counts[text] = cached
        return cached

    def encode(self, text: str) -> list:
        """TGI's /tokenize answer: ``[{"id","text","start","stop"}]`` with byte offsets, BOS first."""
        out = [{"id": self.token_id(self.bos, True), "text": self.bos, "start": 0, "stop": 0}] if self.bos else []
        offset = 0
        for piece, special in self.pieces(text):
            size = len(piece.encode("utf-8"))
            out.append({"id": self.token_id(piece, special), "text": piece, "start": offset, "stop": offset + size})
            offset += size
        return out


def default_logprob(text: str) -> float:
    # Multiples of 1/16 print the same from Rust's f32 and from Python's float.
    return 0.0 - (zlib.crc32(text.encode("utf-8")) % 32) / 16


# ------------------------------------------------------------------------------------------------ replies


class RToken:
    __slots__ = ("id", "text", "special", "logprob", "delay", "eos")

    def __init__(self, text, special, id, logprob, delay, eos):
        self.text, self.special, self.id, self.logprob, self.delay, self.eos = text, special, id, logprob, delay, eos

    def as_dict(self) -> dict:
        return {"id": self.id, "text": self.text, "logprob": self.logprob, "special": self.special}


class Reply:
    __slots__ = ("tokens", "finish_reason", "delay", "prefill_delay", "faults", "split_utf8", "error", "source")

    def __init__(self, tokens, *, finish_reason=None, delay=None, prefill_delay=None, faults=None,
                 split_utf8=None, error=None, source="script"):
        self.tokens, self.finish_reason, self.delay, self.prefill_delay = tokens, finish_reason, delay, prefill_delay
        self.faults, self.split_utf8, self.error, self.source = faults or {}, split_utf8, error, source


def make_token(text: str, special: bool, eos_texts, *, id=None, logprob=None, delay=None, eos=None) -> RToken:
    return RToken(
        text, special,
        Tokenizer.token_id(text, special) if id is None else id,
        default_logprob(text) if logprob is None else logprob,
        delay,
        (special and text in eos_texts) if eos is None else eos,
    )


def tokens_from_text(text: str, eos_texts) -> list:
    return [make_token(piece, special, eos_texts) for piece, special in Tokenizer.pieces(text)]


def _number(obj: dict, key: str, kind, where: str):
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, kind):
        raise ValueError(f"{where}.{key} must be a {'non-negative integer' if kind is int else 'number'}")
    if value < 0:
        raise ValueError(f"{where}.{key} must be >= 0")
    return value


def parse_reply(obj, eos_texts) -> Reply:
    """A script entry (see the module docstring) -> Reply; ValueError says what is wrong."""
    if not isinstance(obj, dict):
        raise ValueError("a reply must be a JSON object")
    known = {"tokens", "text", "finish_reason", "delay_s", "prefill_delay_s", "split_utf8", "error", *REPLY_FAULTS}
    unknown = sorted(set(obj) - known)
    if unknown:
        raise ValueError(f"unknown reply keys {unknown}; known: {sorted(known)}")
    if "text" in obj:
        if not isinstance(obj["text"], str):
            raise ValueError("reply.text must be a string")
        tokens = tokens_from_text(obj["text"], eos_texts)
    else:
        raw = obj.get("tokens", [])
        if not isinstance(raw, list):
            raise ValueError("reply.tokens must be a list")
        tokens = [_parse_script_token(item, index, eos_texts) for index, item in enumerate(raw)]
    finish = obj.get("finish_reason")
    if finish is not None and finish not in ("length", "eos_token", "stop_sequence"):
        raise ValueError("reply.finish_reason must be length, eos_token or stop_sequence")
    error = obj.get("error")
    if error is not None and not (isinstance(error, dict) and isinstance(error.get("error"), str)
                                  and isinstance(error.get("error_type", ""), str)):
        raise ValueError('reply.error must be {"error": str, "error_type": str}')
    return Reply(
        tokens, finish_reason=finish,
        delay=_number(obj, "delay_s", (int, float), "reply"),
        prefill_delay=_number(obj, "prefill_delay_s", (int, float), "reply"),
        faults={key: _number(obj, key, int, "reply") for key in REPLY_FAULTS if obj.get(key) is not None},
        split_utf8=obj.get("split_utf8"), error=error,
    )


def _parse_script_token(item, index: int, eos_texts) -> RToken:
    where = f"reply.tokens[{index}]"
    if not isinstance(item, dict) or not isinstance(item.get("text"), str):
        raise ValueError(f'{where} must be an object with a string "text"')
    special = item.get("special", False)
    token_id = item.get("id")
    logprob = item.get("logprob")
    bad_id = token_id is not None and (isinstance(token_id, bool) or not isinstance(token_id, int))
    if not isinstance(special, bool) or bad_id:
        raise ValueError(f"{where}: special must be a bool and id an integer")
    if logprob is not None and (isinstance(logprob, bool) or not isinstance(logprob, (int, float))):
        raise ValueError(f"{where}.logprob must be a number")
    eos = item.get("eos")
    if eos is not None and not isinstance(eos, bool):
        raise ValueError(f"{where}.eos must be a bool")
    return make_token(item["text"], special, eos_texts, id=token_id, logprob=logprob,
                      delay=_number(item, "delay_s", (int, float), where), eos=eos)


# ------------------------------------------------------------------------------------------------ demo replies

DEMO_TEXT = "Hello! How can I help you today?"
R1_EOS = "<｜end▁of▁sentence｜>"
LLAMA3_GENERATION = "<|start_header_id|>assistant<|end_header_id|>\n\n"
V2_GENERATION = "<|from|>assistant\n<|recipient|>"
QWEN_GENERATIONS = ("<|im_start|>assistant\n", "<start_of_turn>model\n", "<｜Assistant｜>")
V2_LLAMA3_TOOL = "<|reserved_special_token_249|>"
_TS_TOOL_RE = re.compile(r"^type ([A-Za-z0-9_.\-]+) = (?:\(\) => any;|\(_: \{\n(.*?)^\}\) => any;)", re.M | re.S)
_TS_PROP_RE = re.compile(r"([A-Za-z0-9_$]+)(\?)?: (.*?),?$")
_USE_FUNCTION_RE = re.compile(r"Use the function '([^'\n]+)' to[^\n]*\n([^\n]*)")


def demo_reply(prompt: str, *, grammar: dict | None, eos_texts) -> Reply:
    """A plausible Functionary answer to ``prompt``; under a (validated) ``grammar`` an answer that fits it
    followed by the family's EOS, as a constrained generation ends."""
    text = demo_output(prompt)
    if grammar is not None:
        text = _constrained_output(grammar, text, _family_eos(prompt))
    return Reply(tokens_from_text(text, eos_texts), source="demo")


def demo_output(prompt: str) -> str:
    """The raw text, special tokens inline, that a Functionary model would write after ``prompt``."""
    done = _demo_after_call(prompt)
    if done is not None:
        return done
    if "<|recipient|>" in prompt:
        return _demo_v2(prompt)
    if "<|END_OF_USER|>" in prompt or "<|END_OF_SYSTEM|>" in prompt:
        return "\n" + DEMO_TEXT + "<|END_OF_ASSISTANT|></s>"
    eos = _family_eos(prompt)
    if "<tools>\n" in prompt:
        return _demo_qwen(prompt, eos)
    if "Use the function '" in prompt:
        return _demo_use_function(prompt, eos)
    if "<|start_header_id|>" in prompt:
        return _demo_llama3(prompt)
    return DEMO_TEXT + eos


def _demo_after_call(prompt: str) -> str | None:
    """The EOS when the prompt ends right after a complete call (a guided generation goes on from there): a
    model done with its calls stops."""
    if prompt.endswith("</function>"):
        return "<|eom_id|>"
    if prompt.endswith("</tool_call>"):
        return _family_eos(prompt)
    tail = _tail_after(prompt, LLAMA3_GENERATION) if "<|start_header_id|>" in prompt else ""
    if tail.startswith(">>>"):  # v3.llama3: ">>>name\n{complete JSON}"
        name, _, body = tail.rsplit(">>>", 1)[1].partition("\n")
        if name not in ("", "all") and body.strip().startswith("{"):
            try:
                json.loads(body)
                return "<|eot_id|>"
            except ValueError:
                pass
    return None


# A grammar-constrained demo answer: a valid instance of a JSON schema, or for a regex the longest prefix of the
# natural answer that matches, else one of the regex's literal alternatives or a small JSON object.


def _constrained_output(grammar: dict, natural: str, eos: str) -> str:
    if grammar["type"] == "regex":
        found = _regex_output(grammar["value"], natural)
        return natural if found is None else found + eos  # a regex we cannot satisfy: not honoured
    schema = grammar["value"]
    if isinstance(schema, str):
        schema = json.loads(schema)
    return json.dumps(schema_instance(schema), ensure_ascii=False) + eos


def _regex_output(pattern: str, natural: str) -> str | None:
    try:
        compiled = re.compile(pattern)
    except re.error:
        return None
    body = natural[:512]
    for end in range(len(body), 0, -1):
        if compiled.fullmatch(body, 0, end):
            return body[:end]
    for candidate in (*_regex_literals(pattern), '{"answer": ' + json.dumps(DEMO_TEXT) + "}", "{}"):
        if compiled.fullmatch(candidate):
            return candidate
    return None


def _regex_literals(pattern: str) -> list:
    """The alternatives of ``(?:lit|lit...)`` with their escapes undone ([] for any other shape)."""
    if not (pattern.startswith("(?:") and pattern.endswith(")")):
        return []
    out, current, i, body = [], [], 0, pattern[3:-1]
    escapes = {"n": "\n", "t": "\t", "r": "\r"}
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            current.append(escapes.get(body[i + 1], body[i + 1]))
            i += 2
            continue
        if c == "|":
            out.append("".join(current))
            current = []
        elif c in "()[]*+?{}.^$":
            return []
        else:
            current.append(c)
        i += 1
    out.append("".join(current))
    return out


_FORMATS = {"date": "2024-01-01", "date-time": "2024-01-01T12:00:00Z", "time": "12:00:00",
            "email": "user@example.com", "uuid": "123e4567-e89b-12d3-a456-426614174000",
            "uri": "https://example.com/"}


def schema_instance(schema, root=None, name: str = "value", depth: int = 0):
    """A value valid under ``schema`` (local ``$ref``s, ``const``, ``enum``, ``anyOf``/``oneOf``/``allOf``,
    required properties, nested objects and arrays, string lengths and formats, number bounds); string
    ``pattern``s are not followed."""
    root = schema if root is None else root
    if depth > 12 or not isinstance(schema, dict):
        return _demo_string(name)
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#"):
        target = root
        for part in ref[1:].split("/"):
            if part and isinstance(target, dict):
                target = target.get(part.replace("~1", "/").replace("~0", "~"))
        return schema_instance(target, root, name, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            return schema_instance(options[0], root, name, depth + 1)
    if isinstance(schema.get("allOf"), list):
        return schema_instance(_merge_all_of(schema), root, name, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if kind == "object":
        props = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
        required = [k for k in schema.get("required") or () if isinstance(k, str)]
        keys = [k for k in props if k in required] + [k for k in required if k not in props]
        return {key: schema_instance(props.get(key, {}), root, key, depth + 1) for key in keys}
    if kind == "array":
        if isinstance(schema.get("prefixItems"), list):
            return [schema_instance(item, root, name, depth + 1) for item in schema["prefixItems"]]
        low, high = schema.get("minItems") or 0, schema.get("maxItems")
        count = max(low, 1 if high is None or high >= 1 else 0)
        return [schema_instance(schema.get("items", {}), root, name, depth + 1) for _ in range(count)]
    if kind in ("integer", "number"):
        return _number_instance(schema, kind == "integer")
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    value = _FORMATS.get(schema.get("format")) or _demo_string(name)
    low, high = schema.get("minLength"), schema.get("maxLength")
    if isinstance(low, int) and len(value) < low:
        value += "x" * (low - len(value))
    if isinstance(high, int) and len(value) > high:
        value = value[:high]
    return value


def _merge_all_of(schema: dict) -> dict:
    merged = {key: value for key, value in schema.items() if key != "allOf"}
    for part in schema["allOf"]:
        if not isinstance(part, dict):
            continue
        for key, value in part.items():
            if key == "properties" and isinstance(value, dict):
                merged["properties"] = {**merged.get("properties", {}), **value}
            elif key == "required" and isinstance(value, list):
                merged["required"] = [*merged.get("required", []), *value]
            else:
                merged.setdefault(key, value)
    return merged


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number_instance(schema: dict, integer: bool):
    step = 1 if integer else 0.5
    value = 1
    if _is_number(schema.get("minimum")):
        value = schema["minimum"]
    elif _is_number(schema.get("exclusiveMinimum")):
        value = schema["exclusiveMinimum"] + step
    if _is_number(schema.get("maximum")) and value > schema["maximum"]:
        value = schema["maximum"]
    if _is_number(schema.get("exclusiveMaximum")) and value >= schema["exclusiveMaximum"]:
        value = schema["exclusiveMaximum"] - step
    multiple = schema.get("multipleOf")
    if _is_number(multiple) and multiple > 0:
        value = math.ceil(value / multiple) * multiple
    if integer:
        return int(math.ceil(value))
    return int(value) if float(value).is_integer() else value


def _family_eos(prompt: str) -> str:
    for marker, eos in (("<｜Assistant｜>", R1_EOS), ("<|start_header_id|>", "<|eot_id|>"),
                        ("<|im_start|>", "<|im_end|>"), ("<start_of_turn>", "<end_of_turn>")):
        if marker in prompt:
            return eos
    return "</s>"


def _tail_after(prompt: str, *markers: str) -> str:
    best, size = -1, 0
    for marker in markers:
        index = prompt.rfind(marker)
        if index > best:
            best, size = index, len(marker)
    return prompt[best + size:] if best >= 0 else ""


def _demo_string(name: str) -> str:
    lowered = name.lower()
    for needle, value in (("location", "San Francisco, CA"), ("city", "Paris"), ("email", "user@example.com"),
                          ("date", "2024-01-01"), ("time", "12:00"), ("query", "weather today")):
        if needle in lowered:
            return value
    return "example"


def _schema_value(name: str, schema) -> object:
    if not isinstance(schema, dict):
        return _demo_string(name)
    if schema.get("enum"):
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return _schema_value(name, schema[key][0])
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind in ("integer", "number"):
        minimum = schema.get("minimum", 1)
        return int(minimum) if kind == "integer" and isinstance(minimum, (int, float)) else minimum
    if kind == "boolean":
        return True
    if kind == "array":
        return []
    if kind == "null":
        return None
    return _schema_args(schema) if kind == "object" else _demo_string(name)


def _schema_args(schema) -> dict:
    props = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(props, dict) or not props:
        return {}
    names = [key for key in (schema.get("required") or []) if key in props] or list(props)[:1]
    return {key: _schema_value(key, props[key]) for key in names}


def _ts_value(name: str, kind: str) -> object:
    kind = kind.strip()
    if kind.endswith("[]"):
        return []
    first = kind.split(" | ")[0].strip()
    if first == "null" and " | " in kind:
        first = kind.split(" | ")[1].strip()
    if first.startswith('"') or re.fullmatch(r"-?\d+(?:\.\d+)?", first):
        try:
            return json.loads(first)
        except ValueError:
            return first.strip('"')
    if first == "string":
        return _demo_string(name)
    return {"number": 1, "boolean": True, "null": None}.get(first, _demo_string(name))


def _ts_args(body: str) -> dict:
    args: dict = {}
    first = None
    depth, pending = 0, None
    for line in body.split("\n"):
        text = line.strip()
        if not text or text.startswith("//"):
            continue
        if depth:
            depth += text.count("{") - text.count("}")
            if depth <= 0:
                depth = 0
                if pending:
                    args[pending] = [] if text.startswith("}[]") else {}
                pending = None
            continue
        match = _TS_PROP_RE.fullmatch(text)
        if not match:
            continue
        name, optional, kind = match.groups()
        if kind.endswith("{"):
            depth, pending = 1, (None if optional else name)
            continue
        if first is None:
            first = (name, kind)
        if not optional:
            args[name] = _ts_value(name, kind)
    if not args and first is not None:
        args[first[0]] = _ts_value(*first)
    return args


def _ts_tools(prompt: str) -> list:
    return [(m.group(1), m.group(2) or "") for m in _TS_TOOL_RE.finditer(prompt)]


def _ts_call(tools: list, name: str | None = None) -> tuple:
    """(name, JSON arguments) for the named tool, else the first one."""
    chosen = next((tool for tool in tools if tool[0] == name), None) if name else None
    chosen = chosen or (tools[0] if not name else (name, ""))
    return chosen[0], json.dumps(_ts_args(chosen[1]), ensure_ascii=False)


def _json_tools(prompt: str) -> list:
    """[(name, parameters schema)] from Qwen-style ``<tools>`` lines or ``Use the function`` lines."""
    tools = []
    if "<tools>\n" in prompt:  # the instructions also say "within <tools></tools> XML tags"
        block = prompt[prompt.find("<tools>\n") + len("<tools>\n"):]
        block = block[:block.find("</tools>")] if "</tools>" in block else block
        for line in block.splitlines():
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                fn = obj.get("function", obj) if isinstance(obj.get("function", obj), dict) else obj
                if isinstance(fn.get("name"), str):
                    tools.append((fn["name"], fn.get("parameters")))
        return tools
    for match in _USE_FUNCTION_RE.finditer(prompt):
        try:
            params = json.loads(html.unescape(match.group(2))).get("parameters")
        except (ValueError, AttributeError):
            params = None
        tools.append((html.unescape(match.group(1)), params))
    return tools


def _json_call(tools: list, name: str | None = None) -> tuple:
    chosen = next((tool for tool in tools if tool[0] == name), None) if name else tools[0]
    chosen = chosen or (name, None)
    return chosen[0], json.dumps(_schema_args(chosen[1]), ensure_ascii=False)


def _demo_v2(prompt: str) -> str:
    tail = _tail_after(prompt, V2_GENERATION)
    tools = _ts_tools(prompt)
    end = "<|stop|></s>"
    if tail == "" and tools:
        name, args = _ts_call(tools)
        return f"{name}\n<|content|>{args}{end}"
    if tail == "":
        return f"all\n<|content|>{DEMO_TEXT}{end}"
    named = re.fullmatch(r"([\w.\-]+)\n<\|content\|>", tail)
    if named and named.group(1) != "all":
        return _ts_call(tools, named.group(1))[1] + end
    return DEMO_TEXT + end


def _demo_llama3(prompt: str) -> str:
    tail = _tail_after(prompt, LLAMA3_GENERATION)
    tools = _ts_tools(prompt)
    eot = "<|eot_id|>"
    if tail.startswith(">>>"):  # v3.llama3: the generation prompt ends with ">>>"
        rest = tail[3:]
        if rest == "":
            return "{0}\n{1}".format(*_ts_call(tools)) + eot if tools else f"all\n{DEMO_TEXT}{eot}"
        named = re.fullmatch(r"([\w.\-]+)\n", rest)
        if named and named.group(1) != "all":
            return _ts_call(tools, named.group(1))[1] + eot
        return DEMO_TEXT + eot
    if tail == "" and tools:
        return V2_LLAMA3_TOOL + "{0}\n{1}".format(*_ts_call(tools)) + eot
    if tail == V2_LLAMA3_TOOL and tools:
        return "{0}\n{1}".format(*_ts_call(tools)) + eot
    named = re.fullmatch(re.escape(V2_LLAMA3_TOOL) + r"([\w.\-]+)\n", tail)
    if named:
        return _ts_call(tools, named.group(1))[1] + eot
    return DEMO_TEXT + eot


def _demo_qwen(prompt: str, eos: str) -> str:
    tools = _json_tools(prompt)
    tail = _tail_after(prompt, *QWEN_GENERATIONS)
    if not tools:
        return DEMO_TEXT + eos
    named = re.fullmatch(r'<tool_call>\n\{"name": "([^"]+)", "arguments', tail)
    if named:
        return '": ' + _json_call(tools, named.group(1))[1] + "}\n</tool_call>" + eos
    call = '{{"name": "{0}", "arguments": {1}}}\n</tool_call>'.format(*_json_call(tools))
    if tail == "<tool_call>\n":
        return call + eos
    if tail.strip() == "":
        return "<tool_call>\n" + call + eos
    return DEMO_TEXT + eos


def _demo_use_function(prompt: str, eos: str) -> str:
    tools = _json_tools(prompt)
    if not tools:
        return DEMO_TEXT + eos
    if "<function=" not in prompt:  # DeepSeek-R1's own tool-call markers
        name, args = _json_call(tools)
        return ("<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>" + name + "\n```json\n" + args
                + "\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>" + R1_EOS)
    tail = _tail_after(prompt, LLAMA3_GENERATION, "<｜Assistant｜>")
    if tail == "<function=":
        return "{0}>{1}</function><|eom_id|>".format(*_json_call(tools))
    named = re.fullmatch(r"<function=([^>\n]+)>", tail)
    if named:
        return _json_call(tools, named.group(1))[1] + "</function><|eom_id|>"
    if tail == "":
        return "<function={0}>{1}</function><|eom_id|>".format(*_json_call(tools))
    return DEMO_TEXT + eos


# ------------------------------------------------------------------------------------------------ request bodies


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


# ------------------------------------------------------------------------------------------------ validation


class Valid:
    """A request that passed TGI's validation."""

    __slots__ = ("inputs", "input_length", "limit", "stops", "seed", "sampling", "top_n", "details",
                 "return_full_text", "best_of", "grammar", "prefill_details")


def version_tuple(text: str) -> tuple:
    parts = re.findall(r"\d+", text)[:3]
    return tuple(int(part) for part in parts) + (0,) * (3 - len(parts))


class Limits:
    """Launcher settings fixed at start."""

    def __init__(self, args) -> None:
        self.model_id = args.model_id
        self.version = args.tgi_version
        self.version_tuple = version_tuple(args.tgi_version)
        self.max_best_of = args.max_best_of
        self.max_stop_sequences = args.max_stop_sequences
        self.max_top_n_tokens = args.max_top_n_tokens
        self.max_client_batch_size = args.max_client_batch_size
        self.max_total_tokens = args.max_total_tokens
        self.max_input_tokens = args.max_input_tokens
        self.max_batch_prefill_tokens = args.max_batch_prefill_tokens
        self.disable_grammar_support = args.disable_grammar_support
        self.enable_prefill_logprobs = args.enable_prefill_logprobs
        self.payload_limit = args.payload_limit
        self.api_key = args.api_key
        self.pipeline_tag = args.pipeline_tag
        self.eos_texts = frozenset(args.eos_token or DEFAULT_EOS_TOKENS)
        self.default_eos = (args.eos_token or DEFAULT_EOS_TOKENS)[0]
        self.compute_type = os.environ.get("COMPUTE_TYPE", "gpu+optimized")


def validate(req: GenRequest, limits: Limits, tokenizer: Tokenizer) -> Valid:
    """TGI's ``Validation::validate``: the same checks, in the same order, with the same messages."""
    p = req.params
    do_sample = p.get("do_sample", False) if req.params_present else True
    temperature, top_k, top_p, typical_p = p.get("temperature"), p.get("top_k"), p.get("top_p"), p.get("typical_p")
    best_of = 1 if p.get("best_of") is None else p["best_of"]
    if best_of > 1 and not (do_sample or temperature is not None or top_k is not None or top_p is not None
                            or typical_p is not None):
        raise invalid("you must use sampling when `best_of` is > 1")
    if (1.0 if temperature is None else temperature) <= 0.0:
        raise invalid("`temperature` must be strictly positive")
    if (1.0 if p.get("repetition_penalty") is None else p["repetition_penalty"]) <= 0.0:
        raise invalid("`repetition_penalty` must be strictly positive")
    if not -2.0 <= (0.0 if p.get("frequency_penalty") is None else p["frequency_penalty"]) <= 2.0:
        raise invalid("`frequency_penalty` must be >= -2.0 and <= 2.0")
    if top_p is not None and not 0.0 < top_p < 1.0:
        raise invalid("`top_p` must be > 0.0 and < 1.0")
    if typical_p is not None and not 0.0 < typical_p < 1.0:
        raise invalid("`typical_p` must be > 0.0 and < 1.0")
    if top_k is not None and top_k <= 0:
        raise invalid("`top_k` must be strictly positive")
    max_new_tokens = p.get("max_new_tokens")
    if max_new_tokens == 0:
        raise invalid("`max_new_tokens` must be strictly positive")
    stops = p.get("stop", [])
    if len(stops) > limits.max_stop_sequences:
        raise invalid(f"`stop` supports up to {limits.max_stop_sequences} stop sequences. Given: {len(stops)}")
    seed = p.get("seed")
    if seed is not None and best_of > 1:
        raise invalid("`seed` must not be set when `best_of` > 1")
    top_n = p.get("top_n_tokens") or 0
    if top_n > limits.max_top_n_tokens:
        raise invalid(f"`top_n_tokens` must be >= 0 and <= {limits.max_top_n_tokens}. Given: {top_n}")
    if req.inputs == "":
        raise invalid("`inputs` cannot be empty")
    truncate = p.get("truncate")
    if truncate is not None and (truncate == 0 or truncate > limits.max_input_tokens):
        raise invalid(f"`truncate` must be strictly positive and less than {limits.max_input_tokens}. "
                      f"Given: {truncate}")
    valid = Valid()
    valid.input_length = tokenizer.count(req.inputs)
    if truncate is not None:
        valid.input_length = min(valid.input_length, truncate)
    valid.limit = _check_lengths(valid.input_length, max_new_tokens, limits)
    valid.grammar = _check_grammar(p.get("grammar"), limits)
    valid.inputs, valid.stops, valid.top_n, valid.best_of = req.inputs, stops, top_n, best_of
    valid.seed = random.getrandbits(64) if seed is None else seed
    valid.sampling = bool(do_sample or (temperature is not None and temperature != 1.0) or (top_k or 0) != 0
                          or (top_p is not None and top_p < 1.0) or (typical_p is not None and typical_p < 1.0))
    valid.details = bool(p.get("details", False))
    valid.prefill_details = bool(p.get("decoder_input_details", False))
    valid.return_full_text = bool(p.get("return_full_text"))
    return valid


def _check_lengths(input_length: int, max_new_tokens, limits: Limits) -> int:
    """Length checks; returns how many tokens generation may produce."""
    version = limits.version_tuple
    if max_new_tokens is None:
        wanted = max(limits.max_total_tokens - input_length, 0) if version >= (3, 0, 0) else 100
    else:
        wanted = max_new_tokens
    chunk = min(wanted, GENERATION_CHUNK) if version >= (3, 1, 1) else wanted
    if input_length + chunk > limits.max_total_tokens:
        raise invalid(f"`inputs` tokens + `max_new_tokens` must be <= {limits.max_total_tokens}. "
                      f"Given: {input_length} `inputs` tokens and {chunk} `max_new_tokens`")
    if input_length > limits.max_input_tokens:
        raise invalid(f"`inputs` must have less than {limits.max_input_tokens} tokens. Given: {input_length}")
    return max(1, min(wanted, limits.max_total_tokens - input_length))


def _check_grammar(grammar, limits: Limits):
    if grammar is None:
        return None
    if limits.disable_grammar_support:
        raise invalid("grammar is not supported")
    if grammar["type"] == "regex":
        return grammar
    schema = grammar["value"]["schema"] if grammar["type"] == "json_schema" else grammar["value"]
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except ValueError as exc:
            raise invalid(f"grammar is not valid: {exc}") from None
    elif not isinstance(schema, dict):
        raise invalid("grammar is not supported")
    if not isinstance(schema, dict) or not _schema_kinds_ok(schema):
        raise invalid(f"grammar is not valid: {json.dumps(schema)} is not valid under any of the given schemas")
    if "properties" not in schema:
        raise invalid("grammar is not valid: Grammar must have a 'properties' field")
    return {"type": "json", "value": schema}


def _schema_kinds_ok(schema: dict) -> bool:
    """A small part of the draft 2020-12 meta-schema: ``type`` names and ``properties`` must be well-formed."""
    kinds = schema.get("type")
    names = {"object", "array", "string", "number", "integer", "boolean", "null"}
    if kinds is not None and not (kinds in names or (isinstance(kinds, list) and set(kinds) <= names)):
        return False
    props = schema.get("properties")
    return props is None or (isinstance(props, dict) and all(isinstance(v, (dict, bool)) for v in props.values()))


# ------------------------------------------------------------------------------------------------ generation plan


class Plan:
    """What one generation will emit: tokens, finish reason, an injected fault and per-token delays."""

    __slots__ = ("tokens", "finish", "fault", "fault_at", "delays")


def _split_utf8(tokens: list) -> list:
    """TGI's decode_token answers ``""`` for a token ending inside a multi-byte character; the next one has it."""
    out = []
    for token in tokens:
        if not token.special and any(ord(char) > 127 for char in token.text):
            out.append(RToken("", False, token.id + 1, -0.25, token.delay, False))
            token = RToken(token.text, False, token.id, token.logprob, 0.0, token.eos)
        out.append(token)
    return out


def make_plan(reply: Reply, valid: Valid, faults: dict, default_eos: RToken) -> Plan:
    tokens = reply.tokens or [default_eos]
    if reply.split_utf8 if reply.split_utf8 is not None else faults["split_utf8"]:
        tokens = _split_utf8(tokens)
    stops = [re.compile(re.escape(stop) + "$") for stop in valid.stops]
    emitted, finish, output = [], None, ""
    for token in tokens:
        emitted.append(token)
        if len(emitted) >= valid.limit:
            finish = "length"
        elif token.eos:
            finish = "eos_token"
        elif stops:
            # TGI keeps the last 200-300 characters and searches each stop regex (anchored with ``$``) in them.
            output += token.text
            if len(output) > 300:
                output = output[-200:]
            if any(stop.search(output) for stop in stops):
                finish = "stop_sequence"
        if finish:
            break
    plan = Plan()
    plan.tokens, plan.finish = emitted, finish or reply.finish_reason or "length"
    plan.fault, plan.fault_at = None, None
    for name in REPLY_FAULTS:
        after = reply.faults.get(name, faults[name])
        if after is not None:
            plan.fault, plan.fault_at = name, min(after, len(emitted) - 1)
            break
    delay = faults["token_delay"] if reply.delay is None else reply.delay
    prefill = faults["prefill_delay"] if reply.prefill_delay is None else reply.prefill_delay
    plan.delays = [(delay if token.delay is None else token.delay) for token in emitted]
    plan.delays[0] += prefill
    return plan


_ALTERNATIVES = (" the", " a", ",", ".", " and", " of", " to")


def top_tokens(token: RToken, count: int) -> list:
    out = [token.as_dict()]
    for rank in range(1, count):
        text = _ALTERNATIVES[(token.id + rank) % len(_ALTERNATIVES)]
        out.append({"id": Tokenizer.token_id(text, False), "text": text, "logprob": token.logprob - rank,
                    "special": False})
    return out


# ------------------------------------------------------------------------------------------------ HTTP/1.1

_REASONS = {100: "Continue", 200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
            405: "Method Not Allowed", 413: "Payload Too Large", 415: "Unsupported Media Type",
            422: "Unprocessable Entity", 424: "Failed Dependency", 429: "Too Many Requests",
            431: "Request Header Fields Too Large", 500: "Internal Server Error", 503: "Service Unavailable"}
MAX_HEAD = 65536
HARD_BODY_CAP = 64 * 1024 * 1024


class Request:
    __slots__ = ("method", "path", "headers", "body", "keep_alive", "too_large")


class Connection(asyncio.Protocol):
    """One client connection: a small HTTP/1.1 server with keep-alive, requests served one after another.

    ``connection_lost`` wakes every wait at once, so a client that goes away mid-stream is seen at once even
    while the next token is still being waited for.
    """

    def __init__(self, app) -> None:
        self.app = app
        self.transport = None
        self.buf = bytearray()
        self.closed = False
        self.must_close = False
        self._waiters: set = set()
        self._paused = False
        self.last_write = 0.0

    # asyncio.Protocol
    def connection_made(self, transport) -> None:
        self.transport = transport
        self.loop = asyncio.get_event_loop()
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self.app.connections += 1
        self.loop.create_task(self._serve())

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self._wake()

    def eof_received(self):
        return None  # the client closed its side: treat as gone

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.app.connections -= 1
        self._wake()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._wake()

    # waiting
    def _wake(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    async def _wait(self, timeout: float | None = None) -> None:
        waiter = self.loop.create_future()
        self._waiters.add(waiter)
        handle = self.loop.call_later(timeout, _resolve, waiter) if timeout is not None else None
        try:
            await waiter
        finally:
            self._waiters.discard(waiter)
            if handle is not None:
                handle.cancel()

    async def sleep(self, delay: float) -> None:
        """Sleep ``delay`` seconds, returning early when the client goes away."""
        deadline = self.loop.time() + delay
        while not self.closed:
            left = deadline - self.loop.time()
            if left <= 0:
                return
            await self._wait(left)

    async def drain(self) -> None:
        while self._paused and not self.closed:
            await self._wait()

    # reading
    async def _serve(self) -> None:
        try:
            while not self.closed:
                request = await self._read_request()
                if request is None:
                    break
                await self.app.handle(self, request)
                if not request.keep_alive or self.must_close:
                    break
        except Exception as exc:  # a bug here must not kill the server
            self.app.log(f"connection error: {exc!r}", level="ERROR", target=ROUTER)
        if not self.closed:
            self.transport.close()

    async def _read_request(self):
        while True:
            start = len(self.buf) - len(self.buf.lstrip(b"\r\n"))
            if start:
                del self.buf[:start]
            end = self.buf.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(self.buf) > MAX_HEAD:
                self.respond(431, close=True)
                return None
            if self.closed:
                return None
            await self._wait()
        head = bytes(self.buf[:end]).decode("latin-1")
        del self.buf[:end + 4]
        lines = head.split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            self.respond(400, close=True)
            return None
        request = Request()
        request.method, request.path = parts[0], parts[1].split("?", 1)[0]
        request.headers = headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                self.respond(400, close=True)
                return None
            name = name.strip().lower()
            headers[name] = f"{headers[name]}, {value.strip()}" if name in headers else value.strip()
        connection = headers.get("connection", "").lower()
        request.keep_alive = ("close" not in connection) if parts[2] == "HTTP/1.1" else ("keep-alive" in connection)
        if headers.get("expect", "").lower() == "100-continue":
            self.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return await self._read_body(request)

    async def _read_body(self, request):
        limit = self.app.limits.payload_limit
        request.too_large = False
        if "chunked" in request.headers.get("transfer-encoding", "").lower():
            body = await self._read_chunked()
            if body is None:
                return None
        else:
            try:
                size = int(request.headers.get("content-length", "0"))
            except ValueError:
                size = -1
            if size < 0:
                self.respond(400, close=True)
                return None
            if size > HARD_BODY_CAP:
                self.respond(413, b"Failed to buffer the request body: length limit exceeded",
                             content_type=TEXT_PLAIN, close=True)
                return None
            while len(self.buf) < size:
                if self.closed:
                    return None
                await self._wait()
            body = bytes(self.buf[:size])
            del self.buf[:size]
        request.too_large = len(body) > limit
        request.body = body
        return request

    async def _read_chunked(self):
        body = bytearray()
        while True:
            while b"\r\n" not in self.buf:
                if self.closed:
                    return None
                await self._wait()
            line_end = self.buf.find(b"\r\n")
            try:
                size = int(bytes(self.buf[:line_end]).split(b";")[0], 16)
            except ValueError:
                self.respond(400, close=True)
                return None
            while len(self.buf) < line_end + 2 + size + 2:
                if self.closed:
                    return None
                await self._wait()
            if size == 0:
                trailer_end = self.buf.find(b"\r\n", line_end + 2)
                del self.buf[:trailer_end + 2]
                return bytes(body)
            body += self.buf[line_end + 2:line_end + 2 + size]
            del self.buf[:line_end + 2 + size + 2]
            if len(body) > HARD_BODY_CAP:
                self.respond(413, close=True)
                return None

    # writing
    def write(self, data: bytes) -> None:
        if not self.closed:
            self.transport.write(data)
            self.last_write = self.loop.time()

    def respond(self, status: int, body: bytes = b"", *, content_type: str | None = None,
                headers=(), close: bool = False) -> None:
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}"]
        if content_type:
            lines.append("content-type: " + content_type)
        lines.append(f"content-length: {len(body)}")
        lines.extend(f"{name}: {value}" for name, value in headers)
        if close:
            self.must_close = True
            lines.append("connection: close")
        self.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)

    def respond_json(self, status: int, obj, headers=()) -> None:
        self.respond(status, json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8"),
                     content_type=APPLICATION_JSON, headers=headers)

    def start_chunked(self, status: int, headers) -> None:
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}"]
        lines.extend(f"{name}: {value}" for name, value in headers)
        lines.append("transfer-encoding: chunked")
        self.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    def write_chunk(self, data: bytes, *, last: bool = False) -> None:
        self.write(b"%x\r\n%s\r\n%s" % (len(data), data, b"0\r\n\r\n" if last else b""))

    def end_chunked(self) -> None:
        self.write(b"0\r\n\r\n")

    def reset(self) -> None:
        """Drop the connection with a TCP RST (SO_LINGER 0), as a crashed server would."""
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        self.must_close = True
        self.transport.abort()


def _resolve(future) -> None:
    if not future.done():
        future.set_result(None)


# ------------------------------------------------------------------------------------------------ the server


class Emulator:
    """Routes, TGI's handlers, the script, the request log, counters and fault switches."""

    def __init__(self, limits: Limits, tokenizer: Tokenizer, faults: dict, script: list, log: Log) -> None:
        self.limits, self.tokenizer, self.log = limits, tokenizer, log
        self.cli_faults = dict(faults)
        self.faults = dict(faults)
        self.script = collections.deque(script)
        self.requests = collections.deque(maxlen=10000)
        self.connections = 0
        self.default_eos = make_token(limits.default_eos, True, limits.eos_texts)
        self._demo_cache: dict = {}
        self.reset_counters()
        self.routes = {
            "/": {"GET": self.health, "POST": self.compat},
            "/health": {"GET": self.health}, "/ping": {"GET": self.health},
            "/info": {"GET": self.info}, "/metrics": {"GET": self.metrics}, "/v1/models": {"GET": self.models},
            "/generate": {"POST": self.generate}, "/generate_stream": {"POST": self.generate_stream},
            "/tokenize": {"POST": self.tokenize},
            "/emulator/requests": {"GET": self.get_requests, "DELETE": self.delete_requests},
            "/emulator/state": {"GET": self.get_state},
            "/emulator/faults": {"GET": self.get_faults, "POST": self.post_faults, "DELETE": self.delete_faults},
            "/emulator/script": {"GET": self.get_script, "POST": self.post_script, "DELETE": self.delete_script},
            "/emulator/reset": {"POST": self.post_reset},
        }

    def reset_counters(self) -> None:
        self.in_flight = 0
        self.counts = collections.Counter()

    async def handle(self, conn: Connection, request: Request) -> None:
        methods = self.routes.get(request.path)
        if methods is None:
            conn.respond(404)
            return
        handler = methods.get(request.method)
        if handler is None:
            conn.respond(405)
            return
        if request.too_large:
            conn.respond(413, b"Failed to buffer the request body: length limit exceeded", content_type=TEXT_PLAIN)
            return
        await handler(conn, request)

    # ---- plain routes
    async def health(self, conn, request) -> None:
        if self.faults["unhealthy"]:
            conn.respond_json(503, {"error": "unhealthy", "error_type": "healthcheck"})
        else:
            conn.respond(200)

    async def info(self, conn, request) -> None:
        conn.respond_json(200, self.info_body())

    def info_body(self) -> dict:
        lim, version = self.limits, self.limits.version_tuple
        body = {"model_id": lim.model_id, "model_sha": None}
        if version < (2, 4, 0):
            body.update(model_dtype="torch.float16", model_device_type="cuda")
        body.update(model_pipeline_tag=lim.pipeline_tag, max_concurrent_requests=self.faults["max_concurrent_requests"],
                    max_best_of=lim.max_best_of, max_stop_sequences=lim.max_stop_sequences)
        body["max_input_tokens" if version >= (2, 1, 0) else "max_input_length"] = lim.max_input_tokens
        body["max_total_tokens"] = lim.max_total_tokens
        if version < (2, 3, 0):
            body.update(waiting_served_ratio=0.3, max_batch_total_tokens=lim.max_total_tokens * 4,
                        max_waiting_tokens=20, max_batch_size=None)
        body.update(validation_workers=2, max_client_batch_size=lim.max_client_batch_size,
                    router="text-generation-router", version=lim.version, sha=None, docker_label=None)
        return body

    async def models(self, conn, request) -> None:
        model_id = self.limits.model_id
        conn.respond_json(200, {"object": "list", "data": [{"id": model_id, "object": "model", "created": 0,
                                                            "owned_by": model_id}]})

    async def metrics(self, conn, request) -> None:
        lines = []
        for name in ("tgi_request_count", "tgi_request_success"):
            lines += [f"# TYPE {name} counter", f"{name} {self.counts[name]}"]
        lines.append("# TYPE tgi_request_failure counter")
        for key, value in sorted(self.counts.items()):
            if key.startswith("failure:"):
                lines.append(f'tgi_request_failure{{err="{key[8:]}"}} {value}')
        lines += ["# TYPE tgi_queue_size gauge", "tgi_queue_size 0",
                  "# TYPE tgi_batch_current_size gauge", f"tgi_batch_current_size {self.in_flight}"]
        conn.respond(200, ("\n".join(lines) + "\n").encode(), content_type="text/plain; version=0.0.4")

    async def tokenize(self, conn, request) -> None:
        if not self._authorized(request):
            conn.respond(401)
            return
        try:
            req = parse_generate_request(parse_json_body(request.headers, request.body), compat=False)
        except Rejection as exc:
            conn.respond(exc.status, exc.text.encode("utf-8"), content_type=TEXT_PLAIN)
            return
        conn.respond_json(200, self.tokenizer.encode(req.inputs))

    # ---- generation routes
    async def generate(self, conn, request) -> None:
        await self._generation_route(conn, request, "generate")

    async def generate_stream(self, conn, request) -> None:
        await self._generation_route(conn, request, "stream")

    async def compat(self, conn, request) -> None:
        await self._generation_route(conn, request, "compat")

    def _authorized(self, request) -> bool:
        key = self.limits.api_key
        return not key or request.headers.get("authorization", "").lower() == f"bearer {key}".lower()

    def _log_request(self, request: Request) -> dict:
        self.counts["requests"] += 1
        entry = {"seq": self.counts["requests"], "route": request.path, "method": request.method,
                 "headers": dict(request.headers), "body": None, "received_at": time.time(), "outcome": None,
                 "input_length": None, "finish_reason": None, "generated_tokens": None}
        self.requests.append(entry)
        return entry

    async def _generation_route(self, conn, request, route: str) -> None:
        entry = self._log_request(request)
        if not self._authorized(request):
            entry["outcome"] = "unauthorized"
            conn.respond(401)
            return
        try:
            body = parse_json_body(request.headers, request.body)
            entry["body"] = body
            req = parse_generate_request(body, compat=route == "compat")
        except Rejection as exc:
            if entry["body"] is None:
                entry["raw_body"] = request.body[:65536].decode("utf-8", "replace")
            entry["outcome"] = "rejected"
            conn.respond(exc.status, exc.text.encode("utf-8"), content_type=TEXT_PLAIN)
            return
        self.counts["tgi_request_count"] += 1
        if route == "compat" and req.params.get("return_full_text") is None:
            req.params["return_full_text"] = self.limits.pipeline_tag in (None, "text-generation")
        if req.stream or route == "stream":
            await self._stream(conn, req, entry)
        else:
            await self._plain(conn, req, entry, as_list=route == "compat")

    def _acquire(self) -> None:
        if self.faults["overload"] or self.in_flight >= self.faults["max_concurrent_requests"]:
            raise overloaded()
        self.in_flight += 1

    def _next_reply(self, valid: Valid) -> Reply:
        if self.script and not self.faults["demo"]:
            return self.script.popleft()
        if valid.grammar is not None:  # not cached: the same inputs get another answer without the grammar
            return demo_reply(valid.inputs, grammar=valid.grammar, eos_texts=self.limits.eos_texts)
        cached = self._demo_cache.get(valid.inputs)
        if cached is None:
            cached = demo_reply(valid.inputs, grammar=None, eos_texts=self.limits.eos_texts)
            if len(self._demo_cache) > 256:
                self._demo_cache.clear()
            self._demo_cache[valid.inputs] = cached
        return cached

    def _start(self, req: GenRequest, entry: dict):
        """Permit, validation and the reply: (valid, plan). Raises TgiError."""
        self._acquire()
        try:
            valid = validate(req, self.limits, self.tokenizer)
            entry["input_length"] = valid.input_length
            reply = self._next_reply(valid)
            if reply.error is not None:
                raise TgiError(reply.error["error"], reply.error.get("error_type", "generation"))
            return valid, make_plan(reply, valid, self.faults, self.default_eos)
        except BaseException:
            self.in_flight -= 1
            raise

    def _fail(self, entry: dict, error: TgiError) -> None:
        entry["outcome"] = error.error_type
        self.counts["failure:" + error.error_type] += 1

    def _finish(self, entry: dict, plan: Plan, outcome: str) -> None:
        entry.update(outcome=outcome, finish_reason=plan.finish, generated_tokens=len(plan.tokens))
        if outcome == "ok":
            self.counts["tgi_request_success"] += 1

    def _cancelled(self, entry: dict) -> None:
        entry["outcome"] = "cancelled"
        self.counts["cancelled"] += 1
        self.counts["failure:dropped"] += 1

    def _generated_text(self, valid: Valid, tokens: list) -> str:
        text = "".join(token.text for token in tokens if not token.special)
        return valid.inputs + text if valid.return_full_text else text

    async def _plain(self, conn, req: GenRequest, entry: dict, *, as_list: bool) -> None:
        started = time.monotonic()
        try:
            best_of = req.params.get("best_of")
            if best_of is not None and best_of > 1:
                if self.limits.max_best_of == 1:
                    raise invalid("`best_of` != 1 is not allowed for this endpoint")
                if best_of > self.limits.max_best_of:
                    raise invalid(f"`best_of` must be > 0 and <= {self.limits.max_best_of}. Given: {best_of}")
            valid, plan = self._start(req, entry)
        except TgiError as exc:
            self._fail(entry, exc)
            conn.respond_json(exc.status, exc.payload())
            return
        try:
            queued = time.monotonic()
            for index, delay in enumerate(plan.delays):
                if delay > 0:
                    await conn.sleep(delay)
                if conn.closed:
                    self._cancelled(entry)
                    return
                if plan.fault_at == index:
                    self._plain_fault(conn, plan, entry)
                    return
            body = self._plain_body(valid, plan)
            self._finish(entry, plan, "ok")
            conn.respond_json(200, [body] if as_list else body, headers=self._timing_headers(
                req, valid, plan, started, queued))
        finally:
            self.in_flight -= 1

    def _plain_fault(self, conn, plan: Plan, entry: dict) -> None:
        if plan.fault == "reset_after":
            entry["outcome"] = "reset"
            conn.reset()
            return
        if plan.fault == "fail_after":
            error = TgiError(GENERATION_FAILURE, "generation")
        else:
            error = TgiError("Incomplete generation", "incomplete_generation")
        self._fail(entry, error)
        conn.respond_json(error.status, error.payload())

    def _plain_body(self, valid: Valid, plan: Plan) -> dict:
        body = {"generated_text": self._generated_text(valid, plan.tokens)}
        if valid.details or valid.prefill_details:
            details = {"finish_reason": plan.finish, "generated_tokens": len(plan.tokens),
                       "seed": valid.seed if valid.sampling else None, "prefill": self._prefill(valid),
                       "tokens": [token.as_dict() for token in plan.tokens]}
            if valid.best_of > 1:
                details["best_of_sequences"] = [
                    {"generated_text": body["generated_text"], "finish_reason": plan.finish,
                     "generated_tokens": len(plan.tokens), "seed": random.getrandbits(64), "prefill": [],
                     "tokens": details["tokens"]} for _ in range(valid.best_of - 1)]
            if valid.top_n:
                details["top_tokens"] = [top_tokens(token, valid.top_n) for token in plan.tokens]
            body["details"] = details
        return body

    def _prefill(self, valid: Valid) -> list:
        if not (valid.prefill_details and self.limits.enable_prefill_logprobs):
            return []
        tokens = self.tokenizer.encode(valid.inputs)[-valid.input_length:]
        return [{"id": t["id"], "text": t["text"], "logprob": None if i == 0 else default_logprob(t["text"])}
                for i, t in enumerate(tokens)]

    def _timing_headers(self, req, valid, plan, started: float, queued: float) -> list:
        now = time.monotonic()
        total, inference = now - started, now - queued
        return [("x-compute-type", self.limits.compute_type), ("x-compute-time", repr(total)),
                ("x-compute-characters", len(req.inputs)), ("x-total-time", int(total * 1000)),
                ("x-validation-time", int((queued - started) * 1000)), ("x-queue-time", 0),
                ("x-inference-time", int(inference * 1000)),
                ("x-time-per-token", int(inference * 1000 / max(len(plan.tokens), 1))),
                ("x-prompt-tokens", valid.input_length), ("x-generated-tokens", len(plan.tokens))]

    async def _stream(self, conn, req: GenRequest, entry: dict) -> None:
        conn.start_chunked(200, [("content-type", "text/event-stream"), ("cache-control", "no-cache"),
                                 ("x-compute-type", self.limits.compute_type),
                                 ("x-compute-characters", len(req.inputs)), ("x-accel-buffering", "no")])
        prefix = b"data:" if self.faults["legacy_sse"] else b"data: "
        try:
            best_of = req.params.get("best_of")
            if best_of is not None and best_of != 1:
                raise invalid("`best_of` != 1 is not supported when streaming tokens")
            if req.params.get("decoder_input_details"):
                raise invalid("`decoder_input_details` == true is not supported when streaming tokens")
            valid, plan = self._start(req, entry)
        except TgiError as exc:
            self._fail(entry, exc)
            conn.write_chunk(prefix + _compact(exc.payload()) + b"\n\n", last=True)
            return
        try:
            await self._stream_tokens(conn, prefix, valid, plan, entry)
        finally:
            self.in_flight -= 1

    async def _stream_tokens(self, conn, prefix: bytes, valid: Valid, plan: Plan, entry: dict) -> None:
        last = len(plan.tokens) - 1
        for index, token in enumerate(plan.tokens):
            await self._wait_token(conn, plan.delays[index])
            if conn.closed:
                self._cancelled(entry)
                return
            if plan.fault_at == index:
                self._stream_fault(conn, prefix, plan, entry)
                return
            event = {"index": index + 1, "token": token.as_dict()}
            if valid.top_n:
                event["top_tokens"] = top_tokens(token, valid.top_n)
            if index < last:
                event["generated_text"] = event["details"] = None
                conn.write_chunk(prefix + _compact(event) + b"\n\n")
                await conn.drain()
                if not plan.delays[index]:
                    await asyncio.sleep(0)  # let other streams run
                continue
            event["generated_text"] = self._generated_text(valid, plan.tokens)
            event["details"] = self._stream_details(valid, plan)
            self._finish(entry, plan, "ok")
            conn.write_chunk(prefix + _compact(event) + b"\n\n", last=True)

    def _stream_details(self, valid: Valid, plan: Plan):
        if not valid.details:
            return None
        details = {"finish_reason": plan.finish, "generated_tokens": len(plan.tokens),
                   "seed": valid.seed if valid.sampling else None}
        if self.limits.version_tuple >= (2, 3, 0):
            details["input_length"] = valid.input_length
        return details

    async def _wait_token(self, conn: Connection, delay: float) -> None:
        """Wait ``delay`` before a token, writing the ``:`` keep-alive comment after each quiet gap."""
        if delay <= 0:
            return
        deadline = conn.loop.time() + delay
        gap = self.faults["keep_alive"]
        while not conn.closed:
            now = conn.loop.time()
            due = conn.last_write + gap if gap > 0 else math.inf
            if due >= deadline:
                await conn.sleep(deadline - now)
                return
            await conn.sleep(max(due - now, 0.0))
            if not conn.closed:
                conn.write_chunk(b":\n\n")

    def _stream_fault(self, conn, prefix: bytes, plan: Plan, entry: dict) -> None:
        if plan.fault == "reset_after":
            entry["outcome"] = "reset"
            conn.reset()
        elif plan.fault == "cut_after":
            entry["outcome"] = "cut"
            conn.end_chunked()
        else:
            if plan.fault == "fail_after":
                error = TgiError(GENERATION_FAILURE, "generation")
            else:
                error = TgiError("Incomplete generation stream", "incomplete_generation_stream")
            self._fail(entry, error)
            conn.write_chunk(prefix + _compact(error.payload()) + b"\n\n", last=True)

    # ---- control routes
    async def get_requests(self, conn, request) -> None:
        conn.respond_json(200, {"requests": list(self.requests)})

    async def delete_requests(self, conn, request) -> None:
        cleared = len(self.requests)
        self.requests.clear()
        conn.respond_json(200, {"cleared": cleared})

    def state(self) -> dict:
        return {"in_flight": self.in_flight, "cancelled": self.counts["cancelled"],
                "completed": self.counts["tgi_request_success"], "requests": self.counts["requests"],
                "connections": self.connections, "script_remaining": len(self.script), "faults": dict(self.faults)}

    async def get_state(self, conn, request) -> None:
        conn.respond_json(200, self.state())

    async def get_faults(self, conn, request) -> None:
        conn.respond_json(200, {"faults": self.faults})

    async def post_faults(self, conn, request) -> None:
        try:
            changes = json.loads(request.body or b"{}")
            if not isinstance(changes, dict):
                raise ValueError("faults must be a JSON object")
            updated = dict(self.faults)
            for key, value in changes.items():
                name = key.replace("-", "_")
                if name not in FAULT_SWITCHES:
                    raise ValueError(f"unknown fault switch {key!r}; known: {sorted(FAULT_SWITCHES)}")
                updated[name] = self.cli_faults[name] if value is None else coerce_switch(name, value)
        except ValueError as exc:
            conn.respond_json(400, {"error": str(exc)})
            return
        self.faults = updated
        conn.respond_json(200, {"faults": self.faults})

    async def delete_faults(self, conn, request) -> None:
        self.faults = dict(self.cli_faults)
        conn.respond_json(200, {"faults": self.faults})

    async def get_script(self, conn, request) -> None:
        conn.respond_json(200, {"replies": [{"tokens": [t.as_dict() for t in r.tokens]} for r in self.script]})

    async def post_script(self, conn, request) -> None:
        try:
            body = json.loads(request.body or b"{}")
            replies = body.get("replies") if isinstance(body, dict) else body
            if not isinstance(replies, list):
                raise ValueError('the body must be {"replies": [...]} or a list of replies')
            parsed = [parse_reply(item, self.limits.eos_texts) for item in replies]
        except ValueError as exc:
            conn.respond_json(400, {"error": str(exc)})
            return
        self.script.extend(parsed)
        conn.respond_json(200, {"queued": len(self.script)})

    async def delete_script(self, conn, request) -> None:
        cleared = len(self.script)
        self.script.clear()
        conn.respond_json(200, {"cleared": cleared})

    async def post_reset(self, conn, request) -> None:
        self.script.clear()
        self.requests.clear()
        in_flight = self.in_flight
        self.reset_counters()
        self.in_flight = in_flight
        self.faults = dict(self.cli_faults)
        conn.respond_json(200, self.state())


def _compact(obj) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "replace")


def coerce_switch(name: str, value):
    kind = FAULT_SWITCHES[name][0]
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"{name} must be a non-negative number")
    if kind in ("count", "int"):
        if int(value) != value:
            raise ValueError(f"{name} must be an integer")
        return int(value)
    return float(value)


# ------------------------------------------------------------------------------------------------ CLI and start


def _env(name: str, default=None):
    return os.environ.get(name, default)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emulator.py", allow_abbrev=False,
        description="Emulates text-generation-launcher / TGI's router. Unknown launcher flags are ignored.")
    add = parser.add_argument
    add("--model-id", default=_env("MODEL_ID", "bigscience/bloom-560m"))
    add("--revision", default=_env("REVISION"))
    add("--hostname", default=_env("HOSTNAME", "0.0.0.0"))
    add("-p", "--port", type=int, default=int(_env("PORT", "3000")))
    add("--max-total-tokens", type=int, default=_int_env("MAX_TOTAL_TOKENS"))
    add("--max-input-tokens", type=int, default=_int_env("MAX_INPUT_TOKENS"))
    add("--max-input-length", type=int, default=_int_env("MAX_INPUT_LENGTH"))
    add("--max-batch-prefill-tokens", type=int, default=_int_env("MAX_BATCH_PREFILL_TOKENS"))
    add("--max-concurrent-requests", type=int, default=_int_env("MAX_CONCURRENT_REQUESTS", 128))
    add("--max-best-of", type=int, default=_int_env("MAX_BEST_OF", 2))
    add("--max-stop-sequences", type=int, default=_int_env("MAX_STOP_SEQUENCES", 4))
    add("--max-top-n-tokens", type=int, default=_int_env("MAX_TOP_N_TOKENS", 5))
    add("--max-client-batch-size", type=int, default=_int_env("MAX_CLIENT_BATCH_SIZE", 4))
    add("--payload-limit", type=int, default=_int_env("PAYLOAD_LIMIT", 2000000))
    add("--disable-grammar-support", action="store_true",
        default=_env("DISABLE_GRAMMAR_SUPPORT", "").lower() in ("1", "true"))
    add("--enable-prefill-logprobs", action="store_true")
    add("--num-shard", type=int, default=_int_env("NUM_SHARD"))
    add("--sharded", default=_env("SHARDED"))
    add("--quantize", default=_env("QUANTIZE"))
    add("--dtype", default=_env("DTYPE"))
    add("--trust-remote-code", action="store_true")
    add("--api-key", default=_env("API_KEY"))
    add("--json-output", action="store_true")
    # emulator switches
    add("--tgi-version", default=VERSION, help="TGI version to behave like (info fields, SSE framing, defaults)")
    add("--pipeline-tag", default=None, help="/info model_pipeline_tag; decides return_full_text on POST /")
    add("--bos-token", default="<|begin_of_text|>", help='BOS the tokenizer adds ("" for none)')
    add("--eos-token", action="append", help="special token text that is an EOS (repeatable)")
    add("--script", help="JSON file of scripted replies")
    add("--startup-delay", type=float, default=0.0, help="keep the port closed this many seconds")
    add("--crash-on-start", type=int, default=None, metavar="CODE", help="log loading lines, then exit CODE")
    for name, (kind, default) in FAULT_SWITCHES.items():
        flag = "--" + name.replace("_", "-")
        if name == "max_concurrent_requests":
            continue
        if kind == "bool":
            add(flag, action="store_true", default=None)
        else:
            add(flag, type=float if kind == "float" else int, default=None)
    return parser


def _int_env(name: str, default=None):
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def parse_args(argv):
    args, _unknown = build_parser().parse_known_args(argv)
    return args


def startup_problem(args) -> str | None:
    """Fills in launcher defaults; returns the launcher's complaint when the settings cannot work."""
    if args.max_input_tokens is not None and args.max_input_length is not None:
        return "`max_input_tokens` and `max_input_length` are the same parameter, use `max_input_tokens`"
    if args.max_input_tokens is None:
        args.max_input_tokens = args.max_input_length
    if args.max_total_tokens is None:
        args.max_total_tokens = 4096 if args.max_input_tokens is None else max(4096, args.max_input_tokens + 1)
    if args.max_input_tokens is None:
        args.max_input_tokens = args.max_total_tokens - 1
    if args.max_input_tokens >= args.max_total_tokens:
        return "`max_input_tokens` must be < `max_total_tokens`"
    if args.max_batch_prefill_tokens is None:
        args.max_batch_prefill_tokens = max(4096, args.max_input_tokens)
    return None


def initial_faults(args) -> dict:
    faults = {name: default for name, (_, default) in FAULT_SWITCHES.items()}
    for name in FAULT_SWITCHES:
        value = getattr(args, name, None)
        if value is not None:
            faults[name] = coerce_switch(name, value)
    if args.legacy_sse is None and version_tuple(args.tgi_version) < (2, 1, 0):
        faults["legacy_sse"] = True
    return faults


def load_script(path: str | None, eos_texts) -> list:
    if not path:
        return []
    with open(path, encoding="utf-8") as handle:
        body = json.load(handle)
    replies = body.get("replies") if isinstance(body, dict) else body
    if not isinstance(replies, list):
        raise ValueError('a script file holds {"replies": [...]} or a list of replies')
    return [parse_reply(item, eos_texts) for item in replies]


def _debug_args(args) -> str:
    def show(value):
        if value is None:
            return "None"
        if isinstance(value, bool):
            return "true" if value else "false"
        return f'Some("{value}")' if isinstance(value, str) else f"Some({value})"
    return (f'Args {{ model_id: "{args.model_id}", revision: {show(args.revision)}, validation_workers: 2, '
            f"sharded: {show(args.sharded)}, num_shard: {show(args.num_shard)}, quantize: {show(args.quantize)}, "
            f"dtype: {show(args.dtype)}, trust_remote_code: {show(args.trust_remote_code)}, "
            f"max_concurrent_requests: {args.max_concurrent_requests or 128}, max_best_of: {args.max_best_of}, "
            f"max_stop_sequences: {args.max_stop_sequences}, max_top_n_tokens: {args.max_top_n_tokens}, "
            f"max_input_tokens: {show(args.max_input_tokens)}, max_input_length: {show(args.max_input_length)}, "
            f"max_total_tokens: {show(args.max_total_tokens)}, "
            f"max_batch_prefill_tokens: {show(args.max_batch_prefill_tokens)}, "
            f'hostname: "{args.hostname}", port: {args.port}, json_output: {show(args.json_output)}, '
            f"disable_grammar_support: {show(args.disable_grammar_support)}, "
            f"payload_limit: {args.payload_limit} }}")


def log_loading(log: Log, args, *, delay: float) -> None:
    """The launcher's download and shard lines; with ``delay`` the shard takes that long to become ready."""
    started = time.monotonic()
    # never a real TGI's model-loading lines (attention backend, weights download): nothing is loaded here
    log(f"TGI emulator: {args.model_id} is not loaded (no weights, no GPU); answers are canned, not a model's")
    log("Starting shard", span="shard-manager", rank=0)
    next_wait = started + 10.0
    while time.monotonic() - started < delay:
        time.sleep(min(0.05, max(0.0, delay - (time.monotonic() - started))))
        if time.monotonic() >= next_wait:
            log("Waiting for shard to be ready...", span="shard-manager", rank=0)
            next_wait += 10.0


def log_crash(log: Log, args) -> None:
    log_loading(log, args, delay=0.0)
    log("Shard complete standard error output:\n\ntorch.OutOfMemoryError: CUDA out of memory. Tried to allocate "
        "1.96 GiB. GPU 0 has a total capacity of 23.68 GiB of which 1.02 GiB is free.", level="ERROR",
        span="shard-manager", rank=0)
    log("Shard 0 failed to start", level="ERROR")
    log("Shutting down shards")
    sys.stderr.write("Error: ShardCannotStart\n")
    sys.stderr.flush()


def resolve_host(hostname: str, log: Log) -> str:
    try:
        ipaddress.ip_address(hostname)
        return hostname
    except ValueError:
        log("Invalid hostname, defaulting to 0.0.0.0", level="WARN", target=ROUTER)
        return "0.0.0.0"


async def serve(app: Emulator, host: str, port: int, log: Log, args) -> int:
    loop = asyncio.get_running_loop()
    log(f"Shard ready in {max(args.startup_delay, 0.01):.2f}s", span="shard-manager", rank=0)
    log("Starting Webserver")
    log("Warming up model", target=ROUTER)
    log(f"Setting max batch total tokens to {args.max_total_tokens * 4}", target=ROUTER)
    log("Using backend V3", target=ROUTER)
    log("Connected", target=ROUTER)
    try:
        server = await loop.create_server(lambda: Connection(app), host, port, reuse_address=True, backlog=2048)
    except OSError as exc:
        log(f"Could not bind {host}:{port}: {exc}", level="ERROR", target=ROUTER)
        return 1
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    await stop.wait()
    log("signal received, starting graceful shutdown", target=ROUTER)
    server.close()
    return 0


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    log = Log(args.json_output)
    log(_debug_args(args))
    if args.crash_on_start is not None:
        log_crash(log, args)
        return args.crash_on_start
    problem = startup_problem(args)
    if problem:
        log(problem, level="ERROR")
        return 1
    limits = Limits(args)
    try:
        script = load_script(args.script, limits.eos_texts)
    except (OSError, ValueError) as exc:
        log(f"cannot load --script {args.script}: {exc}", level="ERROR")
        return 2
    faults = initial_faults(args)
    app = Emulator(limits, Tokenizer(args.bos_token), faults, script, log)
    host = resolve_host(args.hostname, log)
    try:
        log_loading(log, args, delay=args.startup_delay)
        return asyncio.run(serve(app, host, args.port, log, args))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
