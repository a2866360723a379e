"""TGI's request validation and the launcher limits it checks against."""

from __future__ import annotations

import json
import os
import random
import re

from .bodies import GenRequest, invalid
from .common import DEFAULT_EOS_TOKENS, GENERATION_CHUNK
from .tokenizer import Tokenizer


class Valid:
    """A request that passed TGI's validation."""

    __slots__ = ("inputs", "input_length", "limit", "stops", "seed", "sampling", "top_n", "details",
                 "return_full_text", "best_of", "grammar", "prefill_details")


def version_tuple(text: str) -> tuple:
    parts = re.findall(r"\d+", text)[:3]
    return tuple(int(part) for part in parts) + (0,) * (3 - len(parts))


_FROM_ARGS = (
    "max_best_of", "max_stop_sequences", "max_top_n_tokens", "max_client_batch_size", "max_total_tokens",
    "max_input_tokens", "max_batch_prefill_tokens", "disable_grammar_support", "enable_prefill_logprobs",
    "payload_limit", "api_key", "pipeline_tag",
)


class Limits:
    """Launcher settings fixed at start."""

    def __init__(self, args) -> None:
        self.model_id = args.model_id
        self.version = args.tgi_version
        self.version_tuple = version_tuple(args.tgi_version)
        for name in _FROM_ARGS:  # the launcher flags, under their own names
            setattr(self, name, getattr(args, name))
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
