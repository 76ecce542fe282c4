"""`.containerignore` (or `.dockerignore`) with docker's pattern semantics.

Each line is a pattern on paths relative to the context root ('/'-separated, cleaned, a leading '/'
dropped); `#` lines are comments. `*` matches within one path component, `?` one character, `[...]` a
class, `**` any number of components (also none). A pattern that matches a directory excludes everything
below it. A `!pattern` re-includes what it matches; the last matching line decides. Docker always sends
the Containerfile and the ignore file itself; COPY of them still honours the patterns.
"""
from __future__ import annotations

import os
import posixpath
import re

IGNORE_FILES = (".containerignore", ".dockerignore")


class IgnoreMatcher:
    def __init__(self, lines: list[str]) -> None:
        self.rules: list[tuple[bool, re.Pattern[str]]] = []   # (exclude?, regex on the cleaned path)
        for raw in lines:
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            exclude = not line.startswith("!")
            if not exclude:
                line = line[1:].strip()
            pattern = posixpath.normpath(line.lstrip("/")) if line.lstrip("/") else "."
            if pattern == ".":
                continue   # docker ignores a pattern that is the context root itself
            self.rules.append((exclude, re.compile(_to_regex(pattern))))

    @classmethod
    def for_context(cls, root: str) -> IgnoreMatcher:
        """The matcher of a context dir: its .containerignore, else its .dockerignore, else nothing."""
        for name in IGNORE_FILES:
            path = os.path.join(root, name)
            try:
                with open(path, encoding="utf-8", errors="replace") as f:
                    return cls(f.read().splitlines())
            except FileNotFoundError:
                continue
        return cls([])

    def excluded(self, rel: str) -> bool:
        """Whether the context-relative path `rel` ("a/b") is left out: it or one of its parents matches
        an exclude rule that no later `!` rule re-includes."""
        if not self.rules:
            return False
        parts = rel.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        result = False
        for exclude, regex in self.rules:
            if any(regex.fullmatch(p) for p in prefixes):   # the last prefix is rel itself
                result = exclude
        return result

    def may_include_below(self) -> bool:
        """Whether an excluded directory could still have re-included entries (a `!` rule below it):
        the walk must then descend instead of skipping the whole directory."""
        return any(not exclude for exclude, _ in self.rules)


def _to_regex(pattern: str) -> str:
    out: list[str] = []
    i = 0
    n = len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            if pattern.startswith("**", i):
                i += 2
                if pattern.startswith("/", i):   # "**/" : zero or more whole components
                    i += 1
                    out.append("(?:.*/)?")
                else:
                    out.append(".*")
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1:end]
                if body.startswith(("!", "^")):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = end
        elif c == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)
