"""A tiny but real model directory for tests: a byte-level BPE ``tokenizer.json`` trained here in
milliseconds, with a template's special tokens added, plus ``tokenizer_config.json`` and
``config.json``. The gateway loads it exactly like a downloaded Functionary tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

_CORPUS = [
    "What's the weather like in Istanbul today? The temperature is 21 degrees and sunny.",
    '{"location": "San Francisco, CA", "unit": "celsius"} {"car_name": "Tang"} [1, 2, 3]',
    "get_current_weather get_car_price python print(2**100) def main(): return None",
    "You are a helpful assistant. Use the tools when needed. namespace functions { type",
]


def make_model_dir(path: Path, *, special_tokens: tuple[str, ...] = (), bos: str | None = "<|begin_of_text|>",
                   chat_template: str | None = None, eos: str | None = None,
                   extra_corpus: tuple[str, ...] = ()) -> Path:
    """``eos`` is written as tokenizer_config's ``eos_token``; ``extra_corpus`` adds training lines."""
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    specials = list(dict.fromkeys(([bos] if bos else []) + list(special_tokens)))
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator((_CORPUS + list(extra_corpus)) * 4, trainer=trainer)
    if bos:
        from tokenizers.processors import TemplateProcessing

        bos_id = tokenizer.token_to_id(bos)
        tokenizer.post_processor = TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, bos_id)])
    tokenizer.save(str(path / "tokenizer.json"))
    config: dict = {"bos_token": bos, "model_max_length": 8192}
    if eos is not None:
        config["eos_token"] = eos
    if chat_template is not None:
        config["chat_template"] = chat_template
    (path / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    (path / "config.json").write_text(json.dumps({"model_type": "llama", "max_position_embeddings": 8192}), encoding="utf-8")
    return path
