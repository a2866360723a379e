"""Model weights on the host, ready to be mounted read-only into a TGI container.

A local directory is used as it is. A Hub id is fetched with ``huggingface_hub.snapshot_download``
into ``<cache_dir>/<org>/<name>`` (``<org>/<name>@<revision>`` for a pinned revision) as plain files,
not the symlinked Hub cache, because symlinks into ``blobs/`` would dangle inside the container.

* Only what TGI loads is fetched: safetensors, JSON configs and tokenizer files; the same weights in
  other formats (``.bin``, ``.gguf``, ``.pth``, ONNX, ...) are skipped.
* Files already complete are never fetched again: a second start makes one metadata call and no
  download (none at all for a commit-hash revision; none when the Hub is unreachable).
* A dropped connection is resumed in place with an HTTP Range request. huggingface_hub ≥ 1.x keeps
  each partial file under a name private to its process and deletes it on failure, so after the
  process itself is interrupted the download resumes file by file: complete shards are kept, the
  interrupted one starts over.
* Cancelling the coroutine (Ctrl-C) stops the worker threads at their next chunk instead of letting
  them finish every file in flight; partial files are removed.

Errors::

    GatewayError (functionary/errors.py)
    └── WeightsError                 weights cannot be made available
        ├── WeightsAuthError         token missing, rejected or without access (gated repo)
        ├── WeightsNotFoundError     no such local dir, repo, revision, or no safetensors in it
        └── WeightsInterruptedError  SIGINT/SIGTERM during the download (also under uvicorn start-up)

Messages never contain the token.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from huggingface_hub import snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import tqdm as hf_tqdm

from functionary.errors import GatewayError
from tgi.launch.signals import cancel_on_signals, only_signals_cancelled

# What TGI reads from a model directory.
WEIGHT_FILES: tuple[str, ...] = (
    "*.safetensors",
    "*.json",
    "tokenizer.model*",
    "*.tiktoken",
    "*.txt",
    "*.jinja",
)
TOKENIZER_FILES: tuple[str, ...] = (
    "*.json",
    "tokenizer.model*",
    "*.tiktoken",
    "*.txt",
    "*.jinja",
)
# Duplicate formats of the same weights, and their indexes.
SKIPPED_FILES: tuple[str, ...] = (
    "original/*",
    "onnx/*",
    "openvino/*",
    "coreml/*",
    "*.bin",
    "*.bin.index.json",
    "*.pt",
    "*.pth",
    "*.ckpt",
    "*.gguf",
    "*.ggml",
    "*.onnx",
    "*.onnx_data",
    "*.msgpack",
    "*.h5",
    "*.ot",
    "*.tflite",
    "*.mlmodel",
    "consolidated*.safetensors",  # Mistral's own format, shipped next to the HF shards
)
_TOKENIZER_SKIPPED = (*SKIPPED_FILES, "*.safetensors", "*.safetensors.index.json")

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")

Log = Callable[[str], None]
_log = logging.getLogger("gateway.weights")


class WeightsError(GatewayError):
    """The model's weights could not be made available on the host."""


class WeightsAuthError(WeightsError):
    """The Hub refused the download: no token, a rejected token, or no access to a gated repo."""


class WeightsNotFoundError(WeightsError):
    """No such local directory, repo or revision, or the repo has no safetensors weights."""


class WeightsInterruptedError(WeightsError):
    """SIGINT or SIGTERM arrived during the download."""


def local_dir_for(model: str, *, revision: str | None, cache_dir: Path) -> Path:
    """Where a Hub model's files go: ``<cache_dir>/<org>/<name>[@<revision>]``."""
    name = model if revision in (None, "main") else f"{model}@{re.sub(r'[^A-Za-z0-9._-]', '-', revision)}"
    return Path(cache_dir).expanduser() / name


async def ensure_weights(
    model: str, *, revision: str | None, cache_dir: Path, token: str | None, log: Log | None = None
) -> Path:
    """Host directory holding the weights of ``model`` (a local directory or a Hub id), fetching them if needed."""
    if (local := _local_dir(model)) is not None:
        return local
    path = await _fetch(model, revision=revision, cache_dir=cache_dir, token=token, log=log, allow=WEIGHT_FILES,
                        ignore=SKIPPED_FILES, what=f"{model}{'@' + revision if revision else ''}")
    if not any(path.glob("*.safetensors")):
        raise WeightsNotFoundError(
            f"{model} has no .safetensors weights at the top of the repo; TGI loads safetensors from a "
            "read-only mount (convert the checkpoint, or pass a local directory that has them)",
            param="model",
        )
    (log or _log.info)(f"[weights] {model}: ready in {path}")
    return path


async def fetch_tokenizer_files(
    model: str, *, revision: str | None, cache_dir: Path, token: str | None, log: Log | None = None
) -> Path:
    """Directory with the tokenizer and config files of ``model`` only (for attaching to a running TGI)."""
    if (local := _local_dir(model)) is not None:
        return local
    return await _fetch(model, revision=revision, cache_dir=cache_dir, token=token, log=log, allow=TOKENIZER_FILES,
                        ignore=_TOKENIZER_SKIPPED, what=f"tokenizer and config of {model}")


async def _fetch(model: str, *, revision: str | None, cache_dir: Path, token: str | None, log: Log | None,
                 allow, ignore, what: str) -> Path:
    target = local_dir_for(model, revision=revision, cache_dir=cache_dir)
    (log or _log.info)(f"[weights] {what} → {target}")
    return await _snapshot(model, revision=revision, local_dir=target, token=token, allow=allow, ignore=ignore)


def _local_dir(model: str) -> Path | None:
    path = Path(model).expanduser()
    if path.is_dir():
        return path.resolve()
    if model.startswith(("/", ".", "~")) or not _REPO_ID.match(model):
        raise WeightsNotFoundError(
            f"{model!r} is neither an existing local directory nor a Hub model id (org/name)", param="model"
        )
    return None


async def _snapshot(
    model: str,
    *,
    revision: str | None,
    local_dir: Path,
    token: str | None,
    allow: Sequence[str],
    ignore: Sequence[str],
) -> Path:
    cancelled = threading.Event()
    bar = type("_Bar", (_CancellableBar,), {"cancelled": cancelled})

    def download() -> str:
        return snapshot_download(
            model,
            revision=revision,
            local_dir=local_dir,
            token=token,
            allow_patterns=list(allow),
            ignore_patterns=list(ignore),
            tqdm_class=bar,
        )

    work = asyncio.ensure_future(asyncio.to_thread(download))
    try:
        with cancel_on_signals() as received:
            try:
                return Path(await asyncio.shield(work))
            except asyncio.CancelledError:
                # The thread cannot be killed: make its progress callbacks raise so it stops at the next
                # chunk (and removes its partial file) instead of finishing every download in flight.
                cancelled.set()
                await asyncio.wait([work])
                if only_signals_cancelled(received):
                    raise WeightsInterruptedError(
                        f"{signal.Signals(received[0]).name} while downloading {model}: the files already "
                        "complete are kept, the next start fetches the rest"
                    ) from None
                raise
    except GatedRepoError as exc:
        raise WeightsAuthError(
            _scrub(f"{model} is a gated repo: accept its conditions on its Hub page, then set HF_TOKEN to a "
                   f"token of an account that has access ({_first_line(exc)})", token),
            param="model",
        ) from None
    except RevisionNotFoundError:
        raise WeightsNotFoundError(f"{model} has no revision {revision!r} on the Hub", param="revision") from None
    except RepositoryNotFoundError as exc:
        hint = "check the id, and that HF_TOKEN has access"
        if not (token or _env_token()):
            hint = "check the id; set HF_TOKEN if it is private or gated"
        raise WeightsNotFoundError(
            _scrub(f"the Hub answered {_status(exc) or 404} for {model}: model not found ({hint})", token),
            param="model",
        ) from None
    except HfHubHTTPError as exc:
        status = _status(exc)
        if status in (401, 403):
            raise WeightsAuthError(
                _scrub(f"the Hub refused the download of {model} (HTTP {status}): the token in HF_TOKEN is "
                       "invalid, expired or lacks read access", token),
                param="model",
            ) from None
        raise WeightsError(_scrub(f"downloading {model} failed: {_first_line(exc)}", token)) from None
    except LocalEntryNotFoundError as exc:
        raise WeightsError(
            _scrub(f"{model} is not on disk under {local_dir} and the Hub cannot be reached: {_first_line(exc)}", token)
        ) from None
    except OSError as exc:
        raise WeightsError(_scrub(f"downloading {model} into {local_dir} failed: {exc}", token)) from None


class _DownloadCancelled(Exception):
    pass


class _CancellableBar(hf_tqdm):
    """huggingface_hub's progress bar (shown on terminals, silenced by HF_HUB_DISABLE_PROGRESS_BARS)
    whose updates raise once the download is cancelled: the only hook into its worker threads."""

    cancelled: threading.Event

    def __init__(self, *args, **kwargs) -> None:
        # A bar for work that ends at once (every file already there) never appears; and bars are drawn on a
        # terminal only: in a log file their redraws would be noise between the log lines.
        kwargs.setdefault("delay", 1.0)
        stream = kwargs.get("file") or sys.stderr
        if not (hasattr(stream, "isatty") and stream.isatty()):
            kwargs["disable"] = True
        super().__init__(*args, **kwargs)

    def update(self, n: float | None = 1) -> bool | None:
        if self.cancelled.is_set():
            raise _DownloadCancelled("download cancelled")
        return super().update(n)


def _env_token() -> str | None:
    return os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")


def _scrub(message: str, token: str | None) -> str:
    for secret in (token, _env_token()):
        if secret:
            message = message.replace(secret, "***")
    return message


def _status(exc: HfHubHTTPError) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return next((line for line in text.splitlines() if line.strip()), type(exc).__name__)
