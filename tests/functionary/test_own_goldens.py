"""The project's own prompt snapshots: one conversation (system, user, a tool call, its result, an answer,
a new question) rendered by every template version, byte for byte, without the reference corpus. (Each
version's parser is covered by its family's own tests: test_legacy_family, test_llama3_family, test_qwen_family.)

The snapshots in ``own_goldens/`` were made by this code after it matched the corpus (the ``reference``
tests); they keep every version pinned in a plain clone. After a deliberate rendering change, and with the
corpus tests green, regenerate them: ``python -m tests.functionary.test_own_goldens``."""

from __future__ import annotations

from pathlib import Path

import pytest

from functionary.openai_types import ChatCompletionRequest
from functionary.request import prepare_request
from functionary.templates import TEMPLATES, get_template

GOLDENS = Path(__file__).resolve().parent / "own_goldens"

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "description": "the city's name"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["city"]}}}]
MESSAGES = [
    {"role": "system", "content": "You answer briefly."},
    {"role": "user", "content": "Weather in Istanbul?"},
    {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
        "name": "get_weather", "arguments": '{"city": "Istanbul"}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": '{"temperature": 21}'},
    {"role": "assistant", "content": "It is 21 degrees in Istanbul."},
    {"role": "user", "content": "And in Ankara?"},
]


# v1 knows only the legacy ``functions`` / ``function_call`` shape
V1_MESSAGES = [
    *MESSAGES[:2],
    {"role": "assistant", "content": None, "function_call": {"name": "get_weather", "arguments": '{"city": "Istanbul"}'}},
    {"role": "function", "name": "get_weather", "content": '{"temperature": 21}'},
    *MESSAGES[4:],
]


def rendered(version: str) -> str:
    body = {"model": "m", "messages": MESSAGES, "tools": TOOLS}
    if version == "v1":
        body = {"model": "m", "messages": V1_MESSAGES, "functions": [t["function"] for t in TOOLS]}
    prepared = prepare_request(ChatCompletionRequest.model_validate(body))
    template = get_template(version)
    template.check(prepared)
    return template.render(prepared)


def _file(version: str) -> Path:
    return GOLDENS / f"{version}.txt"


@pytest.mark.parametrize("version", sorted(TEMPLATES))
def test_every_version_renders_its_snapshot(version: str) -> None:
    assert rendered(version) == _file(version).read_text(encoding="utf-8")


def main() -> None:
    GOLDENS.mkdir(exist_ok=True)
    for version in sorted(TEMPLATES):
        _file(version).write_text(rendered(version), encoding="utf-8")
        print("wrote", _file(version))


if __name__ == "__main__":
    main()
