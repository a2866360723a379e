"""Every public output case: the full parse equals the expected message (or our documented
deviation), and streaming in three chunkings (whole, per character, the case's tokens) obeys
OpenAI's delta rules and assembles to exactly the full parse."""

from __future__ import annotations

import pytest

from functionary.errors import GatewayError
from functionary.openai_types import ChatCompletionRequest
from functionary.request import prepare_request
from functionary.templates import get_template
from tests.functionary.cases import deviations, output_cases, raw_text, token_texts
from tests.functionary.harness import assemble, check_delta_rules, comparable, full_message, stream_deltas

CASES = [c for c in output_cases() if c.get("error_stage") != "request"]

pytestmark = pytest.mark.reference  # every test here reads the reference corpus (tests/conftest.py)


def expected_for(case: dict) -> tuple[dict | None, str | None]:
    deviation = deviations().get(case["id"], {})
    message = deviation.get("message", case.get("expected_message"))
    reason = deviation.get("finish_reason", case.get("expected_finish_reason"))
    if case.get("tgi_finish_reason") == "length" and "finish_reason" not in deviation:
        reason = "length"  # TGI stopped on length: OpenAI clients must learn the output is cut
    return message, reason


def prepared_for(case: dict):
    template = get_template(case["template_version"])
    prepared = prepare_request(ChatCompletionRequest.model_validate(case["request"]))
    template.check(prepared)
    return template, prepared


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["id"])
def test_full_parse(case: dict) -> None:
    template, prepared = prepared_for(case)
    message, reason = full_message(template, prepared, raw_text(case), length=case["tgi_finish_reason"] == "length")
    want_message, want_reason = expected_for(case)
    assert want_message is not None, f"{case['id']}: upstream raised ({case.get('expected_error')}); add a deviation"
    assert comparable(message) == comparable(want_message)
    assert reason == want_reason


@pytest.mark.parametrize("chunking", ["whole", "chars", "tokens"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c["id"])
def test_stream_matches_full(case: dict, chunking: str) -> None:
    template, prepared = prepared_for(case)
    text = raw_text(case)
    chunks = {"whole": [text], "chars": list(text), "tokens": token_texts(case)}[chunking]
    deltas, _ = stream_deltas(template, prepared, chunks)
    check_delta_rules(deltas)
    full, _ = full_message(template, prepared, text, length=False)
    assert assemble(deltas) == full


REQUEST_ERRORS = [c for c in output_cases() if c.get("error_stage") == "request"]


@pytest.mark.parametrize("case", REQUEST_ERRORS, ids=lambda c: c["id"])
def test_request_error_cases(case: dict) -> None:
    if deviations().get(case["id"], {}).get("render"):
        prepared_for(case)
        return
    with pytest.raises(GatewayError) as info:
        prepared_for(case)
    assert 400 <= info.value.status_code < 500
