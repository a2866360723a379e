"""The whole-turn regex (functionary/turn_grammar.py): what each family's model writes, byte for byte, fits
exactly when the request's guarantee holds; the reference outputs fit where they are well-formed."""

from __future__ import annotations

import itertools
import json
import re

import outlines_core
import pytest

from functionary.errors import InvalidRequestError, UnsupportedRequestError
from functionary.openai_types import ChatCompletionRequest
from functionary.request import prepare_request
from functionary.templates import TEMPLATES, get_template
from functionary.turn_grammar import avoid_regex, schema_regex, whole_turn_regex
from tests.functionary.cases import REFERENCE, output_cases

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TIME = {"type": "object", "properties": {"tz": {"type": "string", "enum": ["UTC", "CET"]}}, "required": ["tz"]}
LIMA = '{"city": "Lima"}'
PARIS = '{"city": "Paris"}'
BAD = '{"town": "Lima"}'
UTC = '{"tz": "UTC"}'

SEP2L = "<|reserved_special_token_249|>"
R1_CALL = "<｜tool▁call▁begin｜>function<｜tool▁sep｜>"


def natural(version: str, text: str, calls: list[tuple[str, str]]) -> str:
    """What a model of ``version`` writes after its plain generation prompt (auto choice), in the shipped
    format; the part the prompt holds (v3.llama3's first ``>>>``, v2's first header) included."""
    if version == "v3.llama3":
        segments = ([f"all\n{text}"] if text else []) + [f"{n}\n{a}" for n, a in calls]
        return "".join(">>>" + s for s in segments) + "<|eot_id|>"
    if version in ("v3-llama3.1", "v3-llama3.1-reasoning", "r1_distilled_llama"):
        end = ("<|eom_id|>" if calls else "<|eot_id|>") if version != "r1_distilled_llama" else (
            "<|eom_id|>" if calls else "<｜end▁of▁sentence｜>")
        return text + "".join(f"<function={n}>{a}</function>" for n, a in calls) + end
    if version in ("qwen2.5-text-only", "cogito", "gemma3", "r1_distilled_qwen"):
        end = {"gemma3": "<end_of_turn>", "r1_distilled_qwen": "<｜end▁of▁sentence｜>"}.get(version, "<|im_end|>")
        joint = "\n" if text and calls and version != "r1_distilled_qwen" else ""
        body = "\n".join(f'<tool_call>\n{{"name": "{n}", "arguments": {a}}}\n</tool_call>' for n, a in calls)
        return text + joint + body + end
    if version == "v2.llama3":
        return text + "".join(f"{SEP2L}{n}\n{a}" for n, a in calls) + "<|eot_id|>"
    if version == "v2":
        head = "<|from|>assistant\n<|recipient|>"
        segments = ([f"{head}all\n<|content|>{text}"] if text else []) + [f"{head}{n}\n<|content|>{a}" for n, a in calls]
        return "\n".join(segments) + "<|stop|>"
    if version == "v1":
        if not calls:
            return f"\n{text}<|END_OF_ASSISTANT|>"
        (n, a), = calls
        return "\n" + (text + "\n" if text else "") + f"<|START_OF_FUNCTION_CALL|>{n}:\n{a}<|END_OF_FUNCTION_CALL|>"
    if version == "r1":
        if not calls:
            return text + "<｜end▁of▁sentence｜>"
        body = "".join(f"{R1_CALL}{n}\n```json\n{a}\n```<｜tool▁call▁end｜>" for n, a in calls)
        return text + "<｜tool▁calls▁begin｜>" + body + "<｜tool▁calls▁end｜><｜end▁of▁sentence｜>"
    raise AssertionError(version)


def request(**extra) -> ChatCompletionRequest:
    tools = [
        {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}},
        {"type": "function", "function": {"name": "get_time", "parameters": TIME}},
    ]
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": tools, **extra}
    if body["tools"] is None:
        del body["tools"]
    return ChatCompletionRequest(**body)


class Turn:
    """One request against one template: ``fits(text, calls)`` says whether the natural output fits."""

    def __init__(self, version: str, req: ChatCompletionRequest) -> None:
        self.version = version
        self.template = get_template(version)
        self.prepared = prepare_request(req)
        self.template.check(self.prepared)
        self.prompt = self.template.render(self.prepared)
        self.regex = whole_turn_regex(self.template, req, self.prepared)
        self.tail = self.template.turn_syntax(self.prepared).tail

    def fits(self, text: str, calls: list[tuple[str, str]]) -> bool:
        out = natural(self.version, text, calls)
        if not out.startswith(self.tail):
            return False  # the prompt already wrote something else
        return re.fullmatch(self.regex, out[len(self.tail):]) is not None


ALL = sorted(TEMPLATES)
PARALLEL = [v for v in ALL if v != "v1"]  # v1 has one call per turn


@pytest.mark.parametrize("version", ALL)
def test_prompt_ends_with_the_declared_tail(version):
    template = get_template(version)
    choices = ["auto", "required", "none"] + ([] if version == "v1" else [{"type": "function", "function": {"name": "get_time"}}])
    for choice in choices:
        prepared = prepare_request(request(tool_choice=choice))
        assert template.render(prepared).endswith(template.turn_syntax(prepared).tail)


@pytest.mark.parametrize("version", ALL)
def test_no_guarantee_asked_no_regex(version):
    turn = Turn(version, request())
    assert turn.regex is None
    assert Turn(version, request(tool_choice="none")).regex is None


@pytest.mark.parametrize("version", ALL)
def test_required(version):
    turn = Turn(version, request(tool_choice="required"))
    assert turn.fits("", [("get_weather", LIMA)])
    assert turn.fits("", [("get_time", UTC)])
    assert not turn.fits("Hello there.", [])
    assert not turn.fits("", [("get_weather", BAD)])
    assert not turn.fits("", [("get_time", '{"tz": "PST"}')])
    assert not turn.fits("", [("get_date", "{}")])
    if version in PARALLEL:
        assert turn.fits("", [("get_weather", LIMA), ("get_time", UTC)])


@pytest.mark.parametrize("version", [v for v in ALL if v != "v1"])
def test_named(version):
    turn = Turn(version, request(tool_choice={"type": "function", "function": {"name": "get_weather"}}))
    assert turn.fits("", [("get_weather", LIMA)])
    assert not turn.fits("", [("get_weather", BAD)])
    assert not turn.fits("", [("get_time", UTC)])
    assert not turn.fits("Sure.", [])


@pytest.mark.parametrize("version", PARALLEL)
def test_parallel_tool_calls_false_allows_one_call(version):
    turn = Turn(version, request(parallel_tool_calls=False))
    assert turn.fits("Hello there.", [])
    assert turn.fits("", [("get_weather", LIMA)])
    assert turn.fits("", [("get_weather", BAD)])  # not strict: nothing was asked of the arguments
    assert not turn.fits("", [("get_weather", LIMA), ("get_weather", PARIS)])


@pytest.mark.parametrize("version", ALL)
def test_strict_tools_under_auto(version):
    tools = [
        {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER, "strict": True}},
        {"type": "function", "function": {"name": "get_time", "parameters": TIME}},
    ]
    turn = Turn(version, request(tools=tools))
    assert turn.fits("Hello there.\nHow can I help?", [])
    assert turn.fits("", [("get_weather", LIMA)])
    assert not turn.fits("", [("get_weather", BAD)])
    assert turn.fits("", [("get_time", '{"tz": "PST"}')])  # not strict: free
    assert turn.fits("Let me look.", [("get_weather", LIMA)])
    if version in PARALLEL:
        assert turn.fits("", [("get_weather", LIMA), ("get_weather", PARIS)])
        assert not turn.fits("", [("get_weather", LIMA), ("get_weather", BAD)])


@pytest.mark.parametrize("version", ALL)
def test_response_format(version):
    fmt = {"type": "json_schema", "json_schema": {"name": "a", "schema": {
        "type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}}}
    turn = Turn(version, request(tools=None, response_format=fmt))
    assert turn.fits('{"answer": "yes"}', [])
    assert turn.fits('{"answer": "caf\\u00e9"}', [])  # \u escapes are JSON too
    assert not turn.fits("Yes.", [])
    assert not turn.fits('{"answer": 1}', [])
    any_object = Turn(version, request(tools=None, response_format={"type": "json_object"}))
    assert any_object.fits('{"a": [1, {"b": null}]}', [])
    assert not any_object.fits("[1, 2]", [])


@pytest.mark.parametrize("version", PARALLEL)
def test_response_format_with_tools_is_json_or_calls(version):
    turn = Turn(version, request(response_format={"type": "json_object"}))
    assert turn.fits('{"a": 1}', [])
    assert not turn.fits("Plain words.", [])
    assert turn.fits("", [("get_weather", LIMA)])


def test_code_interpreter_is_code():
    # under auto with a strict tool: under required the llama-3.1 prompt already opened "<function="
    tools = [{"type": "code_interpreter"}, {"type": "function", "function": {"name": "f", "parameters": WEATHER, "strict": True}}]
    for version, out in [
        ("v3-llama3.1", '<|python_tag|>print(">>>")\nx = {1: 2}<|eom_id|>'),
        ("v3.llama3", "python\nprint(1)\nx = {1: 2}"),
        ("qwen2.5-text-only", '<tool_call>\n{"name": "python", "arguments": {"code": "print(1)"}}\n</tool_call>'),
        ("r1", "<｜tool▁calls▁begin｜>" + R1_CALL + "python\n```python\nprint(1)\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>"),
    ]:
        turn = Turn(version, request(tools=tools))
        assert re.fullmatch(turn.regex, out), version


def test_unsupported_schema_names_the_field():
    tools = [{"type": "function", "function": {"name": "f", "strict": True,
                                                "parameters": {"type": "object", "properties": {"a": {"not": {}}}}}}]
    with pytest.raises(InvalidRequestError) as caught:
        Turn("v3-llama3.1", request(tools=tools))
    assert caught.value.param == "tools[0].function.parameters"
    fmt = {"type": "json_schema", "json_schema": {"name": "a", "schema": {"not": {"type": "string"}}}}
    with pytest.raises(InvalidRequestError) as caught:
        Turn("v3-llama3.1", request(tools=None, response_format=fmt))
    assert caught.value.param == "response_format.json_schema.schema"
    # a format outlines cannot check is an annotation: dropped, not refused
    assert "hostname" not in schema_regex({"type": "string", "format": "hostname"}, param="x")
    # a property called "format" is a property, not the keyword
    regex = schema_regex({"type": "object", "properties": {"format": {"type": "string"}}, "required": ["format"]}, param="x")
    assert re.fullmatch(regex, '{"format": "x"}')


def test_template_without_syntax_refuses():
    class Plain(type(get_template("v2"))):
        def turn_syntax(self, prepared):
            return None

    req = request(tool_choice="required")
    prepared = prepare_request(req)
    with pytest.raises(UnsupportedRequestError):
        whole_turn_regex(Plain(), req, prepared)


def test_regex_is_independent_of_the_messages():
    one = Turn("cogito", request(tool_choice="required")).regex
    other = request(tool_choice="required", messages=[{"role": "user", "content": "something else entirely"}])
    assert Turn("cogito", other).regex == one


@pytest.mark.parametrize("words", [(">>>",), ("```",), ("<function=", "<|python_tag|>"), ("<tool_call>",),
                                   ("<ab", "<ac", "<b")])
def test_avoid_regex(words):
    """Text without the words, not ending with a word's beginning; ``nonempty`` also without the empty text."""
    rx = re.compile(avoid_regex(words))
    nonempty = re.compile(avoid_regex(words, nonempty=True))
    alphabet = sorted(set("".join(words)) | {"x"})[:6]
    beginnings = {w[:k] for w in words for k in range(1, len(w))}
    for n in range(7):
        for letters in itertools.product(alphabet, repeat=n):
            s = "".join(letters)
            fits = not any(w in s for w in words) and not any(s.endswith(b) for b in beginnings)
            assert bool(rx.fullmatch(s)) == fits, s
            assert bool(nonempty.fullmatch(s)) == (fits and n > 0), s
    for w in words:
        assert not rx.fullmatch("text " + w + " more")


def _char_vocabulary() -> outlines_core.Vocabulary:
    chars = [chr(c) for c in range(32, 127)] + ["\n", "é", "｜", "▁"]
    return outlines_core.Vocabulary(len(chars), {c: [i] for i, c in enumerate(chars)})


@pytest.mark.parametrize("version", ALL)
def test_outlines_core_compiles_every_family(version):
    """The regexes are Rust-regex syntax too: outlines-core (what TGI's server masks with) builds an index."""
    vocabulary = _char_vocabulary()
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER, "strict": True}},
             {"type": "code_interpreter"}]
    for req in (request(tool_choice="required"), request(tools=tools)):
        regex = Turn(version, req).regex
        index = outlines_core.Index(regex, vocabulary)
        assert index.get_allowed_tokens(index.get_initial_state())


class Masker:
    """What TGI's server does with a regex grammar: outlines-core's index over a vocabulary of every single
    character plus the family's special tokens (its EOS apart, as TGI builds it), and ``whole``: openers the
    tokenizer has as one token. ``allows(text)``: every token of ``text`` (split greedily, specials whole) is
    allowed in turn and the answer may end there (with the EOS, if ``text`` ends with it)."""

    def __init__(self, template, regex: str, whole: tuple[str, ...] = ()) -> None:
        self.eos = template.eos_tokens[0]
        self.specials = [t for t in dict.fromkeys((*template.special_tokens, *template.end_tokens(), *whole))
                         if t != self.eos]
        texts = [chr(c) for c in range(32, 127)] + ["\n", "é", "｜", "▁", "°", "☕"] + self.specials
        self.ids = {t: i for i, t in enumerate(dict.fromkeys(texts))}
        vocabulary = outlines_core.Vocabulary(len(self.ids), {t: [i] for t, i in self.ids.items()})
        self.index = outlines_core.Index(regex, vocabulary)

    def allows(self, text: str) -> bool:
        if text.endswith(self.eos):
            text = text[: -len(self.eos)]
        state, i = self.index.get_initial_state(), 0
        while i < len(text):
            piece = next((t for t in self.specials if text.startswith(t, i)), text[i])
            state = self.index.get_next_state(state, self.ids[piece])
            if state is None:
                return False
            i += len(piece)
        return self.index.is_final_state(state)


ANSWER_FORMAT = {"type": "json_schema", "json_schema": {"name": "a", "schema": {
    "type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}}}
STRICT_TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER, "strict": True}},
                {"type": "function", "function": {"name": "get_time", "parameters": TIME}}]
# single-character tokens cannot open a call right after an answer that was complete (docs/grammar.md): these
# families need the opener as one token there, as their tokenizers have it
OPENER_TOKENS = {"v3.llama3": (">>>",), "v3-llama3.1": ("<function",), "v3-llama3.1-reasoning": ("<function",),
                 "r1_distilled_llama": ("<function",)}


@pytest.mark.parametrize("version", ALL)
def test_tgi_masking_keeps_the_models_own_answer(version):
    """The natural answers that fit, token by token through outlines-core's index, as TGI masks: never refused."""
    named = {"type": "function", "function": {"name": "get_weather"}}
    cases = [(request(tool_choice="required"), "", [("get_weather", LIMA)]),
             (request(tools=STRICT_TOOLS), "Hello there.", []),
             (request(tools=STRICT_TOOLS), "", [("get_weather", LIMA)]),
             (request(tools=None, response_format=ANSWER_FORMAT), '{"answer": "yes"}', []),
             (request(parallel_tool_calls=False), "", [("get_weather", BAD)])]
    if version != "v1":
        cases.append((request(tool_choice=named), "", [("get_weather", LIMA)]))
    if version in PARALLEL:
        cases.append((request(tool_choice="required"), "", [("get_weather", LIMA), ("get_time", UTC)]))
    for req, text, calls in cases:
        turn = Turn(version, req)
        out = natural(version, text, calls)[len(turn.tail):]
        whole = OPENER_TOKENS.get(version, ()) if len(calls) > 1 and version == "v3.llama3" else ()
        assert Masker(turn.template, turn.regex, whole).allows(out), (version, text, calls)
    # text, then a call
    turn = Turn(version, request(tools=STRICT_TOOLS))
    out = natural(version, "Let me look.", [("get_weather", LIMA)])[len(turn.tail):]
    assert Masker(turn.template, turn.regex, OPENER_TOKENS.get(version, ())).allows(out)
    if version in OPENER_TOKENS:
        assert not Masker(turn.template, turn.regex).allows(out)  # the documented limit


@pytest.mark.parametrize("version", ALL)
def test_tgi_masking_refuses_what_does_not_fit(version):
    turn = Turn(version, request(tool_choice="required"))
    masker = Masker(turn.template, turn.regex, OPENER_TOKENS.get(version, ()))
    for text, calls in (("Hello there.", []), ("", [("get_weather", BAD)])):
        out = natural(version, text, calls)
        if out.startswith(turn.tail):
            assert not masker.allows(out[len(turn.tail):])


# -- the reference outputs --------------------------------------------------------------------------------

# well-formed answers: each fits the regex of its request with every tool's schema enforced (--grammar on)
FITTING = {
    "text_plain_auto", "text_multiline_unicode", "text_then_one_call", "one_call", "two_parallel_same_fn",
    "text_then_two_calls", "nested_arrays_args", "escaped_newlines_in_args", "compact_args", "empty_object_args",
    "scalar_types_args", "code_interpreter_call", "tool_choice_required_one", "tool_choice_named_one",
    "tool_choice_named_nested", "long_args", "functions_one_call", "functions_text",
    "functions_named", "trailing_newline_before_stop",
}
# and these must not: the grammar would change them (docs/grammar.md, "What does not fit")
NOT_FITTING = {"invalid_json_args", "pretty_printed_args", "text_after_tool_call", "nested_args"}

needs_reference = pytest.mark.reference  # skipped with the suite's one line when the corpus is absent


def _reference(labels):
    if not (REFERENCE / "public_output_cases.jsonl").exists():
        return []
    return [pytest.param(c, id=c["id"]) for c in output_cases() if c["label"] in labels and c.get("raw_output")]


def _regex(case) -> str:
    req = ChatCompletionRequest(model="m", **case["request"])
    template = get_template(case["template_version"])
    prepared = prepare_request(req)
    assert template.render(prepared) == case["expected_prompt"]
    return whole_turn_regex(template, req, prepared, every=True)


@needs_reference
@pytest.mark.parametrize("case", _reference(FITTING))
def test_reference_outputs_fit(case):
    assert re.fullmatch(_regex(case), case["raw_output"]), case["raw_output"]


@needs_reference
@pytest.mark.parametrize("case", _reference(NOT_FITTING))
def test_reference_outputs_that_break_the_format_do_not_fit(case):
    assert not re.fullmatch(_regex(case), case["raw_output"])


def test_json_whitespace_is_tgis():
    regex = schema_regex(WEATHER, param="x")
    assert re.fullmatch(regex, LIMA) and re.fullmatch(regex, '{"city":"Lima"}')
    assert not re.fullmatch(regex, json.dumps({"city": "Lima"}, indent=2))
