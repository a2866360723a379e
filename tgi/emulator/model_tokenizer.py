"""Model mode's tokenizer: a Hugging Face ``tokenizer.json`` read with the ``tokenizers`` package (imported
lazily, so the default mode stays standard-library only), with TGI's views of it: input lengths, ``/tokenize``,
per-token texts as ``decode_token`` makes them, ``special`` flags, and each token's real bytes for a grammar
vocabulary."""

from __future__ import annotations

import json
import os


def _byte_decoder() -> dict:
    """GPT-2's byte-level alphabet, inverted: the character a byte-level BPE token shows -> the byte it is."""
    shown = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    codes = shown[:]
    extra = 0
    for byte in range(256):
        if byte not in shown:
            shown.append(byte)
            codes.append(256 + extra)
            extra += 1
    return {chr(code): byte for byte, code in zip(shown, codes)}


def _token_text(value) -> str | None:
    """tokenizer_config's ``"eos_token"``: a string or ``{"content": ...}``."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


class ModelTokenizer:
    """The directory's tokenizer; ``count``/``encode`` have the stand-in tokenizer's shapes."""

    def __init__(self, model_dir: str) -> None:
        from tokenizers import Tokenizer  # model mode only

        self.tokenizer = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
        config_path = os.path.join(model_dir, "tokenizer_config.json")
        self.config: dict = {}
        if os.path.exists(config_path):
            with open(config_path, encoding="utf-8") as handle:
                self.config = json.load(handle)
        added = self.tokenizer.get_added_tokens_decoder()
        self.added = {token_id: token.content for token_id, token in added.items()}
        self.special_ids = frozenset(token_id for token_id, token in added.items() if token.special)
        self.vocab_size = self.tokenizer.get_vocab_size(with_added_tokens=True)
        self._counts: dict = {}

    # ids of named tokens
    def token_id(self, text: str) -> int | None:
        return self.tokenizer.token_to_id(text)

    def config_token(self, key: str) -> str | None:
        return _token_text(self.config.get(key))

    # the router's views
    def ids(self, text: str, *, specials: bool = True) -> list:
        return self.tokenizer.encode(text, add_special_tokens=specials).ids

    def count(self, text: str) -> int:
        cached = self._counts.get(text)
        if cached is None:
            cached = len(self.ids(text))
            if len(self._counts) > 4096:
                self._counts.clear()
            self._counts[text] = cached
        return cached

    def encode(self, text: str) -> list:
        """``/tokenize``: ``[{"id","text","start","stop"}]`` with byte offsets; an added BOS shows ``""`` 0..0."""
        encoding = self.tokenizer.encode(text, add_special_tokens=True)
        out = []
        for token_id, (start, stop), special in zip(encoding.ids, encoding.offsets, encoding.special_tokens_mask):
            if special and start == stop:
                out.append({"id": token_id, "text": "", "start": 0, "stop": 0})
                continue
            begin = len(text[:start].encode("utf-8"))
            out.append({"id": token_id, "text": text[start:stop], "start": begin,
                        "stop": begin + len(text[start:stop].encode("utf-8"))})
        return out

    # the model server's views
    def decode(self, ids: list) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    def token_bytes(self) -> dict:
        """Every token's bytes -> its ids (added tokens by their literal text), as outlines builds a vocabulary."""
        table = _byte_decoder()
        out: dict = {}
        for text, token_id in self.tokenizer.get_vocab(with_added_tokens=True).items():
            if token_id in self.added:
                data = self.added[token_id].encode("utf-8")
            elif all(char in table for char in text):
                data = bytes(table[char] for char in text)
            else:  # a sentencepiece-style vocabulary
                data = text.replace("\u2581", " ").encode("utf-8")
            out.setdefault(data, []).append(token_id)
        return out


class TokenTexts:
    """TGI's ``decode_token``: each new token's text is the growth of a short decoded window, ``""`` while the
    window ends inside a UTF-8 sequence (the next token then carries the whole character)."""

    def __init__(self, tokenizer: ModelTokenizer) -> None:
        self.tokenizer = tokenizer
        self.ids: list = []
        self.prefix = 0
        self.read = 0

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        before = self.tokenizer.decode(self.ids[self.prefix:self.read])
        after = self.tokenizer.decode(self.ids[self.prefix:])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.prefix, self.read = self.read, len(self.ids)
            return after[len(before):]
        return ""
