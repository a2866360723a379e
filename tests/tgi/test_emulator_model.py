"""The emulator's model mode (``--model-dir``): a real tokenizer, a greedy rule-driven model, grammars masked
with outlines-core as TGI's server does, and TGI's stopping (tgi-protocol.md §14). Real process, real HTTP."""

from __future__ import annotations

import json
import re

import httpx
import jsonschema
import pytest
from tokenizers import Tokenizer

from functionary.templates import TEMPLATES
from tests.tgi.emulator_model import make_emulator_model_dir, rule
from tests.tgi.emulator_proc import start_model_emulator

ASSISTANT = "<|start_header_id|>assistant<|end_header_id|>\n\n"
PROMPT = "<|start_header_id|>user<|end_header_id|>\n\nWeather in Istanbul?<|eot_id|>" + ASSISTANT
CALL = '<function=get_weather>{"city": "Istanbul"}</function>'
GREEDY = {"do_sample": False, "max_new_tokens": 200, "details": True}
CITY_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
               "required": ["city", "days"]}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_emulator_model_dir(tmp_path_factory.mktemp("model") / "v31", "v3-llama3.1",
                                   rules=[rule(ASSISTANT, CALL + "<|eom_id|>")])


@pytest.fixture(scope="module")
def shared_model_tgi(model_dir):
    with start_model_emulator(model_dir) as handle:
        yield handle


@pytest.fixture
def tgi(shared_model_tgi):
    shared_model_tgi.reset()  # the file's rules back
    return shared_model_tgi


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    return Tokenizer.from_file(str(model_dir / "tokenizer.json"))


def generate(tgi, inputs: str, **parameters) -> dict:
    response = httpx.post(tgi.base_url + "/generate", json={"inputs": inputs, "parameters": {**GREEDY, **parameters}},
                          timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def streamed(tgi, inputs: str, **parameters) -> list[dict]:
    body = {"inputs": inputs, "parameters": {**GREEDY, **parameters}}
    response = httpx.post(tgi.base_url + "/generate_stream", json=body, timeout=30)
    assert response.status_code == 200
    return [json.loads(block[len("data: "):]) for block in response.text.strip().split("\n\n")]


def texts(answer: dict) -> str:
    return "".join(token["text"] for token in answer["details"]["tokens"])


# ---------------------------------------------------------------------------------------------- the model


def test_writes_its_own_answer_token_by_token(tgi, tokenizer):
    answer = generate(tgi, PROMPT)
    ids = tokenizer.encode(CALL + "<|eom_id|>", add_special_tokens=False).ids + [tokenizer.token_to_id("<|eot_id|>")]
    details = answer["details"]
    assert [token["id"] for token in details["tokens"]] == ids
    # On CPU only tokenizer_config's EOS stops: <|eom_id|> is streamed as a special token and generation goes on.
    assert texts(answer) == CALL + "<|eom_id|><|eot_id|>"
    assert answer["generated_text"] == CALL
    assert details["finish_reason"] == "eos_token" and details["generated_tokens"] == len(ids)
    assert [t["special"] for t in details["tokens"][-2:]] == [True, True]
    assert {token["logprob"] for token in details["tokens"]} == {-0.1}


def test_rules_chat_two_calls_longest_after_and_nothing_to_say(tgi):
    two = CALL + '<function=get_time>{"timezone": "UTC"}</function><|eom_id|>'
    tgi.model_rules([rule(ASSISTANT, "Hello there!<|eot_id|>"), rule("Two calls<|eot_id|>" + ASSISTANT, two),
                     rule("Nothing<|eot_id|>", "")])
    hello = generate(tgi, "Hi<|eot_id|>" + ASSISTANT)
    assert (hello["generated_text"], texts(hello)) == ("Hello there!", "Hello there!<|eot_id|>")
    both = generate(tgi, "Two calls<|eot_id|>" + ASSISTANT)
    assert texts(both) == two + "<|eot_id|>"
    silent = generate(tgi, "Nothing<|eot_id|>")
    assert texts(silent) == "<|eot_id|>" and silent["details"]["generated_tokens"] == 1
    # a prompt that already ends with the finished answer does not start it again
    assert texts(generate(tgi, "Hi<|eot_id|>" + ASSISTANT + "Hello there!")) == "<|eot_id|>"
    # and one that ends inside it goes on from there
    assert generate(tgi, "Hi<|eot_id|>" + ASSISTANT + "Hello")["generated_text"] == " there!"


def test_extra_eos_tokens_stop_like_tgi_on_gpu(tmp_path):
    model_dir = make_emulator_model_dir(tmp_path / "m", "v3-llama3.1", eos_tokens=("<|eom_id|>",),
                                        rules=[rule(ASSISTANT, CALL + "<|eom_id|>")])
    with start_model_emulator(model_dir) as tgi:
        answer = generate(tgi, PROMPT)
    assert texts(answer) == CALL + "<|eom_id|>" and answer["details"]["finish_reason"] == "eos_token"


def test_tokenize_and_input_length_use_the_real_tokenizer(tgi, tokenizer):
    tokens = httpx.post(tgi.base_url + "/tokenize", json={"inputs": PROMPT}).json()
    assert [token["id"] for token in tokens] == tokenizer.encode(PROMPT).ids
    assert tokens[0] == {"id": tokenizer.token_to_id("<|begin_of_text|>"), "text": "", "start": 0, "stop": 0}
    assert "".join(token["text"] for token in tokens) == PROMPT
    events = streamed(tgi, PROMPT)
    assert events[-1]["details"]["input_length"] == len(tokens)


# ---------------------------------------------------------------------------------------------- grammars


def test_regex_the_answer_fits_leaves_it_unchanged(tgi):
    regex = r'<function=get_weather>\{"city": "[A-Za-z ]+"\}</function><\|eom_id\|>'
    free = generate(tgi, PROMPT)
    guided = generate(tgi, PROMPT, grammar={"type": "regex", "value": regex})
    assert guided["details"]["tokens"] == free["details"]["tokens"][:-1] + [guided["details"]["tokens"][-1]]
    assert texts(guided) == CALL + "<|eom_id|><|eot_id|>"
    assert guided["details"]["finish_reason"] == "eos_token"
    assert {token["logprob"] for token in guided["details"]["tokens"]} == {-0.1}  # nothing forced


@pytest.mark.parametrize("regex", [r"(?:sunny|rainy) in [A-Z][a-z]{2,8}", r"<function=get_time>\{\}</function>",
                                   r"[0-9]{3}", r'<function=get_weather>\{"city": "Ankara"\}</function>'])
def test_regex_the_answer_does_not_fit_is_forced_and_ends(tgi, regex):
    answer = generate(tgi, PROMPT, grammar={"type": "regex", "value": regex})
    details = answer["details"]
    assert details["finish_reason"] == "eos_token", details
    assert re.fullmatch(regex, answer["generated_text"]), answer["generated_text"]
    assert details["tokens"][-1]["text"] == "<|eot_id|>"
    assert 0.0 in {token["logprob"] for token in details["tokens"]}  # forced tokens show 0.0


@pytest.mark.parametrize("grammar", [{"type": "json", "value": CITY_SCHEMA},
                                     {"type": "json", "value": json.dumps(CITY_SCHEMA)},
                                     {"type": "json_schema", "value": {"name": "w", "schema": CITY_SCHEMA}}])
def test_json_schema_output_validates(tgi, grammar):
    answer = generate(tgi, PROMPT, grammar=grammar)
    assert answer["details"]["finish_reason"] == "eos_token"
    jsonschema.validate(json.loads(answer["generated_text"]), CITY_SCHEMA)


def test_json_answer_that_fits_is_kept_and_length_cuts(tgi):
    tgi.model_rules([rule(ASSISTANT, '{"city": "Istanbul", "days": 3}<|eot_id|>')])
    answer = generate(tgi, PROMPT, grammar={"type": "json", "value": CITY_SCHEMA})
    assert answer["generated_text"] == '{"city": "Istanbul", "days": 3}'
    assert {token["logprob"] for token in answer["details"]["tokens"]} == {-0.1}
    cut = generate(tgi, PROMPT, grammar={"type": "json", "value": CITY_SCHEMA}, max_new_tokens=3)
    assert cut["details"]["finish_reason"] == "length" and cut["details"]["generated_tokens"] == 3


def test_bad_regex_is_a_generation_error(tgi):
    body = {"inputs": PROMPT, "parameters": {**GREEDY, "grammar": {"type": "regex", "value": "(unclosed"}}}
    response = httpx.post(tgi.base_url + "/generate", json=body, timeout=30)
    assert response.status_code == 424
    assert response.json() == {"error": "Request failed during generation: Server error: ",
                               "error_type": "generation"}
    events = streamed(tgi, PROMPT, grammar={"type": "regex", "value": "(unclosed"})
    assert events == [{"error": "Request failed during generation: Server error: ", "error_type": "generation"}]


# ---------------------------------------------------------------------------------------------- stopping (§14)


def test_stops_match_token_boundaries_and_markup(tgi, tokenizer):
    pieces = [tokenizer.decode([i]) for i in tokenizer.encode(CALL, add_special_tokens=False).ids]
    city = next(index for index, piece in enumerate(pieces) if piece.endswith("tanbul"))
    inside = pieces[city][:-2]  # ends inside the token that holds "...tanbul"
    kept = generate(tgi, PROMPT, stop=[inside])
    assert kept["details"]["finish_reason"] == "eos_token"
    stopped = generate(tgi, PROMPT, stop=["tanbul"])
    assert stopped["details"]["finish_reason"] == "stop_sequence"
    assert stopped["generated_text"] == "".join(pieces[:city + 1])  # the stop text stays
    markup = generate(tgi, PROMPT, stop=["<|eom_id|>"])  # a special token's text is matched too
    assert markup["details"]["finish_reason"] == "stop_sequence" and texts(markup) == CALL + "<|eom_id|>"
    eos = generate(tgi, PROMPT, stop=["<|eot_id|>"])  # EOS is checked before the stop strings
    assert eos["details"]["finish_reason"] == "eos_token"


# ---------------------------------------------------------------------------------------------- every family


@pytest.mark.parametrize("version", sorted(TEMPLATES))
def test_model_dir_for_every_template_family(tmp_path, version):
    from tgi.emulator.model import Model

    model_dir = make_emulator_model_dir(tmp_path / "m", version, rules=[rule("Q:", " Hello there!")])
    model = Model(str(model_dir))
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    free = model.generate("Q:", None, 64)
    assert "".join(token.text for token in free) == " Hello there!" + tokenizer.id_to_token(model.eos_id)
    forced = model.generate("Q:", {"type": "regex", "value": r' Hello (?:world|there)\.'}, 64)
    text = "".join(token.text for token in forced[:-1])
    assert re.fullmatch(r" Hello (?:world|there)\.", text) and forced[-1].eos


def test_schema_outlines_cannot_convert_is_a_validation_error(tgi):
    schema = {"type": "object", "properties": {"when": {"type": "string", "format": "weird"}}}
    body = {"inputs": PROMPT, "parameters": {**GREEDY, "grammar": {"type": "json", "value": schema}}}
    response = httpx.post(tgi.base_url + "/generate", json=body, timeout=30)
    assert response.status_code == 422
    assert response.json()["error_type"] == "validation"
    assert "cannot compile regex from schema" in response.json()["error"]
