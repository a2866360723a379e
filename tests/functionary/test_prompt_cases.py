"""Every public prompt case of every version: the rendered prompt is byte-exact, or the request
is refused with a 4xx (upstream's own message where it had one), or we deliberately render where
upstream crashed (listed in deviations/*.json)."""

from __future__ import annotations

import pytest

from functionary.errors import GatewayError
from functionary.openai_types import ChatCompletionRequest
from functionary.request import prepare_request
from functionary.templates import get_template
from tests.functionary.cases import deviations, prompt_cases

pytestmark = pytest.mark.reference  # every test here reads the reference corpus (tests/conftest.py)


def render(case: dict) -> str:
    template = get_template(case["template_version"])
    prepared = prepare_request(ChatCompletionRequest.model_validate(case["request"]))
    template.check(prepared)
    return template.render(prepared)


@pytest.mark.parametrize("case", prompt_cases(), ids=lambda c: c["id"])
def test_prompt_case(case: dict) -> None:
    deviation = deviations().get(case["id"], {})
    if "expected_prompt" in case and case["expected_prompt"] is not None:
        assert render(case) == case["expected_prompt"]
    elif deviation.get("render"):
        assert isinstance(render(case), str)
    else:
        with pytest.raises(GatewayError) as info:
            render(case)
        assert 400 <= info.value.status_code < 500
        if case.get("error_kind") == "invalid_request":
            assert info.value.message == case["expected_error"]
