"""The gateway's log lines: one format for every logger (ours, uvicorn's, httpx's), secrets masked.

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

__all__ = ["LOG_FORMATS", "LineFormatter", "configure_logging", "secrets_from_env"]

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


def configure_logging(*, level: str, fmt: str, secrets: Iterable[str] = ()) -> None:
    """One stderr handler on the root logger; uvicorn must then run with ``log_config=None``."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"unknown log format {fmt!r}; use one of {', '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LineFormatter(json_lines=fmt == "json", secrets=secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    if level.lower() != "debug":
        # httpx logs every TGI call at INFO; the per-request line already says what happened
        for noisy in ("httpx", "httpcore"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
