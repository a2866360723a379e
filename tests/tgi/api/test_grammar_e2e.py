"""Guaranteed structure end to end: the official openai client -> the gateway (default ``--grammar auto``) -> the
TGI emulator. A request that asks for a guarantee is ONE TGI request with the unchanged prompt and the whole-turn
regex (functionary/turn_grammar.py); scripted replies (sent as written) show the client gets the model's own answer
byte for byte; demo replies honour the regex the way the emulator can (docs/grammar.md)."""

from __future__ import annotations

import json
import re

import httpx
import jsonschema
import pytest
from openai import BadRequestError, OpenAI

from functionary.openai_types import ChatCompletionRequest
from functionary.request import prepare_request
from functionary.templates import get_template
from functionary.turn_grammar import whole_turn_regex
from tests.support.gateway_proc import start_gateway

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
           "required": ["city", "unit"]}
TIME = {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time", "description": "Time", "parameters": TIME}},
]
SCHEMAS = {"get_weather": WEATHER, "get_time": TIME}
MESSAGES = [{"role": "user", "content": "Weather in Paris?"}]
NAMED = {"type": "function", "function": {"name": "get_weather"}}
ARGS = '{"city": "Paris", "unit": "c"}'
# what each family's model writes for one get_weather call, after its prompt under tool_choice required
CALL_AFTER_REQUIRED = {
    "v3.llama3": f"get_weather\n{ARGS}<|eot_id|>",
    "v3-llama3.1": f"get_weather>{ARGS}</function><|eom_id|>",
    "qwen2.5-text-only": f'{{"name": "get_weather", "arguments": {ARGS}}}\n</tool_call><|im_end|>',
    "v2.llama3": f"get_weather\n{ARGS}<|eot_id|>",
    "r1_distilled_qwen": f'{{"name": "get_weather", "arguments": {ARGS}}}\n</tool_call><｜end▁of▁sentence｜>',
}
VERSIONS = list(CALL_AFTER_REQUIRED)
OFF = ("--grammar", "off")


def client_for(gateway) -> OpenAI:
    return OpenAI(base_url=gateway.base_url + "/v1", api_key="unused", max_retries=0)


def generations(emulator) -> list[dict]:
    """The emulator's log of generations, without a gateway's start-up grammar probe."""
    return [r for r in emulator.requests() if (r["body"] or {}).get("inputs") != "grammar probe"]


def expected(version: str, **kwargs) -> tuple[str, str | None]:
    """The prompt and the regex the gateway should send for this request."""
    request = ChatCompletionRequest(model="functionary", **kwargs)
    template = get_template(version)
    prepared = prepare_request(request)
    return template.render(prepared), whole_turn_regex(template, request, prepared)


def stream_result(stream) -> tuple[str | None, list[dict], str]:
    content, calls, finish = None, {}, None
    for chunk in stream:
        for choice in chunk.choices:
            delta = choice.delta
            if delta.content:
                content = (content or "") + delta.content
            for call in delta.tool_calls or ():
                if call.index not in calls:
                    assert call.index == len(calls) and call.id and call.function.name
                    calls[call.index] = {"name": call.function.name, "arguments": ""}
                calls[call.index]["arguments"] += call.function.arguments or ""
            finish = choice.finish_reason or finish
    return content, [calls[i] for i in sorted(calls)], finish


def answer(client, *, stream: bool, **kwargs) -> tuple[str | None, list[dict], str]:
    if stream:
        return stream_result(client.chat.completions.create(model="functionary", stream=True, **kwargs))
    reply = client.chat.completions.create(model="functionary", **kwargs)
    message = reply.choices[0].message
    calls = [{"name": c.function.name, "arguments": c.function.arguments} for c in message.tool_calls or ()]
    return message.content, calls, reply.choices[0].finish_reason


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("stream", [False, True])
def test_required_is_one_request_and_the_models_own_answer(gateway_for, emulator, version, stream):
    client = client_for(gateway_for(version))
    emulator.script([{"text": CALL_AFTER_REQUIRED[version]}])
    content, calls, finish = answer(client, stream=stream, messages=MESSAGES, tools=TOOLS, tool_choice="required")
    assert calls == [{"name": "get_weather", "arguments": ARGS}] and finish == "tool_calls"
    (sent,) = generations(emulator)
    prompt, regex = expected(version, messages=MESSAGES, tools=TOOLS, tool_choice="required")
    assert sent["body"]["inputs"] == prompt  # the model's prompt, unchanged
    assert sent["body"]["parameters"]["grammar"] == {"type": "regex", "value": regex}
    assert re.fullmatch(regex, CALL_AFTER_REQUIRED[version])  # so masking by it leaves this answer as it is


@pytest.mark.parametrize("version", ["v3-llama3.1", "qwen2.5-text-only"])
@pytest.mark.parametrize("stream", [False, True])
def test_guarantees_send_the_whole_turn_regex(gateway_for, emulator, version, stream):
    client = client_for(gateway_for(version))
    strict = [{**TOOLS[0], "function": {**TOOLS[0]["function"], "strict": True}}, TOOLS[1]]
    for kwargs in (dict(tools=TOOLS, tool_choice=NAMED), dict(tools=TOOLS, parallel_tool_calls=False),
                   dict(tools=strict), dict(response_format={"type": "json_object"})):
        emulator.reset()
        content, calls, _ = answer(client, stream=stream, messages=MESSAGES, **kwargs)  # demo answers
        (sent,) = generations(emulator)
        prompt, regex = expected(version, messages=MESSAGES, **kwargs)
        assert sent["body"]["inputs"] == prompt
        assert sent["body"]["parameters"]["grammar"] == {"type": "regex", "value": regex}, kwargs
        for call in calls:
            jsonschema.validate(json.loads(call["arguments"]), SCHEMAS[call["name"]])
        if "response_format" in kwargs:
            assert isinstance(json.loads(content), dict)


@pytest.mark.parametrize("version", VERSIONS)
def test_demo_answer_under_required_fits(gateway_for, emulator, version):
    content, calls, finish = answer(client_for(gateway_for(version)), stream=False, messages=MESSAGES, tools=TOOLS,
                                    tool_choice="required")
    assert calls and finish == "tool_calls"
    for call in calls:
        jsonschema.validate(json.loads(call["arguments"]), SCHEMAS[call["name"]])


def test_nothing_asked_is_one_unconstrained_request(gateway_for, emulator):
    client = client_for(gateway_for("v3-llama3.1"))
    client.chat.completions.create(model="functionary", messages=MESSAGES, tools=TOOLS)
    client.chat.completions.create(model="functionary", messages=MESSAGES)
    assert [r["body"]["parameters"].get("grammar") for r in generations(emulator)] == [None, None]


@pytest.mark.parametrize("version", ["v3.llama3", "v3-llama3.1", "qwen2.5-text-only"])
def test_stream_under_a_grammar_reads_like_without(gateway_for, emulator, version):
    text = {"v3.llama3": f"all\nLet me check.>>>get_weather\n{ARGS}<|eot_id|>",
            "v3-llama3.1": f"Let me check.<function=get_weather>{ARGS}</function><|eom_id|>",
            "qwen2.5-text-only": f'Let me check.\n<tool_call>\n{{"name": "get_weather", "arguments": {ARGS}}}\n'
                                 "</tool_call><|im_end|>"}[version]
    strict = [{**TOOLS[0], "function": {**TOOLS[0]["function"], "strict": True}}]
    results = []
    for gateway in (gateway_for(version), gateway_for(version, *OFF)):
        emulator.reset()
        emulator.script([{"text": text}])
        results.append(answer(client_for(gateway), stream=True, messages=MESSAGES, tools=strict))
    guarded, plain = results
    assert guarded == plain == ("Let me check.", [{"name": "get_weather", "arguments": ARGS}], "tool_calls")


def test_answers_are_capped_at_1024_tokens_under_a_grammar(gateway_for, emulator):
    client = client_for(gateway_for("v3-llama3.1"))
    client.chat.completions.create(model="functionary", messages=MESSAGES, tools=TOOLS, tool_choice="required",
                                   max_tokens=4000)
    client.chat.completions.create(model="functionary", messages=MESSAGES, tools=TOOLS, max_tokens=4000)
    assert [r["body"]["parameters"]["max_new_tokens"] for r in generations(emulator)] == [1024, 4000]


def test_unsupported_schema_is_a_400_naming_the_field(gateway_for):
    tools = [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"a": {"not": {"type": "string"}}}}}}]
    client = client_for(gateway_for("v3-llama3.1"))
    with pytest.raises(BadRequestError) as caught:
        client.chat.completions.create(model="functionary", messages=MESSAGES, tools=tools, tool_choice="required")
    assert caught.value.body["param"] == "tools[0].function.parameters"
    # nothing asked of the arguments: no grammar, no refusal
    client.chat.completions.create(model="functionary", messages=MESSAGES, tools=tools)


def test_malformed_response_format_is_a_400_in_every_mode(gateway_for):
    for extra in ((), OFF):
        client = client_for(gateway_for("v3-llama3.1", *extra))
        with pytest.raises(BadRequestError) as caught:
            client.chat.completions.create(model="functionary", messages=MESSAGES,
                                           response_format={"type": "json_schema"})
        assert caught.value.body["param"] == "response_format.json_schema"


def test_grammar_off_sends_no_grammar(gateway_for, emulator):
    client = client_for(gateway_for("v3-llama3.1", *OFF))
    client.chat.completions.create(model="functionary", messages=MESSAGES, tools=TOOLS, tool_choice="required")
    client.chat.completions.create(model="functionary", messages=MESSAGES, response_format={"type": "json_object"})
    assert [r["body"]["parameters"].get("grammar") for r in generations(emulator)] == [None, None]


def test_grammar_on_constrains_every_request_with_tools(gateway_for, emulator):
    client = client_for(gateway_for("v3-llama3.1", "--grammar", "on"))
    client.chat.completions.create(model="functionary", messages=MESSAGES, tools=TOOLS)
    client.chat.completions.create(model="functionary", messages=MESSAGES)
    grammars = [r["body"]["parameters"].get("grammar") for r in generations(emulator)]
    assert grammars[0]["type"] == "regex" and grammars[1] is None


def test_tgi_without_grammar_support(start_emulator, model_dirs):
    tgi = start_emulator(disable_grammar_support=True, max_total_tokens=65536, max_input_tokens=60000)
    args = ["--model", str(model_dirs("v3.llama3")), "--endpoint", tgi.base_url, "--prompt-template", "v3.llama3",
            "--no-launch", "--served-model-name", "functionary"]
    with start_gateway(args) as gateway:  # auto: the start-up probe finds out
        client = client_for(gateway)
        with pytest.raises(BadRequestError) as caught:
            client.chat.completions.create(model="functionary", messages=MESSAGES, tools=TOOLS, tool_choice="required")
        assert caught.value.body["code"] == "grammar_unsupported"
        assert caught.value.body["type"] == "invalid_request_error"
        reply = client.chat.completions.create(model="functionary", messages=MESSAGES, tools=TOOLS)  # nothing promised
        assert reply.choices[0].finish_reason in ("stop", "tool_calls")
        assert [r["outcome"] for r in tgi.requests()] == ["validation", "ok"]  # the probe, then the plain request
    with start_gateway(args + ["--grammar", "on"], wait=False) as gateway:
        assert gateway.process.wait(timeout=30) != 0
        assert "--grammar on, but TGI at " + tgi.base_url + " refuses grammars" in gateway.logs()


def test_client_disconnect_cancels_the_constrained_generation(gateway_for, emulator):
    gateway = gateway_for("v3-llama3.1")
    tokens = ['{"city": "'] + ["a"] * 40 + ['", "unit": "c"}', "</function>", "<|eom_id|>"]
    emulator.script([{"tokens": [{"text": t, "special": t == "<|eom_id|>", "delay_s": 0.05} for t in tokens]}])
    body = {"model": "functionary", "messages": MESSAGES, "tools": TOOLS, "stream": True, "tool_choice": NAMED}
    with httpx.Client(base_url=gateway.base_url, timeout=10) as http:
        with http.stream("POST", "/v1/chat/completions", json=body) as response:
            for line in response.iter_lines():
                if '"arguments":"a"' in line:
                    break  # leave mid-arguments
    state = emulator.wait_state(lambda s: s["in_flight"] == 0 and s["cancelled"] == 1, timeout=5)
    assert state["in_flight"] == 0 and state["cancelled"] == 1
    assert len(generations(emulator)) == 1
