"""Model directories for the emulator's model mode (``--model-dir``): the tiny trained BPE tokenizer of
``tests/model_fixture.py`` with a template family's special tokens, plus ``emulator_model.json`` (see
``tgi/emulator/model.py``). Usage::

    from tests.tgi.emulator_model import make_emulator_model_dir, rule
    from tests.tgi.emulator_proc import start_model_emulator

    model_dir = make_emulator_model_dir(tmp_path / "m", "v3-llama3.1", rules=[
        rule("<|start_header_id|>assistant<|end_header_id|>\\n\\n",
             '<function=get_weather>{"city": "Istanbul"}</function><|eom_id|>')])
    with start_model_emulator(model_dir) as tgi:
        tgi.model_rules([rule("Say hi", "Hello there!<|eot_id|>")])  # replace the rules at run time
        ... POST tgi.base_url + "/generate" ...
"""

from __future__ import annotations

import json
from pathlib import Path

from functionary.templates import get_template
from tests.model_fixture import make_model_dir

# Lines that teach the tiny tokenizer the markup of tool calls and JSON (keys, quotes, braces).
TOOL_CORPUS = (
    '<function=get_weather>{"city": "Istanbul"}</function> <function=get_time>{"timezone": "UTC"}</function>',
    '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius", "days": 3, "ok": true}}',
    'get_weather\n{"city": "Istanbul"} >>>all\nHello there! How can I help you today? {"answer": null}',
    '[{"a": 1}, {"b": [2, 3]}, {"c": "d"}] {"query": "weather today", "limit": 10, "flag": false}',
)
_BOS_CHOICES = ("<|begin_of_text|>", "<｜begin▁of▁sentence｜>", "<bos>")


def rule(after: str, write: str) -> dict:
    """One model rule: after text ending with ``after``, the model writes ``write``."""
    return {"after": after, "write": write}


def make_emulator_model_dir(path: Path, version: str | None = None, *, rules: list | tuple = (),
                            special_tokens: tuple[str, ...] = (), eos_token: str | None = None,
                            eos_tokens: tuple[str, ...] = (), bos: str | None = None) -> Path:
    """A model directory for ``--model-dir``. ``version`` (a Functionary template version) adds its special,
    stop and EOS tokens; ``eos_token`` defaults to the template's first EOS token (the only one that stops, as
    TGI on CPU); ``eos_tokens`` adds tokens that stop too (TGI's GPU path with generation_config's list)."""
    specials = list(special_tokens)
    if version is not None:
        template = get_template(version)
        specials += [*template.special_tokens, *template.stop_tokens, *template.eos_tokens]
        eos_token = eos_token or template.eos_tokens[0]
    specials = list(dict.fromkeys(specials))
    if bos is None:
        bos = next((token for token in _BOS_CHOICES if token in specials), "<s>" if "</s>" in specials else None)
    eos_token = eos_token or "<|eot_id|>"
    specials = [token for token in dict.fromkeys([eos_token, *eos_tokens, *specials]) if token != bos]
    make_model_dir(path, special_tokens=tuple(specials), bos=bos, eos=eos_token, extra_corpus=TOOL_CORPUS)
    body = {"rules": list(rules), "eos_token": eos_token, "eos_tokens": list(eos_tokens)}
    (path / "emulator_model.json").write_text(json.dumps(body, ensure_ascii=False, indent=1), encoding="utf-8")
    return path
