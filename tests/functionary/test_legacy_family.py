"""The legacy family (v1, v2, v2.llama3): upstream's goldens, the f44585c TypeScript schema rules,
the rendering rules the public cases do not pin down, and the parsers' rules and invariants."""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from functionary.errors import InvalidRequestError, UnsupportedRequestError
from functionary.openai_types import ChatCompletionRequest
from functionary.request import prepare_request
from functionary.templates import get_template
from functionary.templates.base import AUTO, NONE, REQUIRED, ParsedCall, ParsedOutput, PreparedRequest, ToolChoice
from functionary.typescript_v2 import functions_namespace
from tests.functionary.cases import REFERENCE
from tests.functionary.harness import split_at

SEP = "<|reserved_special_token_249|>"
VERSIONS = ("v1", "v2", "v2.llama3")


def prepared(request: dict) -> PreparedRequest:
    return prepare_request(ChatCompletionRequest.model_validate(request))


def render(version: str, request: dict) -> str:
    template = get_template(version)
    p = prepared(request)
    template.check(p)
    return template.render(p)


def parse(version: str, text: str, choice: ToolChoice = AUTO) -> ParsedOutput:
    return get_template(version).parse(text, PreparedRequest(messages=(), tools=(), choice=choice))


def calls(*pairs: tuple[str, str]) -> list[ParsedCall]:
    return [ParsedCall(name, args) for name, args in pairs]


# ---------------------------------------------------------------------------------------------
# Upstream's goldens


def _golden_case(name: str) -> dict:
    return json.loads((REFERENCE / name).read_text(encoding="utf-8"))


@pytest.mark.reference
def test_v2_llama3_golden() -> None:
    case = _golden_case("test_case.json")
    prompt = render("v2.llama3", {"messages": case["messages"], "tools": case["tools"]})
    gen = "<|start_header_id|>assistant<|end_header_id|>\n\n"
    assert prompt.endswith(gen)
    assert prompt[: -len(gen)] == (REFERENCE / "prompt_test_v2.llama3.txt").read_text(encoding="utf-8")


@pytest.mark.reference
def test_v2_golden() -> None:
    # The copied golden is HEAD's: HEAD's jinja skips an assistant's empty "" text, while the
    # f44585c code the fixtures follow renders it as an empty text turn (public prompt v2/034).
    # The one such message of test_case.json is sent with null content; otherwise byte for byte
    # (the golden file lacks the final newline; upstream's test strips both sides).
    case = _golden_case("test_case.json")
    messages = [dict(m) for m in case["messages"]]
    empty = [m for m in messages if m["role"] == "assistant" and m.get("content") == "" and m.get("tool_calls")]
    assert len(empty) == 1
    empty[0]["content"] = None
    prompt = render("v2", {"messages": messages, "tools": case["tools"]})
    gen = "<|from|>assistant\n<|recipient|>"
    assert prompt.endswith(gen)
    assert prompt[: -len(gen)] == (REFERENCE / "prompt_test_v2.txt").read_text(encoding="utf-8") + "\n"


@pytest.mark.reference
def test_v1_golden_turns() -> None:
    # prompt_test_v1.txt predates the v1 chat template the fixtures follow: it still rendered the
    # functions as two system turns and had no blank lines. The turns themselves must agree.
    case = _golden_case("test_case_v1.json")
    prompt = render("v1", case)
    golden = (REFERENCE / "prompt_test_v1.txt").read_text(encoding="utf-8").split("\n")
    ours = [line for line in prompt.split("\n") if line]
    assert ours[-1] == "assistant:"
    assert ours[:-1] == golden[golden.index("user:"):]


# ---------------------------------------------------------------------------------------------
# The f44585c TypeScript schema


def _ns(params: dict | None, description: str = "Does things") -> str:
    fn = {"name": "f", "description": description, "parameters": params}
    return functions_namespace([fn])


def _body(params: dict) -> list[str]:
    text = _ns(params)
    start = text.index("type f = (_: {\n") + len("type f = (_: {\n")
    return text[start: text.index("\n}) => any;")].split("\n")


def test_schema_frame_and_function_description_kept_raw() -> None:
    assert _ns(None, "Line one\nline two") == (
        "// Supported function definitions that should be called when necessary.\nnamespace functions {\n\n"
        "// Line one\nline two\ntype f = () => any;\n\n} // namespace functions"
    )
    assert "type f = (_: {\n\n}) => any;" in _ns({"type": "object", "properties": {}})
    assert "type f = () => any;" in _ns({"type": "object"})


@pytest.mark.parametrize(("params", "body"), [
    pytest.param(
        {
            "type": "object",
            "properties": {
                "a": {"type": "string", "description": "First\nsecond", "default": "x", "format": "uri",
                      "maxLength": 3},
                "b": {"type": "number", "default": None, "minimum": 0.5},
                "c": {"type": "boolean", "default": True, "description": "Done."},
            },
            "required": ["a"],
        },
        [
            '// First second. Default="x". Format=uri Maximum length=3',
            "a: string,",
            "// Default=None. Minimum=0.5",
            "b?: number,",
            "// Done. Default=True.",
            "c?: boolean,",
        ],
        id="comment_line",
    ),
    pytest.param(
        {
            "type": "object",
            "properties": {
                "one": {"oneOf": [{"type": "integer"}, {"type": "string"}, {"type": "number"}]},
                "listed": {"type": ["integer", "null"]},
                "any_of": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                "enum_only": {"enum": ["a", 1, False, None]},
                "nullable": {"type": "string", "nullable": True},
                "nullable_obj": {"type": "object", "nullable": True, "properties": {}},
            },
            "required": "not-a-list",
        },
        [
            "one: number | string,",
            "listed: integer | null,",
            "any_of: any,",
            'enum_only: "a" | 1 | False | None,',
            "nullable: string | null,",
            "nullable_obj: {",
            "},",
        ],
        id="types",
    ),
    pytest.param(
        {
            "type": "object",
            "properties": {
                "grid": {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}},
                "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}},
                "loose": {"type": "array", "items": {"anyOf": [{"type": "string"}]}, "description": "Loose"},
                "objs": {
                    "type": "array",
                    "items": {"type": "object", "properties": {"n": {"type": "integer", "maximum": 9}},
                              "required": ["n"]},
                },
                "nested_objs": {"type": "array",
                                "items": {"type": "array", "items": {"type": "object", "properties": {}}}},
            },
        },
        [
            "grid?: number[][],",
            'tags?: ("a" | "b")[],',
            "// Loose.",
            "loose?: [],",
            "objs?: {",
            "    // Maximum=9",
            "    n: number,",
            "}[],",
            "nested_objs?: {",
            "    }[][],",
        ],
        id="arrays",
    ),
    pytest.param(
        {
            "type": "object",
            "properties": {
                "hidden": {"type": "string", "examples": ["x"]},
                "shown": {"type": "string", "description": "Shown", "examples": ["x", {"k": "é"}]},
                "arr": {"type": "array", "items": {"type": "string"}, "examples": [["p"]]},
            },
        },
        [
            "hidden?: string,",
            "// Shown.",
            "// Example shown:",
            "// x",
            '// {"k": "\\u00e9"}',
            "shown?: string,",
            "// Example arr:",
            '// ["p"]',
            "arr?: string[],",
        ],
        id="examples_only_next_to_a_comment",
    ),
    pytest.param(
        {
            "type": "object",
            "properties": {
                "o": {"type": "object", "description": "Outer", "properties": {"i": {"type": "object", "properties": {
                    "leaf": {"type": "string", "enum": ["x"]}}, "required": ["leaf"]}}},
                "required": ["o"],  # misplaced: not a schema, skipped
            },
        },
        ["// Outer.", "o?: {", "    i?: {", '        leaf: "x",', "    },", "},"],
        id="nesting_indent_and_odd_entries",
    ),
])
def test_schema_body(params: dict, body: list[str]) -> None:
    assert _body(params) == body


# ---------------------------------------------------------------------------------------------
# Rendering rules


WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "description": "Weather", "parameters": {"type": "object", "properties": {}}},
}


def test_v2_assistant_without_content_or_calls_is_a_bare_header() -> None:
    prompt = render("v2", {"messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None},
        {"role": "user", "content": "again"},
    ]})
    assert "<|content|>hi\n<|from|>assistant\n<|recipient|><|from|>user\n" in prompt


def test_v2_call_turn_is_stripped_before_stop() -> None:
    prompt = render("v2", {"tools": [WEATHER], "messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Sure", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{} \n"}}]},
        {"role": "tool", "tool_call_id": "c1", "name": "get_weather", "content": "sunny"},
    ]})
    assert (
        "<|from|>assistant\n<|recipient|>all\n<|content|>Sure\n"
        "<|from|>assistant\n<|recipient|>get_weather\n<|content|>{}<|stop|>\n"
        "<|from|>get_weather\n<|recipient|>all\n<|content|>sunny\n"
    ) in prompt


def test_function_role_history_uses_a8b0de1_framing() -> None:
    request = {"functions": [WEATHER["function"]], "messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "", "function_call": {"name": "get_weather", "arguments": "{}"}},
        {"role": "function", "name": "get_weather", "content": "sunny"},
        {"role": "assistant", "content": "It is sunny."},
    ]}
    assert render("v2", request).endswith(
        "<|content|>hi<|stop|>\n<|from|>function\n<|recipient|>all\n<|content|>sunny<|stop|>"
        "\n<|from|>assistant\n<|recipient|>all\n<|content|>It is sunny.<|stop|>\n<|from|>assistant\n<|recipient|>"
    )
    assert render("v2.llama3", request).endswith(
        "hi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n<|eot_id|>"
        "<|start_header_id|>function<|end_header_id|>\n\nsunny<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nIt is sunny.<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


@pytest.mark.parametrize("version", ["v2", "v2.llama3"])
def test_tool_message_name_comes_from_its_call(version: str) -> None:
    # OpenAI clients do not name tool results: the name is the one of the call it answers.
    request = {"tools": [WEATHER], "messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]}
    named = json.loads(json.dumps(request))
    named["messages"][2]["name"] = "get_weather"
    assert render(version, request) == render(version, named)


@pytest.mark.parametrize("version", ["v2", "v2.llama3"])
def test_tool_message_without_name_or_call_is_refused(version: str) -> None:
    request = {"tools": [WEATHER], "messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "content": "sunny"},
    ]}
    with pytest.raises(InvalidRequestError) as info:
        render(version, request)
    assert info.value.param == "messages[2].name"


def test_v2_llama3_calls_after_text() -> None:
    prompt = render("v2.llama3", {"tools": [WEATHER], "messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}},
            {"id": "b", "type": "function", "function": {"name": "get_weather", "arguments": "{\"x\": 1}"}}]},
        {"role": "tool", "tool_call_id": "a", "name": "get_weather", "content": "1"},
        {"role": "tool", "tool_call_id": "b", "name": "get_weather", "content": "2"},
    ]})
    assert (
        f"<|start_header_id|>assistant<|end_header_id|>\n\nChecking.{SEP}get_weather\n{{}}{SEP}get_weather\n"
        '{"x": 1}<|eot_id|><|start_header_id|>tool<|end_header_id|>\n\nname=get_weather\n1<|eot_id|>'
    ) in prompt


def test_v1_rules() -> None:
    history = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "name": "get_weather", "content": "sunny"},
    ]
    with pytest.raises(InvalidRequestError) as info:
        render("v1", {"tools": [WEATHER], "messages": history})
    assert info.value.param == "messages[1].content" and "function_call" in info.value.message
    with pytest.raises(UnsupportedRequestError):
        render("v1", {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
                      "messages": [{"role": "user", "content": "hi"}]})
    # tool results are not part of v1: rendered as nothing but the template's blank lines
    history[1] = {"role": "assistant", "content": "Let me see."}
    assert render("v1", {"tools": [WEATHER], "messages": history}) == (
        "\n\nuser:\nhi<|END_OF_USER|>\n\n\n\n\nassistant:\nLet me see.<|END_OF_ASSISTANT|>\n\n\n\n\n\nassistant:"
    )


# ---------------------------------------------------------------------------------------------
# Parsing rules


def test_v2_parse_rules() -> None:
    two_texts = "all\n<|content|>One.\n<|from|>assistant\n<|recipient|>f\n<|content|>{}\n" \
                "<|from|>assistant\n<|recipient|>all\n<|content|> Two. "
    out = parse("v2", two_texts)
    assert out.content == "One.\nTwo." and out.tool_calls == calls(("f", "{}"))
    assert parse("v2", "get_wea").tool_calls == calls(("get_wea", ""))
    assert parse("v2", "get_weather\n<|con").tool_calls == calls(("get_weather", ""))
    assert parse("v2", "\n<|content|>Hello").content == "Hello"  # no recipient: text
    # a turn whose header never reaches <|recipient|> is skipped
    assert parse("v2", "f\n<|content|>{}<|from|>assistant\n<|content|>lost").tool_calls == calls(("f", "{}"))
    assert parse("v2", "Plain words", NONE).content == "Plain words"
    assert parse("v2", "", ToolChoice("named", "f")).tool_calls == calls(("f", ""))
    assert parse("v2", "", NONE) == ParsedOutput()


def test_v2_llama3_parse_rules() -> None:
    assert parse("v2.llama3", f"Hi. {SEP}f\n{{}} {SEP} g \n[1]") == ParsedOutput("Hi.", calls(("f", "{}"), ("g", "[1]")))
    assert parse("v2.llama3", f"{SEP}{SEP}f\n{{}}").tool_calls == calls(("f", "{}"))  # empty separator ignored
    assert parse("v2.llama3", f"{SEP}get_current_weather").tool_calls == calls(("get_current_weather", ""))
    assert parse("v2.llama3", "f\n{}", REQUIRED).tool_calls == calls(("f", "{}"))
    assert parse("v2.llama3", "{}", ToolChoice("named", "f")).tool_calls == calls(("f", "{}"))
    assert parse("v2.llama3", "", AUTO) == ParsedOutput()


def test_v1_parse_rules() -> None:
    out = parse("v1", "Checking.\n<|START_OF_FUNCTION_CALL|> f :\n {\"a\": 1}\n")
    assert out == ParsedOutput("Checking.", calls(("f", '{"a": 1}')))
    assert parse("v1", "<|START_OF_FUNCTION_CALL|>get_wea").tool_calls == calls(("get_wea", ""))
    assert parse("v1", "<|START_OF_FUNCTION_CALL|>f:\n{}<|START_OF_FUNCTION_CALL|>g:").tool_calls == calls(
        ("f", "{}<|START_OF_FUNCTION_CALL|>g:"))  # one call per turn: the rest is its arguments
    assert parse("v1", "Hi <|START_OF_FUNC").content == "Hi <|START_OF_FUNC"


# ---------------------------------------------------------------------------------------------
# Invariants: any chunking gives the full parse; nothing raises; cost is linear


_PIECES = {
    "v1": ["<|START_OF_FUNCTION_CALL|>", "<|END_OF_ASSISTANT|>", ":", "f", "all"],
    "v2": ["<|from|>", "<|recipient|>", "<|content|>", "<|stop|>", "assistant", "all", "f", "python"],
    "v2.llama3": [SEP, "<|eot_id|>", "f", "python", "all"],
}
_CHOICES = [AUTO, NONE, REQUIRED, ToolChoice("named", "f")]


@pytest.mark.parametrize("version", VERSIONS)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_chunking_gives_the_full_parse(version: str, data) -> None:
    piece = st.one_of(
        st.sampled_from(_PIECES[version] + ["\n", " ", "\n\n", "{", "}", '"', "<", "<|", "|>"]),
        st.text(max_size=6),
    )
    text = "".join(data.draw(st.lists(piece, max_size=30)))
    choice = data.draw(st.sampled_from(_CHOICES))
    cuts = data.draw(st.lists(st.integers(min_value=0, max_value=len(text) + 1), max_size=30))
    template = get_template(version)
    request = PreparedRequest(messages=(), tools=(), choice=choice)
    whole = template.parse(text, request)
    parser = template.stream_parser(request)
    events = []
    for chunk in split_at(text, cuts):
        events.extend(parser.feed(chunk))
    events.extend(parser.finish())
    assert ParsedOutput.from_events(events) == whole


@pytest.mark.parametrize(
    ("version", "text"),
    [
        ("v1", "<|START_OF_FUNCTION_CALL|>" + "n" * 150_000),
        ("v1", "t " * 75_000),
        ("v2", "n" * 150_000),
        ("v2", "f\n<|content|>" + "<|fro" * 30_000),
        ("v2", "<|from|>" + "<|recipien" * 15_000),
        ("v2.llama3", SEP + "n" * 150_000),
        ("v2.llama3", SEP + "f\n" + "<|reserved" * 15_000),
    ],
)
def test_linear_in_the_output(version: str, text: str) -> None:
    template = get_template(version)
    parser = template.stream_parser(PreparedRequest(messages=(), tools=(), choice=AUTO))
    start = time.perf_counter()
    for ch in text:
        parser.feed(ch)
    parser.finish()
    assert time.perf_counter() - start < 10.0  # ~1 s when linear; a rescan per token takes minutes
