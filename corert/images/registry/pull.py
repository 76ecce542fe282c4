"""`corert pull`: manifest (or index -> this host's platform), config, then the layer blobs in parallel,
each verified against its digest while it streams, then one commit into the image store.

Blobs download into `<store>/downloads/<hex>.partial` (flock'ed, so two pulls of one blob take turns).
A dropped connection leaves the partial file: the next attempt - within this pull, or a later pull -
re-hashes what it has and asks for the rest with a Range request. A blob whose digest does not match is
deleted and the pull fails before anything reaches the store. Verified blobs are renamed into the store's
staging dir and committed exactly like an imported image (ImageStore.import_staged).
"""
from __future__ import annotations

import fcntl
import hashlib
import http.client
import json
import os
import platform
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path

from corert.errors import ImageError
from corert.fsutil import write_all
from corert.images import layout
from corert.images.progress import TransferProgress
from corert.images.registry.client import (INDEX_OCI, LIST_DOCKER, MANIFEST_ACCEPT, MANIFEST_DOCKER,
                                           MANIFEST_OCI, RegistryClient, RegistryError, TransferInterrupted,
                                           error_text)
from corert.images.registry.reference import Reference, parse_reference

CHUNK = 1 << 20
RETRIES = 2                   # resumed attempts after a dropped connection, within one pull
MAX_MANIFEST = 4 << 20
MAX_CONFIG = 64 << 20
STALE_PARTIAL = 7 * 86400     # partial downloads older than this are dropped at the next pull
DEFAULT_JOBS = 3


class TransferCancelled(Exception):
    """Another blob failed: stop this transfer, keep its partial file."""


def download_dir(store_root: Path) -> Path:
    return Path(store_root) / "downloads"


def host_platform() -> tuple[str, str, str | None]:
    """(os, architecture, variant) as OCI platforms spell them for this host."""
    from corert.images.formats import host_arch

    arch = host_arch()
    machine = platform.machine()
    variant = {"aarch64": "v8", "armv7l": "v7", "armv6l": "v6"}.get(machine)
    return "linux", arch, variant


def choose_platform(index: dict, want: tuple[str, str, str | None], what: str) -> dict:
    """The index entry for `want`: exact variant first, then one without a variant."""
    os_, arch, variant = want
    entries = [d for d in index.get("manifests") or [] if isinstance(d, dict)]
    matching = [d for d in entries if (d.get("platform") or {}).get("os") == os_
                and (d.get("platform") or {}).get("architecture") == arch]
    for d in matching:
        if variant is None or (d.get("platform") or {}).get("variant") in (variant, None):
            return d
    if matching:
        return matching[0]
    have = sorted({"/".join(filter(None, [(d.get("platform") or {}).get(k) for k in ("os", "architecture",
                                                                                  "variant")]))
                   for d in entries})
    plat = "/".join(filter(None, want))
    raise RegistryError(f"{what} has no image for {plat} (it has: {', '.join(have) or 'nothing'})")


# ---- manifests and small blobs ----------------------------------------------------------------------------
def _read_limited(client: RegistryClient, resp: http.client.HTTPResponse, limit: int, what: str) -> bytes:
    length = resp.getheader("Content-Length")
    if length and length.isdigit() and int(length) > limit:
        resp.close()
        client.close_thread()
        raise RegistryError(f"{what} is {int(length)} bytes, too large to be image metadata")
    try:
        data = resp.read(limit + 1)
    except (OSError, http.client.HTTPException) as e:
        client.close_thread()
        raise TransferInterrupted(f"{what}: connection dropped: {e}") from None
    if len(data) > limit:
        resp.close()
        client.close_thread()
        raise RegistryError(f"{what} is too large to be image metadata")
    return data


def fetch_manifest(client: RegistryClient, target: str, what: str) -> tuple[dict, str, str]:
    """(document, media type, "sha256:..." digest of its bytes) of a manifest or index, digest-checked
    where possible."""
    resp = client.request("GET", f"/v2/{client.repository}/manifests/{target}",
                          headers={"Accept": MANIFEST_ACCEPT}, expect=(200, 404))
    raw = _read_limited(client, resp, MAX_MANIFEST, what)
    if resp.status == 404:
        raise RegistryError(f"{what} not found: {error_text(404, raw)}")
    got = hashlib.sha256(raw).hexdigest()
    expected = target if target.startswith("sha256:") else resp.getheader("Docker-Content-Digest", "")
    if expected.startswith("sha256:") and got != layout.digest_hex(expected):
        raise RegistryError(f"{what}: manifest digest mismatch (expected {expected}, got sha256:{got})")
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise RegistryError(f"{what}: manifest is not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise RegistryError(f"{what}: manifest is not a JSON object")
    ctype = (resp.getheader("Content-Type") or "").split(";")[0].strip()
    media_type = doc.get("mediaType") or ctype
    if doc.get("schemaVersion") == 1 or "distribution.manifest.v1" in media_type:
        raise RegistryError(f"{what}: docker schema 1 manifests are not supported (re-push the image with a "
                            "current client)")
    if media_type not in (MANIFEST_OCI, MANIFEST_DOCKER, INDEX_OCI, LIST_DOCKER):
        media_type = INDEX_OCI if "manifests" in doc else MANIFEST_OCI if "layers" in doc else media_type
    return doc, media_type, f"sha256:{got}"


def resolve_image_manifest(client: RegistryClient, ref: Reference,
                           want: tuple[str, str, str | None] | None = None) -> tuple[dict, str]:
    """The image manifest for `ref` on this platform (following indexes), and its digest."""
    want = want or host_platform()
    target, what = ref.target, f"image {ref}"
    for _ in range(4):
        doc, media_type, digest = fetch_manifest(client, target, what)
        if media_type in (INDEX_OCI, LIST_DOCKER):
            desc = choose_platform(doc, want, f"the manifest list of {ref}")
            target = desc.get("digest", "")
            layout.digest_hex(target)
            what = f"image {ref} ({'/'.join(filter(None, want))})"
            continue
        if not isinstance(doc.get("config"), dict) or not isinstance(doc.get("layers"), list):
            raise RegistryError(f"{what}: manifest has no config or layers")
        return doc, digest
    raise RegistryError(f"{what}: manifest lists nested too deep")


def fetch_config(client: RegistryClient, desc: dict, what: str) -> bytes:
    digest = desc.get("digest", "")
    layout.digest_hex(digest)
    resp = client.request("GET", f"/v2/{client.repository}/blobs/{digest}", what=f"{what} config")
    data = _read_limited(client, resp, MAX_CONFIG, f"{what} config")
    got = hashlib.sha256(data).hexdigest()
    if got != layout.digest_hex(digest):
        raise RegistryError(f"{what} config: digest mismatch (expected {digest}, got sha256:{got})")
    return data


# ---- layer blobs ----------------------------------------------------------------------------------------
class BlobFetcher:
    """Downloads blobs into `<store>/downloads/`, resumable, verified; returns the complete file's path."""

    def __init__(self, client: RegistryClient, store_root: Path, progress: TransferProgress) -> None:
        self.client = client
        self.dir = download_dir(store_root)
        self.dir.mkdir(mode=0o700, exist_ok=True)
        self.progress = progress
        self.cancel = threading.Event()

    def drop_stale(self) -> None:
        now = time.time()
        for entry in os.scandir(self.dir):
            try:
                if now - entry.stat().st_mtime > STALE_PARTIAL:
                    os.unlink(entry.path)
            except OSError:
                continue

    def fetch(self, digest: str, size: int, label: str) -> Path:
        hexpart = layout.digest_hex(digest)
        done = self.dir / hexpart
        if done.is_file() and done.stat().st_size == size:
            self.progress.finish(hexpart, label, "already downloaded")
            return done
        partial = self.dir / f"{hexpart}.partial"
        fd = os.open(partial, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)   # another pull of the same blob: wait for it, then reuse its file
            if done.is_file() and done.stat().st_size == size:
                return done
            if not os.path.exists(partial):  # the other pull failed and removed it: start a fresh one
                os.close(fd)
                fd = -1
                return self.fetch(digest, size, label)
            self._download(fd, partial, digest, size, label)
            os.rename(partial, done)
            return done
        finally:
            if fd >= 0:
                os.close(fd)

    def _download(self, fd: int, partial: Path, digest: str, size: int, label: str) -> None:
        hexpart = layout.digest_hex(digest)
        offset = os.fstat(fd).st_size
        if offset > size:
            os.ftruncate(fd, 0)
            offset = 0
        hasher = hashlib.sha256()
        if offset:   # what an interrupted pull left: hash it again, the digest covers the whole blob
            os.lseek(fd, 0, os.SEEK_SET)
            remaining = offset
            while remaining:
                data = os.read(fd, min(CHUNK, remaining))
                if not data:
                    break
                hasher.update(data)
                remaining -= len(data)
        self.progress.start(hexpart, label, size, offset)
        path = f"/v2/{self.client.repository}/blobs/{digest}"
        for attempt in range(RETRIES + 1):
            if offset == size:   # complete already (renaming it was all that was left)
                break
            headers = {"Range": f"bytes={offset}-"} if offset else {}
            resp = self.client.request("GET", path, headers=headers, expect=(200, 206, 416), what=label)
            if resp.status == 416 or (resp.status == 206 and not (
                    resp.getheader("Content-Range") or "").startswith(f"bytes {offset}-")):
                # the server cannot continue where we are: ask for the whole blob
                resp.close()
                self.client.close_thread()
                resp = self.client.request("GET", path, what=label)
            if resp.status == 200 and offset:
                os.ftruncate(fd, 0)
                offset, hasher = 0, hashlib.sha256()
                self.progress.reset(hexpart)
            os.lseek(fd, offset, os.SEEK_SET)
            try:
                offset = self._stream(resp, fd, hasher, offset, size, hexpart, partial, label)
            except (OSError, http.client.HTTPException) as e:
                if isinstance(e, (PermissionError, FileNotFoundError)) or getattr(e, "errno", None) == 28:
                    raise   # our disk, not the network
                resp.close()
                self.client.close_thread()
                offset = os.lseek(fd, 0, os.SEEK_CUR)   # written and hashed so far
            if offset == size:
                break
            if self.cancel.is_set():
                raise TransferCancelled()
            if attempt < RETRIES:
                self.progress.note(f"{label}: connection dropped at {offset / 1e6:.1f} of {size / 1e6:.1f} MB, "
                                   "resuming")
                self.client.close_thread()
                continue
            os.fsync(fd)
            raise TransferInterrupted(f"{label}: connection dropped after {offset} of {size} bytes "
                                      f"({RETRIES + 1} attempts); pull again to resume")
        if hasher.hexdigest() != hexpart:
            os.unlink(partial)
            raise RegistryError(f"{label}: digest mismatch (expected {digest}, got sha256:{hasher.hexdigest()}); "
                                "the download was discarded and nothing was stored")
        self.progress.finish(hexpart, label, f"done ({size / 1e6:.1f} MB)")

    def _stream(self, resp, fd: int, hasher, offset: int, size: int, key: str, partial: Path, label: str) -> int:
        while True:
            if self.cancel.is_set():
                resp.close()
                self.client.close_thread()
                raise TransferCancelled()
            data = resp.read(CHUNK)
            if not data:
                return offset
            if offset + len(data) > size:
                resp.close()
                self.client.close_thread()
                os.unlink(partial)
                raise RegistryError(f"{label}: the registry sent more than the {size} bytes the manifest "
                                    "declares; the download was discarded and nothing was stored")
            write_all(fd, data)
            hasher.update(data)
            offset += len(data)
            self.progress.advance(key, len(data))


def run_parallel(fn, items: list[tuple], jobs: int, cancel: threading.Event) -> list:
    """fn(*item) for every item on `jobs` threads, results in order; the first error sets `cancel` (the
    others stop at their next chunk) and is raised once every thread has returned."""
    pool = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="corert-registry")
    try:
        futures = {pool.submit(fn, *item): i for i, item in enumerate(items)}
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        errors = [f.exception() for f in done if f.exception() is not None]
        if errors:
            cancel.set()
            wait(futures)
            raise next((e for e in errors if not isinstance(e, TransferCancelled)), errors[0])  # type: ignore[misc]
        results: list = [None] * len(items)
        for f, i in futures.items():
            results[i] = f.result()
        return results
    except BaseException:
        cancel.set()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# ---- the verb -------------------------------------------------------------------------------------------
def pull(store, text: str, *, tls_verify: bool = True, jobs: int = DEFAULT_JOBS, stream=None,
         platform_: tuple[str, str, str | None] | None = None):
    """Pull `text` (an image reference) into `store` (an ImageStore); returns the stored Image."""
    from corert.images.formats import Source, SourceLayer, StagedBlob, layer_media_type

    ref = parse_reference(text)
    client = RegistryClient(ref, tls_verify=tls_verify)
    progress = TransferProgress(stream)
    try:
        client.ping()
        manifest, manifest_digest = resolve_image_manifest(client, ref, platform_)
        progress.note(f"pulling {ref} ({manifest_digest[:19]})")
        config = fetch_config(client, manifest["config"], f"image {ref}")
        image_id = hashlib.sha256(config).hexdigest()
        try:
            existing = store.get("sha256:" + image_id)
        except ImageError:
            existing = None
        if existing is not None:   # same config = same image: only the name is new
            store.tag(image_id, ref.name)
            progress.note(f"image {image_id[:12]} is already in the store")
            return store.get(image_id)
        descs = manifest["layers"]
        wanted: list[tuple[str, int, str]] = []
        for i, d in enumerate(descs):
            if not isinstance(d, dict) or not isinstance(d.get("size"), int) or d["size"] < 0:
                raise RegistryError(f"image {ref}: layer {i + 1} has no valid size in the manifest")
            hexpart = layout.digest_hex(d.get("digest", ""))
            if not layout.blob_path(store.root, hexpart).exists():
                wanted.append((d["digest"], d["size"], f"layer {i + 1}/{len(descs)} {hexpart[:12]}"))
        fetcher = BlobFetcher(client, store.root, progress)
        fetcher.drop_stale()
        paths = dict(zip((w[0] for w in wanted), run_parallel(fetcher.fetch, wanted, jobs, fetcher.cancel)))
    finally:
        client.close()
        progress.close()

    def stage(staging):
        layers = []
        for d in descs:
            hexpart = layout.digest_hex(d["digest"])
            if d["digest"] in paths:
                dest = staging.new_path("blob")
                os.rename(paths[d["digest"]], dest)
                blob = StagedBlob(hexpart, d["size"], dest, False)
            else:
                blob = StagedBlob(hexpart, d["size"], layout.blob_path(store.root, hexpart), True)
            layers.append(SourceLayer(blob, layer_media_type(blob.path)))
        return Source(config, layers, [ref.name])

    return store.import_staged(stage)
