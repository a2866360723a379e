"""Fixtures for tests on the real Docker Engine.

Every container a test creates carries the label ``functionary.test=<run id>`` and is removed after
the test, whatever happened (and at the end of the session, and, for a crashed earlier run, once it
is an hour old). The emulator image is built once (``tgi/launch/docker_image.py``) and reused across runs.
Import the fixtures into a test module by name.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import docker
import docker.errors
import pytest

from tests.support.local_http import HeadGetHandler
from tests.support.proc_handle import free_port
from tgi.launch.docker_image import DEFAULT_EMULATOR, TEST_LABEL, ensure_image
from tgi.launch.spec import LaunchSpec

RUN_ID = uuid.uuid4().hex[:12]
TEST_LABELS = ((TEST_LABEL, RUN_ID),)


def remove_test_containers(client: docker.DockerClient, *, run_id: str | None = RUN_ID, older_than: float = 0) -> None:
    label = f"{TEST_LABEL}={run_id}" if run_id else TEST_LABEL
    for container in client.containers.list(all=True, filters={"label": label}):
        if container.labels.get(TEST_LABEL) == "1":
            continue  # the label inherited from the test image: not created by a test run
        created = datetime.fromisoformat(container.attrs["Created"][:26].rstrip("Z")).replace(tzinfo=timezone.utc)
        if time.time() - created.timestamp() < older_than:
            continue
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True, v=True)


def containers_of_this_run(client: docker.DockerClient) -> list:
    return client.containers.list(all=True, filters={"label": f"{TEST_LABEL}={RUN_ID}"})


@pytest.fixture(scope="session")
def docker_client():
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        pytest.skip(f"no Docker engine reachable: {exc}")
    remove_test_containers(client, run_id=None, older_than=3600)  # left by a killed earlier run
    yield client
    remove_test_containers(client)
    client.close()


@pytest.fixture(scope="session")
def emulator_image(docker_client) -> str:
    """The TGI-emulator image (built from Debian packages on first use, then reused)."""
    emulator = Path(os.environ.get("FUNCTIONARY_TEST_EMULATOR", DEFAULT_EMULATOR))
    if not (emulator / "__main__.py").is_file():
        pytest.skip(f"no emulator at {emulator}")
    return ensure_image(emulator=emulator, client=docker_client)


@pytest.fixture
def cleanup(docker_client):
    """Removes this run's containers after the test, even when it failed."""
    yield docker_client
    remove_test_containers(docker_client)


@pytest.fixture
def model_dir(tmp_path) -> Path:
    from tests.support.model_fixture import make_model_dir

    return make_model_dir(tmp_path / "tiny-functionary")


def make_spec(image: str, model_dir: Path, **overrides) -> LaunchSpec:
    """A spec for tests: no GPU, a free port, the test label, a short stop timeout."""
    values = dict(
        model=str(model_dir), model_dir=model_dir, image=image, host_port=free_port(), gpus="none",
        extra_labels=TEST_LABELS, stop_timeout=5,
    )
    values.update(overrides)
    return LaunchSpec(**values)


class LocalRegistry:
    """A read-only Docker Registry v2 on 127.0.0.1 serving one image exported from the engine, so that the
    launcher's pull (and its progress output) runs for real without any outside registry. The engine
    treats 127.0.0.0/8 registries as insecure (plain HTTP) by default."""

    def __init__(self, client: docker.DockerClient, source: str, workdir: Path) -> None:
        import gzip
        import hashlib
        import io
        import json
        import tarfile
        from http.server import ThreadingHTTPServer
        import threading

        exported = workdir / "image.tar"
        with exported.open("wb") as out:
            for chunk in client.images.get(source).save(named=False):
                out.write(chunk)
        blobs: dict[str, bytes] = {}
        layers = []
        with tarfile.open(exported) as tar:
            (manifest,) = json.load(tar.extractfile("manifest.json"))
            config = tar.extractfile(manifest["Config"]).read()
            for name in manifest["Layers"]:
                data = gzip.compress(tar.extractfile(name).read(), compresslevel=1)
                digest = "sha256:" + hashlib.sha256(data).hexdigest()
                blobs[digest] = data
                layers.append({"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                               "size": len(data), "digest": digest})
        # One layer the engine cannot already have, so the pull really transfers bytes (and reports progress).
        extra = io.BytesIO()
        with tarfile.open(fileobj=extra, mode="w") as tar:
            payload = hashlib.sha256(str(workdir).encode()).digest() * 32768  # 1 MiB, unique to this test
            info = tarfile.TarInfo("pulled-from-local-registry")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
        raw = extra.getvalue()
        data = gzip.compress(raw, compresslevel=1)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        layers.append({"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": len(data),
                       "digest": digest})
        image_config = json.loads(config)
        image_config["rootfs"]["diff_ids"].append("sha256:" + hashlib.sha256(raw).hexdigest())
        image_config.setdefault("history", []).append({"created_by": "functionary test layer"})
        config = json.dumps(image_config).encode()
        config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
        blobs[config_digest] = config
        manifest_body = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": len(config),
                       "digest": config_digest},
            "layers": layers,
        }).encode()
        manifest_digest = "sha256:" + hashlib.sha256(manifest_body).hexdigest()
        self.requests: list[str] = []
        registry = self

        class Handler(HeadGetHandler):
            def respond(self, *, body: bool) -> None:
                registry.requests.append(f"{self.command} {self.path}")
                headers = {"Docker-Distribution-API-Version": "registry/2.0"}
                if self.path.rstrip("/") == "/v2":
                    data, kind = b"{}", "application/json"
                elif "/manifests/" in self.path:
                    data, kind = manifest_body, "application/vnd.docker.distribution.manifest.v2+json"
                    headers["Docker-Content-Digest"] = manifest_digest
                elif "/blobs/" in self.path and self.path.rsplit("/", 1)[1] in blobs:
                    data, kind = blobs[self.path.rsplit("/", 1)[1]], "application/octet-stream"
                    headers["Docker-Content-Digest"] = self.path.rsplit("/", 1)[1]
                else:
                    data, kind = b'{"errors":[{"code":"NAME_UNKNOWN"}]}', "application/json"
                    self.send_response(404)
                    self._finish(data, kind, headers, body)
                    return
                self.send_response(200)
                self._finish(data, kind, headers, body)

            def _finish(self, data: bytes, kind: str, headers: dict, body: bool) -> None:
                for key, value in {**headers, "Content-Type": kind, "Content-Length": str(len(data))}.items():
                    self.send_header(key, value)
                self.end_headers()
                if body:
                    self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        exported.unlink()

    def image(self, name: str) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}/{name}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
