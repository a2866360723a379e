"""The gateway's log lines: one format for every logger (ours, uvicorn's, the launcher's, the weights', the
libraries'), secrets masked, written so that they never land inside a progress bar (``ProgressAwareHandler``).

``--log-format text`` writes ``TIME LEVEL LOGGER: MESSAGE key=value ...``; ``json`` writes one JSON object a
line (``ts``, ``level``, ``logger``, ``message`` and the fields). Fields come from ``extra={"fields": {...}}``:
the per-request line is ``log.info("request", extra={"fields": record.fields(now)})``.

Secrets (the API keys, the Hugging Face token) are replaced by ``[redacted]`` in every formatted line,
tracebacks included, whatever logged them: the last line of defence, not the first (nothing of ours logs a
header or a token on purpose).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Iterable

__all__ = ["LOG_FORMATS", "NOISY_LOGGERS", "LineFormatter", "ProgressAwareHandler", "configure_logging", "secrets_from_env"]

LOG_FORMATS = ("text", "json")
REDACTED = "[redacted]"
_SECRET_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HUGGINGFACE_HUB_TOKEN", "HF_API_TOKEN")


def secrets_from_env(environ=os.environ) -> tuple[str, ...]:
    return tuple(v for name in _SECRET_ENV if (v := environ.get(name, "").strip()))


class LineFormatter(logging.Formatter):
    def __init__(self, *, json_lines: bool, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._json = json_lines
        # longest first, so a secret that contains another is masked whole
        self._secrets = tuple(sorted({s for s in secrets if s}, key=len, reverse=True))

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        fields = getattr(record, "fields", None) or {}
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        if self._json:
            line = {"ts": stamp, "level": record.levelname, "logger": record.name, "message": message, **fields}
            if record.exc_info:
                line["exception"] = self.formatException(record.exc_info)
            text = json.dumps(line, ensure_ascii=False, default=str)
        else:
            parts = [stamp, record.levelname, f"{record.name}:", message]
            parts += [f"{key}={_text_value(value)}" for key, value in fields.items()]
            text = " ".join(parts)
            if record.exc_info:
                text += "\n" + self.formatException(record.exc_info)
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text


def _text_value(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    if not text or any(c in text for c in ' "=\\') or not text.isprintable():
        return json.dumps(text, ensure_ascii=False)
    return text


# Third-party loggers that log every HTTP call at INFO (huggingface_hub's client is ``httpx2`` in its 1.x/2.x
# releases): WARNING unless --log-level debug; the gateway's own lines already say what happened.
NOISY_LOGGERS = ("httpx", "httpcore", "httpx2", "httpcore2", "huggingface_hub", "urllib3", "docker", "filelock")


class ProgressAwareHandler(logging.StreamHandler):
    """Writes each line through ``tqdm.write``: a progress bar on the terminal (the weights download) is
    cleared, the line written, and the bar redrawn below it, so lines and bars never share a line."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=self.stream)
            self.flush()
        except Exception:  # logging must never raise
            self.handleError(record)


def configure_logging(*, level: str, fmt: str, secrets: Iterable[str] = ()) -> None:
    """One stderr handler on the root logger; uvicorn must then run with ``log_config=None``."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"unknown log format {fmt!r}; use one of {', '.join(LOG_FORMATS)}")
    handler = ProgressAwareHandler(sys.stderr)
    handler.setFormatter(LineFormatter(json_lines=fmt == "json", secrets=secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    quiet = level.lower() != "debug"
    for noisy in NOISY_LOGGERS:
        logger = logging.getLogger(noisy)
        logger.setLevel(logging.WARNING if quiet else logging.NOTSET)
        # a library's own handler (huggingface_hub installs one) would print its lines a second time, in its format
        for own in list(logger.handlers):
            logger.removeHandler(own)
        logger.propagate = True
