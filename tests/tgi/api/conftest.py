"""Gateway fixtures: the real gateway process in front of the real emulator process.

* ``gateway_for(version)``: a gateway with that prompt template over the shared emulator, started
  once per session and version (``--model`` is a tiny real tokenizer directory made here).
* ``emulator``: the shared emulator, reset before each test (see tests/tgi/conftest.py).
* ``v32`` and ``client``: the v3.llama3 gateway and the official openai client to it
  (tests/support/openai_fixtures.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from functionary.templates import get_template
from tests.support.model_fixture import make_model_dir
from tests.support.gateway_proc import GatewayHandle, start_gateway

from tests.support.emulator_proc import emulator_fixture, start_emulator_fixture  # noqa: F401  (fixtures)
from tests.support.emulator_proc import start_emulator as _start_emulator
from tests.support.openai_fixtures import client_fixture, v32_fixture  # noqa: F401  (fixtures)


@pytest.fixture(scope="session")
def shared_emulator():
    # the tiny test tokenizer makes many tokens of a long tools prompt: give it room
    with _start_emulator(max_total_tokens=65536, max_input_tokens=60000) as handle:
        yield handle


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory) -> Callable[[str], Path]:
    made: dict[str, Path] = {}

    def model_dir(version: str) -> Path:
        if version not in made:
            template = get_template(version)
            specials = tuple(dict.fromkeys((*template.special_tokens, *template.stop_tokens, *template.eos_tokens)))
            made[version] = make_model_dir(tmp_path_factory.mktemp(version.replace(".", "_")), special_tokens=specials)
        return made[version]

    return model_dir


@pytest.fixture(scope="session")
def gateway_for(shared_emulator, model_dirs) -> Iterator[Callable[..., GatewayHandle]]:
    with contextlib.ExitStack() as stack:
        running: dict[tuple, GatewayHandle] = {}

        def gateway(version: str, *extra: str) -> GatewayHandle:
            key = (version, extra)
            if key not in running:
                args = ["--model", str(model_dirs(version)), "--endpoint", shared_emulator.base_url,
                        "--prompt-template", version, "--no-launch", "--served-model-name", "functionary", *extra]
                running[key] = stack.enter_context(start_gateway(args))
            handle = running[key]
            if handle.process.poll() is not None:
                pytest.fail(f"gateway for {version} died:\n{handle.logs()[-4000:]}")
            return handle

        yield gateway
