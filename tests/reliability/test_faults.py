"""Every TGI fault ends in a defined OpenAI error or a clean finish within its deadline, and the gateway serves
the next request normally (one scenario per test; see tests/reliability/faults.py)."""

from __future__ import annotations

import pytest

from tests.reliability import faults
from tests.reliability.conftest import assert_clean


@pytest.mark.parametrize("name", list(faults.SCENARIOS))
def test_fault(name, report) -> None:
    faults.run_faults(report, names=[name])
    assert report.cases > 0
    assert_clean(report)


def test_tgi_down_at_start(report) -> None:
    faults.run_faults(report, names=["TGI down at start"])
    assert_clean(report)
