"""The processes under test: the TGI emulator and the gateway, started with the test helpers (real
processes on 127.0.0.1), pinned to CPUs, and read from ``/proc`` (CPU time, RSS)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from functionary.templates import get_template
from tests.support.model_fixture import make_model_dir
from tests.support.gateway_proc import GatewayHandle, start_gateway
from tests.support.emulator_proc import EmulatorHandle, start_emulator

_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def pin(pid: int, cpus: set[int] | None) -> None:
    """Pin every thread of ``pid`` (``taskset -a -p``); ``None`` leaves it free."""
    if cpus is None:
        return
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError, FileNotFoundError):
            os.sched_setaffinity(int(tid), cpus)


def cpu_seconds(pid: int) -> float:
    """user + system CPU time of a process (all its threads)."""
    with open(f"/proc/{pid}/stat", "rb") as fh:
        fields = fh.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def wait_seconds(pid: int) -> float:
    """Time the threads of ``pid`` spent runnable but waiting for a CPU (``/proc/PID/task/*/schedstat``): what
    other work on the machine took from it."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as fh:
                total += int(fh.read().split()[1])
    return total / 1e9


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/statm", "rb") as fh:
        return int(fh.read().split()[1]) * _PAGE / 2**20


def self_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


@contextlib.contextmanager
def running(*, template: str, workdir: Path, emulator_cpus: set[int] | None, gateway_cpus: set[int] | None,
            gateway_args: tuple[str, ...] = ()) -> Iterator[tuple[EmulatorHandle, GatewayHandle, object]]:
    spec = get_template(template)
    specials = tuple(dict.fromkeys((*spec.special_tokens, *spec.stop_tokens, *spec.eos_tokens)))
    model_dir = make_model_dir(workdir / "model", special_tokens=specials)
    with start_emulator(max_total_tokens=40000, max_input_tokens=20000, max_concurrent_requests=4096) as emulator:
        pin(emulator.process.pid, emulator_cpus)
        args = ["--model", str(model_dir), "--endpoint", emulator.base_url, "--prompt-template", template,
                "--no-launch", "--served-model-name", "functionary", *gateway_args]
        with start_gateway(args) as gateway:
            pin(gateway.process.pid, gateway_cpus)

            @contextlib.contextmanager
            def another(*extra: str) -> Iterator[GatewayHandle]:
                """A second gateway over the same emulator, model and pinning, with ``extra`` arguments last."""
                with start_gateway([*args, *extra]) as second:
                    pin(second.process.pid, gateway_cpus)
                    yield second

            yield emulator, gateway, another
