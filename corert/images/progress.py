"""A one-line progress bar on stderr for long imports; silent when stderr is not a terminal."""
from __future__ import annotations

import os
import sys
import time

# Below this a bar would only flicker.
MIN_BYTES = 8 << 20


class Progress:
    def __init__(self, label: str, total: int, *, stream=None) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self.label = label
        self.total = max(total, 1)
        self.done = 0
        self._last = 0.0
        try:
            tty = self._stream.isatty()
        except (AttributeError, ValueError):
            tty = False
        self.enabled = tty and total >= MIN_BYTES

    def advance(self, n: int) -> None:
        self.done += n
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last >= 0.1:
            self._last = now
            self._draw()

    def _draw(self) -> None:
        frac = min(self.done / self.total, 1.0)
        try:
            cols = os.get_terminal_size(self._stream.fileno()).columns
        except (OSError, ValueError):
            cols = 80
        text = f"{self.label} {frac * 100:5.1f}% {self.done / 1e6:.1f}/{self.total / 1e6:.1f} MB"
        width = max(cols - len(text) - 4, 10)
        filled = int(width * frac)
        self._stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {text}")
        self._stream.flush()

    def finish(self) -> None:
        if self.enabled:
            self.done = self.total
            self._draw()
            self._stream.write("\n")
            self._stream.flush()
