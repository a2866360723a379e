"""Replies: scripted or demo answers as tokens (``RToken``/``Reply``) and the script entry parser."""

from __future__ import annotations

from .common import REPLY_FAULTS
from .tokenizer import Tokenizer, default_logprob


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
