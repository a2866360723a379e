"""Start-up through ``server_tgi.py`` as a child process: what is taken for TGI, and how each failure ends
(one clean line, a traceback only at --log-level debug, the documented exit code: tgi/api/startup.py)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.support.gateway_proc import free_port, start_gateway
from tests.support.hub_mirror import HubMirror
from tests.support.local_http import StreamOnlyHandler, serving
from tgi.api.startup import EXIT_ENDPOINT, EXIT_INTERRUPTED, EXIT_LISTEN, EXIT_MODEL, EXIT_USAGE

REPO_ROOT = Path(__file__).resolve().parents[3]
LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: ")


def run_gateway(*args: str, env: dict | None = None, timeout: float = 60) -> tuple[int, str, float]:
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "server_tgi.py"), "--port", str(free_port()), *args],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
    )
    return proc.returncode, proc.stdout + proc.stderr, time.monotonic() - started


def assert_clean(output: str) -> None:
    """Every line is a log line of the one format (a multi-line message keeps its lines under it); the last one
    is the failure; no traceback."""
    assert "Traceback" not in output, output
    lines = output.strip().splitlines()
    assert LINE.match(lines[0]), output
    failure = [i for i, line in enumerate(lines) if "start-up failed" in line]
    assert len(failure) == 1, output
    assert all(not LINE.match(line) for line in lines[failure[0] + 1:]), output


@pytest.fixture
def model_dir(model_dirs) -> Path:
    return model_dirs("v3.llama3")


@pytest.fixture
def http_server(tmp_path):
    """``python3 -m http.server``'s handler on a free port."""
    handler = lambda *a, **k: SimpleHTTPRequestHandler(*a, directory=str(tmp_path), **k)  # noqa: E731
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture
def silent_port():
    """A port that accepts connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


def test_a_web_server_that_is_not_tgi_is_refused_at_once(model_dir, http_server) -> None:
    code, output, took = run_gateway("--model", str(model_dir), "--endpoint", http_server, "--no-launch",
                                     "--prompt-template", "v3.llama3", "--startup_timeout", "60")
    assert code == EXIT_ENDPOINT, output
    assert took < 20  # not the 60 s start-up timeout
    assert_clean(output)
    assert f"not a TGI server: {http_server}" in output
    assert "HTTP 404" in output and "SimpleHTTP" in output and "<!DOCTYPE HTML>" in output


def test_a_port_that_never_answers_is_diagnosed_in_seconds(model_dir, silent_port) -> None:
    # without --no-launch: before, this waited ~40 s and then blamed the port for a launch
    code, output, took = run_gateway("--model", str(model_dir), "--endpoint", silent_port,
                                     "--prompt-template", "v3.llama3")
    assert code == EXIT_ENDPOINT, output
    assert took < 20
    assert_clean(output)
    assert "accepts connections but sent no answer within 3 s" in output


def test_nothing_listening_ends_with_one_line(model_dir) -> None:
    code, output, _ = run_gateway("--model", str(model_dir), "--endpoint", f"http://127.0.0.1:{free_port()}",
                                  "--no-launch", "--prompt-template", "v3.llama3", "--startup_timeout", "1")
    assert code == EXIT_ENDPOINT, output
    assert_clean(output)
    assert "no TGI endpoint answers" in output


def test_debug_shows_the_traceback(model_dir) -> None:
    code, output, _ = run_gateway("--model", str(model_dir), "--endpoint", f"http://127.0.0.1:{free_port()}",
                                  "--no-launch", "--prompt-template", "v3.llama3", "--startup_timeout", "1",
                                  "--log-level", "debug")
    assert code == EXIT_ENDPOINT, output
    assert "Traceback" in output and "StartupError" in output


def test_missing_local_model_is_a_model_error(tmp_path) -> None:
    code, output, _ = run_gateway("--model", str(tmp_path / "nowhere"), "--no-launch")
    assert code == EXIT_MODEL, output
    assert_clean(output)
    assert "neither an existing local directory nor a Hub model id" in output


def test_unknown_hub_id_names_the_404_first(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE"))}
    with HubMirror({}) as hub:
        env.update(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf"), HF_HUB_DISABLE_TELEMETRY="1")
        code, output, _ = run_gateway("--model", "acme/no-such-model", "--no-launch",
                                      "--remote_model_save_folder", str(tmp_path / "models"), env=env)
    assert code == EXIT_MODEL, output
    assert_clean(output)
    (failure,) = [line for line in output.splitlines() if "start-up failed" in line]
    assert "start-up failed (exit code 5): the Hub answered 404 for acme/no-such-model" in failure
    assert "template" not in failure
    # the first [weights] line is a proper log line; the Hub client's own HTTP lines stay quiet
    weights = [line for line in output.splitlines() if "[weights]" in line]
    assert weights and all(LINE.match(line) for line in weights), output
    assert "HTTP Request" not in output


@pytest.mark.parametrize("workers", ["1", "2"])  # 2: the supervisor starts the emulator, and reports the same
def test_emulator_off_this_machine_is_a_usage_error(model_dir, workers) -> None:
    code, output, _ = run_gateway("--model", str(model_dir), "--endpoint", "http://10.1.2.3:8080", "--emulator",
                                  "--prompt-template", "v3.llama3", "--workers", workers)
    assert code == EXIT_USAGE, output
    assert_clean(output)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_gateway_port_in_use(model_dir, shared_emulator, workers) -> None:
    # --workers 2: the supervisor holds the port; it ends as one process does, with exit code 6
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, str(REPO_ROOT / "server_tgi.py"), "--port", str(port), "--model", str(model_dir),
             "--endpoint", shared_emulator.base_url, "--no-launch", "--prompt-template", "v3.llama3",
             "--workers", workers],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    output = proc.stdout + proc.stderr
    assert proc.returncode == EXIT_LISTEN, output
    if workers == "2":
        assert_clean(output)
        assert f"start-up failed (exit code 6): cannot listen on 127.0.0.1:{port}: Address already in use" in output


class _StreamOnly(StreamOnlyHandler):
    """A TGI stand-in without /health and /info whose /generate_stream refuses an empty input like TGI."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        body = json.dumps({"error": "Input validation error: `inputs` cannot be empty", "error_type": "validation"})
        self.send_response(422)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())


def test_tgi_without_health_or_info_is_recognised_by_its_error_shape(model_dir) -> None:
    with serving(_StreamOnly) as url:
        args = ["--model", str(model_dir), "--endpoint", url, "--no-launch",
                "--prompt-template", "v3.llama3", "--startup_timeout", "5"]
        with start_gateway(args) as gateway:
            assert gateway.process.poll() is None


def test_the_only_endpoint_gone_is_named(model_dir, start_emulator) -> None:
    tgi = start_emulator()
    args = ["--model", str(model_dir), "--endpoint", tgi.base_url, "--no-launch", "--prompt-template", "v3.llama3",
            "--served-model-name", "functionary", "--health-interval", "0"]
    with start_gateway(args) as gateway:
        tgi.stop()
        import httpx

        for _ in range(2):
            response = httpx.post(gateway.base_url + "/v1/chat/completions", timeout=30, json={
                "model": "functionary", "messages": [{"role": "user", "content": "hi"}]})
            assert response.status_code in (502, 503)
        logs = gateway.logs()
    assert "the only TGI endpoint" in logs and "trying another" not in logs


# --workers: the supervisor ends a failed start-up the same way (one line, the same exit codes)

@pytest.mark.parametrize("launch", [("--no-launch",), ()], ids=["workers-probe", "supervisor-probe"])
def test_workers_report_an_endpoint_that_is_not_tgi_once(model_dir, http_server, launch) -> None:
    # --no-launch: worker 0 (started before the others) finds it; else the supervisor, before launching anything
    code, output, _ = run_gateway("--model", str(model_dir), "--endpoint", http_server, *launch, "--workers", "2",
                                  "--prompt-template", "v3.llama3", "--startup_timeout", "60")
    assert code == EXIT_ENDPOINT, output
    assert_clean(output)
    assert output.count("not a TGI server") == 1, output
    assert f"start-up failed (exit code 3): not a TGI server: {http_server}" in output


def test_workers_interrupted_during_start_up_is_exit_130(model_dir, tmp_path) -> None:
    log_file = tmp_path / "gateway.log"
    with log_file.open("w") as sink:
        proc = subprocess.Popen(
            [sys.executable, str(REPO_ROOT / "server_tgi.py"), "--port", str(free_port()), "--model", str(model_dir),
             "--endpoint", f"http://127.0.0.1:{free_port()}", "--no-launch", "--prompt-template", "v3.llama3",
             "--workers", "2", "--startup_timeout", "120"],
            cwd=REPO_ROOT, stdout=sink, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 60
            while "waiting for TGI" not in log_file.read_text():  # worker 0 is in its start-up
                assert proc.poll() is None and time.monotonic() < deadline, log_file.read_text()
                time.sleep(0.1)
            proc.send_signal(signal.SIGINT)  # the supervisor only, as a service manager's stop would
            code = proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    output = log_file.read_text()
    assert code == EXIT_INTERRUPTED, output
    assert_clean(output)
    assert "start-up failed (exit code 130): interrupted" in output
