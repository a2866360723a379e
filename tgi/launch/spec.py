"""What defines a TGI container of ours: the frozen ``LaunchSpec`` (image, model mount, GPUs, ports,
launcher flags), its deterministic name and labels, and the parsing of ``--gpus`` and ``--endpoint``.

Containers are named ``functionary-tgi-<model>-<host port>`` and labelled with the model, revision, image,
host port and a hash of all settings, which is how a later start recognises them."""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from docker.types import DeviceRequest

DEFAULT_TGI_IMAGE = "ghcr.io/huggingface/text-generation-inference:3.3.5"
CONTAINER_PORT = 80
MODELS_MOUNT = PurePosixPath("/models")

LABEL_GATEWAY = "functionary.gateway"
LABEL_MODEL = "functionary.model"
LABEL_REVISION = "functionary.revision"
LABEL_IMAGE = "functionary.image"
LABEL_HOST_PORT = "functionary.host-port"
LABEL_SETTINGS_HASH = "functionary.settings-hash"
LABEL_SETTINGS = "functionary.settings"
GATEWAY_VALUE = "functionary-tgi"


def parse_gpus(value: str | int | None) -> list[DeviceRequest] | None:
    """``--gpus`` like docker's: ``all``, a count ``N``, device ids ``0,1`` / ``device=0,1`` / ``GPU-<uuid>``,
    or ``none``. Returns the device requests, or None for no GPU."""
    text = str(value).strip() if value is not None else "none"
    if text.lower() in ("none", ""):
        return None
    if text.lower() == "all":
        return [DeviceRequest(count=-1, capabilities=[["gpu"]])]
    if text.isdigit() and "," not in text:
        if int(text) == 0:
            raise ValueError("--gpus 0 is ambiguous: use --gpus none for no GPU, or --gpus device=0 for GPU 0")
        return [DeviceRequest(count=int(text), capabilities=[["gpu"]])]
    ids = text.split("=", 1)[1] if text.startswith("device=") else text
    device_ids = [part.strip() for part in ids.split(",") if part.strip()]
    if not device_ids or not all(re.fullmatch(r"[\w.:-]+", d) for d in device_ids):
        raise ValueError(f"--gpus {value!r}: expected all, none, a count, or device ids such as 0,1")
    return [DeviceRequest(device_ids=device_ids, capabilities=[["gpu"]])]


def publish_address(endpoint: str) -> tuple[str, int]:
    """Host interface and port to publish TGI on, from an ``--endpoint`` URL."""
    parts = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
    host = parts.hostname or "127.0.0.1"
    if host == "localhost":
        host = "127.0.0.1"
    return host, parts.port or (443 if parts.scheme == "https" else 80)


def _slug(text: str, limit: int = 48) -> str:
    slug = re.sub(r"[^a-z0-9_.-]+", "-", text.lower()).strip("-.")
    return slug[:limit].rstrip("-.") or "model"


@dataclass(frozen=True)
class LaunchSpec:
    """Everything that defines the TGI container. ``model_dir`` is the host directory of the weights."""

    model: str
    model_dir: Path
    revision: str | None = None
    image: str = DEFAULT_TGI_IMAGE
    host: str = "127.0.0.1"
    host_port: int = 8080
    gpus: str = "all"
    shm_size: str = "1g"
    num_shard: int | None = None
    quantize: str | None = None
    dtype: str | None = None
    max_total_tokens: int | None = None
    max_input_tokens: int | None = None
    extra_args: tuple[str, ...] = ()
    keep_container: bool = False
    replace: bool = False
    extra_labels: tuple[tuple[str, str], ...] = ()
    stop_timeout: int = 10  # seconds TGI gets to shut its shards down before SIGKILL

    def __post_init__(self) -> None:
        object.__setattr__(self, "model_dir", Path(self.model_dir).expanduser().resolve())
        object.__setattr__(self, "extra_args", tuple(str(a) for a in self.extra_args))
        object.__setattr__(self, "extra_labels", tuple(tuple(kv) for kv in self.extra_labels))
        parse_gpus(self.gpus)  # fail at construction, not at container start
        if self.quantize and self.dtype:
            raise ValueError("--dtype cannot be combined with --quantize (TGI refuses it)")
        if self.max_input_tokens and self.max_total_tokens and self.max_input_tokens >= self.max_total_tokens:
            raise ValueError("--max-input-tokens must be smaller than --max-total-tokens")

    @property
    def endpoint(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.host_port}"

    @property
    def container_model_path(self) -> str:
        """Where the weights appear in the container: ``/models/<org>/<name>`` or ``/models/<dir name>``."""
        parts = [_slug(p, 96) for p in self._model_name().split("/") if p not in ("", ".", "..")]
        return str(MODELS_MOUNT.joinpath(*(parts or ["model"])))

    def container_name(self) -> str:
        return f"functionary-tgi-{_slug(self._model_name())}-{self.host_port}"

    def _model_name(self) -> str:
        """The Hub id, or the directory's name for a local model."""
        is_path = self.model.startswith(("/", ".", "~")) or Path(self.model).expanduser().is_dir()
        return self.model_dir.name if is_path else self.model

    def docker_args(self) -> list[str]:
        """The launcher arguments. No ``--revision``: with a local path it makes TGI call the Hub."""
        args = ["--model-id", self.container_model_path, "--hostname", "0.0.0.0", "--port", str(CONTAINER_PORT)]
        for flag, value in (
            ("--max-input-tokens", self.max_input_tokens),
            ("--max-total-tokens", self.max_total_tokens),
            ("--num-shard", self.num_shard),
            ("--quantize", self.quantize),
            ("--dtype", self.dtype),
        ):
            if value is not None:
                args += [flag, str(value)]
        return args + list(self.extra_args)

    def settings(self) -> dict:
        """What must match for a running container to be reused."""
        return {
            "image": self.image, "model": self.model, "revision": self.revision, "model_dir": str(self.model_dir),
            "args": self.docker_args(), "gpus": str(self.gpus), "shm_size": self.shm_size,
            "host": self.host, "host_port": self.host_port,
        }

    def settings_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.settings(), sort_keys=True).encode()).hexdigest()[:16]

    def labels(self) -> dict[str, str]:
        return {
            LABEL_GATEWAY: GATEWAY_VALUE,
            LABEL_MODEL: self.model,
            LABEL_REVISION: self.revision or "",
            LABEL_IMAGE: self.image,
            LABEL_HOST_PORT: str(self.host_port),
            LABEL_SETTINGS_HASH: self.settings_hash(),
            LABEL_SETTINGS: json.dumps(self.settings(), sort_keys=True),
            **dict(self.extra_labels),
        }

    def create_kwargs(self) -> dict:
        """Keyword arguments of ``client.containers.create`` (pure; what ``docker run`` would be given)."""
        return {
            "image": self.image,
            "command": self.docker_args(),
            "name": self.container_name(),
            "labels": self.labels(),
            "environment": {"HF_HUB_OFFLINE": "1"},  # the weights are mounted; no token enters the container
            "volumes": {str(self.model_dir): {"bind": self.container_model_path, "mode": "ro"}},
            "ports": {f"{CONTAINER_PORT}/tcp": (self.host, self.host_port)},
            "device_requests": parse_gpus(self.gpus),
            "shm_size": self.shm_size,
        }


def labels_from_env() -> tuple[tuple[str, str], ...]:
    """Extra container labels from ``FUNCTIONARY_TGI_LABELS`` (``key=value,key=value``), e.g. for ops or tests."""
    pairs = (item.partition("=") for item in os.environ.get("FUNCTIONARY_TGI_LABELS", "").split(","))
    return tuple((key.strip(), value.strip()) for key, _, value in pairs if key.strip())
