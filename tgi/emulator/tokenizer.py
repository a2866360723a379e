"""The stand-in tokenizer of the default mode (see the package docstring)."""

from __future__ import annotations

import re
import zlib

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
