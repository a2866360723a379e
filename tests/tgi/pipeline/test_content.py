"""The content stage (tgi/pipeline/content.py) on its own: stops across every split of the text, one call, and logprobs
whose tokens spell the content."""

from __future__ import annotations

import itertools

from functionary.templates.base import ArgumentsDelta, TextDelta, ToolCallStart
from tgi.pipeline.content import ContentStage, TokenLedger


def run(stage: ContentStage, batches: list[list]) -> tuple[str, list]:
    events = []
    for batch in batches:
        events += stage.push(batch)
    events += stage.finish()
    return "".join(e.text for e in events if type(e) is TextDelta), events


def splits(text: str, parts: int):
    for cuts in itertools.combinations(range(1, len(text)), parts - 1):
        bounds = (0, *cuts, len(text))
        yield [text[a:b] for a, b in zip(bounds, bounds[1:])]


def test_stop_is_found_under_every_split() -> None:
    text = "One. Two END three"
    for pieces in itertools.chain(splits(text, 2), splits(text, 3)):
        stage = ContentStage(["END", "xyz"], one_call=False, ledger=None)
        content, _ = run(stage, [[TextDelta(p)] for p in pieces])
        assert content == "One. Two" and stage.done == "stop", pieces


def test_held_text_is_at_most_the_longest_stop_minus_one() -> None:
    stage = ContentStage(["ABCD"], one_call=False, ledger=None)
    assert stage.push([TextDelta("xxABC")]) == [TextDelta("xx")]
    assert stage.push([TextDelta("x")]) == [TextDelta("ABCx")]


def test_a_call_passes_untouched_and_flushes_held_text() -> None:
    stage = ContentStage(["\n", '"'], one_call=False, ledger=None)
    events = [TextDelta("Hi"), ToolCallStart("get_weather"), ArgumentsDelta('{"city":\n"Rome"}')]
    content, out = run(stage, [events])
    assert content == "Hi" and out[1:] == events[1:] and stage.done is None


def test_one_call_ends_at_the_second_call() -> None:
    stage = ContentStage([], one_call=True, ledger=None)
    events = [ToolCallStart("a"), ArgumentsDelta("{}"), ToolCallStart("b"), ArgumentsDelta("{}")]
    _, out = run(stage, [events])
    assert out == events[:2] and stage.done == "one_call"


def test_ledger_reports_the_text_part_of_a_straddling_token() -> None:
    ledger = TokenLedger()
    for text in ("all\nHel", "lo", " you", ">>>"):
        ledger.add(text, {"token": text, "logprob": -1.0, "bytes": [], "top_logprobs": []})
        ledger.fed(text)
    stage = ContentStage([], one_call=False, ledger=ledger)
    stage.push([TextDelta("Hello you")])
    assert [e["token"] for e in stage.logprobs] == ["Hel", "lo", " you"]
    assert stage.logprobs[0]["bytes"] == list(b"Hel")
