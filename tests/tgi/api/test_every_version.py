"""Every template version through the real gateway, without the reference corpus: the prompt TGI
receives is the version's own snapshot (tests/functionary/own_goldens), and the model's answer, written
the way that version writes it, reaches the official openai client as text, streamed and not."""

from __future__ import annotations

import pytest
from openai import OpenAI

from functionary.templates import TEMPLATES
from tests.functionary.test_own_goldens import MESSAGES, TOOLS, V1_MESSAGES, rendered

ANSWER = "It is 18 degrees in Ankara."
# how each version's model opens a plain text answer after the generation prompt
OPENING = {"v2": "all\n<|content|>", "v3.llama3": "all\n"}


@pytest.mark.parametrize("stream", [False, True], ids=["full", "stream"])
@pytest.mark.parametrize("version", sorted(TEMPLATES))
def test_version_through_the_gateway(version: str, stream: bool, gateway_for, shared_emulator) -> None:
    gateway = gateway_for(version)
    shared_emulator.reset()
    shared_emulator.script([{"tokens": [{"text": OPENING.get(version, "")}, {"text": ANSWER}], "finish_reason": "eos_token"}])
    body: dict = {"model": "functionary", "messages": MESSAGES, "tools": TOOLS}
    if version == "v1":
        body = {"model": "functionary", "messages": V1_MESSAGES, "functions": [t["function"] for t in TOOLS]}
    client = OpenAI(base_url=gateway.base_url + "/v1", api_key="unused", max_retries=0)
    if stream:
        chunks = list(client.chat.completions.create(**body, stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        assert finish == ["stop"]
    else:
        reply = client.chat.completions.create(**body)
        text = reply.choices[0].message.content
        assert reply.choices[0].finish_reason == "stop" and not reply.choices[0].message.tool_calls
    assert text == ANSWER
    (received,) = shared_emulator.requests()
    assert received["body"]["inputs"] == rendered(version)
