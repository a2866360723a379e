"""A short soak (the long one: python -m tests.reliability.run soak --long)."""

from __future__ import annotations

from tests.reliability.conftest import assert_clean
from tests.reliability.soak import run_soak


def test_short_soak(report) -> None:
    run_soak(report, requests=300, concurrency=32)
    assert report.figures["TGI in flight after"] == 0
    assert_clean(report)
