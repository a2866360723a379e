"""Emulator fixtures. Other test packages can load them with ``pytest_plugins = ["tests.tgi.conftest"]`` or
use ``tests.tgi.emulator_proc.start_emulator`` directly.

* ``emulator``: a shared emulator process (one per session), reset before each test (empty script and log,
  zero counters, CLI faults). Change behaviour with ``emulator.faults(...)`` and ``emulator.script(...)``.
* ``start_emulator``: ``start_emulator(**switches)`` runs a dedicated process with CLI switches (for
  start-up behaviour: ``startup_delay``, ``crash_on_start``, limits, ``script``); stopped after the test.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import pytest

from tests.tgi.emulator_proc import EmulatorHandle
from tests.tgi.emulator_proc import start_emulator as _start_emulator


@pytest.fixture(scope="session")
def shared_emulator() -> Iterator[EmulatorHandle]:
    with _start_emulator(max_total_tokens=4096, max_input_tokens=3000) as handle:
        yield handle


@pytest.fixture
def emulator(shared_emulator: EmulatorHandle) -> EmulatorHandle:
    if shared_emulator.process.poll() is not None:
        pytest.fail(f"the shared emulator died:\n{shared_emulator.logs()[-3000:]}")
    shared_emulator.wait_state(lambda s: s["in_flight"] == 0)  # let an earlier test's stream wind down
    shared_emulator.reset()
    return shared_emulator


@pytest.fixture
def start_emulator() -> Iterator[Callable[..., EmulatorHandle]]:
    with contextlib.ExitStack() as stack:

        def start(**switches: object) -> EmulatorHandle:
            return stack.enter_context(_start_emulator(**switches))

        yield start
