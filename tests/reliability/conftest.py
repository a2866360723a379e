"""Reliability suites in their CI size: each test runs one suite (or one part of it) through the same code as
``python -m tests.reliability.run <suite>`` and fails with the suite's summary."""

from __future__ import annotations

import pytest

from tests.reliability.report import Report


@pytest.fixture
def report(request) -> Report:
    return Report(request.node.name)


def assert_clean(report: Report) -> None:
    assert report.ok, report.summary()
