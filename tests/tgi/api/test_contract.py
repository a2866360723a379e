"""The OpenAI contract on every path (issue 10), streamed and not, through the official openai client against
the real gateway over the real emulator: user stops matched in the content, ``parallel_tool_calls: false``,
cancellation, the chunk shape, logprobs of the content, and errors named as the client wrote them."""

from __future__ import annotations

import json
import threading

import httpx
import openai
import pytest
from openai import OpenAI

from tests.support.openai_fixtures import EOT, PRICE, USER, WEATHER, words

CHAT = "/v1/chat/completions"
MODES = pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])


def ask(client: OpenAI, stream: bool, **kw) -> dict:
    """The answer of one choice as {content, calls, finish, logprobs}, streamed (the openai stream helper) or not."""
    kw.setdefault("model", "functionary")
    kw.setdefault("messages", USER)
    if not stream:
        choice = client.chat.completions.create(**kw).choices[0]
        message = choice.message
    else:
        with client.chat.completions.stream(**kw) as events:
            for _ in events:
                pass
            choice = events.get_final_completion().choices[0]
            message = choice.message
    calls = [(c.function.name, c.function.arguments) for c in (message.tool_calls or ())]
    tokens = [t.token for t in choice.logprobs.content] if choice.logprobs and choice.logprobs.content else None
    return {"content": message.content, "calls": calls, "finish": choice.finish_reason, "logprobs": tokens}


def raw_chunks(gw, body: dict) -> list[dict]:
    with httpx.stream("POST", gw.base_url + CHAT, json={"model": "functionary", "stream": True, **body},
                      timeout=30) as r:
        assert r.status_code == 200, r.read()
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    return [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]


def cancelled(emulator) -> dict:
    return emulator.wait_state(lambda s: s["cancelled"] >= 1 and s["in_flight"] == 0, timeout=3)


SLOW_TAIL = [{"text": " more", "delay_s": 0.2}] * 20 + [EOT]


# -- 1. user stops are matched in the content ---------------------------------------------------------------


@MODES
def test_stop_inside_a_token_cuts_the_content_and_cancels_tgi(client, emulator, stream) -> None:
    emulator.script([{"tokens": [{"text": "Hello"}, {"text": ". More"}] + SLOW_TAIL}])
    answer = ask(client, stream, stop=["."])
    assert answer["content"] == "Hello" and answer["finish"] == "stop"
    assert "stop" not in emulator.requests()[-1]["body"]["parameters"]  # TGI is sent the template's stops only
    state = cancelled(emulator)
    assert state["cancelled"] == 1 and state["in_flight"] == 0


@MODES
def test_stop_spanning_tokens(client, emulator, stream) -> None:
    emulator.script([{"tokens": words("Say EN") + [{"text": "D now"}] + SLOW_TAIL}])
    answer = ask(client, stream, stop=["xyz", "END"])
    assert answer["content"] == "Say" and answer["finish"] == "stop"


@MODES
def test_newline_stop_never_cuts_markup(client, emulator, stream) -> None:
    # TGI, sent "\n", would stop right after the recipient line "all\n" (tgi-protocol.md §14): an empty answer
    emulator.script([{"tokens": words("all\nFirst line.\nSecond line.") + [EOT]}])
    answer = ask(client, stream, tools=[WEATHER], stop=["\n"])
    assert answer["content"] == "First line." and answer["finish"] == "stop"
    emulator.script([{"tokens": words('get_weather\n{"city": "Istanbul"}') + [EOT]}])
    answer = ask(client, stream, tools=[WEATHER], stop=["\n", "\""])
    assert answer["calls"] == [("get_weather", '{"city": "Istanbul"}')] and answer["finish"] == "tool_calls"


@MODES
def test_four_user_stops_fit_beside_the_template_stops(gateway_for, emulator, stream) -> None:
    gw = gateway_for("v2")
    client = OpenAI(base_url=gw.base_url + "/v1", api_key="unused", max_retries=0)
    # without tools the v2 prompt ends with "<|recipient|>all\n<|content|>": the model writes text at once
    reply = [{"text": "Hello"}, {"text": " there"}, {"text": "<|stop|>", "special": True}, {"text": "</s>", "special": True}]
    emulator.script([{"tokens": reply}])
    answer = ask(client, stream, stop=["a", "b", "c", "d"])
    assert answer["content"] == "Hello there" and answer["finish"] == "stop"
    assert emulator.requests()[-1]["body"]["parameters"]["stop"] == ["<|stop|>"]


# -- 2. parallel_tool_calls: false ---------------------------------------------------------------------------


@MODES
def test_one_call_when_parallel_tool_calls_is_false(client, emulator, stream) -> None:
    text = 'get_weather\n{"city": "Istanbul"}>>>get_car_price\n{"car_name": "Tang"}'
    emulator.script([{"tokens": words(text) + SLOW_TAIL}])
    answer = ask(client, stream, tools=[WEATHER, PRICE], parallel_tool_calls=False)
    assert answer["calls"] == [("get_weather", '{"city": "Istanbul"}')] and answer["finish"] == "tool_calls"
    assert cancelled(emulator)["cancelled"] == 1


# -- 3. cancellation -----------------------------------------------------------------------------------------


def test_a_non_streaming_client_that_leaves_cancels_tgi(v32, emulator) -> None:
    emulator.script([{"tokens": words("all\nA long answer") + [{"text": " word", "delay_s": 0.1}] * 100 + [EOT]}])
    client = OpenAI(base_url=v32.base_url + "/v1", api_key="unused", max_retries=0, timeout=0.5)
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model="functionary", messages=USER)
    state = emulator.wait_state(lambda s: s["cancelled"] >= 1, timeout=1.5)
    assert state["cancelled"] == 1 and state["in_flight"] == 0


@MODES
def test_a_failed_choice_cancels_its_siblings(client, emulator, stream) -> None:
    slow = {"tokens": words("all\nslow") + [{"text": " word", "delay_s": 0.1}] * 100 + [EOT]}
    failing = {"tokens": words("all\nfails soon") + [{"text": " x", "delay_s": 0.05}] * 10 + [EOT], "fail_after": 4}
    emulator.script([failing, slow])
    if stream:
        with pytest.raises(openai.APIError):  # the error event after the first chunks
            for _ in client.chat.completions.create(model="functionary", messages=USER, n=2, temperature=0.5,
                                                    stream=True):
                pass
    else:
        with pytest.raises(openai.APIStatusError):
            client.chat.completions.create(model="functionary", messages=USER, n=2, temperature=0.5)
    state = emulator.wait_state(lambda s: s["in_flight"] == 0, timeout=1.5)
    assert state["in_flight"] == 0 and state["cancelled"] == 1


# -- 4. no request stalls the others -------------------------------------------------------------------------


def test_hopeless_prompt_is_refused_from_its_size(client, emulator) -> None:
    huge = "Istanbul " * 700_000  # 6.3 MB, under the body limit
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="functionary", messages=[{"role": "user", "content": huge}])
    error = info.value.body
    assert error["code"] == "context_length_exceeded" and "at least" in error["message"]
    assert emulator.requests() == []


def test_a_long_prompt_does_not_hold_up_a_short_one(v32, client, emulator) -> None:
    # a prompt under the size bound but over the limit is tokenized exactly, off the event loop: a short chat
    # sent while it is tokenized is answered first
    emulator.script([{"tokens": words("quick") + [EOT]}])
    long = "Weather in Istanbul is sunny, " * 36_000  # ~1 MB: seconds of tokenizing with the test tokenizer
    order: list[str] = []

    def big() -> None:
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model="functionary", messages=[{"role": "user", "content": long}])
        order.append("long")

    def in_flight() -> int:
        text = httpx.get(v32.base_url + "/metrics", timeout=10).text
        return int(next(line for line in text.splitlines() if line.startswith("functionary_requests_in_flight ")
                        ).split()[1])

    thread = threading.Thread(target=big)
    thread.start()
    while in_flight() < 1 and thread.is_alive():  # the long prompt is being served
        pass
    while not order and thread.is_alive():
        try:
            reply = client.chat.completions.create(model="functionary", messages=USER)
        except openai.APIError:
            continue
        order.append("short")
        assert reply.choices[0].message.content == "quick"
        break
    thread.join()
    assert order == ["short", "long"]


# -- 5. the stream's shape -----------------------------------------------------------------------------------


def test_call_only_stream_never_sends_content(v32, emulator) -> None:
    emulator.script([{"tokens": words('get_weather\n{"city": "Rome"}') + [EOT]}])
    chunks = raw_chunks(v32, {"messages": USER, "tools": [WEATHER], "stream_options": {"include_usage": True}})
    first = chunks[0]["choices"][0]["delta"]
    assert first["role"] == "assistant" and first["content"] is None and first["tool_calls"][0]["id"]
    assert all(c["choices"][0]["delta"].get("content") is None for c in chunks if c["choices"])
    assert all("usage" in c and c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0


@MODES
def test_call_only_answer_content_is_none(client, emulator, stream) -> None:
    emulator.script([{"tokens": words('get_weather\n{"city": "Rome"}') + [EOT]}])
    answer = ask(client, stream, tools=[WEATHER])
    assert answer["content"] is None and answer["calls"]


def test_name_cut_by_max_tokens_is_not_content(client, emulator) -> None:
    cut = [{"text": "get"}, {"text": "_weather"}, {"text": "\n"}, EOT]
    emulator.script([{"tokens": cut}, {"tokens": cut}])
    reply = client.chat.completions.create(model="functionary", messages=USER, tools=[WEATHER], max_tokens=1)
    assert reply.choices[0].message.content is None and reply.choices[0].finish_reason == "length"
    chunks = list(client.chat.completions.create(model="functionary", messages=USER, tools=[WEATHER], max_tokens=1,
                                                 stream=True))
    assert all(c.choices[0].delta.content is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "length"


# -- 6. logprobs ---------------------------------------------------------------------------------------------


@MODES
def test_logprobs_spell_the_content(client, emulator, stream) -> None:
    # "all\nHel" straddles markup and text: it is reported as "Hel"
    tokens = [{"text": "all\nHel", "logprob": -0.5}, {"text": "lo", "logprob": -0.1}, {"text": " you", "logprob": -0.2},
              {"text": ">>>", "logprob": -0.3}, {"text": "get_weather"}, {"text": "\n"}, {"text": '{"city": "Rome"}'}, EOT]
    emulator.script([{"tokens": tokens}])
    answer = ask(client, stream, tools=[WEATHER], logprobs=True)
    assert answer["content"] == "Hello you" and answer["logprobs"] == ["Hel", "lo", " you"]


@MODES
def test_logprobs_end_at_a_stop(client, emulator, stream) -> None:
    emulator.script([{"tokens": words("One. Two. Three.") + [EOT]}])
    answer = ask(client, stream, logprobs=True, stop=[" Two"])
    assert answer["content"] == "One." and "".join(answer["logprobs"]) == "One."


@MODES
def test_top_logprobs_above_tgi_limit_is_400(client, emulator, stream) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        ask(client, stream, logprobs=True, top_logprobs=10)
    assert info.value.body["param"] == "top_logprobs"
    assert emulator.requests() == []


# -- 7. errors -----------------------------------------------------------------------------------------------


def test_errors_name_fields_as_the_client_wrote_them(v32) -> None:
    bad_tool = {"type": "function", "function": {"name": "f", "parameters": "not a schema"}}
    cases = [
        ({"messages": USER, "tools": [bad_tool]}, "tools[0].function.parameters"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"messages": USER, "tool_choice": {"type": "function", "function": {}}}, "tool_choice.function.name"),
        ({"messages": []}, "messages"),
    ]
    for body, param in cases:
        r = httpx.post(v32.base_url + CHAT, json=body, timeout=30)
        assert r.status_code == 400, (body, r.text)
        error = r.json()["error"]
        assert error["param"] == param and error["type"] == "invalid_request_error", error


@MODES
def test_empty_messages_is_400(client, emulator, stream) -> None:
    with pytest.raises(openai.BadRequestError):
        ask(client, stream, messages=[])
    assert emulator.requests() == []


OPENAI_TYPES = {"invalid_request_error", "authentication_error", "permission_error", "not_found_error",
                "rate_limit_error", "server_error"}


def test_error_types_are_openai_types(v32, emulator) -> None:
    emulator.script([{"tokens": words("all\nHi") + [EOT], "fail_after": 0}])
    r = httpx.post(v32.base_url + CHAT, json={"messages": USER}, timeout=30)
    assert r.status_code == 502 and r.json()["error"]["type"] in OPENAI_TYPES
    emulator.faults(overload=True)
    r = httpx.post(v32.base_url + CHAT, json={"messages": USER}, timeout=30)
    assert r.status_code == 429 and r.json()["error"]["type"] in OPENAI_TYPES
