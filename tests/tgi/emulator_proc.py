"""Start the TGI emulator (``tgi/emulator.py``) as a real process on 127.0.0.1, for any test package.

    from tests.tgi.emulator_proc import start_emulator

    with start_emulator(token_delay=0.01, max_total_tokens=512) as tgi:
        tgi.script([{"text": "Hi!<|eot_id|>"}])
        ... talk HTTP to tgi.base_url ...
        assert tgi.state()["cancelled"] == 0

Keyword switches become CLI flags (``max_total_tokens=512`` -> ``--max-total-tokens 512``; ``True`` -> a bare
flag; ``None``/``False`` -> left out; a list -> the flag repeated). The script runs as a standalone file, the
way the Docker image runs it, so it proves the emulator imports nothing from the project. Control helpers are
synchronous (they talk to another process, so calling them from async tests only blocks for a moment).
``TGI_EMULATOR_PYTHON=/usr/bin/python3`` runs the emulator with another interpreter than the tests'.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

EMULATOR = Path(__file__).resolve().parents[2] / "tgi" / "emulator.py"

__all__ = ["EMULATOR", "EmulatorHandle", "emulator_args", "free_port", "start_emulator"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


class EmulatorHandle:
    """A running (or exited) emulator process with its address, its log and its control endpoints."""

    def __init__(self, process: subprocess.Popen, port: int, log_path: Path) -> None:
        self.process = process
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.log_path = log_path

    # process
    def logs(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_healthy(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"emulator exited with {self.process.returncode}:\n{self.logs()[-3000:]}")
            try:
                with urllib.request.urlopen(self.base_url + "/health", timeout=1) as response:
                    if response.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.02)
        raise TimeoutError(f"emulator not healthy after {timeout}s:\n{self.logs()[-3000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

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
        """Queue scripted replies (see tgi/emulator.py); returns the queue length."""
        return self.control("POST", "/emulator/script", {"replies": replies})["queued"]

    def faults(self, **switches: object) -> dict:
        """Change runtime switches (``None`` puts one back to its CLI value); returns all of them."""
        return self.control("POST", "/emulator/faults", switches)["faults"]

    def requests(self) -> list[dict]:
        return self.control("GET", "/emulator/requests")["requests"]

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
                   **switches: object) -> Iterator[EmulatorHandle]:
    """Run the emulator on a free port of 127.0.0.1; with ``wait`` return once ``/health`` answers 200."""
    switches.setdefault("model_id", "emulator/functionary")
    port = free_port()
    log_file = tempfile.NamedTemporaryFile(prefix="tgi-emulator-", suffix=".log", delete=False)
    python = os.environ.get("TGI_EMULATOR_PYTHON", sys.executable)  # e.g. an old python3, as in the image
    command = [python, str(EMULATOR), "--hostname", "127.0.0.1", "--port", str(port),
               *emulator_args(**switches), *extra_args]
    env = {key: value for key, value in os.environ.items() if key not in ("HOSTNAME", "PORT")}
    process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    log_file.close()
    handle = EmulatorHandle(process, port, Path(log_file.name))
    try:
        if wait:
            handle.wait_healthy(timeout)
        yield handle
    finally:
        handle.stop()
        with contextlib.suppress(OSError):
            handle.log_path.unlink()
