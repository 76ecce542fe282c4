"""Output in the exact shapes runc prints: Go's encoding/json and text/tabwriter."""
from __future__ import annotations

import sys

from corert import jsonio


def go_json(obj: object, indent: str | None = None) -> str:
    """json.dumps as Go's encoding/json writes it: UTF-8 as is, <, >, & escaped, no spaces (or indented)."""
    text = jsonio.dumps(obj, ensure_ascii=False, indent=indent)
    # These characters only ever occur inside JSON strings, where Go writes them as \u escapes.
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def tabwriter(rows: list[list[str]], minwidth: int = 12, padding: int = 3) -> str:
    """Go's tabwriter.NewWriter(w, 12, 1, 3, ' ', 0) as runc `list` uses it: every cell but the last of a
    row is padded to max(minwidth, widest cell of its column + padding)."""
    if not rows:
        return ""
    ncols = max(len(r) for r in rows)
    widths = [0] * ncols
    for row in rows:
        for i, cell in enumerate(row[:-1]):
            widths[i] = max(widths[i], len(cell) + padding, minwidth)
    lines = []
    for row in rows:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])] + row[-1:]
        lines.append("".join(cells) + "\n")
    return "".join(lines)


def write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()
