"""Progress of parallel blob transfers: one redrawn bar per blob on a terminal, plain lines otherwise."""
from __future__ import annotations

import os
import sys
import threading
import time
from typing import TextIO


class TransferProgress:
    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream if stream is not None else sys.stderr
        try:
            self.tty = self._stream.isatty()
        except (AttributeError, ValueError):
            self.tty = False
        self._rows: dict[str, list] = {}    # key -> [label, done, total, status]
        self._drawn = 0                      # rows on screen from the last redraw
        self._last = 0.0
        self._lock = threading.Lock()

    def start(self, key: str, label: str, total: int, done: int = 0) -> None:
        with self._lock:
            self._rows[key] = [label, done, max(total, 1), ""]
            if self.tty:
                self._draw()
            elif done:
                self._line(f"{label}: resuming at {done / 1e6:.1f} of {total / 1e6:.1f} MB")

    def advance(self, key: str, n: int) -> None:
        with self._lock:
            self._rows[key][1] += n
            if self.tty and time.monotonic() - self._last >= 0.1:
                self._draw()

    def reset(self, key: str, done: int = 0) -> None:
        with self._lock:
            self._rows[key][1] = done

    def finish(self, key: str, label: str, status: str) -> None:
        with self._lock:
            row = self._rows.setdefault(key, [label, 0, 1, ""])
            row[3] = status
            if self.tty:
                self._draw()
            else:
                self._line(f"{row[0]}: {status}")

    def note(self, text: str) -> None:
        """A line of its own above the bars."""
        with self._lock:
            if self.tty:
                self._clear()
                self._stream.write(text + "\n")
                self._drawn = 0
                self._draw()
            else:
                self._line(text)

    def close(self) -> None:
        with self._lock:
            if self.tty and self._rows:
                self._draw()
            self._rows.clear()
            self._drawn = 0

    # ---- drawing (lock held) ---------------------------------------------------------------------------
    def _line(self, text: str) -> None:
        self._stream.write(text + "\n")
        self._stream.flush()

    def _clear(self) -> None:
        if self._drawn:
            self._stream.write(f"\x1b[{self._drawn}A\r\x1b[J")

    def _draw(self) -> None:
        self._last = time.monotonic()
        try:
            cols = os.get_terminal_size(self._stream.fileno()).columns
        except (OSError, ValueError, AttributeError):
            cols = 80
        self._clear()
        for label, done, total, status in self._rows.values():
            if status:
                text = f"{label}: {status}"
            else:
                frac = min(done / total, 1.0)
                tail = f" {frac * 100:5.1f}% {done / 1e6:.1f}/{total / 1e6:.1f} MB"
                width = max(cols - len(label) - len(tail) - 4, 10)
                filled = int(width * frac)
                text = f"{label} [{'#' * filled}{'.' * (width - filled)}]{tail}"
            self._stream.write(text[: cols - 1] + "\n")
        self._drawn = len(self._rows)
        self._stream.flush()
