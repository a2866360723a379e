"""What the OpenAI-API tests over the v3.llama3 gateway share: chat tools, the scripted end of turn, a user turn,
``words`` (text cut into scripted tokens), and the fixtures ``v32`` (the v3.llama3 gateway over the reset shared
emulator) and ``client`` (the official openai client to it). Import the fixtures into a conftest with

    from tests.support.openai_fixtures import client_fixture, v32_fixture  # noqa: F401  (fixtures)

(they need the ``gateway_for`` and ``emulator`` fixtures of tests/tgi/api/conftest.py)."""

from __future__ import annotations

import pytest
from openai import OpenAI

__all__ = ["EOT", "PRICE", "USER", "WEATHER", "client_fixture", "response_tool", "v32_fixture", "words"]

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
PRICE = {"type": "function", "function": {
    "name": "get_car_price", "description": "Price of a car", "strict": True,
    "parameters": {"type": "object", "properties": {"car_name": {"type": "string"}}, "required": ["car_name"],
                   "additionalProperties": False}}}
EOT = {"text": "<|eot_id|>", "special": True}
USER = [{"role": "user", "content": "Weather in Istanbul?"}]


def response_tool(chat_tool: dict) -> dict:
    """A chat tool (``{"type", "function": {...}}``) as the Responses API writes it (``{"type", "name", ...}``)."""
    return {"type": chat_tool["type"], **chat_tool["function"]}


def words(text: str) -> list[dict]:
    out, word = [], ""
    for ch in text:
        word += ch
        if ch in " \n{}\":,>":
            out.append({"text": word})
            word = ""
    if word:
        out.append({"text": word})
    return out


# Function names differ from the fixture names so that importing them shadows nothing.


@pytest.fixture(name="v32")
def v32_fixture(gateway_for, emulator):
    return gateway_for("v3.llama3")


@pytest.fixture(name="client")
def client_fixture(v32) -> OpenAI:
    return OpenAI(base_url=v32.base_url + "/v1", api_key="unused", max_retries=0)
