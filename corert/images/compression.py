"""Compression detection by magic bytes, streaming decompression, and hashing/counting readers."""
from __future__ import annotations

import hashlib
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from corert.errors import ImageError
from corert.fsutil import copy_to_fd

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b", "gzip"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"BZh", "bzip2"),
)
CHUNK = 1 << 20


def sniff(head: bytes) -> str | None:
    """The compression of a stream from its first bytes, or None for uncompressed data."""
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    return None


def sniff_file(path: Path) -> str | None:
    with open(path, "rb") as f:
        return sniff(f.read(8))


class HashingReader:
    """A read-only stream that hashes (sha256) and counts everything read through it."""

    def __init__(self, raw: BinaryIO, on_read: Callable[[int], None] | None = None) -> None:
        self._raw = raw
        self._hash = hashlib.sha256()
        self.count = 0
        self._on_read = on_read

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        if data:
            self._hash.update(data)
            self.count += len(data)
            if self._on_read is not None:
                self._on_read(len(data))
        return data

    def readable(self) -> bool:
        return True

    def drain(self) -> None:
        """Read to EOF so the digest covers the whole stream (tar readers stop at the end-of-archive blocks)."""
        while self.read(CHUNK):
            pass

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


@contextmanager
def open_decompressed(path: Path, on_raw_read: Callable[[int], None] | None = None) -> Iterator[BinaryIO]:
    """Yield the decompressed content of the file at `path` (gzip, xz, bzip2, zstd or plain) as a stream.

    `on_raw_read(n)` is called with the number of *compressed* bytes consumed (for progress display).
    """
    kind = sniff_file(path)
    if kind == "zstd":
        with _zstd_stream(path, on_raw_read) as stream:
            yield stream
        return
    with open(path, "rb") as raw_file:
        raw: BinaryIO = raw_file
        if on_raw_read is not None:
            raw = _CountingReader(raw_file, on_raw_read)  # type: ignore[assignment]
        if kind is None:
            yield raw
        elif kind == "gzip":
            import gzip

            with gzip.GzipFile(fileobj=raw, mode="rb") as g:
                yield _checked(g, path, kind)  # type: ignore[arg-type]
        elif kind == "xz":
            import lzma

            with lzma.LZMAFile(raw, mode="rb") as x:
                yield _checked(x, path, kind)  # type: ignore[arg-type]
        else:
            import bz2

            with bz2.BZ2File(raw, mode="rb") as b:
                yield _checked(b, path, kind)  # type: ignore[arg-type]


class _CountingReader:
    def __init__(self, raw: BinaryIO, on_read: Callable[[int], None]) -> None:
        self._raw, self._on_read = raw, on_read

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        self._on_read(len(data))
        return data

    def readable(self) -> bool:
        return True

    # gzip/lzma probe these on their fileobj
    def seekable(self) -> bool:
        return False

    @property
    def closed(self) -> bool:
        return self._raw.closed

    def close(self) -> None:
        pass


class _checked:
    """Turns decompressor errors (corrupt data, truncation) into ImageError with the file name."""

    def __init__(self, inner: BinaryIO, path: Path, kind: str) -> None:
        self._inner, self._path, self._kind = inner, path, kind

    def read(self, n: int = -1) -> bytes:
        try:
            return self._inner.read(n)
        except (OSError, EOFError, ValueError) as e:
            raise ImageError(f"{self._path.name}: corrupt {self._kind} data: {e}") from None

    def readable(self) -> bool:
        return True


@contextmanager
def _zstd_stream(path: Path, on_raw_read: Callable[[int], None] | None) -> Iterator[BinaryIO]:
    # No zstd module in the stdlib (3.11): the zstd CLI decompresses from the file itself.
    import subprocess

    exe = shutil.which("zstd")
    if exe is None:
        raise ImageError(f"{path.name} is zstd-compressed but the zstd tool is not installed (apt install zstd)")
    proc = subprocess.Popen([exe, "-dcq", "--", str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    try:
        yield proc.stdout  # type: ignore[misc]
        if on_raw_read is not None:
            on_raw_read(os.path.getsize(path))
    finally:
        proc.stdout.close()
        try:
            _, err = proc.communicate(timeout=30)
        except Exception:
            proc.kill()
            proc.wait()
            raise
    if proc.returncode not in (0, None) and proc.returncode != -13:  # -13: SIGPIPE when we stop reading early
        raise ImageError(f"{path.name}: zstd failed: {err.decode(errors='replace').strip()}")


def copy_hashing(src: BinaryIO, dst_fd: int, on_read: Callable[[int], None] | None = None) -> tuple[str, int]:
    """Copy a stream into an fd; return (sha256 hex, size)."""
    reader = HashingReader(src, on_read)
    copy_to_fd(reader, dst_fd, CHUNK)
    return reader.hexdigest(), reader.count
