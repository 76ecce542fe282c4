"""`corert push`: an image of the store to a registry as an OCI manifest.

Each blob (layers and config) is HEAD-checked first and skipped when the repository has it; otherwise it
is uploaded with POST + PUT (monolithic), or POST + PATCH chunks + PUT when it is larger than the chunk
size. The manifest goes last, so the tag appears only once every blob it names is in place.
"""
from __future__ import annotations

import hashlib
import urllib.parse
from pathlib import Path
from typing import BinaryIO, Callable

from corert.errors import ImageError
from corert.images.progress import TransferProgress
from corert.images.registry.client import MANIFEST_OCI, RegistryClient, RegistryError
from corert.images.registry.pull import DEFAULT_JOBS, TransferCancelled, run_parallel
from corert.images.registry.reference import parse_reference

DEFAULT_CHUNK = 64 << 20   # blobs above this go up in PATCH chunks of this size


class _Body:
    """`limit` bytes of a file from its current offset, reporting progress; seekable for a resend."""

    def __init__(self, f: BinaryIO, limit: int, on_read: Callable[[int], None], cancelled) -> None:
        self._f, self._base, self._limit, self._pos = f, f.tell(), limit, 0
        self._on_read, self._cancelled = on_read, cancelled

    def read(self, n: int = -1) -> bytes:
        if self._cancelled():
            raise TransferCancelled()
        want = self._limit - self._pos if n < 0 else min(n, self._limit - self._pos)
        data = self._f.read(want) if want > 0 else b""
        self._pos += len(data)
        self._on_read(len(data))
        return data

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int) -> None:
        self._f.seek(self._base + pos)
        self._pos = pos


class _Uploader:
    def __init__(self, client: RegistryClient, progress: TransferProgress, chunk_size: int) -> None:
        import threading

        self.client, self.progress, self.chunk_size = client, progress, chunk_size
        self.cancel = threading.Event()
        self.repo = client.repository

    def upload(self, path: Path, hexpart: str, size: int, label: str) -> None:
        digest = f"sha256:{hexpart}"
        resp = self.client.request("HEAD", f"/v2/{self.repo}/blobs/{digest}", expect=(200, 404), what=label)
        resp.read()
        if resp.status == 200:
            self.progress.finish(hexpart, label, "already on the registry")
            return
        resp = self.client.request("POST", f"/v2/{self.repo}/blobs/uploads/", headers={"Content-Length": "0"},
                                   expect=(202,), what=f"{label}: starting the upload")
        resp.read()
        location = self._location(resp, label)
        self.progress.start(hexpart, label, size)
        advance = lambda n: self.progress.advance(hexpart, n)   # noqa: E731
        with open(path, "rb") as f:
            if size > self.chunk_size:
                for start in range(0, size, self.chunk_size):
                    n = min(self.chunk_size, size - start)
                    resp = self.client.request(
                        "PATCH", location, body=_Body(f, n, advance, self.cancel.is_set),
                        headers={"Content-Type": "application/octet-stream", "Content-Length": str(n),
                                 "Content-Range": f"{start}-{start + n - 1}"},
                        expect=(202,), what=f"{label}: uploading bytes {start}-{start + n - 1}")
                    resp.read()
                    location = self._location(resp, label)
                body, length = None, 0
            else:
                body, length = _Body(f, size, advance, self.cancel.is_set), size
            sep = "&" if "?" in location else "?"
            resp = self.client.request(
                "PUT", f"{location}{sep}{urllib.parse.urlencode({'digest': digest})}", body=body,
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(length)},
                expect=(201,), what=f"{label}: finishing the upload")
            resp.read()
        self.progress.finish(hexpart, label, f"pushed ({size / 1e6:.1f} MB)")

    def _location(self, resp, label: str) -> str:
        location = resp.getheader("Location")
        if not location:
            raise RegistryError(f"{label}: the registry gave no upload location")
        return self.client.url_path(location)


def push(store, local: str, dest: str | None = None, *, tls_verify: bool = True, jobs: int = DEFAULT_JOBS,
         chunk_size: int = DEFAULT_CHUNK, stream=None) -> str:
    """Push image `local` of `store` (an ImageStore) to `dest` (default: its own name); returns the
    manifest digest."""
    from corert.images.export import manifest as manifest_bytes

    if chunk_size <= 0:
        raise ImageError("the chunk size must be positive")
    image = store.get(local)
    ref = parse_reference(dest or local)
    if ref.digest:
        raise ImageError(f"cannot push to {ref}: give a tag, not a digest")
    parts = store.oci_parts(image.id)
    manifest = manifest_bytes(parts)
    digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    client = RegistryClient(ref, tls_verify=tls_verify, push=True)
    progress = TransferProgress(stream)
    try:
        client.ping()
        progress.note(f"pushing {image.short_id} to {ref}")
        uploader = _Uploader(client, progress, chunk_size)
        blobs = [(lay.path, lay.hex, lay.size, f"layer {i + 1}/{len(parts.layers)} {lay.hex[:12]}")
                 for i, lay in enumerate(parts.layers)]
        blobs.append((parts.config_path, image.id, parts.config_size, f"config {image.short_id}"))
        run_parallel(uploader.upload, blobs, jobs, uploader.cancel)
        resp = client.request("PUT", f"/v2/{ref.repository}/manifests/{ref.tag}", body=manifest,
                              headers={"Content-Type": MANIFEST_OCI}, expect=(201,), what=f"manifest of {ref}")
        resp.read()
        progress.note(f"pushed {ref} ({digest})")
    finally:
        client.close()
        progress.close()
    return digest
