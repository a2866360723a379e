"""A small Hugging Face Hub look-alike on 127.0.0.1 that the real ``snapshot_download`` talks to
through ``HF_ENDPOINT`` (huggingface_hub 0.2x–2.x).

It answers the calls a snapshot makes:

* ``GET /api/models/{repo}/revision/{rev}``: the model info (``sha``, ``siblings``);
* ``GET /api/models/{repo}/tree/{rev}?recursive=...``: the file listing, LFS entries included;
* ``HEAD``/``GET /{repo}/resolve/{rev}/{path}``: ``X-Repo-Commit``, ``ETag`` (git blob sha1, or
  sha256 for LFS files), ``Content-Length``, ``Accept-Ranges``; ``Range: bytes=N-`` gets a 206.

Errors carry the Hub's ``X-Error-Code`` / ``X-Error-Message`` headers, so huggingface_hub maps them to
the same exceptions as on the real Hub. Fault injection: ``drop_after`` (close the connection once
after N bytes of a file), ``stall_after`` (stop after N bytes until ``release`` is set). Every request
is recorded in ``requests``.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import struct
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from tests.support.local_http import HeadGetHandler

LFS_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pth", ".onnx", ".model")


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    range: str | None
    authorization: str | None


@dataclass
class Stall:
    after: int
    stalled: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)


class Repo:
    """A repo served from a directory; the commit hash is derived from the content."""

    def __init__(self, root: Path, *, gated: bool = False) -> None:
        self.root = Path(root)
        self.gated = gated
        self.files = sorted(
            p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file()
        )
        digest = hashlib.sha1()
        for name in self.files:
            digest.update(name.encode() + b"\0" + self.read(name))
        self.commit = digest.hexdigest()

    def read(self, name: str) -> bytes:
        return (self.root / name).read_bytes()

    def entry(self, name: str) -> dict:
        data = self.read(name)
        blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        item = {"type": "file", "oid": blob, "size": len(data), "path": name}
        if name.endswith(LFS_SUFFIXES):
            item["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        return item

    def etag(self, name: str) -> str:
        entry = self.entry(name)
        return entry["lfs"]["oid"] if "lfs" in entry else entry["oid"]


class HubMirror:
    """``with HubMirror({"org/name": Repo(dir)}) as hub: os.environ["HF_ENDPOINT"] = hub.url``."""

    def __init__(self, repos: dict[str, Repo], *, token: str | None = None) -> None:
        self.repos = repos
        self.token = token
        self.requests: list[Request] = []
        self.drop_after: dict[str, int] = {}
        self.stall_after: dict[str, Stall] = {}
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def downloads(self, name: str | None = None) -> list[Request]:
        """GET requests of file contents (optionally of one file)."""
        return [
            r for r in self.requests
            if r.method == "GET" and "/resolve/" in r.path and (name is None or r.path.endswith("/" + name))
        ]

    def __enter__(self) -> HubMirror:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for stall in self.stall_after.values():
            stall.release.set()
        self._server.shutdown()
        self._server.server_close()


_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+|[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
_INFO = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+|[^/]+)/revision/(?P<rev>[^/]+)$")
_TREE = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+|[^/]+)/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?$")


def _handler(hub: HubMirror) -> type[BaseHTTPRequestHandler]:
    class Handler(HeadGetHandler):
        def respond(self, *, body: bool) -> None:
            path = unquote(urlsplit(self.path).path)
            hub.requests.append(
                Request(self.command, path, self.headers.get("Range"), self.headers.get("Authorization"))
            )
            if hub.token is not None and self.headers.get("Authorization") != f"Bearer {hub.token}":
                if self.headers.get("Authorization"):
                    return self._error(401, None, "Invalid credentials in Authorization header", body)
                return self._error(401, "RepoNotFound", "Repository not found", body)
            if m := _INFO.match(path):
                repo = self._repo(m["repo"], m["rev"], body)
                if repo:
                    self._json({"id": m["repo"], "modelId": m["repo"], "sha": repo.commit, "private": False,
                                "gated": "manual" if repo.gated else False,
                                "siblings": [{"rfilename": f} for f in repo.files]}, body)
            elif m := _TREE.match(path):
                repo = self._repo(m["repo"], m["rev"], body)
                if repo:
                    prefix = (m["path"] or "").strip("/")
                    items = [repo.entry(f) for f in repo.files if not prefix or f.startswith(prefix + "/")]
                    self._json(items, body)
            elif m := _RESOLVE.match(path):
                repo = self._repo(m["repo"], m["rev"], body)
                if not repo:
                    return
                if repo.gated and not self.headers.get("Authorization"):
                    return self._error(401, "GatedRepo", f"Access to model {m['repo']} is restricted.", body)
                if m["path"] not in repo.files:
                    return self._error(404, "EntryNotFound", "Entry not found", body, commit=repo.commit)
                self._file(repo, m["path"], body)
            else:
                self._error(404, None, "Not found", body)

        def _repo(self, name: str, rev: str, body: bool) -> Repo | None:
            repo = hub.repos.get(name)
            if repo is None:
                self._error(404, "RepoNotFound", "Repository not found", body)
                return None
            if rev not in ("main", repo.commit):
                self._error(404, "RevisionNotFound", "Invalid rev id", body)
                return None
            return repo

        def _file(self, repo: Repo, name: str, body: bool) -> None:
            data = repo.read(name)
            start, status = 0, 200
            if m := re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range") or ""):
                start, status = int(m[1]), 206
                end = int(m[2]) + 1 if m[2] else len(data)
                data_out = data[start:end]
            else:
                data_out = data
            self.send_response(status)
            self.send_header("X-Repo-Commit", repo.commit)
            self.send_header("ETag", f'"{repo.etag(name)}"')
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(len(data_out)))
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{start + len(data_out) - 1}/{len(data)}")
            self.end_headers()
            if body:
                self._send_body(name, data_out)

        def _send_body(self, name: str, data: bytes) -> None:
            drop = hub.drop_after.pop(name, None)
            stall = hub.stall_after.get(name)
            sent = 0
            while sent < len(data):
                if drop is not None and sent >= drop:
                    # A network drop: the peer sees a body shorter than Content-Length.
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                if stall is not None and sent >= stall.after and not stall.release.is_set():
                    stall.stalled.set()
                    stall.release.wait(60)
                limit = len(data)
                if drop is not None:
                    limit = min(limit, drop)
                if stall is not None and sent < stall.after and not stall.release.is_set():
                    limit = min(limit, stall.after)
                piece = data[sent:min(sent + 256 * 1024, limit)]
                try:
                    self.wfile.write(piece)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True
                    return
                sent += len(piece)

        def _json(self, payload: object, body: bool) -> None:
            data = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if body:
                self.wfile.write(data)

        def _error(self, status: int, code: str | None, message: str, body: bool, commit: str | None = None) -> None:
            data = json.dumps({"error": message}).encode()
            self.send_response(status)
            if code:
                self.send_header("X-Error-Code", code)
            self.send_header("X-Error-Message", message)
            if commit:
                self.send_header("X-Repo-Commit", commit)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if body:
                self.wfile.write(data)

    return Handler


# --- a tiny model repo ----------------------------------------------------------------------------

WEIGHTS_BYTES = 12 * 1024 * 1024  # over huggingface_hub's 10 MiB read chunk, so a resume has something to skip


def write_safetensors(path: Path, *, nbytes: int) -> None:
    """A valid single-tensor safetensors file of about ``nbytes`` bytes (deterministic content)."""
    count = nbytes // 4
    header = json.dumps(
        {"__metadata__": {"format": "pt"},
         "model.embed_tokens.weight": {"dtype": "F32", "shape": [count], "data_offsets": [0, count * 4]}},
        separators=(",", ":"),
    ).encode()
    header += b" " * (-len(header) % 8)
    block = hashlib.sha256(b"tiny").digest() * 2048  # 64 KiB of incompressible-looking bytes
    body = (block * (count * 4 // len(block) + 1))[: count * 4]
    path.write_bytes(struct.pack("<Q", len(header)) + header + body)


def make_tiny_model(root: Path) -> Path:
    """A model repo layout: configs, tokenizer files, safetensors, and duplicate formats to be skipped."""
    root.mkdir(parents=True, exist_ok=True)
    files = {
        "config.json": {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8,
                        "max_position_embeddings": 8192, "vocab_size": 16, "torch_dtype": "bfloat16"},
        "generation_config.json": {"bos_token_id": 1, "eos_token_id": 2},
        "tokenizer_config.json": {"bos_token": "<s>", "eos_token": "</s>", "model_max_length": 8192,
                                  "chat_template": "{% for m in messages %}{{ m['content'] }}{% endfor %}"},
        "special_tokens_map.json": {"bos_token": "<s>", "eos_token": "</s>"},
        "tokenizer.json": {"version": "1.0", "added_tokens": [], "model": {"type": "WordLevel",
                           "vocab": {"<s>": 1, "</s>": 2, "hello": 3}, "unk_token": "</s>"}},
        "original/params.json": {"dim": 8},
        "pytorch_model.bin.index.json": {"weight_map": {}},
    }
    for name, payload in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(json.dumps(payload, indent=1))
    write_safetensors(root / "model.safetensors", nbytes=WEIGHTS_BYTES)
    (root / "tokenizer.model").write_bytes(b"\x0a\x05hello" * 16)
    (root / "README.md").write_text("# tiny\n")
    for duplicate in ("pytorch_model.bin", "model.gguf", "original/consolidated.00.pth", "onnx/model.onnx"):
        (root / duplicate).parent.mkdir(parents=True, exist_ok=True)
        (root / duplicate).write_bytes(b"duplicate weights " * 4096)
    return root


# Files of make_tiny_model that a weights download must bring, and the ones a tokenizer-only fetch brings.
EXPECTED_WEIGHT_FILES = {
    "config.json", "generation_config.json", "tokenizer_config.json", "special_tokens_map.json",
    "tokenizer.json", "tokenizer.model", "model.safetensors",
}
EXPECTED_TOKENIZER_FILES = EXPECTED_WEIGHT_FILES - {"model.safetensors"}
