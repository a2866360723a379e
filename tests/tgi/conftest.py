"""Emulator fixtures for tests/tgi; they live in ``tests.support.emulator_proc`` so any conftest can import them:

    from tests.support.emulator_proc import emulator_fixture, shared_emulator_fixture, start_emulator_fixture  # noqa

(``pytest_plugins = [...]`` is refused by pytest outside the root conftest.)

* ``emulator``: a shared emulator process (one per session, ``--max-total-tokens 4096 --max-input-tokens 3000``),
  reset before each test (empty script and log, zero counters, CLI faults). Change its behaviour with
  ``emulator.faults(...)`` and ``emulator.script(...)``.
* ``start_emulator``: ``start_emulator(**switches)`` runs a dedicated process with CLI switches (for start-up
  behaviour: ``startup_delay``, ``crash_on_start``, limits, ``script``); stopped after the test.
"""

from tests.support.emulator_proc import emulator_fixture, shared_emulator_fixture, start_emulator_fixture  # noqa: F401
