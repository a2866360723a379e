"""Guarantees end to end on the emulator's model mode, for v3-llama3.1, qwen2.5-text-only, v3.llama3, v2.llama3,
v2 and r1 (a real tokenizer, a greedy model given as rules, grammar masking with outlines-core as TGI's server
does), through the official openai client, streamed and not, with the gateway's default configuration: (a) a model whose own answer fits gets exactly it, (b) a model that wants to chat
gets a call that fits under required and named, (c) response_format gets fitting JSON, (d) parallel_tool_calls
false gets one call from a model that writes two, (e) answers stay within their bounds."""

from __future__ import annotations

import json

import jsonschema
import pytest
from openai import OpenAI

from tests.support.gateway_proc import start_gateway
from tests.support.emulator_model import make_emulator_model_dir, rule
from tests.support.emulator_proc import start_model_emulator

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": WEATHER}}]
MESSAGES = [{"role": "user", "content": "Weather in Istanbul?"}]
NAMED = {"type": "function", "function": {"name": "get_weather"}}
ANSWER = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
FORMAT = {"type": "json_schema", "json_schema": {"name": "answer", "schema": ANSWER}}
IST, PAR = '{"city": "Istanbul"}', '{"city": "Paris"}'
SEP = "<|reserved_special_token_249|>"
R1 = "<｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n"

# per family: the prompt's end for auto / required / named, a call, two calls, the end of a text answer
FAMILIES = {
    "v3-llama3.1": dict(
        auto="<|end_header_id|>\n\n", required="<function=", named="<function=get_weather>",
        call=f"<function=get_weather>{IST}</function><|eom_id|>",
        two=f"<function=get_weather>{IST}</function><function=get_weather>{PAR}</function><|eom_id|>",
        chat="Hello there!<|eot_id|>", named_write=IST + "</function><|eom_id|>"),
    "qwen2.5-text-only": dict(
        auto="<|im_start|>assistant\n", required="<tool_call>\n", named='{"name": "get_weather", "arguments',
        call=f'<tool_call>\n{{"name": "get_weather", "arguments": {IST}}}\n</tool_call><|im_end|>',
        two=f'<tool_call>\n{{"name": "get_weather", "arguments": {IST}}}\n</tool_call>\n'
            f'<tool_call>\n{{"name": "get_weather", "arguments": {PAR}}}\n</tool_call><|im_end|>',
        chat="Hello there!<|im_end|>", named_write='": ' + IST + "}\n</tool_call><|im_end|>"),
    "v3.llama3": dict(
        auto="<|end_header_id|>\n\n>>>", required="<|end_header_id|>\n\n>>>", named=">>>get_weather\n",
        call=f"get_weather\n{IST}<|eot_id|>", two=f"get_weather\n{IST}>>>get_weather\n{PAR}<|eot_id|>",
        chat="all\nHello there!<|eot_id|>", named_write=IST + "<|eot_id|>"),
    "v2.llama3": dict(
        auto="<|end_header_id|>\n\n", required=SEP, named=f"{SEP}get_weather\n",
        call=f"{SEP}get_weather\n{IST}<|eot_id|>", two=f"{SEP}get_weather\n{IST}{SEP}get_weather\n{PAR}<|eot_id|>",
        chat="Hello there!<|eot_id|>", named_write=IST + "<|eot_id|>"),
    "v2": dict(
        auto="<|recipient|>", required="<|recipient|>", named="<|content|>",
        call=f"get_weather\n<|content|>{IST}<|stop|>",
        two=f"get_weather\n<|content|>{IST}\n<|from|>assistant\n<|recipient|>get_weather\n<|content|>{PAR}<|stop|>",
        chat="all\n<|content|>Hello there!<|stop|>", named_write=IST + "<|stop|>"),
    "r1": dict(
        auto="<｜Assistant｜>\n", required="<｜Assistant｜>\n", named="```json\n",
        call=f"<｜tool▁calls▁begin｜>{R1}{IST}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜><｜end▁of▁sentence｜>",
        two=f"<｜tool▁calls▁begin｜>{R1}{IST}\n```<｜tool▁call▁end｜>{R1}{PAR}\n```<｜tool▁call▁end｜>"
            "<｜tool▁calls▁end｜><｜end▁of▁sentence｜>",
        chat="Hello there!<｜end▁of▁sentence｜>",
        named_write=f"{IST}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜><｜end▁of▁sentence｜>"),
}


@pytest.fixture(scope="module", params=list(FAMILIES))
def stack(request, tmp_path_factory):
    version = request.param
    model_dir = make_emulator_model_dir(tmp_path_factory.mktemp(version.replace(".", "_")) / "m", version)
    with start_model_emulator(model_dir) as tgi:
        args = ["--model", str(model_dir), "--endpoint", tgi.base_url, "--prompt-template", version, "--no-launch",
                "--served-model-name", "functionary"]
        with start_gateway(args) as gateway:
            yield version, tgi, OpenAI(base_url=gateway.base_url + "/v1", api_key="unused", max_retries=0)


def ask(client, *, stream: bool, **kwargs) -> tuple[str | None, list[tuple[str, str]], str, int]:
    """content, [(name, arguments)], finish reason, completion tokens."""
    if not stream:
        reply = client.chat.completions.create(model="functionary", messages=MESSAGES, **kwargs)
        message = reply.choices[0].message
        calls = [(c.function.name, c.function.arguments) for c in message.tool_calls or ()]
        return message.content, calls, reply.choices[0].finish_reason, reply.usage.completion_tokens
    content, calls, finish, tokens = None, {}, None, 0
    for chunk in client.chat.completions.create(model="functionary", messages=MESSAGES, stream=True,
                                                stream_options={"include_usage": True}, **kwargs):
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
        for choice in chunk.choices:
            if choice.delta.content:
                content = (content or "") + choice.delta.content
            for call in choice.delta.tool_calls or ():
                name, args = calls.get(call.index, (call.function.name, ""))
                calls[call.index] = (name, args + (call.function.arguments or ""))
            finish = choice.finish_reason or finish
    return content, [calls[i] for i in sorted(calls)], finish, tokens


def rules(*pairs: tuple[str, str]) -> list[dict]:
    """Model rules, the first one for each ``after`` (v3.llama3's auto and required prompts end alike)."""
    return [rule(after, write) for after, write in dict(reversed(pairs)).items()]


def fits(calls) -> None:
    assert calls
    for name, arguments in calls:
        assert name == "get_weather"
        jsonschema.validate(json.loads(arguments), WEATHER)


@pytest.mark.parametrize("stream", [False, True])
def test_a_fitting_answer_is_returned_as_the_model_wrote_it(stack, stream):
    version, tgi, client = stack
    f = FAMILIES[version]
    skip = len(f["required"]) if f["call"].startswith(f["required"]) else 0  # what the prompt already wrote
    tgi.model_rules(rules((f["required"], f["call"][skip:]),
                          (f["named"], f["named_write"])))
    for choice in ("required", NAMED):
        content, calls, _, _ = ask(client, stream=stream, tools=TOOLS, tool_choice=choice)
        assert calls == [("get_weather", IST)], (choice, calls)


@pytest.mark.parametrize("stream", [False, True])
def test_a_chatty_model_calls_under_required_and_named(stack, stream):
    version, tgi, client = stack
    f = FAMILIES[version]
    tgi.model_rules(rules((f["auto"], f["chat"]), (f["required"], "Hello there!"), (f["named"], "Hello there!")))
    for choice in ("required", NAMED):
        _, calls, finish, _ = ask(client, stream=stream, tools=TOOLS, tool_choice=choice, max_tokens=200)
        fits(calls)
        assert finish in ("tool_calls", "stop")
    content, calls, _, _ = ask(client, stream=stream, tools=TOOLS)  # nothing asked: the model chats
    assert content == "Hello there!" and not calls


@pytest.mark.parametrize("stream", [False, True])
def test_response_format_gives_fitting_json(stack, stream):
    version, tgi, client = stack
    f = FAMILIES[version]
    tgi.model_rules(rules((f["auto"], f["chat"])))
    content, calls, _, _ = ask(client, stream=stream, response_format=FORMAT, max_tokens=200)
    jsonschema.validate(json.loads(content), ANSWER)
    assert not calls


@pytest.mark.parametrize("stream", [False, True])
def test_one_call_when_parallel_calls_are_off(stack, stream):
    version, tgi, client = stack
    f = FAMILIES[version]
    tgi.model_rules(rules((f["auto"], f["two"])))
    _, calls, _, _ = ask(client, stream=stream, tools=TOOLS)  # nothing asked: both calls
    assert calls == [("get_weather", IST), ("get_weather", PAR)]
    _, calls, _, _ = ask(client, stream=stream, tools=TOOLS, parallel_tool_calls=False, max_tokens=200)
    assert calls == [("get_weather", IST)]


@pytest.mark.parametrize("stream", [False, True])
def test_answers_stay_within_their_bounds(stack, stream):
    version, tgi, client = stack
    f = FAMILIES[version]
    tgi.model_rules(rules((f["required"], "Hello there! " * 50)))
    _, _, finish, tokens = ask(client, stream=stream, tools=TOOLS, tool_choice="required", max_tokens=6)
    assert tokens <= 6 and finish == "length"
