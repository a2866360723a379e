"""Log lines and progress bars: one format, third-party HTTP loggers quiet unless debug, lines written
through tqdm so that they never land inside a bar, and download bars only on a terminal."""

from __future__ import annotations

import io
import logging
import re

import pytest
from tqdm import tqdm

from tgi.ops.logs import NOISY_LOGGERS, LineFormatter, ProgressAwareHandler, configure_logging


@pytest.fixture
def restored_logging():
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, {n: logging.getLogger(n).level for n in NOISY_LOGGERS})
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    for name, level in saved[2].items():
        logging.getLogger(name).setLevel(level)


@pytest.mark.parametrize("level,want", [("info", logging.WARNING), ("warning", logging.WARNING),
                                        ("debug", logging.DEBUG)])
def test_http_loggers_are_quiet_unless_debug(restored_logging, level: str, want: int) -> None:
    configure_logging(level=level, fmt="text")
    for name in ("httpx", "httpcore", "httpx2", "huggingface_hub"):
        assert logging.getLogger(name).getEffectiveLevel() == want, name
        assert not logging.getLogger(name).handlers  # one handler, one format: the root's


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_log_lines_never_share_a_line_with_a_progress_bar() -> None:
    out = _Terminal()
    handler = ProgressAwareHandler(out)
    handler.setFormatter(LineFormatter(json_lines=False))
    log = logging.getLogger("gateway.test-progress")
    log.addHandler(handler)
    log.propagate = False
    try:
        with tqdm(total=10, file=out, desc="model.safetensors", mininterval=0, ascii=True) as bar:
            for i in range(10):
                bar.update(1)
                log.warning("line %d", i)
    finally:
        log.removeHandler(handler)
    segments = re.split(r"[\r\n]|\x1b\[A", out.getvalue())
    lines = [s for s in segments if "gateway.test-progress" in s]
    assert len(lines) == 10
    stamp = re.compile(r"^\d{4}-\d\d-\d\dT[\d:.]+Z WARNING gateway\.test-progress: line \d$")
    assert all(stamp.match(line) for line in lines), lines  # whole lines: no bar text before or after


def test_download_bars_only_on_a_terminal_and_never_for_instant_work() -> None:
    from tgi.launch.weights import _CancellableBar

    class Bar(_CancellableBar):
        cancelled = None

    assert Bar(total=1, file=io.StringIO()).disable  # a log file or a pipe: no bar
    on_terminal = _Terminal()
    bar = Bar(total=0, file=on_terminal, unit="B", desc="Download complete")
    bar.close()
    assert "0.00" not in on_terminal.getvalue() and "Download complete" not in on_terminal.getvalue()
