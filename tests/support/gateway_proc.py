"""Start the gateway (``server_tgi.py``) as a real process on 127.0.0.1, the way users run it (with its
defaults: ``--grammar auto``, which constrains only the requests that ask for a guarantee; the emulator sends
scripted replies as written, grammar or not; tests/tgi/api/test_grammar_e2e.py checks the grammars sent)."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

from tests.support.proc_handle import ProcessHandle, free_port, running_process

__all__ = ["SERVER", "GatewayHandle", "free_port", "start_gateway"]

SERVER = Path(__file__).resolve().parents[2] / "server_tgi.py"


class GatewayHandle(ProcessHandle):
    name = "gateway"
    stop_signal = signal.SIGINT
    stop_timeout = 15.0
    log_tail = 4000
    poll_interval = 0.05

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until ``/health`` answers at all: any answer means start-up is complete (it needs no API key)."""
        self.wait_for_health(lambda status: True, timeout, "ready")

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Until ``/health`` answers 200: start-up is complete and TGI answers."""
        self.wait_for_health(lambda status: status == 200, timeout, "healthy")


@contextlib.contextmanager
def start_gateway(args: list[str], *, wait: bool = True, timeout: float = 30.0,
                  env: dict | None = None) -> Iterator[GatewayHandle]:
    port = free_port()
    command = [sys.executable, str(SERVER), "--host", "127.0.0.1", "--port", str(port), *args]
    with running_process(GatewayHandle, command, port, log_prefix="gateway-", cwd=str(SERVER.parent),
                         env={**os.environ, **(env or {})},
                         ready=(lambda handle: handle.wait_ready(timeout)) if wait else None) as handle:
        yield handle
