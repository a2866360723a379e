"""v3.llama3, v3-llama3.1, v3-llama3.1-reasoning and r1_distilled_llama beyond the shared case
harness: the llama.cpp goldens of the shipped chat templates, upstream's own prompt goldens, the
TypeScript schema quirks, and the parsing decisions of docs/parsing-decisions-llama3.md."""

from __future__ import annotations

import html
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from functionary.templates import get_template
from functionary.templates.base import AUTO, NONE, REQUIRED, ParsedOutput, PreparedRequest, ToolChoice
from functionary.typescript import function_to_typescript, schema_to_typescript, tools_to_namespace
from tests.functionary.cases import REFERENCE

CHAT_TEMPLATES = REFERENCE.parent / "chat_templates"
GOLDENS = CHAT_TEMPLATES / "llama.cpp-goldens-2024-09-26"
A8B0DE1_TESTS = CHAT_TEMPLATES / "functionary-repo@a8b0de1" / "tests"
VERSIONS = ("v3.llama3", "v3-llama3.1", "v3-llama3.1-reasoning", "r1_distilled_llama")
GENERATION_PROMPT = {
    "v3.llama3": "<|start_header_id|>assistant<|end_header_id|>\n\n>>>",
    "v3-llama3.1": "<|start_header_id|>assistant<|end_header_id|>\n\n",
    "v3-llama3.1-reasoning": "<|start_header_id|>assistant<|end_header_id|>\n\n",
    "r1_distilled_llama": "<｜Assistant｜>",
}


def prepared(messages: list[dict], tools: list[dict] | None = None, choice: ToolChoice = AUTO) -> PreparedRequest:
    keys = ("role", "content", "name", "tool_calls", "tool_call_id", "function_call")
    return PreparedRequest(
        messages=tuple({k: m.get(k) for k in keys} for m in messages),
        tools=tuple(tools or ()),
        choice=choice,
    )


def parse(version: str, text: str, choice: ToolChoice = AUTO, tools: list[dict] | None = None) -> dict:
    out = get_template(version).parse(text, prepared([], tools, choice))
    return {"content": out.content, "calls": [(c.name, c.arguments) for c in out.tool_calls]}


def stream(version: str, chunks: list[str], choice: ToolChoice = AUTO, tools: list[dict] | None = None) -> dict:
    parser = get_template(version).stream_parser(prepared([], tools, choice))
    events = [ev for chunk in chunks for ev in parser.feed(chunk)]
    events += parser.finish()
    out = ParsedOutput.from_events(events)
    return {"content": out.content, "calls": [(c.name, c.arguments) for c in out.tool_calls]}


# ---------------------------------------------------------------------------------------------
# Goldens


@pytest.mark.reference
@pytest.mark.parametrize("context", ["simple", "system", "tool_use"])
@pytest.mark.parametrize("version,model", [("v3.llama3", "v3.2"), ("v3-llama3.1", "v3.1")])
def test_llama_cpp_goldens(version: str, model: str, context: str) -> None:
    """llama.cpp rendered the shipped meetkai-functionary-medium-v3.x templates with jinja2."""
    ctx = json.loads((GOLDENS / "contexts" / f"{context}.json").read_text(encoding="utf-8"))
    want = (GOLDENS / "goldens" / f"meetkai-functionary-medium-{model}-{context}.txt").read_text(encoding="utf-8")
    # a jinja template knows no tool choice: render without a choice prefix (auto's is empty)
    got = ctx["bos_token"] + get_template(version).render(prepared(ctx["messages"], ctx.get("tools"), AUTO))
    assert got == want


def _upstream_golden(version: str, case_file: Path, golden_file: Path) -> tuple[str, str]:
    case = json.loads(case_file.read_text(encoding="utf-8"))
    rendered = get_template(version).render(prepared(case["messages"], case.get("tools"), AUTO))
    assert rendered.endswith(GENERATION_PROMPT[version])
    # upstream's test renders without the generation prompt and compares stripped texts
    return rendered[: -len(GENERATION_PROMPT[version])].strip(), golden_file.read_text(encoding="utf-8").strip()


@pytest.mark.reference
@pytest.mark.parametrize(
    "version,tests_dir",
    [("v3.llama3", REFERENCE), ("v3.llama3", A8B0DE1_TESTS), ("r1_distilled_llama", REFERENCE)],
    ids=["v3.llama3-HEAD", "v3.llama3-a8b0de1", "r1_distilled_llama-HEAD"],
)
def test_upstream_goldens(version: str, tests_dir: Path) -> None:
    got, want = _upstream_golden(version, tests_dir / "test_case.json", tests_dir / f"prompt_test_{version}.txt")
    assert got == want


@pytest.mark.reference
@pytest.mark.parametrize("tests_dir", [REFERENCE, A8B0DE1_TESTS], ids=["HEAD", "a8b0de1"])
def test_upstream_v31_golden_is_the_unescaped_prompt(tests_dir: Path) -> None:
    """Upstream's prompt_test_v3-llama3.1.txt predates the ``|safe`` edit of the shipped template,
    so its tool lines are not HTML-escaped. We render what the model was trained on (escaped);
    apart from the escaping the two agree."""
    got, want = _upstream_golden("v3-llama3.1", tests_dir / "test_case.json", tests_dir / "prompt_test_v3-llama3.1.txt")
    assert got != want
    assert "&#34;" in got and "&#34;" not in want
    assert html.unescape(got) == want


# ---------------------------------------------------------------------------------------------
# Prompts


@pytest.mark.parametrize(
    "version,choice,suffix",
    [
        ("v3.llama3", AUTO, ">>>"),
        ("v3.llama3", REQUIRED, ">>>"),
        ("v3.llama3", NONE, ">>>all\n"),
        ("v3.llama3", ToolChoice("named", "f"), ">>>f\n"),
        ("v3-llama3.1", AUTO, "<|end_header_id|>\n\n"),
        ("v3-llama3.1", NONE, "<|end_header_id|>\n\n"),
        ("v3-llama3.1", REQUIRED, "<|end_header_id|>\n\n<function="),
        ("v3-llama3.1", ToolChoice("named", "f"), "<|end_header_id|>\n\n<function=f>"),
        ("v3-llama3.1-reasoning", ToolChoice("named", "f"), "<|end_header_id|>\n\n<function=f>"),
        ("r1_distilled_llama", REQUIRED, "<｜Assistant｜><function="),
        ("r1_distilled_llama", ToolChoice("named", "f"), "<｜Assistant｜><function=f>"),
    ],
)
def test_choice_prefix(version: str, choice: ToolChoice, suffix: str) -> None:
    tools = [{"type": "function", "function": {"name": "f", "description": "d", "parameters": None}}]
    assert get_template(version).render(prepared([{"role": "user", "content": "hi"}], tools, choice)).endswith(suffix)


def test_v31_escapes_tool_lines_but_not_messages() -> None:
    tools = [{"type": "function", "function": {"name": "f", "description": "a 'quoted' <b> & \"x\"", "parameters": None}}]
    text = get_template("v3-llama3.1").render(prepared([{"role": "user", "content": "<b> & 'x'"}], tools))
    assert "Use the function 'f' to 'a &#39;quoted&#39; &lt;b&gt; &amp; &#34;x&#34;'\n" in text
    assert '{&#34;name&#34;: &#34;f&#34;' in text
    assert "<|start_header_id|>user<|end_header_id|>\n\n<b> & 'x'<|eot_id|>" in text
    reasoning = get_template("v3-llama3.1-reasoning").render(prepared([], tools))
    assert "to 'a 'quoted' <b> & \"x\"'\n{\"name\": \"f\"" in reasoning


def test_empty_assistant_turn() -> None:
    messages = [{"role": "user", "content": "u"}, {"role": "assistant", "content": None}]
    assert get_template("v3.llama3").render(prepared(messages)).endswith(
        "u<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n<|eot_id|>" + GENERATION_PROMPT["v3.llama3"]
    )
    assert get_template("v3-llama3.1-reasoning").render(prepared(messages)).endswith("u<|eot_id|>" + GENERATION_PROMPT["v3-llama3.1"])


# ---------------------------------------------------------------------------------------------
# TypeScript schema (the shipped v3.2 template's json_to_ts_schema macros)


def test_typescript_quirks() -> None:
    props = {
        "flag": {"type": "boolean", "default": True},
        "n": {"type": "integer", "minimum": 0},  # a zero bound alone opens no comment
        "cap": {"type": "integer", "maximum": 0, "description": "Cap"},
        "tags": {"type": "array", "items": {"type": "string"}, "default": ["a", "b"]},
        "mode": {"oneOf": [{"type": "string", "format": "date"}, {"type": "integer"}]},
        "any": {"anyOf": [{"type": "string"}, {"type": "number"}]},
        "color": {"type": "string", "enum": ["red", "green", "red"]},
        "maybe": {"type": ["string", "null"], "default": None},
        "nested": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
        "note": {"type": "string", "examples": ["x"]},  # examples need a comment line to show
    }
    assert schema_to_typescript(props, required=["flag"]) == (
        "\n// Default=True.\nflag: boolean,"
        "\nn?: number,"
        "\n// Cap. Maximum=0\ncap?: number,"
        "\n// Default=['a', 'b'].\ntags?: string[],"
        "\n// Format=date or \nmode?: string | integer,"
        "\nany?: ,"
        '\ncolor?: "red""green" | "red",'
        "\n// Default=None.\nmaybe?: string | null,"
        "\nnested?: number[][],"
        "\nnote?: string,"
    )


def test_typescript_objects_examples_and_required_string() -> None:
    fn = {
        "name": "f",
        "description": "Do f",
        "parameters": {
            "type": "object",
            "properties": {
                "first-name": {"type": "string"},
                "a": {"type": "object", "examples": [{"k": "it's"}], "properties": {"b": {"type": "integer"}}},
            },
            "required": "first-name",  # a string: ``in`` tests substrings, so "a" is required too
        },
    }
    assert function_to_typescript(fn) == (
        "// Do f\ntype f = (_: {\nfirst-name: string,\n// Example a:\n// {\"k\": \"it\"s\"}\na: {\n    b?: number,\n},\n}) => any;\n\n"
    )
    assert function_to_typescript({"name": "g", "description": None, "parameters": {"type": "object"}}) == "// \ntype g = () => any;\n\n"
    assert tools_to_namespace([{"type": "code_interpreter"}]) == (
        "// Supported function definitions that should be called when necessary.\nnamespace functions {\n\n} // namespace functions"
    )


# ---------------------------------------------------------------------------------------------
# Parsing decisions (docs/parsing-decisions-llama3.md)

WEATHER = [{"type": "function", "function": {"name": "get_weather", "description": "", "parameters": None}}]


@pytest.mark.parametrize(
    "text,want",
    [
        ("all\nHi there", {"content": "Hi there", "calls": []}),
        ('get_weather\n{"a": 1}>>>all\nDone', {"content": "Done", "calls": [("get_weather", '{"a": 1}')]}),
        # V3-separator: '>>>' must be followed by a recipient and a newline
        ("all\nIn the REPL type >>> print(1).", {"content": "In the REPL type >>> print(1).", "calls": []}),
        ("python\nprint('>>> x')\nprint(1)", {"content": None, "calls": [("python", "print('>>> x')\nprint(1)")]}),
        ("all\nA >>>> B", {"content": "A >>>> B", "calls": []}),
        # V3-json-end: text after the closed object is content
        ('get_weather\n{"a": "}"} Done.', {"content": "Done.", "calls": [("get_weather", '{"a": "}"}')]}),
        ('get_weather\n{"a": 1', {"content": None, "calls": [("get_weather", '{"a": 1')]}),
        ("python\n[x for x in y] + z", {"content": None, "calls": [("python", "[x for x in y] + z")]}),
        # V3-cut-recipient
        ("get_weather", {"content": None, "calls": [("get_weather", "")]}),
        ("Hello", {"content": "Hello", "calls": []}),
        ("all", {"content": None, "calls": []}),
        ("Sure! It is sunny.", {"content": "Sure! It is sunny.", "calls": []}),
        # bodies are stripped
        ("all\n  Hi  >>>get_weather\n  {}  ", {"content": "Hi", "calls": [("get_weather", "{}")]}),
    ],
)
def test_v3_llama3_parse(text: str, want: dict) -> None:
    assert parse("v3.llama3", text, tools=WEATHER) == want


def test_v3_llama3_choices() -> None:
    named = ToolChoice("named", "get_weather")
    assert parse("v3.llama3", '{"a": 1}', named, WEATHER) == {"content": None, "calls": [("get_weather", '{"a": 1}')]}
    assert parse("v3.llama3", "", named, WEATHER) == {"content": None, "calls": [("get_weather", "")]}
    assert parse("v3.llama3", "get_weather\nx", NONE, WEATHER) == {"content": "get_weather\nx", "calls": []}


@pytest.mark.parametrize("version", ["v3-llama3.1", "v3-llama3.1-reasoning", "r1_distilled_llama"])
@pytest.mark.parametrize(
    "text,want",
    [
        ('Hi <function=f>{"a": 1}</function> bye', {"content": "Hi  bye", "calls": [("f", '{"a": 1}')]}),
        ('<function= f > {"a": 1} </function>', {"content": None, "calls": [("f", '{"a": 1}')]}),
        # L31-unclosed: a call cut by the length limit keeps what it has
        ('<function=f>{"a": 1', {"content": None, "calls": [("f", '{"a": 1')]}),
        ('<function=f>{"a": 1}</func', {"content": None, "calls": [("f", '{"a": 1}')]}),
        # L31-names: not a name -> the tag was text
        ("a <function=not a name> b", {"content": "a <function=not a name> b", "calls": []}),
        ("a <function=x\ny>", {"content": "a <function=x\ny>", "calls": []}),
        ("a <function=>{}", {"content": "a <function=>{}", "calls": []}),
        ("x < y <function", {"content": "x < y <function", "calls": []}),
        # python tag: the rest is code, </function> and all
        ("Run:<|python_tag|>print('</function>')", {"content": "Run:", "calls": [("python", "print('</function>')")]}),
        # whitespace-only content is no content
        ('<function=f>{}</function>\n<function=g>{}</function>', {"content": None, "calls": [("f", "{}"), ("g", "{}")]}),
    ],
)
def test_llama31_parse(version: str, text: str, want: dict) -> None:
    assert parse(version, text) == want


def test_llama31_choices() -> None:
    assert parse("v3-llama3.1", 'f>{"a": 1}</function>', REQUIRED) == {"content": None, "calls": [("f", '{"a": 1}')]}
    assert parse("v3-llama3.1", "not a call", REQUIRED) == {"content": "not a call", "calls": []}
    named = ToolChoice("named", "f")
    assert parse("v3-llama3.1", '{"a": 1}</function>', named) == {"content": None, "calls": [("f", '{"a": 1}')]}
    assert parse("v3-llama3.1", "", named) == {"content": None, "calls": [("f", "")]}


PIECES = [">>>", ">", "all\n", "python\n", "get_weather\n", "\n", " ", "<function=", "<function=f>", "</function>", "</",
          "<", "<|python_tag|>", "<|python", "{", "}", '"', "\\", '{"a": ">>>b"}', "x", "é"]


@pytest.mark.parametrize("version", VERSIONS)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_chunking_gives_the_full_parse(version: str, data) -> None:
    text = "".join(data.draw(st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=4)), max_size=30)))
    cuts = sorted(set(data.draw(st.lists(st.integers(0, len(text)), max_size=20))))
    chunks = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]
    choice = data.draw(st.sampled_from([AUTO, NONE, REQUIRED, ToolChoice("named", "get_weather")]))
    assert stream(version, chunks, choice, WEATHER) == parse(version, text, choice, WEATHER)
