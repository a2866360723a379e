"""Which prompt-template version a model speaks (STYLE 3: one function, next to the registry).

Evidence, strongest first:

1. an explicit ``override`` (checked against the registry);
2. the model's chat template: a known shipped template (by sha256), a ``{# version=... #}``
   marker, or the format's own delimiters in the template text;
3. the tokenizer's special tokens (``<|from|>``/``<|recipient|>`` -> v2, llama-3 headers ->
   the llama-3 family, told apart by ``<|eom_id|>`` (a llama-3.1 tokenizer) and model-id hints);
4. the model id (``meetkai/functionary-small-v3.2`` -> ``v3.llama3`` ...).

Nothing fits -> :class:`~functionary.errors.UnknownTemplateError` listing the known versions.
Only hashes of the templates are kept here, never their texts.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from functionary.errors import UnknownTemplateError
from functionary.templates import TEMPLATES

# sha256 of chat templates whose version is known. Compared with the template as found and with
# its ``.strip()``-ed text (a copy may gain or lose a final newline).
KNOWN_TEMPLATE_SHA256: dict[str, str] = {
    # Hugging Face tokenizer_config.json captures (see reference/chat_templates/SOURCES.md)
    "5c7c96c27cfecf3418411d1ebd0d11d691ab6bd2155bb38dacc62250fe47c3c8": "v3.llama3",  # {small,medium}-v3.2
    "b2b7d1a2ff8344254daa5bc2f59a9182994806e94fdc191fe92b4a0693d8cb68": "v3-llama3.1",  # medium-v3.1
    "79f1a8a55dc64fa4e9307cee4de2c599e5ff1a26caa074a24d80bf11f9790ff6": "v3.llama3",  # medium-v3.0 era
    "bf7b85a4ba311630a2ccaa00d7c068a3a3e404d046b4178514a7385f9f526bd1": "v2.llama3",  # small-v2.5
    "5552ad3845d421b0a04560a23917b075c0215365ede0cdb6ddc4a51f5a19c270": "v2.llama3",  # small-v2.5, early
    "44f0c6f9d6b22a9449de008bb7e7b435c85924a75d1f3d749d75aa9a61fa0d42": "v2",  # medium-v2.2
    "1122d94232eda7a954159dee6de6135d4fc8328b91032a55121f8144a3a96e63": "v2",  # small-v2.2 / v2.4
    # upstream HEAD e240e8c get_chat_template_jinja() (reference/functionary/templates.json)
    "57f0d3ccfd72a614669d24da65cb533a80ed27806515b1afd6a8cb88415cadfb": "v1",
    "9c04ef2c2574650f2926660204c94f5e2067b02df89f31c6af15a24af9ce6228": "v2",
    "6d211bee934646196bddf9d18127babbc4afbf9ce2a895ea37c2825722fcbd08": "v2.llama3",
    "185152415c44626c63bc542c2c240c3c28355a8aaa6dad5aa56ab190d2752abf": "v3.llama3",
    "418deb8843d44eb4bc13c106275d28cfd92586ea4f64a253b86975ea84089ad4": "v3-llama3.1",
    "a5343eb05bd66cf26cabe8cade5b33fc6579236bcc20f7ffb4b8dcc3b714d613": "v3-llama3.1-reasoning",
    "25a64a829ea975b2c2b185fe3213ef0dd4d39c32733f4405657a61a528b23c4f": "r1_distilled_llama",
    "149c7ecacf6db3f8da96b635752910c136830cbd995f0d3ea0a4f8c27f76b9a8": "r1_distilled_qwen",
    "d2891bfa7a796c00eaea9f84ad157b3a479fd621b68a77016f118278d4e635dc": "r1",
    "d11a4a7ff4f6acd9df90ec3eff7d16b93391d26c6d30371a1e9a87293318decc": "qwen2.5-text-only",
    "3a991e200738e9f05a67cbc350592afde36e39b186363837563f00083972930d": "cogito",
    "5a1fdc7ec2c3cc674098fd23caf03fb01b49a68786e37548efcb0aeb4c7093b7": "gemma3",
}

# Model ids (the part after the organisation) -> version, from MeetKai's model table.
KNOWN_MODELS: dict[str, str] = {
    "functionary-7b-v1": "v1",
    "functionary-7b-v1.1": "v1",
    "functionary-7b-v1.4": "v1",
    "functionary-7b-v2": "v2",
    "functionary-7b-v2.1": "v2",
    "functionary-small-v2.2": "v2",
    "functionary-medium-v2.2": "v2",
    "functionary-small-v2.4": "v2",
    "functionary-medium-v2.4": "v2",
    "functionary-small-v2.5": "v2.llama3",
    "functionary-medium-v3.0": "v3.llama3",
    "functionary-small-v3.1": "v3-llama3.1",
    "functionary-medium-v3.1": "v3-llama3.1",
    "functionary-small-v3.2": "v3.llama3",
    "functionary-medium-v3.2": "v3.llama3",
    # reasoning-first Llama-3.1 preview (2024-12), released with upstream's reasoning template
    "functionary-v4r-small-preview": "v3-llama3.1-reasoning",
}

# Base-model families upstream has a template for (weaker: checked after the functionary ids).
FAMILY_HINTS: tuple[tuple[str, str], ...] = (
    ("deepseek-r1-distill-llama", "r1_distilled_llama"),
    ("deepseek-r1-distill-qwen", "r1_distilled_qwen"),
    ("deepseek-r1", "r1"),
    ("cogito", "cogito"),
    ("gemma-3", "gemma3"),
    ("gemma3", "gemma3"),
    ("qwen2.5", "qwen2.5-text-only"),
)

_MARKER = re.compile(r"\{#-?\s*version=([^\s#]+)\s*-?#\}")
_MARKER_ALIASES = {"v2.2": "v2"}  # medium-v2.2's template starts with {#v2.2#}
_SHORT_MARKER = re.compile(r"\{#-?\s*(v\d[\w.]*)\s*-?#\}")
_LLAMA3_VERSIONS = frozenset({"v2.llama3", "v3.llama3", "v3-llama3.1", "v3-llama3.1-reasoning"})
_LLAMA31_ONLY = ("<|eom_id|>", "<|python_tag|>")


def detect_template(
    *,
    model_dir: Path | None = None,
    tokenizer_config: dict | None = None,
    model_id: str | None = None,
    override: str | None = None,
) -> str:
    """The registry version for a model; see the module docstring for the order of evidence."""
    if override is not None:
        if override in TEMPLATES:
            return override
        raise UnknownTemplateError(f"unknown prompt template version {override!r}; known versions: {_known()}")

    model_dir = Path(model_dir) if model_dir is not None else None
    if tokenizer_config is None and model_dir is not None:
        tokenizer_config = _read_json(model_dir / "tokenizer_config.json")
    tokenizer_config = tokenizer_config or {}
    hints = [h.lower() for h in (model_id, model_dir.name if model_dir is not None else None) if h]

    templates = _chat_templates(tokenizer_config, model_dir)
    for template in templates:
        version = _from_chat_template(template)
        if version is not None:
            return version

    tokens = _special_tokens(tokenizer_config, model_dir)
    version = _from_tokens(tokens, hints)
    if version is not None:
        return version

    version = _from_model_id(hints)
    if version is not None:
        return version

    seen = []
    if model_id:
        seen.append(f"model id {model_id!r}")
    if model_dir is not None:
        seen.append(f"model directory {str(model_dir)!r}")
    if templates:
        seen.append("an unrecognised chat template")
    what = ", ".join(seen) or "no model information"
    raise UnknownTemplateError(
        f"cannot tell the prompt template from {what}; choose one explicitly. Known versions: {_known()}"
    )


# ---------------------------------------------------------------------------------------------
# Evidence


def _from_chat_template(template: str) -> str | None:
    for text in (template, template.strip()):
        version = KNOWN_TEMPLATE_SHA256.get(hashlib.sha256(text.encode("utf-8")).hexdigest())
        if version is not None:
            return version
    match = _MARKER.search(template)
    if match and match.group(1) in TEMPLATES:
        version = match.group(1)
        # upstream's reasoning template kept the "version=v3-llama3.1" marker of its parent
        if version == "v3-llama3.1" and "Reasoning Mode" in template:
            return "v3-llama3.1-reasoning"
        return version
    match = _SHORT_MARKER.search(template)
    if match and _MARKER_ALIASES.get(match.group(1)) in TEMPLATES:
        return _MARKER_ALIASES[match.group(1)]
    return _from_template_text(template)


def _from_template_text(t: str) -> str | None:
    """The format's own delimiters, for edited copies of the known templates."""
    if "<|from|>" in t and "<|recipient|>" in t:
        return "v2"
    if "<|START_OF_FUNCTION_CALL|>" in t:
        return "v1"
    if "<|reserved_special_token_249|>" in t:
        return "v2.llama3"
    if "<function=" in t and "<｜Assistant｜>" in t:
        return "r1_distilled_llama"
    if "<function=" in t and "<|start_header_id|>" in t:
        return "v3-llama3.1-reasoning" if "Reasoning Mode" in t else "v3-llama3.1"
    if ">>>all" in t and "<|start_header_id|>" in t:
        return "v3.llama3"
    return None


def _from_tokens(tokens: set[str], hints: list[str]) -> str | None:
    if not tokens:
        return None
    hinted = _from_model_id(hints)
    if "<|from|>" in tokens and "<|recipient|>" in tokens:
        return "v2"
    if "<|START_OF_FUNCTION_CALL|>" in tokens:
        return "v1"
    if "<｜Assistant｜>" in tokens or "<｜User｜>" in tokens:
        if "<|im_start|>" in tokens:
            return "r1_distilled_qwen"
        if "<|start_header_id|>" in tokens or any(t in tokens for t in _LLAMA31_ONLY):
            return "r1_distilled_llama"
        return "r1"
    if "<start_of_turn>" in tokens:
        return "gemma3"
    if "<|im_start|>" in tokens:
        return hinted if hinted in ("cogito", "qwen2.5-text-only") else "qwen2.5-text-only"
    if "<|start_header_id|>" in tokens and "<|eot_id|>" in tokens:
        if hinted in _LLAMA3_VERSIONS:
            return hinted
        # upstream's own rule: a llama-3.1 tokenizer means v3-llama3.1, a llama-3 one v3.llama3
        return "v3-llama3.1" if "<|eom_id|>" in tokens else "v3.llama3"
    return None


def _from_model_id(hints: list[str]) -> str | None:
    for hint in hints:
        for name, version in KNOWN_MODELS.items():
            # "meetkai/functionary-small-v3.2-GGUF" matches, "...-v3.21" does not
            if re.search(rf"(?:^|[/_\-]){re.escape(name)}(?![0-9a-z.])", hint):
                return version
    for hint in hints:
        for needle, version in FAMILY_HINTS:
            if needle in hint:
                return version
    return None


# ---------------------------------------------------------------------------------------------
# Reading a tokenizer


def _chat_templates(config: dict, model_dir: Path | None) -> list[str]:
    found: list[str] = []
    _collect_templates(config.get("chat_template"), found)
    if model_dir is not None:
        jinja = model_dir / "chat_template.jinja"
        if jinja.is_file():
            found.append(jinja.read_text(encoding="utf-8"))
        _collect_templates((_read_json(model_dir / "chat_template.json") or {}).get("chat_template"), found)
    return found


def _collect_templates(value: Any, found: list[str]) -> None:
    if isinstance(value, str):
        found.append(value)
    elif isinstance(value, list):  # [{"name": "default", "template": ...}, ...], default first
        entries = [e for e in value if isinstance(e, dict) and isinstance(e.get("template"), str)]
        entries.sort(key=lambda e: e.get("name") != "default")
        found.extend(e["template"] for e in entries)


def _special_tokens(config: dict, model_dir: Path | None) -> set[str]:
    tokens: set[str] = set()
    for entry in (config.get("added_tokens_decoder") or {}).values():
        _add_token(entry, tokens)
    for entry in config.get("additional_special_tokens") or ():
        _add_token(entry, tokens)
    for key in ("bos_token", "eos_token", "pad_token", "unk_token"):
        _add_token(config.get(key), tokens)
    if model_dir is not None:
        for entry in (_read_json(model_dir / "tokenizer.json") or {}).get("added_tokens") or ():
            _add_token(entry, tokens)
        special_map = _read_json(model_dir / "special_tokens_map.json") or {}
        for value in special_map.values():
            for entry in value if isinstance(value, list) else (value,):
                _add_token(entry, tokens)
    return tokens


def _add_token(entry: Any, tokens: set[str]) -> None:
    if isinstance(entry, str):
        tokens.add(entry)
    elif isinstance(entry, dict) and isinstance(entry.get("content"), str):
        tokens.add(entry["content"])


def _read_json(path: Path) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _known() -> str:
    return ", ".join(sorted(TEMPLATES))
