"""Start the TGI emulator (the package ``tgi/emulator/``) as a real process on 127.0.0.1, for any test package.

Fixtures (``shared_emulator``, ``emulator``, ``start_emulator``): import them into a conftest with

    from tests.support.emulator_proc import emulator_fixture, shared_emulator_fixture, start_emulator_fixture  # noqa

(``pytest_plugins`` only works in the root conftest). Helpers, usable anywhere:

    from tests.support.emulator_proc import start_emulator

    with start_emulator(token_delay=0.01, max_total_tokens=512) as tgi:
        tgi.script([{"text": "Hi!<|eot_id|>"}])
        ... talk HTTP to tgi.base_url ...
        assert tgi.state()["cancelled"] == 0

Model mode (a real tokenizer, a greedy rule-driven model, grammars masked with outlines-core, see
``tgi/emulator/model.py``): build a directory with ``tests.support.emulator_model.make_emulator_model_dir`` and
start it with ``start_model_emulator(model_dir, **switches)`` (or the ``start_emulator`` fixture with
``model_dir=...``); ``tgi.model_rules([...])`` replaces its rules at run time, ``tgi.reset()`` puts back the
file's.

Keyword switches become CLI flags (``max_total_tokens=512`` -> ``--max-total-tokens 512``; ``True`` -> a bare
flag; ``None``/``False`` -> left out; a list -> the flag repeated). ``host``/``port`` put it at a given address
(127.0.0.1 and a free port by default), e.g. to restart it where a gateway expects it. The emulator runs as
``python -m emulator`` from ``tests/support/emulator_home`` (a link to ``tgi/emulator``), the way the Docker
image runs it, so it proves the package imports nothing from the project. Control helpers are synchronous
(they talk to another process, so calling them from async tests only blocks for a moment).
``TGI_EMULATOR_PYTHON=/usr/bin/python3`` runs the emulator with another interpreter than the tests'.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.proc_handle import ProcessHandle, free_port, running_process

EMULATOR = Path(__file__).resolve().parents[2] / "tgi" / "emulator"
# Holds only a link named ``emulator`` to the package: run from here, ``python -m emulator`` sees nothing else
# of the project (run from tgi/, the project's sub-packages would be importable as top-level names).
EMULATOR_HOME = Path(__file__).resolve().parent / "emulator_home"

__all__ = [
    "EMULATOR",
    "EMULATOR_HOME",
    "EmulatorHandle",
    "emulator_args",
    "emulator_command",
    "emulator_fixture",
    "free_port",
    "shared_emulator_fixture",
    "start_emulator",
    "start_model_emulator",
    "start_emulator_fixture",
]


def emulator_args(**switches: object) -> list[str]:
    args: list[str] = []
    for name, value in switches.items():
        flag = "--" + name.replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            args.append(flag)
        elif isinstance(value, (list, tuple)):
            for item in value:
                args += [flag, str(item)]
        else:
            args += [flag, str(value)]
    return args


def emulator_command(python: str | None = None) -> list[str]:
    """The command that starts the emulator; run it with ``cwd=EMULATOR_HOME``."""
    return [python or os.environ.get("TGI_EMULATOR_PYTHON", sys.executable), "-m", "emulator"]


class EmulatorHandle(ProcessHandle):
    """A running (or exited) emulator process with its address, its log and its control endpoints."""

    name = "emulator"

    def wait_healthy(self, timeout: float = 15.0) -> None:
        self.wait_for_health(lambda status: status == 200, timeout, "healthy")

    # control endpoints
    def control(self, method: str, path: str, body: object = None) -> object:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base_url + path, data=data, method=method,
                                         headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"{method} {path}: {exc.code} {exc.read().decode(errors='replace')}") from None

    def script(self, replies: list) -> int:
        """Queue scripted replies (see tgi/emulator/__init__.py); returns the queue length."""
        return self.control("POST", "/emulator/script", {"replies": replies})["queued"]

    def faults(self, **switches: object) -> dict:
        """Change runtime switches (``None`` puts one back to its CLI value); returns all of them."""
        return self.control("POST", "/emulator/faults", switches)["faults"]

    def requests(self) -> list[dict]:
        return self.control("GET", "/emulator/requests")["requests"]

    def model_rules(self, rules: list) -> dict:
        """Model mode: replace the model's rules (``[{"after", "write"}]``); returns the model's description."""
        return self.control("POST", "/emulator/model", {"rules": rules})

    def state(self) -> dict:
        return self.control("GET", "/emulator/state")

    def reset(self) -> dict:
        return self.control("POST", "/emulator/reset")

    def wait_state(self, predicate, timeout: float = 2.0) -> dict:
        """Poll ``/emulator/state`` until ``predicate(state)`` holds; returns that state."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.state()
            if predicate(state) or time.monotonic() > deadline:
                return state
            time.sleep(0.01)


@contextlib.contextmanager
def start_emulator(*, wait: bool = True, extra_args: list[str] | tuple[str, ...] = (), timeout: float = 15.0,
                   host: str = "127.0.0.1", port: int | None = None, **switches: object) -> Iterator[EmulatorHandle]:
    """Run the emulator on ``host`` (127.0.0.1) and ``port`` (a free one); with ``wait`` return once ``/health``
    answers 200."""
    switches.setdefault("model_id", "emulator/functionary")
    port = free_port() if port is None else port
    # TGI_EMULATOR_PYTHON: e.g. an old python3, as in the image
    command = [*emulator_command(), "--hostname", host, "--port", str(port), *emulator_args(**switches), *extra_args]
    env = {key: value for key, value in os.environ.items() if key not in ("HOSTNAME", "PORT", "PYTHONPATH")}
    with running_process(functools.partial(EmulatorHandle, host=host), command, port, log_prefix="tgi-emulator-",
                         cwd=EMULATOR_HOME, env=env,
                         ready=(lambda handle: handle.wait_healthy(timeout)) if wait else None) as handle:
        yield handle


def start_model_emulator(model_dir: Path | str, **switches: object):
    """``start_emulator`` in model mode over ``model_dir`` (see tests/support/emulator_model.py)."""
    switches.setdefault("max_total_tokens", 65536)
    switches.setdefault("max_input_tokens", 60000)
    return start_emulator(model_dir=str(Path(model_dir).resolve()), **switches)


# ------------------------------------------------------------------------------------------------ fixtures
# Function names differ from the fixture names so that importing them does not shadow start_emulator().


@pytest.fixture(scope="session", name="shared_emulator")
def shared_emulator_fixture() -> Iterator[EmulatorHandle]:
    """One emulator for the session (``--max-total-tokens 4096 --max-input-tokens 3000``)."""
    with start_emulator(max_total_tokens=4096, max_input_tokens=3000) as handle:
        yield handle


@pytest.fixture(name="emulator")
def emulator_fixture(shared_emulator: EmulatorHandle) -> EmulatorHandle:
    """The shared emulator, reset (empty script and log, zero counters, CLI faults) before the test."""
    if shared_emulator.process.poll() is not None:
        pytest.fail(f"the shared emulator died:\n{shared_emulator.logs()[-3000:]}")
    shared_emulator.wait_state(lambda s: s["in_flight"] == 0)  # let an earlier test's stream wind down
    shared_emulator.reset()
    return shared_emulator


@pytest.fixture(name="start_emulator")
def start_emulator_fixture() -> Iterator[Callable[..., EmulatorHandle]]:
    """``start_emulator(**switches)`` -> a dedicated emulator process, stopped after the test."""
    with contextlib.ExitStack() as stack:

        def start(**switches: object) -> EmulatorHandle:
            return stack.enter_context(start_emulator(**switches))

        yield start
