"""API keys, body limit, Docker arguments, secrets in logs (see tests/reliability/security.py)."""

from __future__ import annotations

from tests.reliability import security
from tests.reliability.conftest import assert_clean
from tests.support.docker_fixtures import cleanup, docker_client, emulator_image, make_spec  # noqa: F401  (fixtures)


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


def test_hostile_model_id_reaches_the_engine_as_one_argument(cleanup, emulator_image, tmp_path) -> None:
    """On the real engine: the container's command is exactly the argument list; no shell is put in front."""
    model_dir = tmp_path / "weights; touch pwned"
    model_dir.mkdir()
    spec = make_spec(emulator_image, model_dir, model="meetkai/functionary small; touch /tmp/pwned",
                     extra_args=("--max-batch-prefill-tokens", "$(id) && reboot"))
    container = cleanup.containers.create(**spec.create_kwargs())
    config = cleanup.api.inspect_container(container.id)["Config"]
    image_entrypoint = cleanup.images.get(emulator_image).attrs["Config"]["Entrypoint"]
    assert config["Cmd"] == spec.docker_args()
    assert config["Entrypoint"] == image_entrypoint
    assert "$(id) && reboot" in config["Cmd"] and config["Cmd"][config["Cmd"].index("--model-id") + 1] == spec.container_model_path
