"""End to end with the official openai client (sync, async, streaming) against the real gateway
in front of the real emulator: chit-chat, tools, parallel calls, legacy functions, every
tool_choice, code interpreter, stop, length, usage, n, logprobs, and what TGI sends back."""

from __future__ import annotations

import asyncio
import json

import httpx
from openai import AsyncOpenAI

from tests.support.openai_fixtures import EOT, PRICE, USER, WEATHER, words

def test_models_and_health(client, v32) -> None:
    models = client.models.list()
    assert [m.id for m in models.data] == ["functionary"]
    health = httpx.get(v32.base_url + "/health").json()
    assert health["tgi"]["healthy"] is True and health["gateway"]["template"] == "v3.llama3"


def test_chit_chat_without_tools(client, emulator) -> None:
    # without tools the prompt already ends with ">>>all\n": the model writes text only
    emulator.script([{"tokens": words("Hello there!") + [EOT]}])
    reply = client.chat.completions.create(model="functionary", messages=[{"role": "user", "content": "hi"}])
    assert emulator.requests()[-1]["body"]["inputs"].endswith(">>>all\n")
    assert reply.choices[0].message.content == "Hello there!"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.choices[0].message.tool_calls is None
    assert reply.usage.completion_tokens == len(words("Hello there!")) + 1
    assert reply.usage.prompt_tokens > 0


def test_single_tool_call(client, emulator) -> None:
    emulator.script([{"tokens": words('get_weather\n{"city": "Istanbul"}') + [EOT]}])
    reply = client.chat.completions.create(model="functionary", messages=USER, tools=[WEATHER])
    (call,) = reply.choices[0].message.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Istanbul"}
    assert call.id.startswith("call_") and reply.choices[0].finish_reason == "tool_calls"


def test_parallel_calls_streamed_with_the_stream_helper(client, emulator) -> None:
    text = 'get_weather\n{"city": "Istanbul"}>>>get_car_price\n{"car_name": "Tang"}'
    emulator.script([{"tokens": words(text) + [EOT]}])
    with client.chat.completions.stream(model="functionary", messages=USER, tools=[WEATHER, PRICE],
                                        parallel_tool_calls=True) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    calls = final.choices[0].message.tool_calls
    assert [c.function.name for c in calls] == ["get_weather", "get_car_price"]  # no "get_weatherget_weather"
    assert [json.loads(c.function.arguments) for c in calls] == [{"city": "Istanbul"}, {"car_name": "Tang"}]
    assert len({c.id for c in calls}) == 2
    assert final.choices[0].finish_reason == "tool_calls"


def test_stream_chunks_follow_openai_rules(client, emulator) -> None:
    emulator.script([{"tokens": words('all\nChecking.>>>get_weather\n{"city": "Rome"}') + [EOT]}])
    chunks = list(client.chat.completions.create(model="functionary", messages=USER, tools=[WEATHER], stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.choices[0].delta.role is None for c in chunks[1:] if c.choices)
    deltas = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or ())]
    assert deltas[0].id and deltas[0].type == "function" and deltas[0].function.name == "get_weather"
    assert all(d.index == 0 for d in deltas)
    assert all(d.id is None and d.function.name is None for d in deltas[1:])
    assert all(isinstance(d.function.arguments, str) for d in deltas)
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens > 0
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["tool_calls"]


def test_tool_choice_variants(client, emulator) -> None:
    # required: the prompt ends with ">>>" so the model must name a tool
    emulator.script([{"tokens": words('get_weather\n{"city": "Oslo"}') + [EOT]}])
    reply = client.chat.completions.create(model="functionary", messages=USER, tools=[WEATHER, PRICE],
                                           tool_choice="required")
    assert emulator.requests()[-1]["body"]["inputs"].endswith("<|start_header_id|>assistant<|end_header_id|>\n\n>>>")
    assert reply.choices[0].finish_reason == "tool_calls"
    # named (as LangChain's with_structured_output sends it): the name is in the prompt, finish is "stop"
    emulator.script([{"tokens": words('{"city": "Oslo"}') + [EOT]}])
    reply = client.chat.completions.create(model="functionary", messages=USER, tools=[WEATHER, PRICE],
                                           tool_choice={"type": "function", "function": {"name": "get_weather"}})
    assert emulator.requests()[-1]["body"]["inputs"].endswith(">>>get_weather\n")
    assert reply.choices[0].message.tool_calls[0].function.name == "get_weather"
    assert reply.choices[0].finish_reason == "stop"
    # none: tools are not shown and the answer is text
    emulator.script([{"tokens": words("No tools needed.") + [EOT]}])
    reply = client.chat.completions.create(model="functionary", messages=USER, tools=[WEATHER], tool_choice="none")
    assert "get_weather" not in emulator.requests()[-1]["body"]["inputs"]
    assert reply.choices[0].message.content == "No tools needed."


def test_legacy_functions(client, emulator) -> None:
    emulator.script([{"tokens": words('get_weather\n{"city": "Oslo"}') + [EOT]}])
    reply = client.chat.completions.create(model="functionary", messages=USER, functions=[WEATHER["function"]])
    assert reply.choices[0].message.function_call.name == "get_weather"
    assert reply.choices[0].finish_reason == "function_call"


def test_code_interpreter(client, emulator) -> None:
    emulator.script([{"tokens": words("python\nprint(2 ** 100)") + [EOT]}])
    reply = client.chat.completions.create(model="functionary", messages=USER,
                                           tools=[{"type": "code_interpreter"}])
    (call,) = reply.choices[0].message.tool_calls
    assert call.function.name == "python" and call.function.arguments == "print(2 ** 100)"


def test_stop_sequences_are_matched_by_the_gateway(client, emulator) -> None:
    # "ST" + "OP" completes the stop across tokens; the gateway matches it (TGI is not sent it) and ends TGI's work
    emulator.script([{"tokens": words("One, two, ") + [{"text": "ST"}, {"text": "OP"}, {"text": " three"}, EOT]}])
    reply = client.chat.completions.create(model="functionary", messages=USER, stop=["STOP"])
    assert reply.choices[0].message.content == "One, two,"  # the model's text is .strip()-ed
    assert reply.choices[0].finish_reason == "stop"
    assert "STOP" not in emulator.requests()[-1]["body"]["parameters"].get("stop", [])


def test_length(client, emulator) -> None:
    emulator.script([{"tokens": words("A long answer that goes on and on") + [EOT]}])
    reply = client.chat.completions.create(model="functionary", messages=USER, max_tokens=4)
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage.completion_tokens == 4
    assert emulator.requests()[-1]["body"]["parameters"]["max_new_tokens"] == 4


def test_sampling_parameters_follow_tgi_rules(client, emulator) -> None:
    emulator.script([{"tokens": words("ok") + [EOT]}] * 2)
    client.chat.completions.create(model="functionary", messages=USER, temperature=0, top_p=1, seed=7)
    params = emulator.requests()[-1]["body"]["parameters"]
    assert params["do_sample"] is False
    assert not {"temperature", "top_p", "top_k", "seed"} & set(params)
    client.chat.completions.create(model="functionary", messages=USER, temperature=0.7, top_p=1.0, seed=7)
    params = emulator.requests()[-1]["body"]["parameters"]
    assert params["do_sample"] is True and params["temperature"] == 0.7 and "top_p" not in params
    assert params["seed"] == 7


def test_n_choices(client, emulator) -> None:
    emulator.script([{"tokens": words("first") + [EOT]}, {"tokens": words("second") + [EOT]}])
    reply = client.chat.completions.create(model="functionary", messages=USER, n=2, temperature=0.5)
    assert sorted(c.message.content for c in reply.choices) == ["first", "second"]
    assert [c.index for c in reply.choices] == [0, 1]


def test_logprobs(client, emulator) -> None:
    emulator.script([{"tokens": [{"text": "Well", "logprob": -0.5}, {"text": ",", "logprob": -0.1},
                                 {"text": "Hi", "logprob": -0.25}, {**EOT, "logprob": -0.01}]}])
    reply = client.chat.completions.create(model="functionary", messages=USER, logprobs=True, top_logprobs=2)
    content = reply.choices[0].logprobs.content
    assert [t.token for t in content] == ["Well", ",", "Hi"]
    assert content[2].logprob == -0.25
    assert emulator.requests()[-1]["body"]["parameters"]["top_n_tokens"] == 2


def test_async_client_concurrent_requests(v32, emulator) -> None:
    async def main() -> list[str]:
        client = AsyncOpenAI(base_url=v32.base_url + "/v1", api_key="unused", max_retries=0)
        replies = await asyncio.gather(*(
            client.chat.completions.create(model="functionary", messages=[{"role": "user", "content": f"q{i}"}])
            for i in range(8)))
        await client.close()
        return [r.choices[0].message.content for r in replies]

    emulator.faults(token_delay=0.02)
    emulator.script([{"tokens": words(f"answer {i}") + [EOT]} for i in range(8)])
    answers = asyncio.run(main())
    assert sorted(answers) == sorted(f"answer {i}" for i in range(8))
    # each answer takes ~100 ms of token delays: served one after another, the last request would
    # reach TGI ~700 ms after the first; concurrently they all arrive at once
    arrivals = [r["received_at"] for r in emulator.requests()]
    assert max(arrivals) - min(arrivals) < 0.35
