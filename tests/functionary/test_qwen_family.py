"""The Qwen-style family (qwen2.5-text-only, cogito, gemma3, r1_distilled_qwen) and r1: upstream's
own prompt goldens, the rendering and parsing rules we chose (docs/parsing-decisions-qwen.md), and
random chunkings of generated outputs (stream == full parse, arguments are the model's text)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from functionary.openai_types import ChatCompletionRequest
from functionary.request import prepare_request
from functionary.templates import get_template
from functionary.templates.base import ParsedCall, ParsedOutput, PreparedRequest, ToolChoice
from tests.functionary.cases import REFERENCE

QWEN = ("qwen2.5-text-only", "cogito", "gemma3", "r1_distilled_qwen")
ALL = QWEN + ("r1",)

CALLS_BEGIN, CALLS_END = "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>"
CALL_BEGIN, CALL_END, SEP = "<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>", "<｜tool▁sep｜>"

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def prepare(**request) -> PreparedRequest:
    request.setdefault("messages", [{"role": "user", "content": "hi"}])
    return prepare_request(ChatCompletionRequest.model_validate(request))


def render(version: str, **request) -> str:
    template = get_template(version)
    prepared = prepare(**request)
    template.check(prepared)
    return template.render(prepared)


def parse_all_ways(version: str, text: str, prepared: PreparedRequest, *, sizes=(1, 2, 3, 5, 7)) -> ParsedOutput:
    """The full parse, checked equal to streaming in several fixed chunk sizes."""
    template = get_template(version)
    full = template.parse(text, prepared)
    for size in sizes:
        parser = template.stream_parser(prepared)
        events = []
        for i in range(0, len(text), size):
            events.extend(parser.feed(text[i : i + size]))
        events.extend(parser.finish())
        assert ParsedOutput.from_events(events) == full, f"chunk size {size}"
    return full


# ---------------------------------------------------------------------------------------------
# Upstream's goldens (tests/prompt_test_<version>.txt rendered from tests/test_case.json)


@pytest.mark.reference
@pytest.mark.parametrize("version", ALL)
def test_upstream_golden(version: str) -> None:
    case = json.loads((REFERENCE / "test_case.json").read_text(encoding="utf-8"))
    golden = (REFERENCE / f"prompt_test_{version}.txt").read_text(encoding="utf-8")
    template = get_template(version)
    prompt = render(version, messages=case["messages"], tools=case["tools"])
    # upstream renders without the generation prompt and compares stripped texts
    generation = "<｜Assistant｜>\n" if version == "r1" else template.generation_prompt
    assert prompt.endswith(generation)
    assert prompt[: len(prompt) - len(generation)].strip() == golden.strip()


# ---------------------------------------------------------------------------------------------
# Rendering rules


@pytest.mark.parametrize("version", QWEN)
def test_legacy_functions_render_as_tools(version: str) -> None:
    fn = WEATHER["function"]
    with_functions = render(version, functions=[fn])
    with_tools = render(version, tools=[WEATHER])
    assert with_functions == with_tools


@pytest.mark.parametrize("version", QWEN)
def test_legacy_function_call_history_renders_as_a_call(version: str) -> None:
    messages = [
        {"role": "user", "content": "Weather in Lima?"},
        {"role": "assistant", "content": None, "function_call": {"name": "get_weather", "arguments": '{"city": "Lima"}'}},
        {"role": "function", "name": "get_weather", "content": "sunny"},
    ]
    legacy = render(version, messages=messages, functions=[WEATHER["function"]])
    messages_as_tools = [
        messages[0],
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "c1", "type": "function", "function": messages[1]["function_call"]}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]
    assert legacy == render(version, messages=messages_as_tools, tools=[WEATHER])
    assert '{"name": "get_weather", "arguments": {"city": "Lima"}}' in legacy
    assert "<tool_response>\nsunny\n</tool_response>" in legacy


@pytest.mark.parametrize("version", QWEN)
def test_code_interpreter_history_shows_code_as_json(version: str) -> None:
    code = 'print("é")\nx = 1'
    messages = [
        {"role": "user", "content": "run"},
        {"role": "assistant", "tool_calls": [{"id": "p", "type": "function", "function": {"name": "python", "arguments": code}}]},
        {"role": "tool", "tool_call_id": "p", "content": "é"},
    ]
    prompt = render(version, messages=messages, tools=[{"type": "code_interpreter"}])
    assert '{"name": "python", "arguments": {"code": "print(\\"é\\")\\nx = 1"}}' in prompt
    assert '"name": "python", "description": "This tool is used to execute python code.' in prompt
    # arguments that already are a JSON object stay as written
    messages[1]["tool_calls"][0]["function"]["arguments"] = '{"code": "1"}'
    assert '{"name": "python", "arguments": {"code": "1"}}' in render(version, messages=messages, tools=[{"type": "code_interpreter"}])


def test_gemma3_repeats_a_leading_system_message_without_tools() -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    assert render("gemma3", messages=messages).count("<start_of_turn>system\nBe brief.<end_of_turn>\n") == 2
    assert render("gemma3", messages=messages, tools=[WEATHER]).count("Be brief.") == 1


def test_cogito_system_line() -> None:
    system = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    assert render("cogito", messages=system).startswith("<|im_start|>system\nEnable deep thinking subroutine\n\nBe brief.<|im_end|>")
    assert render("cogito", messages=system, tools=[WEATHER]).startswith(
        "<|im_start|>system\nEnable deep thinking subroutine.\n\nBe brief.\n\n# Tools"
    )
    assert render("cogito").startswith("<|im_start|>system\nEnable deep thinking subroutine.<|im_end|>")


@pytest.mark.parametrize("version", QWEN)
def test_choice_prefixes(version: str) -> None:
    assert render(version, tools=[WEATHER], tool_choice="required").endswith("<tool_call>\n")
    named = render(version, tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "get_weather"}})
    assert named.endswith('<tool_call>\n{"name": "get_weather", "arguments')
    assert named.count('"name": "get_weather"') == 2  # the tool list shows only the named tool


def test_r1_named_choice_is_enforced_by_a_prefix() -> None:
    named = {"type": "function", "function": {"name": "get_weather"}}
    prompt = render("r1", tools=[WEATHER], tool_choice=named)
    assert prompt.endswith(f"<｜Assistant｜>\n{CALLS_BEGIN}{CALL_BEGIN}function{SEP}get_weather\n```json\n")
    code = replace(prepare(tools=[{"type": "code_interpreter"}]), choice=ToolChoice("named", "python"))
    assert get_template("r1").render(code).endswith(f"{SEP}python\n```python\n")
    prepared = prepare(tools=[WEATHER], tool_choice=named)
    out = parse_all_ways("r1", '{"city": "Lima"}\n```' + CALL_END + CALLS_END, prepared)
    assert out == ParsedOutput(None, [ParsedCall("get_weather", '{"city": "Lima"}')])


def test_r1_no_generation_prompt_after_tool_outputs() -> None:
    messages = [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "tool_calls": [{"id": "a", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "a", "content": "sunny"},
    ]
    prompt = render("r1", messages=messages, tools=[WEATHER])
    assert prompt.endswith("<｜tool▁output▁begin｜>sunny<｜tool▁output▁end｜><｜tool▁outputs▁end｜>")


# ---------------------------------------------------------------------------------------------
# Parsing rules (Qwen-style)


def call(name: str, arguments: str) -> str:
    return f'<tool_call>\n{{"name": "{name}", "arguments": {arguments}}}\n</tool_call>'


QWEN_RULES = [
    # text before the first call is content, stripped; text after a call is dropped
    ("Let me check.\n" + call("f", '{"a": 1}') + " Done!", "Let me check.", [("f", '{"a": 1}')]),
    # the arguments are the model's own text
    (call("f", '{\n  "a" : [1, {"b": "}"}]\n}'), None, [("f", '{\n  "a" : [1, {"b": "}"}]\n}')]),
    # keys in any order; other keys ignored
    ('<tool_call>{"arguments": {"a": 1}, "id": 7, "name": "f"}</tool_call>', None, [("f", '{"a": 1}')]),
    # no arguments: {}; a scalar or string value passes through as written
    ('<tool_call>{"name": "f"}</tool_call>', None, [("f", "{}")]),
    (call("f", '"{\\"a\\": 1}"'), None, [("f", '"{\\"a\\": 1}"')]),
    # invalid JSON: passed through as far as it goes
    ('<tool_call>\n{"name": "f", "arguments": {"a": "x\n</tool_call>', None, [("f", '{"a": "x\n')]),
    # <tool_call> inside a call starts the next one
    ('<tool_call>{"name": "f", "arguments": {}}<tool_call>{"name": "g", "arguments": {"b": 2}}</tool_call>',
     None, [("f", "{}"), ("g", '{"b": 2}')]),
    # a code fence around the object is tolerated
    ('<tool_call>\n```json\n{"name": "f", "arguments": {"a": 1}}\n```\n</tool_call>', None, [("f", '{"a": 1}')]),
    # cut on length: a call appears once its arguments begin
    ('<tool_call>\n{"name": "f", "arguments": ', None, []),
    ('<tool_call>\n{"name": "f", "arguments": {"a": "Li', None, [("f", '{"a": "Li')]),
    ("Almost <tool_c", "Almost <tool_c", []),
    # a body with no object is no call
    ("<tool_call>\nget_weather(city='Lima')\n</tool_call>", None, []),
    # reasoning text is content, as upstream
    ("<think>\nplan\n</think>\n\nHello", "<think>\nplan\n</think>\n\nHello", []),
]


@pytest.mark.parametrize("version", QWEN)
@pytest.mark.parametrize("text,content,calls", QWEN_RULES)
def test_qwen_parse_rules(version: str, text: str, content, calls) -> None:
    out = parse_all_ways(version, text, prepare(tools=[WEATHER]))
    assert out == ParsedOutput(content, [ParsedCall(n, a) for n, a in calls])


CODE_RULES = [
    ('{"code": "import math\\nprint(\\"\\u00e9 \\ud83d\\ude00\\\\\\t\\/\\")"}', 'import math\nprint("é 😀\\\t/")'),
    ('{ "code" :"x"}', "x"),
    ('{"code": "x", "timeout": 5}', "x"),
    ('{"lang": "py", "code": "x"}', '{"lang": "py", "code": "x"}'),  # another shape: the raw JSON
    ('"print(1)"', '"print(1)"'),
    ('{"code": "\\ud83d"}', "\ud83d"),  # a lone surrogate, as json.loads gives it
]


@pytest.mark.parametrize("version", QWEN)
@pytest.mark.parametrize("arguments,code", CODE_RULES)
def test_code_interpreter_arguments_are_the_code(version: str, arguments: str, code: str) -> None:
    out = parse_all_ways(version, call("python", arguments), prepare(tools=[WEATHER, {"type": "code_interpreter"}]))
    assert out.tool_calls == [ParsedCall("python", code)]


def test_a_user_defined_python_function_keeps_json_arguments() -> None:
    python_tool = {"type": "function", "function": {"name": "python", "parameters": {"type": "object"}}}
    out = parse_all_ways("qwen2.5-text-only", call("python", '{"code": "x"}'), prepare(tools=[python_tool]))
    assert out.tool_calls == [ParsedCall("python", '{"code": "x"}')]


@pytest.mark.parametrize("version", QWEN)
def test_required_and_named_choices_parse_the_continuation(version: str) -> None:
    required = prepare(tools=[WEATHER], tool_choice="required")
    out = parse_all_ways(version, '{"name": "get_weather", "arguments": {"city": "Lima"}}\n</tool_call>', required)
    assert out.tool_calls == [ParsedCall("get_weather", '{"city": "Lima"}')]
    named = prepare(tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "get_weather"}})
    out = parse_all_ways(version, '": {"city": "Lima"}}\n</tool_call>', named)
    assert out == ParsedOutput(None, [ParsedCall("get_weather", '{"city": "Lima"}')])
    code = replace(prepare(tools=[{"type": "code_interpreter"}]), choice=ToolChoice("named", "python"))
    out = parse_all_ways(version, '": {"code": "print(1)"}}\n</tool_call>', code)
    assert out.tool_calls == [ParsedCall("python", "print(1)")]


# ---------------------------------------------------------------------------------------------
# Parsing rules (r1)


def r1_call(name: str, body: str, fence: str = "json") -> str:
    return f"{CALL_BEGIN}function{SEP}{name}\n```{fence}\n{body}\n```{CALL_END}"


R1_RULES = [
    # content before the calls is kept as written; text after the calls is dropped
    ("I'll check.\n" + CALLS_BEGIN + r1_call("f", '{"a": 1}') + CALLS_END + " Done!", "I'll check.\n", [("f", '{"a": 1}')]),
    (CALLS_BEGIN + r1_call("f", '{\n  "a": "```"\n}') + r1_call("g", "{}") + CALLS_END, None,
     [("f", '{\n  "a": "```"\n}'), ("g", "{}")]),
    (CALLS_BEGIN + r1_call("python", 'print("x")\n', "python") + CALLS_END, None, [("python", 'print("x")')]),
    # no fence, an empty body, a cut: as for the Qwen-style format
    (CALLS_BEGIN + f'{CALL_BEGIN}function{SEP}f\n{{"a": 1}}{CALL_END}' + CALLS_END, None, [("f", '{"a": 1}')]),
    (CALLS_BEGIN + r1_call("f", "") + CALLS_END, None, [("f", "{}")]),
    (CALLS_BEGIN + f"{CALL_BEGIN}function{SEP}f\n```json\n", None, []),
    (CALLS_BEGIN + f'{CALL_BEGIN}function{SEP}f\n```json\n{{"a": "Li', None, [("f", '{"a": "Li')]),
    # invalid JSON passes through
    (CALLS_BEGIN + r1_call("f", '{"a": 1') + CALLS_END, None, [("f", '{"a": 1')]),
    ("<think>\nplan\n</think>\n\nHello", "<think>\nplan\n</think>\n\nHello", []),
]


@pytest.mark.parametrize("text,content,calls", R1_RULES)
def test_r1_parse_rules(text: str, content, calls) -> None:
    out = parse_all_ways("r1", text, prepare(tools=[WEATHER, {"type": "code_interpreter"}]))
    assert out == ParsedOutput(content, [ParsedCall(n, a) for n, a in calls])


# ---------------------------------------------------------------------------------------------
# Random outputs, random chunkings

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=6),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
    max_leaves=8,
)
ARGS = st.dictionaries(st.text(max_size=5), JSON_VALUES, max_size=4)
# free text never holds a marker (a marker always acts as one, even inside a JSON string)
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12).filter(
    lambda s: "tool_call>" not in s and "｜" not in s
)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _split(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts})
    return [text[a:b] for a, b in zip([0] + points, points + [len(text)])]


def _stream(version: str, prepared: PreparedRequest, chunks: list[str]) -> ParsedOutput:
    parser = get_template(version).stream_parser(prepared)
    events = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    events.extend(parser.finish())
    return ParsedOutput.from_events(events)


@st.composite
def qwen_outputs(draw):
    calls = draw(st.lists(st.tuples(st.sampled_from(["get_weather", "python"]), ARGS, TEXT, st.booleans()), max_size=3))
    text = draw(TEXT).strip()
    parts, expected = [text], []
    for name, args, code, pretty in calls:
        if name == "python":
            arguments = json.dumps({"code": code}, ensure_ascii=draw(st.booleans()))
            expected.append((name, code))
        else:
            arguments = json.dumps(args, indent=2 if pretty else None, ensure_ascii=draw(st.booleans()))
            expected.append((name, args))
        sep = draw(st.sampled_from(["", "\n", " \n "]))
        parts.append(sep + call(name, arguments))
    return "".join(parts), text or None, expected


@pytest.mark.parametrize("version", QWEN)
@SETTINGS
@given(data=st.data())
def test_qwen_random_outputs_any_chunking(version: str, data) -> None:
    text, content, expected = data.draw(qwen_outputs())
    prepared = prepare(tools=[WEATHER, {"type": "code_interpreter"}])
    cuts = data.draw(st.lists(st.integers(min_value=0, max_value=len(text) + 1), max_size=30))
    full = get_template(version).parse(text, prepared)
    assert _stream(version, prepared, _split(text, cuts)) == full
    assert full.content == content
    assert [c.name for c in full.tool_calls] == [n for n, _ in expected]
    for got, (name, value) in zip(full.tool_calls, expected):
        assert (got.arguments if name == "python" else json.loads(got.arguments)) == value
    # any prefix (a cut on length) streams the same as it parses
    end = data.draw(st.integers(min_value=0, max_value=len(text)))
    assert _stream(version, prepared, _split(text[:end], cuts)) == get_template(version).parse(text[:end], prepared)


@st.composite
def r1_outputs(draw):
    calls = draw(st.lists(st.tuples(st.sampled_from(["get_weather", "python"]), ARGS, TEXT), max_size=3))
    text = draw(TEXT).strip()
    body, expected = [], []
    for name, args, code in calls:
        if name == "python":
            code = code.strip().strip("`").strip()
            body.append(r1_call(name, code, "python"))
            expected.append((name, code if code else ""))
        else:
            body.append(r1_call(name, json.dumps(args, indent=draw(st.sampled_from([None, 2])), ensure_ascii=False)))
            expected.append((name, args))
    out = text + (CALLS_BEGIN + "".join(body) + CALLS_END if calls else "")
    return out, text or None, expected


@SETTINGS
@given(data=st.data())
def test_r1_random_outputs_any_chunking(data) -> None:
    text, content, expected = data.draw(r1_outputs())
    prepared = prepare(tools=[WEATHER, {"type": "code_interpreter"}])
    cuts = data.draw(st.lists(st.integers(min_value=0, max_value=len(text) + 1), max_size=30))
    full = get_template("r1").parse(text, prepared)
    assert _stream("r1", prepared, _split(text, cuts)) == full
    assert full.content == content
    assert [c.name for c in full.tool_calls] == [n for n, _ in expected]
    for got, (name, value) in zip(full.tool_calls, expected):
        assert (got.arguments if name == "python" else json.loads(got.arguments)) == value
    end = data.draw(st.integers(min_value=0, max_value=len(text)))
    assert _stream("r1", prepared, _split(text[:end], cuts)) == get_template("r1").parse(text[:end], prepared)


MARKERS = [
    "<tool_call>", "</tool_call>", "<tool_", "</tool", "{", "}", "[", "]", '"', "\\", "\\u", "d83d", ":", ",",
    '"name"', '"arguments"', '"code"', "python", "get_weather", "\n", " ", "```", "json",
    CALLS_BEGIN, CALLS_END, CALL_BEGIN, CALL_END, SEP, "<｜tool", "function",
]


@pytest.mark.parametrize("version", ALL)
@pytest.mark.parametrize("choice", ["auto", "required", "named"])
@SETTINGS
@given(data=st.data())
def test_marker_soup_never_crashes(version: str, choice: str, data) -> None:
    tool_choice = {"type": "function", "function": {"name": "get_weather"}} if choice == "named" else choice
    prepared = prepare(tools=[WEATHER, {"type": "code_interpreter"}], tool_choice=tool_choice)
    text = "".join(data.draw(st.lists(st.sampled_from(MARKERS) | TEXT, max_size=40)))
    cuts = data.draw(st.lists(st.integers(min_value=0, max_value=len(text) + 1), max_size=30))
    full = get_template(version).parse(text, prepared)
    assert _stream(version, prepared, _split(text, cuts)) == full
    assert _stream(version, prepared, list(text)) == full
