"""Bad input never gets a 5xx, and every 4xx is an OpenAI error (hand cases, then schemathesis)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.reliability import badinput
from tests.reliability.conftest import assert_clean
from tests.reliability.stack import Stack, running_stack, unexpected_errors


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with running_stack() as running:
        yield running


def test_openapi_documents_the_chat_body(stack) -> None:
    document = httpx.get(stack.url + "/openapi.json").json()
    body = document["paths"]["/v1/chat/completions"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ChatCompletionRequest"}
    assert "messages" in document["components"]["schemas"]["ChatCompletionRequest"]["required"]


def test_hand_cases(stack, report) -> None:
    badinput.run_hand_cases(stack.url, report)
    badinput.still_serving(stack.url, report)
    assert report.cases > 200
    assert_clean(report)


def test_hand_cases_with_grammar_auto(report) -> None:
    """Tool schemas become regexes (outlines-core) under --grammar on: the same cases with every tool request
    constrained (the bodies over 1 MiB, which never reach a grammar, are left to test_hand_cases)."""
    with running_stack(grammar="on") as guided:
        badinput.run_hand_cases(guided.url, report, small_only=True)
        badinput.still_serving(guided.url, report)
        errors = unexpected_errors(guided.gateway.logs())
    assert not errors, errors[:3]
    assert_clean(report)


def test_schemathesis_short(stack, report) -> None:
    badinput.run_schemathesis(stack.url, report, examples=80)
    badinput.still_serving(stack.url, report)
    assert_clean(report)


def test_schemathesis_responses_short(stack, report) -> None:
    """The same for ``/v1/responses`` (its own body schema, its own translation to the chat pipeline)."""
    document = httpx.get(stack.url + "/openapi.json").json()
    body = document["paths"]["/v1/responses"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ResponsesRequest"}
    badinput.run_schemathesis(stack.url, report, examples=80, route="/v1/responses")
    badinput.still_serving(stack.url, report)
    assert_clean(report)


def test_no_unexpected_errors_logged(stack) -> None:
    errors = unexpected_errors(stack.gateway.logs())
    assert not errors, errors[:3]
