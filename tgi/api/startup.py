"""How a failed start-up ends: one clean log line (the container's log tail under it when there is one; a
traceback only at ``--log-level debug``) and a documented exit code (README, docs/docker.md):

====  ==========================================================================================
code  meaning
====  ==========================================================================================
0     the gateway ran and shut down cleanly
1     an unexpected error (a bug: run with ``--log-level debug`` for the traceback and report it)
2     the command line is wrong (argparse's own code, and flag values the gateway refuses)
3     the TGI endpoints: none answers, one is not TGI, or they serve different models
4     launching TGI in Docker failed (no engine, image, GPU, port, the container exited or timed out)
5     the model: unknown Hub id, no access, no weights or tokenizer, or no prompt template fits
6     the gateway cannot listen on ``--host``/``--port`` (in use, or not an address of this machine)
130   interrupted (SIGINT or SIGTERM) while starting
====  ==========================================================================================
"""

from __future__ import annotations

import asyncio
import logging

from functionary.errors import GatewayError, UnknownTemplateError

__all__ = ["EXIT_ENDPOINT", "EXIT_INTERRUPTED", "EXIT_LAUNCH", "EXIT_LISTEN", "EXIT_MODEL", "EXIT_UNEXPECTED", "EXIT_USAGE",
           "StartupError", "UvicornStartupLine", "exit_code_for", "report_startup_failure",
           "without_startup_traceback"]

EXIT_UNEXPECTED = 1
EXIT_USAGE = 2
EXIT_ENDPOINT = 3
EXIT_LAUNCH = 4
EXIT_MODEL = 5
EXIT_LISTEN = 6
EXIT_INTERRUPTED = 130

log = logging.getLogger("gateway.startup")


class StartupError(GatewayError):
    """The gateway cannot start; ``exit_code`` says why (see the table above)."""

    def __init__(self, message: str, *, exit_code: int = EXIT_ENDPOINT) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def exit_code_for(exc: BaseException) -> int:
    from tgi.launch.errors import LaunchError, LaunchInterruptedError, LaunchUsageError
    from tgi.launch.weights import WeightsError, WeightsInterruptedError

    if isinstance(exc, (LaunchInterruptedError, WeightsInterruptedError, KeyboardInterrupt, asyncio.CancelledError)):
        return EXIT_INTERRUPTED
    if isinstance(exc, StartupError):
        return exc.exit_code
    if isinstance(exc, LaunchUsageError):
        return EXIT_USAGE
    if isinstance(exc, LaunchError):
        return EXIT_LAUNCH
    if isinstance(exc, (WeightsError, UnknownTemplateError)):
        return EXIT_MODEL
    return EXIT_UNEXPECTED


def report_startup_failure(exc: BaseException, *, debug: bool) -> int:
    """Logs the failure as one line (a multi-line message, such as a container's log tail, keeps its lines
    under it) and returns the exit code."""
    code = exit_code_for(exc)
    if isinstance(exc, GatewayError):
        message = exc.message
    elif code == EXIT_INTERRUPTED:
        message = "interrupted"
    else:
        message = f"unexpected {type(exc).__name__}: {exc}" + ("" if debug else " (--log-level debug shows the traceback)")
    log.error("start-up failed (exit code %d): %s", code, message, exc_info=exc if debug else None)
    return code


def without_startup_traceback(send):
    """A failed start-up is reported once, cleanly, by the lifespan (:func:`report_startup_failure`): the
    traceback that Starlette hands uvicorn to log is dropped."""

    async def quiet(message):
        if message["type"] == "lifespan.startup.failed":
            message = {**message, "message": ""}
        await send(message)

    return quiet


class UvicornStartupLine(logging.Filter):
    """uvicorn's own "Application startup failed" line after the gateway's clean message: dropped, so the
    reason is the last line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg.startswith("Application startup failed"))
