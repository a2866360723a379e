"""API keys, body limit, Docker arguments, secrets in logs (see tests/reliability/security.py)."""

from __future__ import annotations

from tests.reliability import security
from tests.reliability.conftest import assert_clean


def test_key_comparison_is_constant_time(report) -> None:
    security.check_key_comparison_is_constant_time(report)
    assert_clean(report)


def test_docker_args_cannot_be_injected(report) -> None:
    security.check_docker_args(report)
    assert_clean(report)


def test_auth_body_limit_and_secrets(report) -> None:
    security.run_security(report)
    assert report.cases > 50
    assert_clean(report)
