"""The corert exception hierarchy, and the one place that maps it to CLI exit codes.

Every error a user can provoke is a CorertError; its message is one line that says what is wrong
(and where relevant, which JSON path or which host capability is the cause).
"""
from __future__ import annotations


class CorertError(Exception):
    """Base class: a clear one-line message, and the exit code the CLI returns for it."""

    exit_code: int = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(CorertError):
    """Bad command-line usage (unknown flag value, missing argument)."""

    exit_code = 2


class ConfigError(CorertError):
    """config.json is malformed, contradictory or asks for something corert cannot honour."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path


class ContainerNotFound(CorertError):
    def __init__(self, container_id: str) -> None:
        super().__init__(f"container {container_id!r} does not exist")
        self.container_id = container_id


class ContainerExists(CorertError):
    def __init__(self, container_id: str) -> None:
        super().__init__(f"container {container_id!r} already exists")
        self.container_id = container_id


class InvalidState(CorertError):
    """The operation does not fit the container's current status (e.g. start of a running one)."""


class ContainerInitError(CorertError):
    """The container's init failed between clone and exec; reported by the fast path as (step, errno)."""

    def __init__(self, step: str, errno_: int, detail: str) -> None:
        import os

        reason = os.strerror(errno_) if errno_ else ""
        text = f"container init failed at {step}"
        if detail:
            text += f" ({detail})"
        if reason:
            text += f": {reason}"
        super().__init__(text)
        self.step = step
        self.errno = errno_
        self.detail = detail


class HostUnsupported(CorertError):
    """The host lacks something corert needs (e.g. /dev/fuse, user namespaces); the message says the fix."""


class ResourceError(CorertError):
    """A cgroup/storage/network driver failed to set up or tear down a resource."""


class ImageError(CorertError):
    """Image store problems: unknown image, bad archive, hostile layer, image in use."""


class HookError(CorertError):
    """An OCI hook failed or timed out."""


# Docker-style front door codes: 125 = corert's own error, 126 = cannot execute, 127 = not found.
FRONTEND_ERROR = 125
CANNOT_EXECUTE = 126
NOT_FOUND = 127


def exit_code_for(error: BaseException, *, frontend: bool = False) -> int:
    """The exit code the CLI returns for an error: runc's codes on the OCI verbs, docker's on the front door."""
    if isinstance(error, ContainerInitError) and frontend:
        if error.errno == 2:  # ENOENT: the command does not exist in the image
            return NOT_FOUND
        if error.errno in (13, 8):  # EACCES / ENOEXEC
            return CANNOT_EXECUTE
    if frontend:
        return FRONTEND_ERROR
    if isinstance(error, CorertError):
        return error.exit_code
    return 1
