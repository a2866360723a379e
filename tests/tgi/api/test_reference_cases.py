"""Every public output case of the reference data, driven through HTTP: the emulator replays the
case's tokens, the prompt TGI received equals ``expected_prompt``, and the official openai client
gets the expected message and finish reason, streamed and not."""

from __future__ import annotations

import pytest
from openai import OpenAI

from tests.functionary.cases import output_cases
from tests.functionary.harness import comparable
from tests.functionary.test_output_cases import expected_for

CASES = [c for c in output_cases() if c.get("error_stage") != "request"]

pytestmark = pytest.mark.reference  # every test here reads the reference corpus (tests/conftest.py)


def _reply(case: dict) -> dict:
    tokens = [{"text": t["text"], "special": t["special"]} for t in case["tokens"]]
    if case["tgi_finish_reason"] == "stop_sequence" and tokens:
        tokens[-1]["eos"] = False  # matched as a stop sequence, not as the EOS
    reply: dict = {"tokens": tokens}
    if case["tgi_finish_reason"] == "length":
        reply["finish_reason"] = "length"
    return reply


def _request(case: dict) -> dict:
    body = {k: v for k, v in case["request"].items()}
    body["model"] = "functionary"
    if case["tgi_finish_reason"] == "length":
        body["max_tokens"] = max(1, len(case["tokens"]))
    return body


def _message(choice) -> dict:
    msg = choice.message
    out = {"role": "assistant", "content": msg.content}
    if msg.tool_calls:
        for call in msg.tool_calls:
            assert call.id.startswith("call_") and call.type == "function"
        out["tool_calls"] = [{"type": "function", "function": {"name": c.function.name, "arguments": c.function.arguments}}
                             for c in msg.tool_calls]
    if msg.function_call:
        out["function_call"] = {"name": msg.function_call.name, "arguments": msg.function_call.arguments}
    return out


def _streamed(chunks) -> tuple[dict, str | None]:
    content = None
    calls: dict[int, dict] = {}
    function_call = None
    finish = None
    roles = 0
    for chunk in chunks:
        for choice in chunk.choices:
            d = choice.delta
            if d.role:
                roles += 1
            if d.content is not None:
                content = (content or "") + d.content
            for c in d.tool_calls or ():
                if c.index not in calls:
                    assert c.id and c.type == "function" and c.function.name is not None
                    calls[c.index] = {"type": "function", "function": {"name": c.function.name, "arguments": ""}}
                else:
                    assert c.id is None and c.function.name is None
                calls[c.index]["function"]["arguments"] += c.function.arguments or ""
            if d.function_call is not None:
                if function_call is None:
                    function_call = {"name": d.function_call.name, "arguments": ""}
                function_call["arguments"] += d.function_call.arguments or ""
            if choice.finish_reason:
                finish = choice.finish_reason
    assert roles == 1
    out = {"role": "assistant", "content": content or None}
    if calls:
        out["tool_calls"] = [calls[i] for i in sorted(calls)]
    if function_call:
        out["function_call"] = function_call
    return out, finish


@pytest.mark.parametrize("stream", [False, True], ids=["full", "stream"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c["id"])
def test_case_through_the_gateway(case: dict, stream: bool, gateway_for, shared_emulator) -> None:
    gateway = gateway_for(case["template_version"])
    shared_emulator.reset()
    shared_emulator.script([_reply(case)])
    client = OpenAI(base_url=gateway.base_url + "/v1", api_key="unused", max_retries=0)
    want_message, want_reason = expected_for(case)
    if stream:
        message, reason = _streamed(client.chat.completions.create(**_request(case), stream=True))
    else:
        reply = client.chat.completions.create(**_request(case))
        message, reason = _message(reply.choices[0]), reply.choices[0].finish_reason
    (received,) = shared_emulator.requests()
    assert received["body"]["inputs"] == case["expected_prompt"]
    if not stream and message["content"] == "":
        message["content"] = None
    assert comparable(message) == comparable(want_message)
    assert reason == want_reason
