"""The CLI's error/warning/debug output, in runc's formats.

stderr always gets one line "corert: <message>". With --log FILE, the line is also appended to FILE in
logrus's format, which containerd and conmon parse:
  json: {"level":"error","msg":"container does not exist","time":"2026-11-22T15:35:51Z"}
  text: time="2026-11-22T15:35:51Z" level=error msg="container does not exist"
"""
from __future__ import annotations

import os
import sys
import time


def rfc3339_now() -> str:
    """Local time as Go's time.RFC3339 prints it (logrus's default timestamp): Z for UTC."""
    now = time.time()
    local = time.localtime(now)
    offset = local.tm_gmtoff or 0
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", local)
    if offset == 0:
        return stamp + "Z"
    sign = "+" if offset > 0 else "-"
    hours, minutes = divmod(abs(offset) // 60, 60)
    return f"{stamp}{sign}{hours:02d}:{minutes:02d}"


def go_quote(text: str) -> str:
    """A Go %q-like quoted string (what logrus's text formatter prints)."""
    from corert.cli.output import go_json

    return go_json(text)


class Log:
    def __init__(self, path: str | None = None, fmt: str = "text", debug: bool = False) -> None:
        self.path = path
        self.fmt = fmt
        self.debug_enabled = debug

    def _line(self, level: str, message: str) -> str:
        if self.fmt == "json":
            from corert.cli.output import go_json

            return go_json({"level": level, "msg": message, "time": rfc3339_now()}) + "\n"
        return f'time="{rfc3339_now()}" level={level} msg={go_quote(message)}\n'

    def _to_file(self, level: str, message: str) -> bool:
        if not self.path:
            return False
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError:
            return False
        try:
            os.write(fd, self._line(level, message).encode())
        except OSError:
            return False
        finally:
            os.close(fd)
        return True

    def error(self, message: str) -> None:
        self._to_file("error", message)
        _stderr(f"corert: {message}\n")

    def warning(self, message: str) -> None:
        self._to_file("warning", message)
        _stderr(f"corert: warning: {message}\n")

    def debug(self, message: str) -> None:
        if self.debug_enabled and not self._to_file("debug", message):
            _stderr(self._line("debug", message))


def _stderr(text: str) -> None:
    try:
        sys.stderr.write(text)
        sys.stderr.flush()
    except (OSError, ValueError):
        pass  # stderr closed (engines sometimes run us that way): the log file still has it
