"""How many prompt bytes one token can cover at most, so that a hopeless prompt is refused from its size alone.

Every vocabulary entry is written in a form at least as long, in UTF-8, as the input it covers: a byte-level BPE
maps each input byte to one character of one or two UTF-8 bytes (``Ġ`` for a space), SentencePiece writes a space
as ``▁`` (3 bytes) and a byte-fallback token as ``<0x0A>``, WordPiece adds ``##``; an added (special) token matches
its own text. So ``bytes(prompt) / max(bytes(entry))`` is a lower bound of the token count. A normalizer can make
the text shorter before the model sees it (NFC joins Hangul jamo, three characters of 3 bytes, into one of 3;
NFKC folds wide forms): with any normalizer the bound is divided by 4 more, which covers them.
"""

from __future__ import annotations


def max_bytes_per_token(tokenizer) -> int | None:
    """For a ``tokenizers.Tokenizer``; None when its vocabulary is empty."""
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    if not vocab:
        return None
    longest = max(len(entry.encode("utf-8", "surrogatepass")) for entry in vocab)
    return longest * (4 if tokenizer.normalizer is not None else 1)
