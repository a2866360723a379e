"""Grammars for TGI (tgi/pipeline/grammar.py), the transcript of a guided answer (tgi/pipeline/guided.py) and the emulator's demo
answers under a grammar; guided generation over a real pool and emulator processes."""

from __future__ import annotations

import json
import re
from contextlib import AsyncExitStack, asynccontextmanager

import jsonschema
import pytest

from functionary.openai_types import ChatCompletionRequest, ResponseFormat
from functionary.request import prepare_request
from functionary.templates import get_template
from functionary.templates.base import ParsedOutput, ToolCallStart
from tgi.emulator import demo as emulator
from tgi.protocol.client import TGIClient
from tgi.protocol.errors import UpstreamGenerationError
from tgi.pipeline.grammar import (
    JSON_OBJECT_REGEX,
    GrammarSupport,
    arguments_grammar,
    literal_regex,
    plan_grammar,
    response_grammar,
)
from tgi.pipeline.guided import GuidedGeneration, Transcript, overlap
from tgi.pipeline.params import Limits
from tgi.cluster.pool import EndpointPool
from tgi.protocol.types import GenerateParameters

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
           "required": ["city", "unit"]}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time", "description": "Time",
                                      "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}}}},
]
GUIDED_VERSIONS = ("v3.llama3", "v3-llama3.1", "v3-llama3.1-reasoning", "r1_distilled_llama",
                   "qwen2.5-text-only", "cogito", "gemma3", "r1_distilled_qwen")


def prepared_for(tool_choice="auto", tools=TOOLS, **fields):
    request = ChatCompletionRequest.model_validate(
        {"messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": tools, "tool_choice": tool_choice,
         **fields})
    return prepare_request(request)


# -- schema -> grammar ---------------------------------------------------------------------------------


def test_arguments_grammar_takes_schemas_with_properties_and_degrades_the_rest():
    assert arguments_grammar(WEATHER).model_dump() == {"type": "json", "value": WEATHER}
    assert arguments_grammar(None).value == {"type": "object", "properties": {}}  # no parameters: {}
    assert arguments_grammar({"type": "object"}).type == "regex"  # any object
    assert arguments_grammar({"type": "object", "description": "free"}).value == JSON_OBJECT_REGEX
    assert arguments_grammar({"anyOf": [WEATHER, {"type": "object", "properties": {}}]}) is None
    assert arguments_grammar({"type": "object", "additionalProperties": {"type": "string"}}) is None
    assert arguments_grammar({"type": "array", "items": {"type": "string"}}) is None


def test_response_grammar_maps_openai_formats():
    assert response_grammar(None) == (None, False)
    assert response_grammar(ResponseFormat(type="text")) == (None, False)
    grammar, wanted = response_grammar(ResponseFormat(type="json_object"))
    assert wanted and grammar.type == "regex" and grammar.value == JSON_OBJECT_REGEX
    grammar, wanted = response_grammar(ResponseFormat(type="json_schema", json_schema={"name": "w", "schema": WEATHER}))
    assert wanted and grammar.type == "json" and grammar.value == WEATHER
    assert response_grammar(ResponseFormat(type="json_schema", json_schema={"name": "w", "schema": {"anyOf": []}})) == (
        None, True)


@pytest.mark.parametrize("fmt", [{"type": "json_schema"}, {"type": "json_schema", "json_schema": {"schema": [1]}}])
def test_malformed_response_format_is_a_400(fmt):
    from functionary.errors import InvalidRequestError

    with pytest.raises(InvalidRequestError) as info:
        response_grammar(ResponseFormat.model_validate(fmt))
    assert info.value.param == "response_format.json_schema"


def test_json_object_regex():
    pattern = re.compile(JSON_OBJECT_REGEX)
    for good in ('{}', '{"a": 1}', '{"a":[1, -2.5e3, {"b": null}], "c": "x\\"y\\u00e9"}', '{ "t": true }'):
        assert pattern.fullmatch(good), good
    for bad in ('[]', '"x"', '{"a": }', '{"a": 1,}', "{'a': 1}", '{"a": [[[[1]]]]}', '{"a": "\n"}'):
        assert not pattern.fullmatch(bad), bad


def test_literal_regex_escapes_every_call_opening():
    openings = [get_template(v).call_prefix(name) for v in GUIDED_VERSIONS for name in ("get_weather", "a.b-c")]
    pattern = re.compile(literal_regex(openings))
    for text in openings:
        assert pattern.fullmatch(text)
    assert not pattern.fullmatch("get_weather")
    assert "\n" not in literal_regex(openings)  # newlines are written as \n


def test_plan_grammar():
    support = GrammarSupport("auto")
    template = get_template("v3-llama3.1")
    tools = [*TOOLS, {"type": "function", "function": {"name": "free", "parameters": {"anyOf": [WEATHER]}}},
             {"type": "code_interpreter"}]
    plan = plan_grammar(prepared=prepared_for("required", tools), response_format=None, template=template,
                        support=support)
    assert plan.names == ("get_weather", "get_time", "free", "python")
    assert set(plan.calls) == {"get_weather", "get_time"}  # 'free' degrades; python's arguments are code
    assert plan_grammar(prepared=prepared_for("none"), response_format=None, template=template, support=support) is None
    assert plan_grammar(prepared=prepared_for(), response_format=None, template=get_template("v2"),
                        support=support) is None  # a version without grammar hooks
    assert plan_grammar(prepared=prepared_for(), response_format=None, template=template,
                        support=GrammarSupport("off")) is None
    support.record("http://a", False)
    assert not support.active  # every endpoint refuses
    json_only = plan_grammar(prepared=prepared_for("none"), response_format=ResponseFormat(type="json_object"),
                             template=template, support=GrammarSupport("on"))
    assert json_only.calls == {} and json_only.response.type == "regex"


# -- the transcript: a two-phase answer reads like one unconstrained stream ------------------------------

OUTPUTS = {
    "v3.llama3": [
        'get_weather\n{"city": "Paris", "unit": "c"}',
        'all\nLet me check.>>>get_weather\n{"city": "Paris", "unit": "c"}>>>get_time\n{"tz": "UTC"}',
        'get_weather\n{"city": "Paris", "unit": "c"}>>>all\nDone.',
        'python\nprint(1)',
        'all\nNo call needed.',
    ],
    "v3-llama3.1": [
        '<function=get_weather>{"city": "Paris", "unit": "c"}</function>',
        'I will check. <function=get_weather>{"city": "Paris", "unit": "c"}</function>'
        '<function=get_time>{"tz": "UTC"}</function>',
        '<function=get_weather>{"city": "Paris"}</function>Text after',
        'Plain text only.',
    ],
    "qwen2.5-text-only": [
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}\n</tool_call>',
        'Sure.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_time", "arguments": {"tz": "UTC"}}\n</tool_call>',
        'Plain text only.',
    ],
}
OUTPUTS["v3-llama3.1-reasoning"] = OUTPUTS["r1_distilled_llama"] = OUTPUTS["v3-llama3.1"]
OUTPUTS["gemma3"] = OUTPUTS["cogito"] = OUTPUTS["r1_distilled_qwen"] = OUTPUTS["qwen2.5-text-only"]


def two_phase(version: str, text: str, size: int, *, content: bool = False):
    """Feed ``text`` in ``size`` chunks, cutting where the transcript says and going on from the cut with the
    same text (as a constrained segment that writes what the model wrote would)."""
    template = get_template(version)
    prepared = prepared_for()
    transcript = Transcript(template, prepared, template.render(prepared))
    events, cuts, pos = [], [], 0
    while pos < len(text):
        piece = text[pos:pos + size]
        produced, cut = transcript.feed(piece, watch={"get_weather", "get_time"}, content=content)
        events += produced
        if cut is None:
            pos += len(piece)
            continue
        content = False
        cuts.append((cut, transcript.size))
        assert text.startswith(transcript.text)
        pos = transcript.mark = transcript.size
    events += transcript.finish()
    return template, prepared, events, cuts


@pytest.mark.parametrize("version", GUIDED_VERSIONS)
@pytest.mark.parametrize("size", [1, 2, 3, 7, 10_000])
def test_cut_and_go_on_gives_the_unconstrained_events(version, size):
    for text in OUTPUTS[version]:
        template, prepared, events, cuts = two_phase(version, text, size)
        expected = template.parse(text, prepared)
        assert ParsedOutput.from_events(events) == expected, (text, events)
        starts = [e.name for e in events if type(e) is ToolCallStart]
        assert starts == [c.name for c in expected.tool_calls]  # each call announced once
        assert [cut.name for cut, _ in cuts] == [n for n in starts if n != "python"]
        for cut, at in cuts:  # the cut lies right where the arguments begin
            opening = template.call_prefix(cut.name)
            assert (template.render(prepared) + text[:at]).endswith(opening)


@pytest.mark.parametrize("version", ["v3.llama3", "v3-llama3.1", "qwen2.5-text-only"])
def test_content_cut_starts_the_answer_over(version):
    text = OUTPUTS[version][-1]  # plain text
    _, _, events, cuts = two_phase(version, text, 3, content=True)
    assert [cut.kind for cut, _ in cuts] == ["content"]
    at = cuts[0][1]
    assert at == (len("all\n") if version == "v3.llama3" else 0)
    assert "".join(e.text for e in events if hasattr(e, "text") and type(e).__name__ == "TextDelta") == text[at:]


def test_overlap():
    assert overlap("...>>>", ">>>get\n") == 3
    assert overlap('<tool_call>\n{"name": "f", "arguments', '<tool_call>\n{"name": "f", "arguments": ') == 36
    assert overlap("abc", "xyz") == 0


# -- the emulator's demo answers under a grammar ---------------------------------------------------------

SCHEMAS = [
    WEATHER,
    {"type": "object", "properties": {}},
    {"type": "object", "properties": {"n": {"type": "integer", "minimum": 5, "maximum": 9, "multipleOf": 3},
                                      "x": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
                                      "b": {"type": "boolean"}, "z": {"type": "null"}},
     "required": ["n", "x", "b", "z"]},
    {"type": "object", "properties": {"items": {"type": "array", "minItems": 2, "items": {
        "type": "object", "properties": {"id": {"type": "string", "format": "uuid"}, "tags": {
            "type": "array", "items": {"enum": ["a", "b"]}}}, "required": ["id", "tags"]}}}, "required": ["items"]},
    {"type": "object", "$defs": {"Place": {"type": "object", "properties": {"name": {"type": "string", "minLength": 12,
                                                                                   "maxLength": 14}},
                                           "required": ["name"]}},
     "properties": {"from": {"$ref": "#/$defs/Place"}, "when": {"type": "string", "format": "date-time"},
                    "mode": {"anyOf": [{"const": "car"}, {"type": "integer"}]},
                    "opt": {"type": ["null", "string"]}},
     "required": ["from", "when", "mode", "opt"]},
    {"allOf": [{"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
               {"properties": {"b": {"type": "integer"}}, "required": ["b"]}], "properties": {}},
]


@pytest.mark.parametrize("schema", SCHEMAS)
def test_demo_instance_fits_the_schema(schema):
    instance = emulator.schema_instance(schema)
    jsonschema.validate(instance, schema)
    reply = emulator.demo_reply("<|start_header_id|>assistant<|end_header_id|>\n\n>>>f\n",
                                grammar={"type": "json", "value": schema}, eos_texts={"<|eot_id|>"})
    text = "".join(t.text for t in reply.tokens)
    assert text.endswith("<|eot_id|>") and reply.tokens[-1].eos
    jsonschema.validate(json.loads(text[: -len("<|eot_id|>")]), schema)


def test_demo_regex_answers():
    names = literal_regex(["get_weather\n", "get_time\n"])
    prompt = emulator.LLAMA3_GENERATION + ">>>"
    out = emulator._constrained_output({"type": "regex", "value": names}, "get_time\n{}<|eot_id|>", "<|eot_id|>")
    assert out == "get_time\n<|eot_id|>"  # the part of the natural answer that fits
    out = emulator._constrained_output({"type": "regex", "value": names}, "Hello!<|eot_id|>", "<|eot_id|>")
    assert out == "get_weather\n<|eot_id|>"  # else the first alternative
    out = emulator._constrained_output({"type": "regex", "value": JSON_OBJECT_REGEX}, "Hello!", "<|eot_id|>")
    assert json.loads(out[: -len("<|eot_id|>")])
    assert emulator.demo_output(prompt + 'get_weather\n{"city": "Paris"}') == "<|eot_id|>"  # done after a call


# -- support detection and guided generation against emulator processes ----------------------------------


@asynccontextmanager
async def pool_of(url: str):
    async with AsyncExitStack() as stack:
        client = await stack.enter_async_context(TGIClient(url))
        pool = await stack.enter_async_context(EndpointPool([client], health_interval=0))
        yield client, pool


async def test_probe_tells_support_apart_without_generating(start_emulator):
    on, off = start_emulator(), start_emulator(disable_grammar_support=True)
    support = GrammarSupport("auto", [on.base_url, off.base_url])
    async with pool_of(on.base_url) as (a, _), pool_of(off.base_url) as (b, _):
        await support.probe([a, b])
    assert support.endpoints == {on.base_url: True, off.base_url: False}
    assert support.active
    assert [r["outcome"] for r in on.requests() + off.requests()] == ["validation", "validation"]


def guided(pool, support, *, version="v3-llama3.1", choice="auto", max_new_tokens=200):
    template = get_template(version)
    prepared = prepared_for(choice)
    plan = plan_grammar(prepared=prepared, response_format=None, template=template, support=support)
    return GuidedGeneration(
        plan=plan, template=template, prepared=prepared, prompt=template.render(prepared),
        parameters=GenerateParameters(max_new_tokens=max_new_tokens, details=True, do_sample=False),
        stops=(*template.stop_tokens, *template.eos_tokens), pool=pool, support=support,
        limits=Limits(65536, 60000), count_tokens=lambda text: len(text) // 3 + 1,
    )


async def collect(generation: GuidedGeneration):
    events, last = [], None
    async for step in generation.steps():
        events += step.events
        last = step
    return ParsedOutput.from_events(events), last


async def test_first_refusal_turns_grammar_off_for_that_endpoint(start_emulator):
    tgi = start_emulator(disable_grammar_support=True, max_total_tokens=65536, max_input_tokens=60000)
    support = GrammarSupport("auto", [tgi.base_url])  # not probed: the first request finds out
    async with pool_of(tgi.base_url) as (_, pool):
        parsed, last = await collect(guided(pool, support, choice="required"))
        assert parsed.tool_calls[0].name == "get_weather" and json.loads(parsed.tool_calls[0].arguments)
        assert last.done and last.finish_reason == "eos_token"
        assert support.endpoints == {tgi.base_url: False} and not support.active
        assert support.stats.degraded == 1
    outcomes = [(r["outcome"], "grammar" in r["body"]["parameters"]) for r in tgi.requests()]
    assert outcomes == [("validation", True), ("ok", False)]  # refused, then sent again without it


async def test_grammar_on_fails_a_request_on_an_endpoint_without_support(start_emulator):
    tgi = start_emulator(disable_grammar_support=True, max_total_tokens=65536, max_input_tokens=60000)
    async with pool_of(tgi.base_url) as (_, pool):
        with pytest.raises(UpstreamGenerationError) as info:
            await collect(guided(pool, GrammarSupport("on", [tgi.base_url]), choice="required"))
    assert info.value.code == "grammar_unsupported"


async def test_named_choice_runs_arguments_then_continuation(start_emulator):
    tgi = start_emulator(max_total_tokens=65536, max_input_tokens=60000)
    support = GrammarSupport("auto", [tgi.base_url])
    async with pool_of(tgi.base_url) as (_, pool):
        parsed, last = await collect(guided(pool, support, version="qwen2.5-text-only",
                                            choice={"type": "function", "function": {"name": "get_weather"}}))
    jsonschema.validate(json.loads(parsed.tool_calls[0].arguments), WEATHER)
    requests = tgi.requests()
    assert [r["body"]["parameters"].get("grammar", {}).get("type") for r in requests] == ["json", None]
    assert requests[0]["body"]["inputs"].endswith('<tool_call>\n{"name": "get_weather", "arguments": ')
    assert requests[1]["body"]["inputs"].endswith("}\n</tool_call>")  # the call suffix was added
    assert last.completion_tokens == sum(r["generated_tokens"] for r in requests)
    assert support.stats.as_dict() == {"requests": 1, "tgi_requests": 2, "constrained": 1, "cuts": 0, "degraded": 0}


async def test_budget_ends_the_answer_on_length(start_emulator):
    tgi = start_emulator(max_total_tokens=65536, max_input_tokens=60000)
    async with pool_of(tgi.base_url) as (_, pool):
        parsed, last = await collect(guided(pool, GrammarSupport("auto"), choice="required", max_new_tokens=6))
    assert last.finish_reason == "length" and last.completion_tokens == 6
    assert sum(r["generated_tokens"] for r in tgi.requests()) == 6
