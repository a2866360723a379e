"""``/v1/responses`` end to end with the official openai client against the real gateway over the emulator:
create (streamed and not), the stream helper, a two-turn exchange with function_call_output, text.format,
tool_choice, incomplete on max_output_tokens, errors and limits, and what TGI receives (the same as for the
equivalent chat request)."""

from __future__ import annotations

import json

import httpx
import pytest
from openai import APIStatusError, BadRequestError, NotFoundError, OpenAI

from tests.support.openai_fixtures import EOT, response_tool, words
from tests.support.openai_fixtures import PRICE as CHAT_PRICE, WEATHER as CHAT_WEATHER

WEATHER, PRICE = response_tool(CHAT_WEATHER), response_tool(CHAT_PRICE)  # the Responses API's tool shape
ASK = "Weather in Istanbul?"


def chat_tool(tool: dict) -> dict:
    return {"type": "function", "function": {k: v for k, v in tool.items() if k != "type"}}


def sent(emulator) -> dict:
    return emulator.requests()[-1]["body"]


def comparable(response) -> dict:
    """A response without what differs between two calls (ids, time)."""
    data = response.model_dump(exclude_none=True) if hasattr(response, "model_dump") else dict(response)
    data.pop("id"), data.pop("created_at")
    data["output"] = [{k: v for k, v in item.items() if k not in ("id", "call_id", "parsed_arguments")}
                      for item in data["output"]]
    for item in data["output"]:
        for part in item.get("content", ()):
            part.pop("parsed", None)
    return data


def test_text_answer(client, emulator) -> None:
    emulator.script([{"tokens": words("Hello there!") + [EOT]}])
    r = client.responses.create(model="functionary", input="hi", instructions="Be brief.", metadata={"k": "v"})
    assert r.id.startswith("resp_") and r.object == "response" and r.status == "completed"
    assert r.output_text == "Hello there!"
    (message,) = r.output
    assert message.type == "message" and message.id.startswith("msg_") and message.status == "completed"
    assert message.content[0].type == "output_text" and message.content[0].annotations == []
    assert r.usage.output_tokens == len(words("Hello there!")) + 1 and r.usage.input_tokens > 0
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    assert r.usage.input_tokens_details.cached_tokens == 0 and r.usage.output_tokens_details.reasoning_tokens == 0
    assert r.metadata == {"k": "v"} and r.instructions == "Be brief." and r.model == "functionary"
    assert r.incomplete_details is None and r.error is None and r.tool_choice == "auto"


def test_prompt_and_parameters_equal_the_chat_request(client, emulator) -> None:
    emulator.script([{"tokens": words("ok") + [EOT]}] * 2)
    client.responses.create(model="functionary", instructions="Be brief.", input=ASK, tools=[WEATHER, PRICE],
                            temperature=0.5, top_p=0.9, max_output_tokens=50)
    via_responses = sent(emulator)
    client.chat.completions.create(
        model="functionary", messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": ASK}],
        tools=[chat_tool(WEATHER), chat_tool(PRICE)], temperature=0.5, top_p=0.9, max_completion_tokens=50)
    assert via_responses == sent(emulator)


def test_streamed_events_assemble_the_non_streamed_answer(client, emulator) -> None:
    text = 'all\nChecking.>>>get_weather\n{"city": "Istanbul"}>>>get_car_price\n{"car_name": "Tang"}'
    emulator.script([{"tokens": words(text) + [EOT]}] * 3)
    plain = client.responses.create(model="functionary", input=ASK, tools=[WEATHER, PRICE])
    events = list(client.responses.create(model="functionary", input=ASK, tools=[WEATHER, PRICE], stream=True))
    assert [e.sequence_number for e in events] == list(range(len(events)))
    kinds = [e.type for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert kinds[-1] == "response.completed" and events[0].response.status == "in_progress"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "Checking."
    for i in (1, 2):  # each call's argument deltas add up to its arguments
        args = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta"
                       and e.output_index == i)
        (done,) = [e for e in events if e.type == "response.function_call_arguments.done" and e.output_index == i]
        assert args == done.arguments
    assert kinds.count("response.output_item.added") == kinds.count("response.output_item.done") == 3
    assert comparable(events[-1].response) == comparable(plain)
    with client.responses.stream(model="functionary", input=ASK, tools=[WEATHER, PRICE]) as stream:
        final = stream.get_final_response()
    assert comparable(final) == comparable(plain)
    assert [o.type for o in plain.output] == ["message", "function_call", "function_call"]
    calls = plain.output[1:]
    assert [c.name for c in calls] == ["get_weather", "get_car_price"] and all(c.id.startswith("fc_") for c in calls)
    assert [json.loads(c.arguments) for c in calls] == [{"city": "Istanbul"}, {"car_name": "Tang"}]
    assert all(c.call_id.startswith("call_") and c.status == "completed" for c in calls)


def test_two_turns_with_function_call_output(client, emulator) -> None:
    emulator.script([{"tokens": words('all\nLet me check.>>>get_weather\n{"city": "Istanbul"}') + [EOT]},
                     {"tokens": words("all\nSunny, 21 degrees.") + [EOT]},
                     {"tokens": words("all\nSunny, 21 degrees.") + [EOT]}])
    first = client.responses.create(model="functionary", input=ASK, tools=[WEATHER])
    text, call = first.output
    assert call.type == "function_call" and call.name == "get_weather" and first.output_text == "Let me check."
    # the output items go back as the client holds them (the client serialises its own objects)
    history = [{"role": "user", "content": ASK}, *first.output,
               {"type": "function_call_output", "call_id": call.call_id, "output": '{"temp": 21}'}]
    second = client.responses.create(model="functionary", input=history, tools=[WEATHER])
    assert second.output_text == "Sunny, 21 degrees." and second.status == "completed"
    via_responses = sent(emulator)
    client.chat.completions.create(model="functionary", tools=[chat_tool(WEATHER)], messages=[
        {"role": "user", "content": ASK},
        {"role": "assistant", "content": "Let me check.", "tool_calls": [
            {"id": call.call_id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}]},
        {"role": "tool", "tool_call_id": call.call_id, "content": '{"temp": 21}'}])
    assert via_responses == sent(emulator)


def test_text_format_json_schema(client, emulator) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    emulator.script([{"tokens": words('{"city": "Rome"}') + [EOT]}] * 2)
    r = client.responses.create(model="functionary", input="A city?", text={"format": {
        "type": "json_schema", "name": "city", "schema": schema, "strict": True}})
    assert json.loads(r.output_text) == {"city": "Rome"}
    assert r.text.format.type == "json_schema" and r.text.format.name == "city"
    via_responses = sent(emulator)
    client.chat.completions.create(model="functionary", messages=[{"role": "user", "content": "A city?"}],
                                   response_format={"type": "json_schema", "json_schema": {
                                       "name": "city", "schema": schema, "strict": True}})
    assert via_responses == sent(emulator)


def test_tool_choice_required_and_named(client, emulator) -> None:
    emulator.script([{"tokens": words('get_weather\n{"city": "Oslo"}') + [EOT]},
                     {"tokens": words('{"city": "Oslo"}') + [EOT]}])
    r = client.responses.create(model="functionary", input=ASK, tools=[WEATHER, PRICE], tool_choice="required")
    assert sent(emulator)["inputs"].endswith("<|start_header_id|>assistant<|end_header_id|>\n\n>>>")
    assert r.output[0].type == "function_call" and r.tool_choice == "required"
    r = client.responses.create(model="functionary", input=ASK, tools=[WEATHER, PRICE],
                                tool_choice={"type": "function", "name": "get_weather"})
    assert sent(emulator)["inputs"].endswith(">>>get_weather\n")
    assert r.output[0].name == "get_weather" and json.loads(r.output[0].arguments) == {"city": "Oslo"}
    assert r.tool_choice.name == "get_weather"


def test_incomplete_on_max_output_tokens(client, emulator) -> None:
    emulator.script([{"tokens": words("A long answer that goes on and on") + [EOT]}] * 2)
    r = client.responses.create(model="functionary", input="hi", max_output_tokens=4)
    assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"
    assert r.output[-1].status == "incomplete" and r.usage.output_tokens == 4 and r.max_output_tokens == 4
    assert sent(emulator)["parameters"]["max_new_tokens"] == 4
    events = list(client.responses.create(model="functionary", input="hi", max_output_tokens=4, stream=True))
    assert events[-1].type == "response.incomplete"
    assert comparable(events[-1].response) == comparable(r)


def test_error_after_the_stream_started_is_response_failed(client, emulator) -> None:
    emulator.script([{"tokens": [{"text": "Hello"}, {"text": " world"}, {"text": "!"}, EOT], "fail_after": 2}])
    events = list(client.responses.create(model="functionary", input="hi", stream=True))
    assert events[-1].type == "response.failed" and events[-1].response.status == "failed"
    assert events[-1].response.error.code == "server_error"
    assert "Request failed during generation" in events[-1].response.error.message


def test_error_before_generation_is_an_http_error(client, emulator) -> None:
    emulator.script([{"tokens": [{"text": "Hello"}, EOT], "fail_after": 0}])
    with pytest.raises(APIStatusError) as info:
        list(client.responses.create(model="functionary", input="hi", stream=True))
    assert info.value.status_code == 502


def test_disconnect_cancels_tgi(v32, emulator) -> None:
    emulator.faults(token_delay=0.2)
    emulator.script([{"tokens": [{"text": " word"}] * 50 + [EOT]}])
    with httpx.stream("POST", v32.base_url + "/v1/responses", json={"input": "hi", "stream": True}, timeout=30) as r:
        for line in r.iter_lines():
            if "word" in line:
                break
    state = emulator.wait_state(lambda s: s["cancelled"] >= 1, timeout=3)
    assert state["cancelled"] == 1 and state["in_flight"] == 0


@pytest.mark.parametrize(("body", "param"), [
    ({"input": 5}, "input"),
    ({"input": [{"role": "wizard", "content": "x"}]}, "input[0].role"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}, "input[0].content[0].type"),
    ({"input": [{"type": "reasoning", "summary": []}]}, "input[0].type"),
    ({"input": "hi", "previous_response_id": "resp_123"}, "previous_response_id"),
    ({"input": "hi", "store": True}, "store"),
    ({"input": "hi", "tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"input": "hi", "tool_choice": {"type": "web_search_preview"}}, "tool_choice"),
    ({"input": "hi", "reasoning": {"effort": "high"}}, "reasoning"),
    ({"input": "hi", "include": ["message.output_text.logprobs"]}, "include"),
    ({"input": "hi", "truncation": "auto"}, "truncation"),
    ({"input": "hi", "frequency_penalty": 1}, "frequency_penalty"),
    ({"input": "hi", "temperature": 3}, "temperature"),
    ({"input": "hi", "max_output_tokens": 10**9}, "max_output_tokens"),
    ({"input": "hi", "tools": [WEATHER], "tool_choice": {"type": "function", "name": "nope"}}, "tool_choice"),
    ({"input": [{"type": "function_call_output", "call_id": "call_x", "output": "1"}]}, "input[0].call_id"),
    ({"input": []}, "input"),
    ({"input": "hi", "text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format.schema"),
    ({"input": "hi", "metadata": {"k": 1}}, "metadata.k"),
    ({"input": "hi", "text": {"verbosity": "low"}}, "text.verbosity"),
])
def test_bad_requests_name_the_field(v32, emulator, body, param) -> None:
    r = httpx.post(v32.base_url + "/v1/responses", json=body, timeout=30)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert error["param"] == param, error
    assert emulator.requests() == []


def test_client_sees_400_and_404(client) -> None:
    with pytest.raises(BadRequestError) as info:
        client.responses.create(model="functionary", input="hi", previous_response_id="resp_1")
    assert "stateless" in info.value.message
    with pytest.raises(NotFoundError) as info:
        client.responses.create(model="gpt-4o", input="hi")
    assert info.value.code == "model_not_found"


def test_parse_helper_with_a_pydantic_format(client, emulator) -> None:
    from pydantic import BaseModel

    class City(BaseModel):
        city: str

    emulator.script([{"tokens": words('{"city": "Rome"}') + [EOT]}])
    parsed = client.responses.parse(model="functionary", input="A city?", text_format=City)
    assert parsed.output_parsed == City(city="Rome")
    assert parsed.text.format.name == "City" and parsed.text.format.strict is True  # echoed as sent


def test_text_format_under_grammar_auto(gateway_for, emulator) -> None:
    """--grammar auto: the format is a guarantee, so the answer is one TGI request under a whole-turn regex
    grammar (docs/grammar.md); streamed and not alike."""
    client = OpenAI(base_url=gateway_for("v3.llama3", "--grammar", "auto").base_url + "/v1", api_key="unused",
                    max_retries=0)
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    fmt = {"format": {"type": "json_schema", "name": "answer", "schema": schema, "strict": True}}
    plain = client.responses.create(model="functionary", input="hi", text=fmt)  # demo answers honour the grammar
    assert set(json.loads(plain.output_text)) == {"answer"}
    generations = [r["body"] for r in emulator.requests() if r["body"]["inputs"] != "grammar probe"]
    grammar = [body["parameters"].get("grammar") for body in generations]
    assert [g["type"] for g in grammar] == ["regex"] and '"answer"' in grammar[0]["value"]
    with client.responses.stream(model="functionary", input="hi", text=fmt) as stream:
        final = stream.get_final_response()
    assert comparable(final) == comparable(plain)


def test_async_client_stream_helper(v32, emulator) -> None:
    import asyncio

    from openai import AsyncOpenAI

    async def main():
        client = AsyncOpenAI(base_url=v32.base_url + "/v1", api_key="unused", max_retries=0)
        async with client.responses.stream(model="functionary", input=ASK, tools=[WEATHER]) as stream:
            kinds = [event.type async for event in stream]
            final = await stream.get_final_response()
        await client.close()
        return kinds, final

    emulator.script([{"tokens": words('get_weather\n{"city": "Oslo"}') + [EOT]}])
    kinds, final = asyncio.run(main())
    assert "response.function_call_arguments.delta" in kinds and kinds[-1] == "response.completed"
    (call,) = final.output
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Oslo"}
