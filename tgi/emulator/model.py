"""Model mode (``--model-dir DIR``): a deterministic greedy "model" over a real tokenizer.

DIR holds a Hugging Face ``tokenizer.json`` (+ ``tokenizer_config.json``) and ``emulator_model.json``::

    {"rules": [{"after": "<|start_header_id|>assistant<|end_header_id|>\\n\\n",
                "write": "<function=get_weather>{\\"city\\": \\"Istanbul\\"}</function><|eom_id|>"},
               {"after": "Say hi", "write": "Hello there!<|eot_id|>"}],
     "eos_token": "<|eot_id|>",   "eos_tokens": ["<|eom_id|>"],   "logprob": -0.1}

The model reads the prompt plus what it has written so far (token texts, special tokens' text included). A rule
is *in progress* when that text ends with ``after`` followed by a proper prefix of ``write`` (the earliest such
``after`` in the last ``len(after) + len(write)`` characters counts, so a finished ``write`` is not started
again). The in-progress rule with the longest ``after`` wins (ties: the first listed) and the model wants the
next token of ``write`` as the tokenizer splits it (at a point between ``write``'s own tokens; elsewhere the first
token of the rest, tokenized alone); with no rule in progress it wants EOS. Every wanted token has logprob
``logprob`` (default -0.1).

EOS: the token ``eos_token`` names (default: tokenizer_config's ``eos_token``), the only one that stops
generation, as TGI does on CPU (§14); ``eos_tokens`` adds tokens that stop too (``generation_config.json``'s
list, honoured on TGI's GPU path). Stopping then follows TGI: ``max_new_tokens``, EOS, stop sequences (see
``plan.py``).

Under a ``grammar`` the wanted token is taken when the mask allows it (and it does not lead where the grammar
cannot be finished); otherwise, or when the state is final and the model wants something not allowed, the
guide's fallback (``model_grammar.py``) picks the token: EOS when the state is final, else the allowed token
closest to a final state. A forced token has logprob 0.0, as TGI reports after masking. The vocabulary of a
grammar is every token but EOS by its real bytes (byte-level BPE undone), added tokens (``<|eom_id|>``...) by
their literal text, as outlines builds it.
"""

from __future__ import annotations

import json
import os

from .model_grammar import Guides
from .model_tokenizer import ModelTokenizer, TokenTexts
from .replies import RToken

MODEL_FILE = "emulator_model.json"


class Rule:
    __slots__ = ("after", "write", "ids", "ends")

    def __init__(self, after: str, write: str, tokenizer: ModelTokenizer) -> None:
        self.after, self.write = after, write
        encoding = tokenizer.tokenizer.encode(write, add_special_tokens=False)
        self.ids = list(encoding.ids)
        self.ends = {0: 0}  # character offset in ``write`` -> index of the token that starts there
        for index, (_, stop) in enumerate(encoding.offsets[:-1]):
            self.ends.setdefault(stop, index + 1)

    def progress(self, context: str) -> int | None:
        """How many characters of ``write`` the context already ends with after ``after`` (None: not in
        progress, or finished)."""
        window = context[max(len(context) - len(self.after) - len(self.write), 0):]
        for start in range(len(window) - len(self.after) + 1):
            if window.startswith(self.after, start):
                done = window[start + len(self.after):]
                if self.write.startswith(done):
                    return len(done) if len(done) < len(self.write) else None
        return None


def _parse_rules(body: dict, tokenizer: ModelTokenizer) -> list:
    rules = body.get("rules", [])
    if not isinstance(rules, list):
        raise ValueError('"rules" must be a list of {"after": str, "write": str}')
    out = []
    for index, rule in enumerate(rules):
        if not (isinstance(rule, dict) and isinstance(rule.get("after", ""), str)
                and isinstance(rule.get("write"), str)):
            raise ValueError(f'rules[{index}] must be {{"after": str, "write": str}}')
        out.append(Rule(rule.get("after", ""), rule["write"], tokenizer))
    return out


class Model:
    """The tokenizer, the rules, the EOS ids and the grammar guides of one model directory."""

    def __init__(self, model_dir: str) -> None:
        self.tokenizer = ModelTokenizer(model_dir)
        path = os.path.join(model_dir, MODEL_FILE)
        body: dict = {}
        if os.path.exists(path):
            with open(path, encoding="utf-8") as handle:
                body = json.load(handle)
        if not isinstance(body, dict):
            raise ValueError(f"{MODEL_FILE} must hold a JSON object")
        self.rules = self.file_rules = _parse_rules(body, self.tokenizer)
        self.logprob = float(body.get("logprob", -0.1))
        eos = body.get("eos_token") or self.tokenizer.config_token("eos_token")
        self.eos_id = self.tokenizer.token_id(eos) if isinstance(eos, str) else None
        if self.eos_id is None:
            raise ValueError(f"no EOS token: set eos_token in tokenizer_config.json or {MODEL_FILE}")
        extra = [self.tokenizer.token_id(text) for text in body.get("eos_tokens", [])]
        if None in extra:
            raise ValueError(f"{MODEL_FILE}: an eos_tokens entry is not a token of the tokenizer")
        self.eos_ids = frozenset([self.eos_id, *extra])
        self.guides = Guides(self.tokenizer.token_bytes(), self.eos_id)

    def set_rules(self, body) -> int:
        """``POST /emulator/model``: ``{"rules": [...]}`` replaces the rules (ValueError when malformed)."""
        if not isinstance(body, dict):
            raise ValueError('the body must be {"rules": [...]}')
        self.rules = _parse_rules(body, self.tokenizer)
        return len(self.rules)

    def describe(self) -> dict:
        return {"rules": [{"after": rule.after, "write": rule.write} for rule in self.rules],
                "eos_token_id": self.eos_id, "eos_token_ids": sorted(self.eos_ids), "logprob": self.logprob}

    def wanted(self, context: str) -> int:
        """The token the model wants after ``context`` (the end of the prompt and what it wrote)."""
        best, best_done = None, 0
        for rule in self.rules:
            done = rule.progress(context)
            if done is not None and (best is None or len(rule.after) > len(best.after)):
                best, best_done = rule, done
        if best is None:
            return self.eos_id
        index = best.ends.get(best_done)
        if index is not None:
            return best.ids[index]
        rest = self.tokenizer.ids(best.write[best_done:], specials=False)
        return rest[0] if rest else self.eos_id

    def generate(self, prompt: str, grammar: dict | None, limit: int) -> list:
        """Up to ``limit`` tokens, ending at the first EOS; ``TgiError`` for a grammar TGI would refuse."""
        guide = self.guides.guide(grammar) if grammar is not None else None
        state = guide.initial if guide is not None else None
        texts = TokenTexts(self.tokenizer)
        reach = max((len(rule.after) + len(rule.write) for rule in self.rules), default=0) + 1
        context, tokens = prompt[-reach:], []
        while len(tokens) < limit:
            token_id = self.wanted(context)
            logprob = self.logprob
            if guide is not None:
                if not guide.usable(state, token_id):
                    token_id, logprob = guide.fallback(state), 0.0
                if token_id != self.eos_id:
                    state = guide.next_state(state, token_id)
            text = texts.push(token_id)
            context = (context + text)[-reach:]
            eos = token_id in self.eos_ids
            tokens.append(RToken(text, token_id in self.tokenizer.special_ids, token_id, logprob, None, eos))
            if eos:
                break
        return tokens
