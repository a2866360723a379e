"""Property tests for every streaming parser: random chunkings of real outputs, and random
unicode / JSON / marker soup, never crash and always assemble to the full parse."""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from functionary.openai_types import ChatCompletionRequest
from functionary.request import prepare_request
from functionary.templates import TEMPLATES, get_template
from tests.functionary.cases import output_cases, raw_text

pytestmark = pytest.mark.reference  # every test here reads the reference corpus (tests/conftest.py)
from tests.functionary.harness import assemble, check_delta_rules, full_message, split_at, stream_deltas

VERSIONS = sorted(TEMPLATES)
# FUNCTIONARY_HYPOTHESIS_EXAMPLES raises the examples per test for a long run (python -m tests.reliability.run parsers)
EXAMPLES = int(os.environ.get("FUNCTIONARY_HYPOTHESIS_EXAMPLES", "60"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _draw_case(data, version: str) -> dict:
    """One of the reference output cases of ``version`` (those with tokens)."""
    cases = [c for c in output_cases() if c["template_version"] == version and c.get("tokens")]
    return data.draw(st.sampled_from(cases))


def _markers(version: str) -> list[str]:
    template = get_template(version)
    texts = list(template.special_tokens) + list(template.stop_tokens)
    texts += [">>>", "<function=", "</function>", "<tool_call>", "</tool_call>", "<|content|>", "\n", "{", "}", '"', "\\", "all", "python"]
    return texts


def _check(version: str, case: dict, text: str, chunks: list[str]) -> None:
    template = get_template(version)
    prepared = prepare_request(ChatCompletionRequest.model_validate(case["request"]))
    deltas, _ = stream_deltas(template, prepared, chunks)
    check_delta_rules(deltas)
    full, _ = full_message(template, prepared, text, length=False)
    assert assemble(deltas) == full


@pytest.mark.parametrize("version", VERSIONS)
@SETTINGS
@given(data=st.data())
def test_random_chunking_of_real_outputs(version: str, data) -> None:
    case = _draw_case(data, version)
    text = raw_text(case)
    cuts = data.draw(st.lists(st.integers(min_value=0, max_value=max(len(text), 1)), max_size=40))
    _check(version, case, text, split_at(text, cuts))


@pytest.mark.parametrize("version", VERSIONS)
@SETTINGS
@given(data=st.data())
def test_random_content_never_crashes(version: str, data) -> None:
    case = _draw_case(data, version)
    piece = st.one_of(
        st.sampled_from(_markers(version)),
        st.text(max_size=8),
        st.builds(json.dumps, st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                                           lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c, max_size=3),
                                           max_leaves=6)),
    )
    parts = data.draw(st.lists(piece, max_size=25))
    text = "".join(parts)
    cuts = data.draw(st.lists(st.integers(min_value=0, max_value=max(len(text), 1)), max_size=30))
    _check(version, case, text, split_at(text, cuts))
