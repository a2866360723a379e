"""Grammar-guaranteed tool calls end to end: the official openai client -> the gateway -> the TGI emulator.

Demo answers (empty script) honour the grammar the way TGI does, so the arguments the client gets fit the tool's
schema; scripted answers (sent as written) pin down the segments: where a free generation is cut, what each
TGI request carries, and that the client's stream reads like one unconstrained stream.
"""

from __future__ import annotations

import json
import time

import httpx
import jsonschema
import pytest
from openai import OpenAI

from tests.support.gateway_proc import start_gateway

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]},
                                            "days": {"type": "integer", "minimum": 1, "maximum": 7}},
           "required": ["city", "unit", "days"]}
TIME = {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time", "description": "Time", "parameters": TIME}},
]
SCHEMAS = {"get_weather": WEATHER, "get_time": TIME}
MESSAGES = [{"role": "user", "content": "Weather in Paris?"}]
AUTO = ("--grammar", "auto")  # the test gateways run with --grammar off unless told (tests/support/gateway_proc.py)
VERSIONS = ["v3.llama3", "v3-llama3.1", "qwen2.5-text-only"]
EOS = {"v3.llama3": "<|eot_id|>", "v3-llama3.1": "<|eom_id|>", "qwen2.5-text-only": "<|im_end|>"}


def client_for(gateway) -> OpenAI:
    return OpenAI(base_url=gateway.base_url + "/v1", api_key="unused", max_retries=0)


def generations(emulator) -> list[dict]:
    """The emulator's log of generations, without a gateway's start-up grammar probe."""
    return [r for r in emulator.requests() if (r["body"] or {}).get("inputs") != "grammar probe"]


def grammars(emulator) -> list:
    return [(r["body"]["parameters"].get("grammar") or {}).get("type") for r in generations(emulator)]


def stream_result(stream) -> tuple[str | None, list[dict], str, list]:
    """Content, calls and finish reason rebuilt from chunks, checking OpenAI's delta rules on the way."""
    content, calls, finish, usage = None, {}, None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            delta = choice.delta
            if delta.content:
                content = (content or "") + delta.content
            for call in delta.tool_calls or ():
                if call.index not in calls:
                    assert call.index == len(calls) and call.id and call.type == "function" and call.function.name
                    calls[call.index] = {"id": call.id, "name": call.function.name, "arguments": ""}
                else:
                    assert call.id is None and call.function.name is None  # id/type/name once per call
                assert isinstance(call.function.arguments, str)
                calls[call.index]["arguments"] += call.function.arguments
            finish = choice.finish_reason or finish
    return content, [calls[i] for i in sorted(calls)], finish, usage


def assert_valid(calls) -> None:
    for call in calls:
        jsonschema.validate(json.loads(call["arguments"] if isinstance(call, dict) else call.function.arguments),
                            SCHEMAS[call["name"] if isinstance(call, dict) else call.function.name])


@pytest.mark.parametrize("version", VERSIONS)
def test_named_choice_arguments_fit_the_schema(gateway_for, emulator, version):
    client = client_for(gateway_for(version, *AUTO))
    choice = {"type": "function", "function": {"name": "get_weather"}}
    reply = client.chat.completions.create(model="functionary", messages=MESSAGES, tools=TOOLS, tool_choice=choice)
    calls = reply.choices[0].message.tool_calls
    assert [c.function.name for c in calls] == ["get_weather"] and reply.choices[0].finish_reason == "stop"
    assert_valid(calls)
    first = generations(emulator)[0]["body"]
    assert first["parameters"]["grammar"] == {"type": "json", "value": WEATHER}
    assert grammars(emulator) == ["json", None]  # the arguments, then the model may go on (it stops)
    emulator.reset()
    content, streamed, finish, usage = stream_result(client.chat.completions.create(
        model="functionary", messages=MESSAGES, tools=TOOLS, tool_choice=choice, stream=True,
        stream_options={"include_usage": True}))
    assert content is None and finish == "stop" and len(streamed) == 1
    assert streamed[0]["arguments"] == calls[0].function.arguments
    assert usage.completion_tokens == sum(r["generated_tokens"] for r in generations(emulator))


@pytest.mark.parametrize("version", VERSIONS)
def test_required_constrains_the_name_then_the_arguments(gateway_for, emulator, version):
    client = client_for(gateway_for(version, *AUTO))
    reply = client.chat.completions.create(model="functionary", messages=MESSAGES, tools=TOOLS,
                                           tool_choice="required")
    calls = reply.choices[0].message.tool_calls
    assert calls[0].function.name in SCHEMAS and reply.choices[0].finish_reason == "tool_calls"
    assert_valid(calls)
    assert grammars(emulator) == ["regex", "json", None]


# A free generation whose call arguments are wrong, cut where they begin; the constrained segments' answers;
# a second call cut the same way; the end. Explicit tokens make the cut point (and the usage) exact.
def tokens(*texts: str, delay: float = 0.0) -> dict:
    return {"tokens": [{"text": t, "special": t.startswith("<|") and t.endswith("|>"), "delay_s": delay}
                       for t in texts]}


SCRIPTS = {
    "v3.llama3": [
        tokens("I", " check", ">>>", "get_weather", "\n", '{"city": 1}', "<|eot_id|>"),
        tokens('{"city": "Paris", "unit": "c", "days": 2}', "<|eot_id|>"),
        tokens(">>>", "get_time", "\n", '{"tz"', ": 5}", "<|eot_id|>"),
        tokens('{"tz": "UTC"}', "<|eot_id|>"),
        tokens("<|eot_id|>"),
    ],
    "v3-llama3.1": [
        tokens("I", " check", "<function=", "get_weather", ">", '{"city": 1}', "</function>", "<|eom_id|>"),
        tokens('{"city": "Paris", "unit": "c", "days": 2}', "<|eot_id|>"),
        tokens("<function=", "get_time", ">", '{"tz"', ": 5}", "</function>", "<|eom_id|>"),
        tokens('{"tz": "UTC"}', "<|eot_id|>"),
        tokens("<|eom_id|>"),
    ],
    "qwen2.5-text-only": [
        tokens("I", " check", "\n", "<tool_call>", '\n{"name": "get_weather", "arguments": ', '{"city": 1}}',
               "\n", "</tool_call>", "<|im_end|>"),
        tokens('{"city": "Paris", "unit": "c", "days": 2}', "<|im_end|>"),
        tokens("\n", "<tool_call>", '\n{"name": "get_time", "arguments": ', '{"tz"', ": 5}}", "<|im_end|>"),
        tokens('{"tz": "UTC"}', "<|im_end|>"),
        tokens("<|im_end|>"),
    ],
}
CUT_AT = {"v3.llama3": (6, 4), "v3-llama3.1": (5, 3), "qwen2.5-text-only": (6, 4)}  # tokens read up to each cut
OPENINGS = {"v3.llama3": (">>>get_weather\n", ">>>get_time\n"),
            "v3-llama3.1": ("<function=get_weather>", "<function=get_time>"),
            "qwen2.5-text-only": ('<tool_call>\n{"name": "get_weather", "arguments": ',
                                  '<tool_call>\n{"name": "get_time", "arguments": ')}
WANTED = [("get_weather", '{"city": "Paris", "unit": "c", "days": 2}'), ("get_time", '{"tz": "UTC"}')]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("stream", [False, True])
def test_auto_cuts_each_call_and_constrains_its_arguments(gateway_for, emulator, version, stream):
    client = client_for(gateway_for(version, *AUTO))
    emulator.script(SCRIPTS[version])
    kwargs = dict(model="functionary", messages=MESSAGES, tools=TOOLS, parallel_tool_calls=True)
    if stream:
        content, calls, finish, usage = stream_result(client.chat.completions.create(
            **kwargs, stream=True, stream_options={"include_usage": True}))
    else:
        reply = client.chat.completions.create(**kwargs)
        message, finish, usage = reply.choices[0].message, reply.choices[0].finish_reason, reply.usage
        content = message.content
        calls = [{"id": c.id, "name": c.function.name, "arguments": c.function.arguments} for c in message.tool_calls]
    assert content == "I check" and finish == "tool_calls"
    assert [(c["name"], c["arguments"]) for c in calls] == WANTED
    assert len({c["id"] for c in calls}) == 2
    requests = generations(emulator)
    assert grammars(emulator) == [None, "json", None, "json", None]
    first_open, second_open = OPENINGS[version]
    assert requests[1]["body"]["inputs"].endswith("I check" + ("\n" if version.startswith("qwen") else "") + first_open)
    assert requests[3]["body"]["inputs"].endswith(WANTED[0][1] + {"v3.llama3": "", "v3-llama3.1": "</function>"}.get(
        version, "}\n</tool_call>\n") + second_open)
    assert requests[1]["body"]["parameters"]["grammar"]["value"] == WEATHER
    assert requests[3]["body"]["parameters"]["grammar"]["value"] == TIME
    cut1, cut2 = CUT_AT[version]
    generated = [r["generated_tokens"] for r in requests]
    assert usage.completion_tokens == cut1 + generated[1] + cut2 + generated[3] + generated[4]
    # the first generation was cut before TGI reported its input length: the gateway's own count of the prompt
    assert usage.prompt_tokens > 0 and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


@pytest.mark.parametrize("version", VERSIONS)
def test_stream_reads_like_the_unconstrained_stream(gateway_for, emulator, version):
    """The guided stream and a plain stream of the same final text give the same message."""
    client = client_for(gateway_for(version, *AUTO))
    kwargs = dict(model="functionary", messages=MESSAGES, tools=TOOLS, stream=True)
    emulator.script(SCRIPTS[version])
    guided = stream_result(client.chat.completions.create(**kwargs))
    final = "I check" + {"v3.llama3": ">>>get_weather\n{0}>>>get_time\n{1}<|eot_id|>",
                         "v3-llama3.1": "<function=get_weather>{0}</function><function=get_time>{1}</function>"
                                        "<|eom_id|>",
                         "qwen2.5-text-only": '\n<tool_call>\n{{"name": "get_weather", "arguments": {0}}}\n'
                                              '</tool_call>\n'
                                              '<tool_call>\n{{"name": "get_time", "arguments": {1}}}\n</tool_call>'
                                              "<|im_end|>"}[version].format(WANTED[0][1], WANTED[1][1])
    emulator.script([{"text": final}])
    plain = stream_result(client_for(gateway_for(version)).chat.completions.create(**kwargs))  # --grammar off
    strip_ids = lambda result: (result[0], [(c["name"], c["arguments"]) for c in result[1]], result[2])  # noqa: E731
    assert strip_ids(guided) == strip_ids(plain)


@pytest.mark.parametrize("version", VERSIONS)
def test_response_format(gateway_for, emulator, version):
    client = client_for(gateway_for(version, *AUTO))
    reply = client.chat.completions.create(model="functionary", messages=MESSAGES,
                                           response_format={"type": "json_object"})
    assert isinstance(json.loads(reply.choices[0].message.content), dict)
    assert grammars(emulator) == ["regex"]
    schema = {"type": "object", "properties": {"answer": {"type": "string"}, "confidence": {"type": "number"}},
              "required": ["answer", "confidence"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}}
    emulator.reset()
    content, calls, finish, _ = stream_result(client.chat.completions.create(
        model="functionary", messages=MESSAGES, response_format=fmt, stream=True))
    jsonschema.validate(json.loads(content), schema)
    assert calls == [] and finish == "stop"
    assert generations(emulator)[0]["body"]["parameters"]["grammar"] == {"type": "json", "value": schema}
    # with tools, the model decides: a call keeps its own grammar, a text answer gets the format's
    emulator.reset()
    text = ("all\n" if version == "v3.llama3" else "") + "It is sunny." + EOS[version]
    emulator.script([{"text": text}])
    reply = client.chat.completions.create(model="functionary", messages=MESSAGES, tools=TOOLS, response_format=fmt)
    jsonschema.validate(json.loads(reply.choices[0].message.content), schema)
    assert grammars(emulator) == [None, "json"]


def test_malformed_response_format_is_a_400(gateway_for):
    client = client_for(gateway_for("v3-llama3.1", *AUTO))
    with pytest.raises(Exception) as info:
        client.chat.completions.create(model="functionary", messages=MESSAGES, response_format={"type": "json_schema"})
    assert info.value.status_code == 400 and info.value.body["param"] == "response_format.json_schema"


def test_schemas_tgi_cannot_take_degrade_with_a_warning(gateway_for, emulator):
    gateway = gateway_for("v3-llama3.1", *AUTO)
    client = client_for(gateway)
    odd = [{"type": "function", "function": {"name": "pick", "parameters": {"anyOf": [TIME, WEATHER]}}},
           {"type": "function", "function": {"name": "bad", "parameters": {"type": "object", "properties": {"a": 3}}}}]
    reply = client.chat.completions.create(model="functionary", messages=MESSAGES, tools=odd,
                                           tool_choice={"type": "function", "function": {"name": "pick"}})
    assert reply.choices[0].message.tool_calls[0].function.name == "pick"
    assert grammars(emulator) == [None]  # no top-level properties: not sent at all
    outcomes = []
    for _ in range(2):  # TGI refuses the second one once; then it is not sent again
        emulator.reset()
        reply = client.chat.completions.create(model="functionary", messages=MESSAGES, tools=odd,
                                               tool_choice={"type": "function", "function": {"name": "bad"}})
        assert reply.choices[0].message.tool_calls[0].function.name == "bad"
        outcomes.append([(g, r["outcome"]) for g, r in zip(grammars(emulator), generations(emulator))])
    assert outcomes == [[("json", "validation"), (None, "ok")], [(None, "ok")]]
    deadline = time.monotonic() + 5
    while "generated unconstrained" not in gateway.logs() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "'pick' have no top-level 'properties'" in gateway.logs()
    assert "TGI refused a grammar" in gateway.logs()


def test_grammar_off_sends_no_grammar(gateway_for, emulator):
    client = client_for(gateway_for("v3-llama3.1", "--grammar", "off"))
    client.chat.completions.create(model="functionary", messages=MESSAGES, tools=TOOLS, tool_choice="required")
    client.chat.completions.create(model="functionary", messages=MESSAGES, response_format={"type": "json_object"})
    assert grammars(emulator) == [None, None]


def test_tgi_without_grammar_support(start_emulator, model_dirs):
    tgi = start_emulator(disable_grammar_support=True, max_total_tokens=65536, max_input_tokens=60000)
    args = ["--model", str(model_dirs("v3.llama3")), "--endpoint", tgi.base_url, "--prompt-template", "v3.llama3",
            "--no-launch", "--served-model-name", "functionary"]
    with start_gateway(args + list(AUTO)) as gateway:  # auto: the start-up probe finds out, requests go unconstrained
        reply = client_for(gateway).chat.completions.create(model="functionary", messages=MESSAGES, tools=TOOLS,
                                                            tool_choice="required")
        assert reply.choices[0].message.tool_calls[0].function.name == "get_weather"
        assert [r["outcome"] for r in tgi.requests()] == ["validation", "ok"]  # the probe, then the request
        assert "grammar" not in tgi.requests()[1]["body"]["parameters"]
    with start_gateway(args + ["--grammar", "on"], wait=False) as gateway:
        assert gateway.process.wait(timeout=30) != 0
        assert "--grammar on, but TGI at " + tgi.base_url + " refuses grammars" in gateway.logs()


def test_client_disconnect_cancels_the_running_segment(gateway_for, emulator):
    gateway = gateway_for("v3-llama3.1", *AUTO)
    emulator.script([tokens(*(['{"city": "'] + ["a"] * 40 + ['", "unit": "c", "days": 1}', "<|eot_id|>"]), delay=0.05)])
    body = {"model": "functionary", "messages": MESSAGES, "tools": TOOLS, "stream": True,
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}
    with httpx.Client(base_url=gateway.base_url, timeout=10) as http:
        with http.stream("POST", "/v1/chat/completions", json=body) as response:
            for line in response.iter_lines():
                if '"arguments":"a"' in line:
                    break  # leave mid-arguments
    state = emulator.wait_state(lambda s: s["in_flight"] == 0 and s["cancelled"] == 1, timeout=5)
    assert state["in_flight"] == 0 and state["cancelled"] == 1
    assert len(generations(emulator)) == 1  # nothing started after the client left
