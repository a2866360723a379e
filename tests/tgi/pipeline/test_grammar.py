"""``--grammar auto|on|off`` in the pipeline (tgi/pipeline/grammar.py, ``ChatService.plan``): which requests get the
whole-turn regex, the 1,024-token cap, and a 400 where TGI refuses grammars."""

from __future__ import annotations

import pytest

from functionary.errors import InvalidRequestError
from functionary.openai_types import ChatCompletionRequest
from functionary.request import prepare_request
from functionary.templates import get_template
from functionary.turn_grammar import whole_turn_regex
from tgi.pipeline.chat import ChatService
from tgi.pipeline.grammar import GRAMMAR_TOKEN_LIMIT, GrammarSupport, GrammarUnsupportedError
from tgi.pipeline.params import Limits

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}}]


def service(mode: str = "auto", endpoints: dict | None = None, version: str = "v3-llama3.1") -> ChatService:
    support = GrammarSupport(mode, list(endpoints or ()))
    for url, ok in (endpoints or {}).items():
        support.record(url, ok)
    return ChatService(template=get_template(version), pool=None, limits=Limits(8192, 4096), model_name="m",
                       count_tokens=len, grammar=support)


def request(**extra) -> ChatCompletionRequest:
    return ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "hi"}], tools=TOOLS, **extra)


def plan(svc: ChatService, req: ChatCompletionRequest):
    return svc.plan(req, request_id="r")


@pytest.mark.parametrize("extra", [
    {"tool_choice": "required"},
    {"tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
    {"parallel_tool_calls": False},
    {"response_format": {"type": "json_object"}},
])
def test_guarantees_get_the_whole_turn_regex(extra):
    svc = service()
    req = request(**extra)
    p = plan(svc, req)
    grammar = p.parameters.grammar
    assert grammar is not None and grammar.type == "regex"
    assert grammar.value == whole_turn_regex(svc.template, req, prepare_request(req))
    assert p.prompt == svc.template.render(prepare_request(req))  # the model's own prompt, unchanged


def test_strict_tool_asks_for_a_guarantee():
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER, "strict": True}}]
    req = ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "hi"}], tools=tools)
    assert plan(service(), req).parameters.grammar is not None


def test_nothing_asked_nothing_constrained():
    assert plan(service(), request()).parameters.grammar is None
    assert plan(service(), request(tool_choice="none")).parameters.grammar is None


def test_on_constrains_every_request_with_tools_and_off_none():
    assert plan(service("on"), request()).parameters.grammar is not None
    plain = ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "hi"}])
    assert plan(service("on"), plain).parameters.grammar is None
    assert plan(service("off"), request(tool_choice="required")).parameters.grammar is None


def test_a_grammar_caps_the_answer_at_1024_tokens():
    p = plan(service(), request(tool_choice="required", max_tokens=3000))
    assert p.parameters.max_new_tokens == GRAMMAR_TOKEN_LIMIT
    assert plan(service(), request(tool_choice="required", max_tokens=50)).parameters.max_new_tokens == 50
    assert plan(service(), request(max_tokens=3000)).parameters.max_new_tokens == 3000  # unconstrained: as asked


def test_tgi_refusing_grammars_is_a_400_for_guarantees_only():
    svc = service(endpoints={"http://a": False, "http://b": False})
    with pytest.raises(GrammarUnsupportedError) as caught:
        plan(svc, request(tool_choice="required"))
    assert caught.value.status_code == 400 and caught.value.code == "grammar_unsupported"
    assert caught.value.error_type == "invalid_request_error"
    assert plan(svc, request()).parameters.grammar is None  # nothing promised: served as before
    one_left = service(endpoints={"http://a": False, "http://b": True})
    assert plan(one_left, request(tool_choice="required")).parameters.grammar is not None


def test_unsupported_schema_is_a_400_naming_the_field():
    tools = [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"a": {"not": {"type": "string"}}}}}}]
    req = ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "hi"}], tools=tools,
                                tool_choice="required")
    with pytest.raises(InvalidRequestError) as caught:
        plan(service(), req)
    assert caught.value.param == "tools[0].function.parameters"
    assert plan(service("off"), req).parameters.grammar is None  # off: nothing is compiled, nothing refused


def test_malformed_response_format_is_a_400():
    req = ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "hi"}],
                                response_format={"type": "json_schema"})
    for mode in ("auto", "off"):
        with pytest.raises(InvalidRequestError) as caught:
            plan(service(mode), req)
        assert caught.value.param == "response_format.json_schema"


def test_bad_mode():
    with pytest.raises(ValueError):
        GrammarSupport("sometimes")
