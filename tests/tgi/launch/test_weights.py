"""Weights on the host: the real ``snapshot_download`` against a local Hub mirror (``HF_ENDPOINT``).

huggingface_hub reads HF_ENDPOINT when it is imported, so each fetch runs as its own process, as the
gateway does at start-up; the mirror runs here and records every request.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.support.hub_mirror import (
    EXPECTED_TOKENIZER_FILES,
    EXPECTED_WEIGHT_FILES,
    HubMirror,
    Repo,
    Stall,
    make_tiny_model,
)
from tgi.launch.weights import local_dir_for

REPO_ROOT = Path(__file__).resolve().parents[3]
MODEL = "acme/tiny-functionary"
MIB = 1024 * 1024

_DRIVER = """
import asyncio, json, sys
from pathlib import Path
from tgi.launch.weights import WeightsError, ensure_weights, fetch_tokenizer_files
args = json.loads(sys.argv[1])
fetch = fetch_tokenizer_files if args["tokenizer_only"] else ensure_weights
try:
    path = asyncio.run(fetch(args["model"], revision=args["revision"], cache_dir=Path(args["cache_dir"]),
                             token=args["token"]))
except WeightsError as exc:
    print(json.dumps({"error": type(exc).__name__, "message": exc.message}), flush=True)
    sys.exit(1)
print(json.dumps({"path": str(path)}), flush=True)
"""


@dataclass
class Outcome:
    returncode: int
    stdout: str
    stderr: str

    @property
    def result(self) -> dict:
        return json.loads(self.stdout.strip().splitlines()[-1])


def _env(hub: HubMirror | SimpleNamespace, tmp_path: Path, hf_token: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE"))}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf-home"), HF_HUB_DISABLE_TELEMETRY="1",
               PYTHONPATH=str(REPO_ROOT))
    if hf_token is not None:
        env["HF_TOKEN"] = hf_token
    return env


def _argv(model: str, cache_dir: Path, revision: str | None, token: str | None, tokenizer_only: bool) -> list[str]:
    args = {"model": model, "cache_dir": str(cache_dir), "revision": revision, "token": token,
            "tokenizer_only": tokenizer_only}
    return [sys.executable, "-c", _DRIVER, json.dumps(args)]


def fetch(hub: HubMirror | SimpleNamespace, tmp_path: Path, model: str = MODEL, *, revision: str | None = None,
          token: str | None = None, hf_token: str | None = None, tokenizer_only: bool = False) -> Outcome:
    proc = subprocess.run(
        _argv(model, tmp_path / "models", revision, token, tokenizer_only),
        env=_env(hub, tmp_path, hf_token), cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    return Outcome(proc.returncode, proc.stdout, proc.stderr)


def files_in(path: Path) -> set[str]:
    return {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file() and ".cache" not in p.parts}


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Repo:
    return Repo(make_tiny_model(tmp_path_factory.mktemp("hub") / "tiny"))


@pytest.fixture
def hub(repo):
    with HubMirror({MODEL: repo}) as mirror:
        yield mirror


def test_local_directory_is_used_as_is(tmp_path, hub):
    model = make_tiny_model(tmp_path / "local-model")
    out = fetch(hub, tmp_path, str(model))
    assert out.returncode == 0, out.stderr
    assert out.result["path"] == str(model.resolve())
    assert hub.requests == []


def test_hub_model_downloads_safetensors_config_tokenizer_only(tmp_path, hub, repo):
    out = fetch(hub, tmp_path)
    assert out.returncode == 0, out.stderr
    path = Path(out.result["path"])
    assert path == local_dir_for(MODEL, revision=None, cache_dir=tmp_path / "models").resolve()
    assert files_in(path) == EXPECTED_WEIGHT_FILES  # .bin, .gguf, original/, onnx/, README skipped
    for name in EXPECTED_WEIGHT_FILES:
        assert (path / name).read_bytes() == repo.read(name)
        assert not (path / name).is_symlink()  # plain files: the directory is mounted into the container
    assert "Fetching" not in out.stderr and "it/s" not in out.stderr  # a pipe gets no progress bar, only a terminal


def test_second_start_downloads_nothing_and_works_offline(tmp_path, hub, repo):
    assert fetch(hub, tmp_path).returncode == 0
    hub.requests.clear()
    again = fetch(hub, tmp_path)
    assert again.returncode == 0, again.stderr
    assert hub.downloads() == []
    assert [r.path for r in hub.requests] == [f"/api/models/{MODEL}/revision/main"]

    with socket.socket() as closed:  # a port nothing listens on: the Hub is unreachable
        closed.bind(("127.0.0.1", 0))
        out = fetch(SimpleNamespace(url=f"http://127.0.0.1:{closed.getsockname()[1]}"), tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.result["path"] == again.result["path"]


def test_pinned_revision_gets_its_own_directory_and_no_request_once_present(tmp_path, hub, repo):
    first = fetch(hub, tmp_path, revision=repo.commit)
    assert first.returncode == 0, first.stderr
    assert Path(first.result["path"]).name == f"tiny-functionary@{repo.commit}"
    hub.requests.clear()
    assert fetch(hub, tmp_path, revision=repo.commit).returncode == 0
    assert hub.requests == []


def test_dropped_connection_resumes_with_a_range_request(tmp_path, hub, repo):
    hub.drop_after["model.safetensors"] = 11 * MIB
    out = fetch(hub, tmp_path)
    assert out.returncode == 0, out.stderr
    ranges = [r.range for r in hub.downloads("model.safetensors")]
    assert ranges[0] is None and ranges[1] is not None and ranges[1].startswith("bytes=") and ranges[1] != "bytes=0-"
    assert int(ranges[1][len("bytes="):].rstrip("-")) >= 10 * MIB  # what was already on disk is not fetched again
    assert (Path(out.result["path"]) / "model.safetensors").read_bytes() == repo.read("model.safetensors")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_download_stops_promptly_and_resumes_on_next_start(tmp_path, hub, repo, signum):
    stall = hub.stall_after["model.safetensors"] = Stall(after=11 * MIB)
    target = local_dir_for(MODEL, revision=None, cache_dir=tmp_path / "models")
    proc = subprocess.Popen(_argv(MODEL, tmp_path / "models", None, None, False), env=_env(hub, tmp_path, None),
                            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert stall.stalled.wait(60)
        deadline = time.monotonic() + 30
        while files_in(target) != EXPECTED_TOKENIZER_FILES:  # the small files are complete
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signum)
        time.sleep(0.3)
        stall.release.set()  # bytes flow again: the worker must now stop instead of finishing the file
        started = time.monotonic()
        stdout, stderr = proc.communicate(timeout=30)
        assert time.monotonic() - started < 10
    finally:
        proc.kill()
    assert proc.returncode != 0
    if signum == signal.SIGTERM:
        assert json.loads(stdout.strip().splitlines()[-1])["error"] == "WeightsInterruptedError"
    assert files_in(target) == EXPECTED_TOKENIZER_FILES
    assert not (target / "model.safetensors").exists()
    assert not list(target.rglob("*.incomplete"))  # the partial file was cleaned up

    del hub.stall_after["model.safetensors"]
    hub.requests.clear()
    out = fetch(hub, tmp_path)
    assert out.returncode == 0, out.stderr
    assert [r.path.rsplit("/", 1)[1] for r in hub.downloads()] == ["model.safetensors"]  # the rest is kept
    assert (target / "model.safetensors").read_bytes() == repo.read("model.safetensors")


def test_tokenizer_files_only_for_attach_mode(tmp_path, hub):
    out = fetch(hub, tmp_path, tokenizer_only=True)
    assert out.returncode == 0, out.stderr
    assert files_in(Path(out.result["path"])) == EXPECTED_TOKENIZER_FILES
    hub.requests.clear()
    assert fetch(hub, tmp_path).returncode == 0  # a later launch adds the weights, nothing twice
    assert [r.path.rsplit("/", 1)[1] for r in hub.downloads()] == ["model.safetensors"]


def test_rejected_token_is_an_auth_error_and_never_printed(tmp_path, repo):
    secret, wrong = "hf_right_Secret_0123456789", "hf_wrong_Secret_9876543210"
    with HubMirror({MODEL: repo}, token=secret) as hub:
        ok = fetch(hub, tmp_path / "ok", hf_token=secret)
        assert ok.returncode == 0, ok.stderr
        bad = fetch(hub, tmp_path / "bad", hf_token=wrong)
        explicit = fetch(hub, tmp_path / "explicit", token=wrong)
    for out in (bad, explicit):
        assert out.returncode == 1
        assert out.result["error"] == "WeightsAuthError"
        assert "HF_TOKEN" in out.result["message"]
        assert wrong not in out.stdout + out.stderr and secret not in out.stdout + out.stderr


def test_gated_repo_without_token(tmp_path, repo):
    gated = Repo(repo.root, gated=True)
    with HubMirror({MODEL: gated}) as hub:
        out = fetch(hub, tmp_path)
    assert out.result["error"] == "WeightsAuthError"
    assert "gated" in out.result["message"] and "HF_TOKEN" in out.result["message"]


@pytest.mark.parametrize(
    ("model", "revision", "needle"),
    [("acme/no-such-model", None, "not found"), (MODEL, "no-such-branch", "revision"),
     ("./no/such/dir", None, "neither")],
)
def test_not_found(tmp_path, hub, model, revision, needle):
    out = fetch(hub, tmp_path, model, revision=revision)
    assert out.returncode == 1
    assert out.result["error"] == "WeightsNotFoundError" and needle in out.result["message"]


def test_repo_without_safetensors(tmp_path):
    root = make_tiny_model(tmp_path / "bin-only")
    (root / "model.safetensors").unlink()
    with HubMirror({MODEL: Repo(root)}) as hub:
        out = fetch(hub, tmp_path)
    assert out.result["error"] == "WeightsNotFoundError" and ".safetensors" in out.result["message"]
