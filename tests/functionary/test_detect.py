"""Template detection from an override, a chat template, special tokens or a model id, with
tokenizer directories written to tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from functionary.detect import detect_template
from functionary.errors import UnknownTemplateError
from functionary.templates import TEMPLATES
from tests.functionary.cases import REFERENCE

CHAT_TEMPLATES = REFERENCE.parent / "chat_templates"

LLAMA3 = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
LLAMA31 = LLAMA3 + ["<|eom_id|>", "<|python_tag|>"]


def tokenizer_dir(root: Path, name: str, *, config: dict | None = None, added: list[str] | None = None) -> Path:
    path = root / name
    path.mkdir(parents=True)
    (path / "tokenizer_config.json").write_text(json.dumps(config or {}), encoding="utf-8")
    if added is not None:
        tokens = [{"id": 100 + i, "content": t, "special": True} for i, t in enumerate(added)]
        (path / "tokenizer.json").write_text(json.dumps({"added_tokens": tokens}), encoding="utf-8")
    return path


def shipped(name: str) -> str:
    return (CHAT_TEMPLATES / name).read_text(encoding="utf-8")


# ---------------------------------------------------------------------------------------------


def test_override_wins_and_is_checked() -> None:
    assert detect_template(override="v3.llama3", model_id="meetkai/functionary-medium-v3.1") == "v3.llama3"
    with pytest.raises(UnknownTemplateError) as info:
        detect_template(override="v9")
    assert "'v9'" in info.value.message
    for version in TEMPLATES:
        assert version in info.value.message


@pytest.mark.reference
@pytest.mark.parametrize(
    "file,version",
    [
        ("llama.cpp__meetkai-functionary-medium-v3.2.jinja", "v3.llama3"),
        ("llama.cpp__meetkai-functionary-medium-v3.1.jinja", "v3-llama3.1"),
        ("huggingface.js__meetkai-functionary-medium-v2.2.chat_template.jinja", "v2"),
        ("node-llama-cpp__functionary-v2.chat_template.jinja", "v2"),
        ("node-llama-cpp__functionary-v2.llama3-rolebug.chat_template.jinja", "v2.llama3"),
        ("node-llama-cpp__functionary-v3.0-rolebug.chat_template.jinja", "v3.llama3"),
        ("openvino.genai__meetkai-functionary-small-v2.5.chat_template.jinja", "v2.llama3"),
    ],
)
def test_shipped_chat_templates(file: str, version: str) -> None:
    # the template decides even against a misleading model id
    assert detect_template(tokenizer_config={"chat_template": shipped(file)}, model_id="org/other-model") == version


@pytest.mark.reference
def test_small_v32_capture_with_a_final_newline() -> None:
    text = shipped("ochafik-llama.cpp__functionary-small-v3.2.jinja").split("\n", 1)[1]  # drop the copier's comment
    assert text.endswith("\n")
    assert detect_template(tokenizer_config={"chat_template": text}) == "v3.llama3"


@pytest.mark.reference
def test_openvino_tokenizer_config_subset() -> None:
    config = json.loads(shipped("openvino.genai__meetkai-functionary-small-v2.5.tokenizer_config_subset.json"))
    assert detect_template(tokenizer_config=config) == "v2.llama3"


@pytest.mark.parametrize(
    "template,version",
    [
        ("{# version=r1_distilled_llama #}{{ messages }}", "r1_distilled_llama"),
        ("{# version=v3-llama3.1 #}{{ 'Reasoning Mode: On' }}", "v3-llama3.1-reasoning"),
        ("{#v2.2#}\n{{ messages }}", "v2"),
        # an edited copy: recognised by its delimiters
        ("{{ '<|start_header_id|>' + role }}{{ '>>>all\\n' + content }} edited", "v3.llama3"),
        ("{{ '<|start_header_id|>' }}{{ '<function=' + name + '>' }} edited", "v3-llama3.1"),
        ("{{ '<｜Assistant｜>' }}{{ '<function=' + name + '>' }} edited", "r1_distilled_llama"),
    ],
)
def test_chat_template_markers_and_delimiters(template: str, version: str) -> None:
    assert detect_template(tokenizer_config={"chat_template": template}) == version


def test_unknown_marker_falls_through_to_other_evidence() -> None:
    config = {"chat_template": "{# version=v3.llava_llama #}{{ x }}"}
    assert detect_template(tokenizer_config=config, model_id="meetkai/functionary-small-v3.1") == "v3-llama3.1"


# small templates recognised by their delimiters (the shipped ones are in the reference corpus)
V32_LIKE = "{{ '<|start_header_id|>' + role }}{{ '>>>all\\n' + content }}"
V31_LIKE = "{{ '<|start_header_id|>' }}{{ '<function=' + name + '>' }}"


def test_chat_template_list_and_separate_files(tmp_path: Path) -> None:
    config = {"chat_template": [{"name": "tool_use", "template": "x"}, {"name": "default", "template": V31_LIKE}]}
    assert detect_template(tokenizer_config=config) == "v3-llama3.1"
    path = tokenizer_dir(tmp_path, "m1")
    (path / "chat_template.jinja").write_text(V32_LIKE, encoding="utf-8")
    assert detect_template(model_dir=path) == "v3.llama3"
    path = tokenizer_dir(tmp_path, "m2")
    (path / "chat_template.json").write_text(json.dumps({"chat_template": V31_LIKE}), encoding="utf-8")
    assert detect_template(model_dir=path) == "v3-llama3.1"


@pytest.mark.parametrize(
    "name,added,version",
    [
        ("some-mistral-finetune", ["<s>", "</s>", "<|from|>", "<|recipient|>", "<|content|>", "<|stop|>"], "v2"),
        ("some-llama", LLAMA31, "v3-llama3.1"),  # upstream's rule for a llama-3.1 tokenizer
        ("some-llama", LLAMA3, "v3.llama3"),
        ("functionary-small-v3.2", LLAMA31, "v3.llama3"),  # the directory name is a hint
        ("functionary-small-v2.5", LLAMA3, "v2.llama3"),
        ("functionary-v4r-small-preview", LLAMA31, "v3-llama3.1-reasoning"),
        ("distill", ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>", "<|eom_id|>", "<|python_tag|>"], "r1_distilled_llama"),
        ("distill", ["<｜begin▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>", "<|im_start|>", "<|im_end|>"], "r1_distilled_qwen"),
        ("v3", ["<｜begin▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>", "<｜tool▁calls▁begin｜>"], "r1"),
        ("qwen", ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<tool_call>"], "qwen2.5-text-only"),
        ("deepcogito-cogito-v1", ["<|im_start|>", "<|im_end|>", "<|endoftext|>"], "cogito"),
        ("gemma", ["<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>"], "gemma3"),
    ],
)
def test_special_tokens(tmp_path: Path, name: str, added: list[str], version: str) -> None:
    assert detect_template(model_dir=tokenizer_dir(tmp_path, name, added=added)) == version


def test_special_tokens_from_tokenizer_config(tmp_path: Path) -> None:
    config = {"added_tokens_decoder": {str(i): {"content": t, "special": True} for i, t in enumerate(LLAMA31)}}
    assert detect_template(tokenizer_config=config, model_id="meetkai/functionary-medium-v3.2") == "v3.llama3"
    path = tokenizer_dir(tmp_path, "m", config=config)
    assert detect_template(model_dir=path) == "v3-llama3.1"


@pytest.mark.parametrize(
    "model_id,version",
    [
        ("meetkai/functionary-small-v2.2", "v2"),
        ("meetkai/functionary-medium-v2.4", "v2"),
        ("meetkai/functionary-7b-v2.1", "v2"),
        ("meetkai/functionary-7b-v1.4", "v1"),
        ("meetkai/functionary-small-v2.5", "v2.llama3"),
        ("meetkai/functionary-medium-v3.0", "v3.llama3"),
        ("meetkai/functionary-small-v3.1", "v3-llama3.1"),
        ("meetkai/functionary-medium-v3.1", "v3-llama3.1"),
        ("meetkai/functionary-small-v3.2", "v3.llama3"),
        ("meetkai/functionary-medium-v3.2", "v3.llama3"),
        ("meetkai/functionary-small-v3.2-GGUF", "v3.llama3"),
        ("/models/functionary-small-v3.1", "v3-llama3.1"),
        ("deepseek-ai/DeepSeek-R1-Distill-Llama-8B", "r1_distilled_llama"),
        ("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "r1_distilled_qwen"),
    ],
)
def test_model_ids(model_id: str, version: str) -> None:
    assert detect_template(model_id=model_id) == version


@pytest.mark.parametrize("model_id", ["meetkai/functionary-small-v3.21", "org/mystery-model"])
def test_unknown_model(tmp_path: Path, model_id: str) -> None:
    with pytest.raises(UnknownTemplateError) as info:
        detect_template(model_id=model_id, model_dir=tokenizer_dir(tmp_path, "empty"))
    assert "v3.llama3" in info.value.message and "r1_distilled_llama" in info.value.message


def test_nothing_at_all() -> None:
    with pytest.raises(UnknownTemplateError):
        detect_template()
