"""The generation plan: where a reply is cut (TGI's stopping criteria), faults and delays; top tokens."""

from __future__ import annotations

import re

from .common import REPLY_FAULTS
from .replies import Reply, RToken
from .tokenizer import Tokenizer
from .validation import Valid


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
