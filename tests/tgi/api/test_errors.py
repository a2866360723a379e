"""Every error mapping, in OpenAI's shape, through the real gateway and emulator."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.support.gateway_proc import start_gateway

CHAT = "/v1/chat/completions"
USER = [{"role": "user", "content": "hi"}]
EOT = {"text": "<|eot_id|>", "special": True}


@pytest.fixture
def gw(gateway_for, emulator):
    return gateway_for("v3.llama3")


def post(gw, body, **kw) -> httpx.Response:
    return httpx.post(gw.base_url + CHAT, json=body, timeout=30, **kw)


def assert_openai_error(response: httpx.Response, status: int, *, param=..., code=...) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if param is not ...:
        assert error["param"] == param
    if code is not ...:
        assert error["code"] == code
    return error


def test_invalid_body_names_the_field(gw) -> None:
    assert_openai_error(post(gw, {"messages": "nope"}), 400, param="messages")
    assert_openai_error(post(gw, {"messages": USER, "temperature": "hot"}), 400, param="temperature")
    assert_openai_error(post(gw, {"messages": [{"role": "wizard", "content": "x"}]}), 400)
    r = httpx.post(gw.base_url + CHAT, content=b"{not json", headers={"content-type": "application/json"})
    assert_openai_error(r, 400, param="body")
    r = httpx.post(gw.base_url + CHAT, content=b'{"messages": "\xff"}', headers={"content-type": "application/json"})
    assert_openai_error(r, 400)
    assert_openai_error(post(gw, {"messages": USER, "tool_choice": {"type": "function", "function": {"name": "x"}}}), 400,
                        param="tool_choice")


def test_unknown_model_is_404(gw) -> None:
    assert_openai_error(post(gw, {"model": "gpt-4o", "messages": USER}), 404, code="model_not_found")


def test_context_length_checked_before_tgi(gw, emulator) -> None:
    long = [{"role": "user", "content": "word " * 70000}]
    assert_openai_error(post(gw, {"messages": long}), 400, code="context_length_exceeded")
    assert_openai_error(post(gw, {"messages": USER, "max_tokens": 1000000}), 400, code="context_length_exceeded")
    assert emulator.requests() == []


def test_tgi_validation_is_400(gw, emulator) -> None:
    # TGI's own validation refusal (the gateway checks top_logprobs itself now: tests/tgi/api/test_contract.py)
    emulator.script([{"error": {"error": "Input validation error: `top_n_tokens` must be >= 0 and <= 5. Given: 9",
                                "error_type": "validation"}}])
    assert_openai_error(post(gw, {"messages": USER}), 400)


def test_tgi_overloaded_is_429(gw, emulator) -> None:
    emulator.faults(overload=True)
    assert_openai_error(post(gw, {"messages": USER}), 429)
    assert_openai_error(post(gw, {"messages": USER, "stream": True}), 429)


def test_generation_error_before_first_token_is_502(gw, emulator) -> None:
    emulator.script([{"tokens": [{"text": "all"}, {"text": "\n"}], "fail_after": 0}])
    assert_openai_error(post(gw, {"messages": USER}), 502)


def test_error_after_first_token_is_one_event_then_done(gw, emulator) -> None:
    emulator.script([{"tokens": [{"text": "all"}, {"text": "\n"}, {"text": "Hello"}, {"text": " world"}, EOT],
                      "fail_after": 3}])
    with httpx.stream("POST", gw.base_url + CHAT, json={"messages": USER, "stream": True}, timeout=30) as r:
        assert r.status_code == 200
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    error = json.loads(lines[-2].removeprefix("data: "))["error"]
    assert error["type"] == "server_error" and "Request failed during generation" in error["message"]


def test_stream_cut_without_final_event(gw, emulator) -> None:
    emulator.script([{"tokens": [{"text": "all"}, {"text": "\n"}, {"text": "Hello"}, EOT], "incomplete_after": 3}])
    assert_openai_error(post(gw, {"messages": USER}), 502)


def test_unreachable_tgi_is_503_with_retry_after(model_dirs, start_emulator) -> None:
    tgi = start_emulator()
    args = ["--model", str(model_dirs("v3.llama3")), "--endpoint", tgi.base_url, "--prompt-template", "v3.llama3",
            "--no-launch"]
    with start_gateway(args) as gw:
        tgi.stop()
        r = post(gw, {"messages": USER})
        assert_openai_error(r, 503)
        assert r.headers.get("retry-after")


def test_disconnect_cancels_tgi_request(gw, emulator) -> None:
    emulator.faults(token_delay=0.2)
    emulator.script([{"tokens": [{"text": "all"}, {"text": "\n"}] + [{"text": " word"}] * 50 + [EOT]}])
    with httpx.stream("POST", gw.base_url + CHAT, json={"messages": USER, "stream": True}, timeout=30) as r:
        for line in r.iter_lines():
            if "word" in line:
                break
    state = emulator.wait_state(lambda s: s["cancelled"] >= 1, timeout=3)
    assert state["cancelled"] == 1 and state["in_flight"] == 0


def test_request_id_is_returned(gw, emulator) -> None:
    emulator.script([{"tokens": [{"text": "all"}, {"text": "\n"}, {"text": "ok"}, EOT]}])
    r = post(gw, {"messages": USER}, headers={"x-request-id": "abc-123"})
    assert r.status_code == 200 and r.headers["x-request-id"] == "abc-123"
    r = httpx.get(gw.base_url + "/nope")
    assert_openai_error(r, 404)
    assert r.headers["x-request-id"]


def test_unsupported_fields_are_refused_not_dropped(gw) -> None:
    assert_openai_error(post(gw, {"messages": USER, "presence_penalty": 0.5}), 400, param="presence_penalty")
    assert_openai_error(post(gw, {"messages": USER, "logit_bias": {"1": 5}}), 400, param="logit_bias")
    image = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}]
    assert_openai_error(post(gw, {"messages": image}), 400)
