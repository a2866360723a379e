"""Operations through the real gateway process and the real emulator: API keys (the official openai
client), request ids, CORS, the body limit, /metrics, structured logs, secrets never logged."""

from __future__ import annotations

import json
import logging
import re
import time

import httpx
import openai
import pytest
from openai import OpenAI

from server_tgi import settings_from_args
from tests.support.gateway_proc import start_gateway
from tgi.ops.logs import LineFormatter

CHAT = "/v1/chat/completions"
KEYS = ("key-one-Aa1Bb2Cc3", "key-two-Dd4Ee5Ff6")
ENV_KEYS = ("key-three-Gg7Hh8", "key-four-Ii9Jj0")
HF_TOKEN = "hf_NotARealTokenButSecret42"
WRONG_KEY = "sk-wrong-Kk1Ll2Mm3"
ORIGIN = "http://app.example"
BODY_LIMIT = 64 * 1024
EOT = {"text": "<|eot_id|>", "special": True}
USER = [{"role": "user", "content": "Weather in Istanbul?"}]
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}


def tokens(*texts: str) -> list[dict]:
    return [{"text": t} for t in texts]


CALL = tokens("get_weather", "\n", '{"city": ', '"Istanbul"}') + [EOT]
TEXT = tokens("Sunny", " today", ".") + [EOT]  # without tools the prompt already ends with ">>>all\n"


@pytest.fixture(scope="module")
def ops(shared_emulator, model_dirs):
    """One gateway with every operations option on, JSON logs at debug level."""
    args = ["--model", str(model_dirs("v3.llama3")), "--endpoint", shared_emulator.base_url,
            "--prompt-template", "v3.llama3", "--no-launch", "--served-model-name", "functionary",
            "--api-key", KEYS[0], "--api-key", KEYS[1], "--cors-origin", ORIGIN,
            "--max-body-bytes", str(BODY_LIMIT), "--log-format", "json", "--log-level", "debug",
            "--grammar", "off"]  # one TGI request per completion: the counts below are exact
    env = {"FUNCTIONARY_API_KEYS": f"{ENV_KEYS[0]}, {ENV_KEYS[1]}", "HF_TOKEN": HF_TOKEN}
    with start_gateway(args, env=env, wait=False) as gw:
        gw.wait_healthy()
        yield gw


@pytest.fixture
def gw(ops, emulator):
    return ops


def auth(key: str = KEYS[0]) -> dict:
    return {"authorization": f"Bearer {key}"}


def client(gw, key: str = KEYS[0]) -> OpenAI:
    return OpenAI(base_url=gw.base_url + "/v1", api_key=key, max_retries=0)


# ---------------------------------------------------------------------------------------------- API keys


def test_every_key_works_with_the_openai_client(gw, emulator) -> None:
    emulator.script([{"tokens": TEXT}] * 4)
    for key in (*KEYS, *ENV_KEYS):
        c = client(gw, key)
        assert [m.id for m in c.models.list().data] == ["functionary"]
        reply = c.chat.completions.create(model="functionary", messages=USER)
        assert reply.choices[0].message.content == "Sunny today."


def test_wrong_or_missing_key_is_an_openai_401(gw) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        client(gw, WRONG_KEY).chat.completions.create(model="functionary", messages=USER)
    assert caught.value.status_code == 401 and caught.value.code == "invalid_api_key"
    assert caught.value.type == "invalid_request_error"
    for headers in ({}, {"authorization": f"Basic {KEYS[0]}"}, auth(KEYS[0][:-1]), auth(KEYS[0] + "x"),
                    {"authorization": "Bearer"}, {"authorization": KEYS[0]}):
        for method, path in (("POST", CHAT), ("GET", "/v1/models")):
            r = httpx.request(method, gw.base_url + path, json={"messages": USER}, headers=headers)
            assert r.status_code == 401, (headers, r.text)
            error = r.json()["error"]
            assert set(error) == {"message", "type", "param", "code"} and error["code"] == "invalid_api_key"
    # the unauthenticated body is not even read: a huge one is still a 401, not a 413
    r = httpx.post(gw.base_url + CHAT, content=b"x" * (BODY_LIMIT * 2), headers={"authorization": "Bearer no"})
    assert r.status_code == 401
    # health checks and scrapes need no key
    assert httpx.get(gw.base_url + "/health").status_code == 200
    assert httpx.get(gw.base_url + "/metrics").status_code == 200


def test_settings_never_print_the_keys() -> None:
    settings = settings_from_args(["--model", "m", "--api-key", KEYS[0]])
    assert settings.api_keys == (KEYS[0],) and KEYS[0] not in repr(settings)


# ---------------------------------------------------------------------------------------------- request ids


def test_request_id_is_accepted_and_returned(gw, emulator) -> None:
    emulator.script([{"tokens": TEXT}] * 2)
    raw = client(gw).chat.completions.with_raw_response.create(
        model="functionary", messages=USER, extra_headers={"x-request-id": "trace-42.a:b/c"})
    assert raw.headers["x-request-id"] == "trace-42.a:b/c"
    with httpx.stream("POST", gw.base_url + CHAT, json={"messages": USER, "stream": True},
                      headers={**auth(), "x-request-id": "stream-1"}) as r:
        assert r.status_code == 200 and r.headers["x-request-id"] == "stream-1"
        r.read()
    for path, headers in ((CHAT, {"x-request-id": "unauth-1"}), ("/v1/nope", {**auth(), "x-request-id": "nf-1"})):
        r = httpx.post(gw.base_url + path, json={}, headers=headers)
        assert r.status_code in (401, 404) and r.headers["x-request-id"] == headers["x-request-id"]
    # an id that could break a log line, or an endless one, is replaced by a fresh one
    for bad in ("has space", "x" * 129, 'quote"d', "new\\line"):
        r = httpx.get(gw.base_url + "/v1/models", headers={**auth(), "x-request-id": bad})
        assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"])
    fresh = {httpx.get(gw.base_url + "/v1/models", headers=auth()).headers["x-request-id"] for _ in range(3)}
    assert len(fresh) == 3


# ---------------------------------------------------------------------------------------------- CORS


def test_cors_for_the_configured_origin_only(gw, emulator, gateway_for) -> None:
    preflight = {"origin": ORIGIN, "access-control-request-method": "POST",
                 "access-control-request-headers": "authorization, content-type"}
    r = httpx.options(gw.base_url + CHAT, headers=preflight)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == ORIGIN
    assert "authorization" in r.headers["access-control-allow-headers"].lower()
    emulator.script([{"tokens": TEXT}])
    r = httpx.post(gw.base_url + CHAT, json={"messages": USER}, headers={**auth(), "origin": ORIGIN})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == ORIGIN
    assert "x-request-id" in r.headers["access-control-expose-headers"].lower()
    r = httpx.post(gw.base_url + CHAT, json={"messages": USER}, headers={"origin": ORIGIN})
    assert r.status_code == 401 and r.headers["access-control-allow-origin"] == ORIGIN  # the page can read why
    r = httpx.options(gw.base_url + CHAT, headers={**preflight, "origin": "http://evil.example"})
    assert r.status_code == 400 and "access-control-allow-origin" not in r.headers
    r = httpx.get(gw.base_url + "/v1/models", headers={**auth(), "origin": "http://evil.example"})
    assert "access-control-allow-origin" not in r.headers
    # off unless asked for
    plain = gateway_for("v3.llama3")
    r = httpx.get(plain.base_url + "/v1/models", headers={"origin": ORIGIN})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


# ---------------------------------------------------------------------------------------------- body limit


def test_body_limit_is_a_clear_413(gw, emulator) -> None:
    big = [{"role": "user", "content": "word " * (BODY_LIMIT // 5)}]
    with pytest.raises(openai.APIStatusError) as caught:
        client(gw).chat.completions.create(model="functionary", messages=big)
    assert caught.value.status_code == 413 and caught.value.code == "payload_too_large"
    assert str(BODY_LIMIT) in caught.value.message

    def chunks():  # no content-length: the limit holds while reading
        yield b'{"messages": [{"role": "user", "content": "'
        for _ in range(BODY_LIMIT // 1024 + 1):
            yield b"x" * 1024
        yield b'"}]}'

    r = httpx.post(gw.base_url + CHAT, content=chunks(), headers={**auth(), "content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    assert emulator.requests() == []
    emulator.script([{"tokens": TEXT}])
    fits = json.dumps({"messages": USER}).encode()
    fits += b" " * (BODY_LIMIT - len(fits))  # exactly at the limit
    r = httpx.post(gw.base_url + CHAT, content=fits, headers={**auth(), "content-type": "application/json"})
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "Sunny today."


# ---------------------------------------------------------------------------------------------- metrics


def scrape(gw) -> dict[str, float]:
    """Parses the exposition strictly: every sample belongs to a family declared by HELP and TYPE."""
    r = httpx.get(gw.base_url + "/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    families: dict[str, str] = {}
    samples: dict[str, float] = {}
    for line in r.text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "histogram") and name not in families
            families[name] = kind
            continue
        match = re.fullmatch(r'([a-z_]+)(\{(?:[a-z_]+="(?:[^"\\]|\\.)*",?)*\})? (\S+)', line)
        assert match, line
        name = match.group(1)
        base = re.sub(r"_(bucket|sum|count)$", "", name) if name not in families else name
        assert base in families, line
        samples[name + (match.group(2) or "")] = float(match.group(3))
    return samples


def delta(before: dict, after: dict, key: str) -> float:
    return after.get(key, 0.0) - before.get(key, 0.0)


def test_metrics_count_what_happened(gw, emulator) -> None:
    before = scrape(gw)
    c = client(gw)
    emulator.script([{"tokens": CALL}, {"tokens": CALL}, {"tokens": TEXT}])
    reply = c.chat.completions.create(model="functionary", messages=USER, tools=[WEATHER])
    used = [reply.usage]
    for script_tools in ([WEATHER], None):
        extra = {"tools": script_tools} if script_tools else {}
        chunks = list(c.chat.completions.create(model="functionary", messages=USER, stream=True,
                                                stream_options={"include_usage": True}, **extra))
        used.append(chunks[-1].usage)
    with pytest.raises(openai.BadRequestError):
        c.chat.completions.create(model="functionary", messages=USER, temperature="hot")
    with pytest.raises(openai.NotFoundError):
        c.chat.completions.create(model="gpt-4o", messages=USER)
    with pytest.raises(openai.AuthenticationError):
        client(gw, WRONG_KEY).models.list()
    after = scrape(gw)

    chat = 'route="/v1/chat/completions"'
    invalid = 'error_type="invalid_request_error"'
    assert delta(before, after, f'functionary_requests_total{{{chat},status="200",error_type="none"}}') == 3
    assert delta(before, after, f'functionary_requests_total{{{chat},status="400",{invalid}}}') == 1
    assert delta(before, after, f'functionary_requests_total{{{chat},status="404",{invalid}}}') == 1
    assert delta(before, after,
                 'functionary_requests_total{route="/v1/models",status="401",error_type="invalid_request_error"}') == 1
    assert delta(before, after, "functionary_tool_calls_total") == 2
    assert delta(before, after, "functionary_prompt_tokens_total") == sum(u.prompt_tokens for u in used)
    assert delta(before, after, "functionary_completion_tokens_total") == sum(u.completion_tokens for u in used)
    assert delta(before, after, "functionary_request_duration_seconds_count") == 3
    assert delta(before, after, "functionary_time_to_first_token_seconds_count") == 3
    assert delta(before, after, 'functionary_time_to_first_token_seconds_bucket{le="+Inf"}') == 3
    assert after["functionary_requests_in_flight"] == 0
    endpoint = f'{{endpoint="{emulator.base_url}"}}'
    assert after["functionary_endpoint_healthy" + endpoint] == 1
    assert after["functionary_endpoint_in_flight" + endpoint] == 0
    assert delta(before, after, "functionary_endpoint_attempts_total" + endpoint) == 3


def test_metrics_see_errors_inside_a_stream_and_disconnects(gw, emulator) -> None:
    before = scrape(gw)
    emulator.script([{"tokens": TEXT, "fail_after": 3},
                     {"tokens": tokens("all", "\n") + tokens(" word") * 40 + [EOT], "delay_s": 0.05}])
    with pytest.raises(openai.APIError):
        for _ in client(gw).chat.completions.create(model="functionary", messages=USER, stream=True):
            pass
    with httpx.stream("POST", gw.base_url + CHAT, json={"messages": USER, "stream": True}, headers=auth()) as r:
        for line in r.iter_lines():
            if "word" in line:
                break
    emulator.wait_state(lambda s: s["cancelled"] >= 1, timeout=3)
    time.sleep(0.1)
    after = scrape(gw)
    chat = 'route="/v1/chat/completions"'
    assert delta(before, after, f'functionary_requests_total{{{chat},status="200",error_type="server_error"}}') == 1
    assert delta(before, after,
                 f'functionary_requests_total{{{chat},status="200",error_type="client_disconnected"}}') == 1
    assert after["functionary_requests_in_flight"] == 0


# ---------------------------------------------------------------------------------------------- logs


def test_one_json_line_per_request_and_no_secret_anywhere(gw, emulator) -> None:
    emulator.script([{"tokens": CALL}, {"tokens": CALL}])
    c = client(gw, ENV_KEYS[1])
    c.chat.completions.create(model="functionary", messages=USER, tools=[WEATHER],
                              extra_headers={"x-request-id": "log-check-1"})
    list(c.chat.completions.create(model="functionary", messages=USER, tools=[WEATHER], stream=True,
                                   extra_headers={"x-request-id": "log-check-2"}))
    httpx.post(gw.base_url + CHAT, json={"messages": USER}, headers={**auth(WRONG_KEY), "x-request-id": "log-check-3"})
    httpx.post(gw.base_url + CHAT, json={"messages": "nope"}, headers={**auth(), "x-request-id": "log-check-4"})
    time.sleep(0.2)
    text = gw.logs()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]  # every line is JSON
    assert all({"ts", "level", "logger", "message"} <= set(line) for line in lines)
    access = {line["request_id"]: line for line in lines if line["logger"] == "gateway.access"}
    one, two, three, four = (access[f"log-check-{i}"] for i in range(1, 5))
    assert one["status"] == 200 and one["stream"] is False and one["tool_calls"] == 1
    assert one["endpoint"] == emulator.base_url and one["prompt_tokens"] > 0 and one["completion_tokens"] == 5
    assert one["ttft_s"] >= 0 and one["latency_s"] >= one["ttft_s"] and one["completion_id"].startswith("chatcmpl-")
    assert two["stream"] is True and two["tool_calls"] == 1 and two["retries"] == 0
    assert three["status"] == 401 and three["error_code"] == "invalid_api_key" and "tool_calls" not in three
    assert four["status"] == 400 and four["error_type"] == "invalid_request_error"
    assert sum(1 for line in lines if line.get("request_id") == "log-check-2") == 1
    for secret in (*KEYS, *ENV_KEYS, HF_TOKEN, WRONG_KEY):
        assert secret not in text


def test_text_lines_and_redaction() -> None:
    formatter = LineFormatter(json_lines=False, secrets=["s3cret-value", "s3cret"])
    record = logging.LogRecord("gateway.access", logging.INFO, __file__, 1, "request", None, None)
    record.fields = {"request_id": "r-1", "status": 200, "error_type": None, "path": "/v1/x y", "stream": True}
    line = formatter.format(record)
    assert line.endswith('INFO gateway.access: request request_id=r-1 status=200 error_type=- path="/v1/x y" '
                         "stream=true")
    leaked = logging.LogRecord("x", logging.ERROR, __file__, 1, "token %s and %s", ("s3cret-value", "s3cret"), None)
    assert formatter.format(leaked).endswith("token [redacted] and [redacted]")
    as_json = LineFormatter(json_lines=True, secrets=["s3cret"]).format(leaked)
    assert "s3cret" not in as_json and json.loads(as_json)["message"] == "token [redacted]-value and [redacted]"
