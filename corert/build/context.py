"""The build context: COPY/ADD sources resolved inside it (never outside), walked without what the ignore
file excludes, and the digest of exactly what a step reads (the content part of its cache key).

Paths are '/'-separated and relative to the context root. A source naming a symlink is followed when its
target stays inside the context (docker does the same); inside a copied directory, symlinks are copied as
symlinks. Excluded entries are invisible: they are neither copied nor part of the digest.
"""
from __future__ import annotations

import hashlib
import os
import posixpath
import re
import stat
from dataclasses import dataclass

from corert.build.ignore import IgnoreMatcher, _to_regex
from corert.errors import UsageError

_GLOB_CHARS = re.compile(r"[*?\[]")


class ContextError(UsageError):
    """A COPY/ADD source that is missing, excluded, or outside the context."""


@dataclass(frozen=True)
class Entry:
    rel: str                # path in the context
    dest_rel: str           # path below the destination ("" for a single file copied to dest itself)
    st: os.stat_result      # lstat, except for a followed top-level symlink


@dataclass(frozen=True)
class Source:
    rel: str                # as resolved in the context ("" = the context root)
    is_dir: bool


class BuildContext:
    def __init__(self, root: str) -> None:
        self.root = os.path.realpath(root)
        if not os.path.isdir(self.root):
            raise ContextError(f"build context {root} is not a directory")
        self.ignore = IgnoreMatcher.for_context(self.root)
        self._all: list[str] | None = None

    def path(self, rel: str) -> str:
        return os.path.join(self.root, rel) if rel else self.root

    def resolve(self, spec: str) -> list[Source]:
        """The context entries one COPY/ADD source names (a glob can name several); a clear error when it
        names none, leaves the context or is excluded."""
        rel = posixpath.normpath(spec.lstrip("/")) if spec.strip("/") else "."
        if rel == ".." or rel.startswith("../"):
            raise ContextError(f"source {spec!r} is outside the build context")
        rel = "" if rel == "." else rel
        if _GLOB_CHARS.search(rel):
            regex = re.compile(_to_regex(rel))
            names = [p for p in self._walk_all() if regex.fullmatch(p)]
            if not names:
                raise ContextError(f"no file in the build context matches {spec!r}")
            return [self._source(p, spec) for p in names]
        return [self._source(rel, spec)]

    def _source(self, rel: str, spec: str) -> Source:
        if rel and self.ignore.excluded(rel):
            raise ContextError(f"{spec!r} is excluded by the ignore file of the build context")
        path = self.path(rel)
        real = os.path.realpath(path)
        if real != self.root and not real.startswith(self.root + "/"):
            raise ContextError(f"source {spec!r} is outside the build context")
        try:
            st = os.stat(real)
        except FileNotFoundError:
            raise ContextError(f"{spec!r} not found in the build context") from None
        # a followed symlink: continue from where it points (still inside the context)
        resolved = os.path.relpath(real, self.root)
        return Source("" if resolved == "." else resolved, stat.S_ISDIR(st.st_mode))

    def entries(self, source: Source) -> list[Entry]:
        """What copying `source` reads: the file itself, or the directory's contents (not the dir), sorted."""
        if not source.is_dir:
            return [Entry(source.rel, "", os.stat(self.path(source.rel)))]
        out: list[Entry] = []
        base = self.path(source.rel)
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            sub = os.path.relpath(dirpath, base)
            sub = "" if sub == "." else sub
            keep_dirs = []
            for name in dirnames + sorted(filenames):
                below = f"{sub}/{name}" if sub else name
                rel = f"{source.rel}/{below}" if source.rel else below
                st = os.lstat(os.path.join(dirpath, name))
                is_dir = stat.S_ISDIR(st.st_mode)
                if self.ignore.excluded(rel):
                    if is_dir and self.ignore.may_include_below():
                        keep_dirs.append(name)   # a `!` rule may re-include something below it
                    continue
                out.append(Entry(rel, below, st))
                if is_dir:
                    keep_dirs.append(name)
            dirnames[:] = [d for d in dirnames if d in keep_dirs]
        return out

    def _walk_all(self) -> list[str]:
        if self._all is None:
            self._all = []
            for dirpath, dirnames, filenames in os.walk(self.root):
                dirnames.sort()
                sub = os.path.relpath(dirpath, self.root)
                for name in dirnames + sorted(filenames):
                    rel = name if sub == "." else f"{sub}/{name}"
                    if not self.ignore.excluded(rel):
                        self._all.append(rel)
        return self._all

    def digest(self, sources: list[Source]) -> str:
        """sha256 over what copying `sources` reads: names, types, modes, contents, link targets (not
        times or owners, which COPY does not keep either: the same files always give the same key)."""
        h = hashlib.sha256()
        for source in sources:
            h.update(f"source {source.rel!r} {source.is_dir}\n".encode())
            for entry in self.entries(source):
                st = entry.st
                h.update(f"{entry.dest_rel!r} {stat.S_IFMT(st.st_mode):o} {stat.S_IMODE(st.st_mode):o} ".encode())
                if stat.S_ISREG(st.st_mode):
                    h.update(_file_digest(self.path(entry.rel)).encode())
                elif stat.S_ISLNK(st.st_mode):
                    h.update(os.readlink(self.path(entry.rel)).encode(errors="surrogateescape"))
                h.update(b"\n")
        return h.hexdigest()


def _file_digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
