"""Progress bars on stderr for long image work.

    Progress          one bar on one line for a local import; silent when stderr is not a terminal
    TransferProgress  one bar per blob of a registry pull/push (byte counts, several threads at once);
                      plain lines when stderr is not a terminal, so logs still show what happened
"""
from __future__ import annotations

import os
import sys
import threading
import time
from typing import TextIO

# Below this an import's bar would only flicker.
MIN_BYTES = 8 << 20
# Redrawing more often than this only costs time.
REDRAW_INTERVAL = 0.1


class _Bars:
    """The terminal side both kinds share: whether to draw, how wide, how often, what a bar looks like."""

    def __init__(self, stream: TextIO | None) -> None:
        self._stream = stream if stream is not None else sys.stderr
        try:
            self.tty = self._stream.isatty()
        except (AttributeError, ValueError):
            self.tty = False
        self._last = 0.0

    def _due(self) -> bool:
        return time.monotonic() - self._last >= REDRAW_INTERVAL

    def _begin_draw(self) -> int:
        """Note the redraw for `_due`; the terminal's width."""
        self._last = time.monotonic()
        try:
            return os.get_terminal_size(self._stream.fileno()).columns
        except (OSError, ValueError, AttributeError):
            return 80

    @staticmethod
    def _bar(label: str, done: int, total: int, cols: int) -> tuple[str, str]:
        """The bar, sized to fill the line beside `label` and the amounts, and the amounts."""
        frac = min(done / total, 1.0)
        amounts = f"{frac * 100:5.1f}% {done / 1e6:.1f}/{total / 1e6:.1f} MB"
        width = max(cols - len(label) - len(amounts) - 5, 10)   # 2 brackets, 2 spaces, the last column free
        filled = int(width * frac)
        return f"[{'#' * filled}{'.' * (width - filled)}]", amounts


class Progress(_Bars):
    """One import's bar, redrawn in place with a carriage return."""

    def __init__(self, label: str, total: int, *, stream: TextIO | None = None) -> None:
        super().__init__(stream)
        self.label = label
        self.total = max(total, 1)
        self.done = 0
        self.enabled = self.tty and total >= MIN_BYTES

    def advance(self, n: int) -> None:
        self.done += n
        if self.enabled and self._due():
            self._draw()

    def finish(self) -> None:
        if self.enabled:
            self.done = self.total
            self._draw()
            self._stream.write("\n")
            self._stream.flush()

    def _draw(self) -> None:
        bar, amounts = self._bar(self.label, self.done, self.total, self._begin_draw())
        self._stream.write(f"\r{bar} {self.label} {amounts}")
        self._stream.flush()


class TransferProgress(_Bars):
    """Blobs transferred in parallel, keyed by digest; each row ends as a status line."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream)
        self._rows: dict[str, list] = {}    # key -> [label, done, total, status]
        self._drawn = 0                      # rows on screen from the last redraw
        self._lock = threading.Lock()        # transfer threads report concurrently

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
            if self.tty and self._due():
                self._draw()

    def reset(self, key: str) -> None:
        """Nothing of `key` done yet: its download starts over."""
        with self._lock:
            self._rows[key][1] = 0

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
        cols = self._begin_draw()
        self._clear()
        for label, done, total, status in self._rows.values():
            if status:
                text = f"{label}: {status}"
            else:
                bar, amounts = self._bar(label, done, total, cols)
                text = f"{label} {bar} {amounts}"
            self._stream.write(text[: cols - 1] + "\n")
        self._drawn = len(self._rows)
        self._stream.flush()
