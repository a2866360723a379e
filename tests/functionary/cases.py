"""Loads the reference cases (../shared/reference/functionary beside the checkout, or
$FUNCTIONARY_REFERENCE_DIR) and the documented deviations from them (deviations/*.json)."""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
REFERENCE = Path(os.environ.get("FUNCTIONARY_REFERENCE_DIR", REPO.parent / "shared" / "reference" / "functionary"))
DEVIATIONS_DIR = Path(__file__).resolve().parent / "deviations"


def reference_available() -> bool:
    """Whether the reference corpus is there (CI always has it; a plain clone does not, and the tests
    marked ``reference`` are then skipped: see tests/conftest.py)."""
    return (REFERENCE / "public_prompt_cases.jsonl").is_file()


@lru_cache(maxsize=None)
def _load(name: str) -> tuple[dict, ...]:
    if not reference_available():
        return ()  # collection still works; every test over these cases carries the ``reference`` mark
    with open(REFERENCE / name, encoding="utf-8") as f:
        return tuple(json.loads(line) for line in f if line.strip())


def prompt_cases() -> tuple[dict, ...]:
    return _load("public_prompt_cases.jsonl")


def output_cases() -> tuple[dict, ...]:
    return _load("public_output_cases.jsonl")


@lru_cache(maxsize=None)
def deviations() -> dict[str, dict]:
    """case id -> {"why": ..., and the fields we answer instead: "message", "finish_reason",
    "render": true (we render where upstream raised)}"""
    out: dict[str, dict] = {}
    for path in sorted(DEVIATIONS_DIR.glob("*.json")):
        out.update(json.loads(path.read_text(encoding="utf-8")))
    return out


def raw_text(case: dict) -> str:
    """The model's text after the prompt, as the gateway rebuilds it from TGI's tokens: every
    token's text (special ones included) except a final stop token."""
    tokens = case["tokens"]
    if case.get("stop_token") is not None and tokens and tokens[-1]["text"] == case["stop_token"]:
        tokens = tokens[:-1]
    return "".join(t["text"] for t in tokens)


def token_texts(case: dict) -> list[str]:
    tokens = case["tokens"]
    if case.get("stop_token") is not None and tokens and tokens[-1]["text"] == case["stop_token"]:
        tokens = tokens[:-1]
    return [t["text"] for t in tokens]
