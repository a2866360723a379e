"""Start the gateway (``server_tgi.py``) as a real process on 127.0.0.1, the way users run it (with its
defaults: ``--grammar off``, so a scripted answer is one TGI request; tests/tgi/api/test_grammar_e2e.py asks for
``--grammar auto``)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tests.support.emulator_proc import free_port

SERVER = Path(__file__).resolve().parents[2] / "server_tgi.py"


class GatewayHandle:
    def __init__(self, process: subprocess.Popen, port: int, log_path: Path) -> None:
        self.process = process
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.log_path = log_path

    def logs(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.process.returncode}:\n{self.logs()[-4000:]}")
            try:  # any answer from /health means start-up is complete (it needs no API key)
                with urllib.request.urlopen(self.base_url + "/health", timeout=1):
                    return
            except urllib.error.HTTPError:
                return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.05)
        raise TimeoutError(f"gateway not ready after {timeout}s:\n{self.logs()[-4000:]}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


@contextlib.contextmanager
def start_gateway(args: list[str], *, wait: bool = True, timeout: float = 30.0,
                  env: dict | None = None) -> Iterator[GatewayHandle]:
    port = free_port()
    log_file = tempfile.NamedTemporaryFile(prefix="gateway-", suffix=".log", delete=False)
    command = [sys.executable, str(SERVER), "--host", "127.0.0.1", "--port", str(port), *args]
    process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT,
                               env={**os.environ, **(env or {})}, cwd=str(SERVER.parent))
    log_file.close()
    handle = GatewayHandle(process, port, Path(log_file.name))
    try:
        if wait:
            handle.wait_ready(timeout)
        yield handle
    finally:
        handle.stop()
        with contextlib.suppress(OSError):
            handle.log_path.unlink()
