"""What the emulator and the gateway helpers share: a free port, a server process started on 127.0.0.1 with its
output in a log file, waiting for its ``/health``, and stopping it (see emulator_proc.py and gateway_proc.py)."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TypeVar

__all__ = ["ProcessHandle", "free_port", "running_process"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ProcessHandle:
    """A running (or exited) server process with its address and its log; subclasses set how it is stopped."""

    name = "process"
    stop_signal = signal.SIGTERM
    stop_timeout = 5.0
    log_tail = 3000  # characters of the log an error message shows
    poll_interval = 0.02

    def __init__(self, process: subprocess.Popen, port: int, log_path: Path, host: str = "127.0.0.1") -> None:
        self.process = process
        self.port = port
        self.base_url = f"http://{host}:{port}"
        self.log_path = log_path

    def logs(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def health_status(self) -> int | None:
        """The status ``/health`` answers with; ``None`` while nothing answers."""
        try:
            with urllib.request.urlopen(self.base_url + "/health", timeout=1) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:  # URLError included: nothing listens yet
            return None

    def wait_for_health(self, accept: Callable[[int], bool], timeout: float, what: str) -> None:
        """Until ``/health`` answers a status that ``accept`` takes; fails at once if the process exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n"
                                   f"{self.logs()[-self.log_tail:]}")
            status = self.health_status()
            if status is not None and accept(status):
                return
            time.sleep(self.poll_interval)
        raise TimeoutError(f"{self.name} not {what} after {timeout}s:\n{self.logs()[-self.log_tail:]}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(self.stop_signal)
            try:
                self.process.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


Handle = TypeVar("Handle", bound=ProcessHandle)


@contextlib.contextmanager
def running_process(make_handle: Callable[..., Handle], command: list[str], port: int, *, log_prefix: str,
                    cwd: Path | str, env: Mapping[str, str] | None = None,
                    ready: Callable[[Handle], None] | None = None) -> Iterator[Handle]:
    """Start ``command`` (output to a temporary log), wrap it with ``make_handle(process, port, log_path)``,
    run ``ready`` on it, and stop it and remove its log afterwards."""
    log_file = tempfile.NamedTemporaryFile(prefix=log_prefix, suffix=".log", delete=False)
    process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT,
                               env=None if env is None else dict(env), cwd=cwd)
    log_file.close()
    handle = make_handle(process, port, Path(log_file.name))
    try:
        if ready is not None:
            ready(handle)
        yield handle
    finally:
        handle.stop()
        with contextlib.suppress(OSError):
            handle.log_path.unlink()
