"""Why TGI could not be started: one branch of the gateway's error tree (start-up only; no HTTP status
is ever sent for these).

    GatewayError (functionary/errors.py)
    └── LaunchError                   TGI could not be started (start-up only, no HTTP status is sent)
        ├── LaunchUsageError          the launch flags contradict each other (exit code 2)
        ├── DockerUnavailableError    the engine cannot be reached (names DOCKER_HOST)
        ├── ImagePullError            the image is absent and cannot be pulled
        ├── PortInUseError            the host port of --endpoint is taken
        ├── GPURuntimeError           GPUs requested but the engine has no GPU runtime
        ├── ContainerConflictError    a container of ours with other settings holds the name or port
        ├── TGIExitedError            the container exited while loading (exit code + log tail)
        ├── TGIStartupTimeoutError    not healthy before --startup_timeout
        └── LaunchInterruptedError    SIGINT/SIGTERM while waiting (the container is cleaned up first)
"""

from __future__ import annotations

from functionary.errors import GatewayError


class LaunchError(GatewayError):
    """TGI could not be started in Docker."""


class LaunchUsageError(LaunchError):
    """The launch flags contradict each other (a command-line error: exit code 2)."""


class DockerUnavailableError(LaunchError):
    """The Docker engine cannot be reached."""


class ImagePullError(LaunchError):
    """The TGI image is not present locally and pulling it failed."""


class PortInUseError(LaunchError):
    """The host port taken from --endpoint is already in use."""


class GPURuntimeError(LaunchError):
    """GPUs were requested but the engine cannot provide them (no NVIDIA container toolkit)."""


class ContainerConflictError(LaunchError):
    """A container of this gateway, with other settings, already holds the name or the host port."""


class TGIExitedError(LaunchError):
    """The container exited before TGI became healthy."""

    def __init__(self, message: str, *, exit_code: int | None, log_tail: list[str]) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.log_tail = log_tail


class TGIStartupTimeoutError(LaunchError):
    """TGI did not become healthy before the start-up deadline."""


class LaunchInterruptedError(LaunchError):
    """SIGINT or SIGTERM arrived while waiting for TGI."""
