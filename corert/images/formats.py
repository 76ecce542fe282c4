"""Reading import sources: OCI image layouts (dir or tar), docker-archive tarballs, plain rootfs tars/dirs.

Each reader turns its input into a `Source`: the config blob (bytes, verified where the format gives a
digest) and the layer blobs copied into a per-import staging directory, verified while they are copied.
Nothing here touches the store's live directories or database; the store commits a Source atomically.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import secrets
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable

from corert.errors import ImageError
from corert.images import layout
from corert.images.compression import copy_hashing, open_decompressed, sniff, sniff_file
from corert.images.progress import Progress

DEFAULT_PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
EPOCH = "1970-01-01T00:00:00Z"

_MANIFEST_TYPES = (layout.MANIFEST_MEDIA_TYPE, "application/vnd.docker.distribution.manifest.v2+json")
_INDEX_TYPES = (layout.INDEX_MEDIA_TYPE, "application/vnd.docker.distribution.manifest.list.v2+json")
_MAX_JSON = 64 << 20  # manifests/configs are small; refuse absurd ones instead of reading them into memory


@dataclass
class StagedBlob:
    hex: str
    size: int
    path: Path
    in_store: bool  # already a store blob (nothing to move into place)


@dataclass
class SourceLayer:
    blob: StagedBlob
    media_type: str


@dataclass
class Source:
    config_bytes: bytes
    layers: list[SourceLayer]
    names: list[str] = field(default_factory=list)


class Staging:
    """Blobs received during one import, under `<store>/tmp/<pid>-<token>/`, digest-checked on the way in."""

    def __init__(self, store_root: Path, tmp_dir: Path) -> None:
        self.store_root = store_root
        self.dir = tmp_dir
        self._n = 0

    def new_path(self, prefix: str) -> Path:
        self._n += 1
        return self.dir / f"{prefix}-{self._n}"

    def put(self, opener: Callable[[], BinaryIO], *, expected: str | None = None, size: int | None = None,
            label: str = "blob") -> StagedBlob:
        """Copy the stream from opener() into staging; check it against `expected` digest and `size`."""
        if expected is not None:
            hexpart = layout.digest_hex(expected)
            existing = layout.blob_path(self.store_root, hexpart)
            if existing.exists():  # store blobs were verified when they entered: no need to read it again
                return StagedBlob(hexpart, existing.stat().st_size, existing, True)
        path = self.new_path("blob")
        progress = Progress(f"copying {label}", size or 0)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            with opener() as src:
                digest, count = copy_hashing(src, fd, progress.advance)
        finally:
            os.close(fd)
            progress.finish()
        if expected is not None and digest != layout.digest_hex(expected):
            path.unlink()
            raise ImageError(f"{label}: digest mismatch (expected {expected}, got sha256:{digest})")
        if size is not None and count != size:
            path.unlink()
            raise ImageError(f"{label}: size mismatch (expected {size} bytes, got {count})")
        return StagedBlob(digest, count, path, False)

    def adopt(self, path: Path) -> StagedBlob:
        """Take a file already written inside staging as a blob (hashing it), without copying it."""
        with open(path, "rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
            size = f.tell()   # what was hashed, read to EOF
        return StagedBlob(digest, size, path, False)

    def put_bytes(self, data: bytes) -> StagedBlob:
        import io

        return self.put(lambda: io.BytesIO(data))


# ---- archive access (a directory or a tar file, by member name) -----------------------------------------
def _member_name(name: str) -> str:
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ImageError(f"archive refers to {name!r}, which leaves the archive")
    return "/".join(parts)


class _DirArchive:
    def __init__(self, root: Path) -> None:
        self.root = root

    def has(self, name: str) -> bool:
        return (self.root / _member_name(name)).is_file()

    def open(self, name: str) -> BinaryIO:
        try:
            return open(self.root / _member_name(name), "rb")
        except FileNotFoundError:
            raise ImageError(f"{self.root}: missing {name!r}") from None


class _TarArchive:
    def __init__(self, tf: tarfile.TarFile, label: str) -> None:
        self.tf = tf
        self.label = label
        self.members = {_safe_key(m.name): m for m in tf.getmembers()}

    def has(self, name: str) -> bool:
        return _member_name(name) in self.members

    def open(self, name: str) -> BinaryIO:
        m = self.members.get(_member_name(name))
        f = self.tf.extractfile(m) if m is not None else None
        if f is None:
            raise ImageError(f"{self.label}: missing file {name!r} in the archive")
        return f  # type: ignore[return-value]


def _safe_key(name: str) -> str:
    return "/".join(p for p in name.split("/") if p not in ("", "."))


def _read_json_member(arch, name: str) -> bytes:
    with arch.open(name) as f:
        data = f.read(_MAX_JSON + 1)
    if len(data) > _MAX_JSON:
        raise ImageError(f"{name} is too large to be image metadata")
    return data


def _loads(data: bytes, what: str):
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise ImageError(f"{what} is not valid JSON: {e}") from None


def _verify(data: bytes, expected: str, what: str) -> None:
    got = hashlib.sha256(data).hexdigest()
    if got != layout.digest_hex(expected):
        raise ImageError(f"{what}: digest mismatch (expected {expected}, got sha256:{got})")


# ---- entry point ----------------------------------------------------------------------------------------
def read_source(path: Path, staging: Staging, name: str | None, *, rootless: bool) -> Source:
    """Detect the format of `path` and stage its image."""
    stem = _stem(path)
    if path.is_dir():
        if (path / "oci-layout").is_file() and (path / "index.json").is_file():
            return _read_oci(_DirArchive(path), staging, name, stem)
        if (path / "manifest.json").is_file():
            return _read_docker(_DirArchive(path), staging, name, stem)
        return _read_rootfs_dir(path, staging, name, stem, rootless=rootless)
    if not path.is_file():
        raise ImageError(f"{path}: no such file or directory")
    tar_path, staged_tar = path, None
    if sniff_file(path) is not None:
        # a compressed archive: decompress once into staging; for a rootfs tar that copy is the layer blob
        staged_tar = staging.put(lambda: open_decompressed(path), label=path.name)
        tar_path = staged_tar.path
    try:
        tf = tarfile.open(tar_path, mode="r:")
    except (tarfile.TarError, OSError) as e:
        raise ImageError(f"{path}: not a tar archive or image layout ({e})") from None
    with tf:
        try:
            arch = _TarArchive(tf, path.name)
        except tarfile.TarError as e:
            raise ImageError(f"{path}: corrupt tar archive: {e}") from None
        if arch.has("oci-layout") and arch.has("index.json"):
            return _read_oci(arch, staging, name, stem)
        if arch.has("manifest.json") and _looks_docker(arch):
            return _read_docker(arch, staging, name, stem)
    if staged_tar is None:
        staged_tar = staging.put(lambda: open(path, "rb"), label=path.name)
    layer = SourceLayer(staged_tar, layout.LAYER_TAR)
    return Source(rootfs_config(staged_tar.hex), [layer], _names(name, [f"{stem}:latest"]))


def _looks_docker(arch) -> bool:
    try:
        data = _loads(_read_json_member(arch, "manifest.json"), "manifest.json")
    except ImageError:
        return False
    return isinstance(data, list) and bool(data) and all(isinstance(e, dict) and "Layers" in e for e in data)


def _stem(path: Path) -> str:
    base = path.resolve().name or "image"
    for ext in (".gz", ".tgz", ".xz", ".zst", ".bz2", ".tar", ".oci"):
        if base.endswith(ext) and len(base) > len(ext):
            base = base[: -len(ext)]
    return base.lower()


def _names(explicit: str | None, found: list[str]) -> list[str]:
    return [explicit] if explicit else found


def host_arch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}.get(machine, machine)


def canonical_json(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def rootfs_config(diff_hex: str, cmd: list[str] | None = None) -> bytes:
    """Config for an imported plain rootfs: fixed creation time so the same rootfs gives the same id."""
    return canonical_json({
        "architecture": host_arch(),
        "os": "linux",
        "created": EPOCH,
        "config": {"Env": [DEFAULT_PATH_ENV], "Cmd": cmd or ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_hex}"]},
        "history": [{"created": EPOCH, "created_by": "corert import"}],
    })


def layer_media_type(path: Path) -> str:
    kind = sniff_file(path)
    if kind is None:
        return layout.LAYER_TAR
    if kind == "gzip":
        return layout.LAYER_TAR_GZIP
    if kind == "zstd":
        return layout.LAYER_TAR_ZSTD
    raise ImageError(f"layer blob compressed with {kind}, which OCI images do not use")


def _stage_layer(staging: Staging, opener: Callable[[], BinaryIO], *, expected: str | None, size: int | None,
                 label: str) -> SourceLayer:
    blob = staging.put(opener, expected=expected, size=size, label=label)
    return SourceLayer(blob, layer_media_type(blob.path))


# ---- OCI image layout -----------------------------------------------------------------------------------
def _blob_name(digest: str) -> str:
    return f"blobs/sha256/{layout.digest_hex(digest)}"


def _read_blob(arch, desc: dict, what: str) -> bytes:
    if not isinstance(desc, dict) or "digest" not in desc:
        raise ImageError(f"{what}: descriptor without a digest")
    data = _read_json_member(arch, _blob_name(desc["digest"]))
    _verify(data, desc["digest"], what)
    if "size" in desc and desc["size"] != len(data):
        raise ImageError(f"{what}: size mismatch (expected {desc['size']} bytes, got {len(data)})")
    return data


def _platform_ok(desc: dict) -> bool:
    plat = desc.get("platform")
    if not isinstance(plat, dict):
        return True
    return plat.get("os", "linux") == "linux" and plat.get("architecture", host_arch()) == host_arch()


def _pick_manifest(arch, index: dict, depth: int = 0) -> tuple[dict, list[dict]]:
    """The first image manifest for this platform, and every index descriptor that names it."""
    if depth > 4:
        raise ImageError("image index nesting too deep")
    descs = index.get("manifests") or []
    for desc in descs:
        mt = desc.get("mediaType", layout.MANIFEST_MEDIA_TYPE)
        if mt in _INDEX_TYPES:
            inner = _loads(_read_blob(arch, desc, "image index"), "image index")
            try:
                found, _ = _pick_manifest(arch, inner, depth + 1)
            except ImageError:
                continue
            return found, [desc]
        if mt in _MANIFEST_TYPES and _platform_ok(desc):
            same = [d for d in descs if d.get("digest") == desc["digest"]]
            return desc, same
    raise ImageError("the image layout holds no image manifest for linux/" + host_arch())


def _oci_names(descs: list[dict], stem: str) -> list[str]:
    names: list[str] = []
    for d in descs:
        ann = d.get("annotations") or {}
        full = ann.get("io.containerd.image.name")
        ref = ann.get("org.opencontainers.image.ref.name")
        if full:
            names.append(full)
        elif ref:
            # ref.name is often only a tag ("latest"); then the layout's file name is the repository
            names.append(ref if ("/" in ref or ":" in ref) else f"{stem}:{ref}")
    return list(dict.fromkeys(names)) or [f"{stem}:latest"]


def _read_oci(arch, staging: Staging, name: str | None, stem: str) -> Source:
    marker = _loads(_read_json_member(arch, "oci-layout"), "oci-layout")
    if not isinstance(marker, dict) or "imageLayoutVersion" not in marker:
        raise ImageError("oci-layout: missing imageLayoutVersion")
    index = _loads(_read_json_member(arch, "index.json"), "index.json")
    mdesc, named = _pick_manifest(arch, index)
    manifest = _loads(_read_blob(arch, mdesc, "manifest"), "manifest")
    config = _read_blob(arch, manifest.get("config"), "image config")
    layers = []
    for i, d in enumerate(manifest.get("layers") or []):
        digest = d.get("digest", "")
        layers.append(_stage_layer(staging, lambda digest=digest: arch.open(_blob_name(digest)),
                                   expected=digest, size=d.get("size"), label=f"layer {i + 1}"))
    return Source(config, layers, _names(name, _oci_names(named, stem)))


# ---- docker-archive (docker save / podman save) ---------------------------------------------------------
def _digest_from_name(member: str) -> str | None:
    parts = _member_name(member).split("/")
    base = parts[-1]
    if base.endswith(".json"):
        base = base[:-5]
    if len(base) == 64 and all(c in "0123456789abcdef" for c in base):
        return f"sha256:{base}"
    return None


def _read_docker(arch, staging: Staging, name: str | None, stem: str) -> Source:
    manifest = _loads(_read_json_member(arch, "manifest.json"), "manifest.json")
    if not isinstance(manifest, list) or not manifest:
        raise ImageError("manifest.json: expected a non-empty list of images")
    entry = manifest[0]
    if name:  # an archive of several images: take the one carrying the requested name, if any
        for e in manifest:
            if name in (e.get("RepoTags") or []):
                entry = e
                break
    config_name = entry.get("Config")
    if not isinstance(config_name, str):
        raise ImageError("manifest.json: image without a Config")
    config = _read_json_member(arch, config_name)
    expected = _digest_from_name(config_name)
    if expected:
        _verify(config, expected, "image config")
    layers = []
    for i, member in enumerate(entry.get("Layers") or []):
        # legacy `<id>/layer.tar` names carry no digest: the diff_id check after unpacking verifies them
        expected = _digest_from_name(member)
        layers.append(_stage_layer(staging, lambda member=member: arch.open(member), expected=expected,
                                   size=None, label=f"layer {i + 1}"))
    return Source(config, layers, _names(name, list(entry.get("RepoTags") or []) or [f"{stem}:latest"]))


# ---- plain rootfs directory -----------------------------------------------------------------------------
def _read_rootfs_dir(path: Path, staging: Staging, name: str | None, stem: str, *, rootless: bool) -> Source:
    from corert.images.tarwriter import write_layer_tar

    out = staging.new_path("rootfs")
    with open(out, "xb") as f:
        write_layer_tar(path, f, overlay_form=False, rootless=rootless)
    blob = staging.adopt(out)
    return Source(rootfs_config(blob.hex), [SourceLayer(blob, layout.LAYER_TAR)], _names(name, [f"{stem}:latest"]))


def new_tmp_name() -> str:
    """Temp entries under <store>/tmp are `<pid>-<random>`: a later open removes those of dead processes."""
    return f"{os.getpid()}-{secrets.token_hex(6)}"


__all__ = ["Source", "SourceLayer", "StagedBlob", "Staging", "read_source", "rootfs_config", "canonical_json",
           "host_arch", "layer_media_type", "new_tmp_name", "DEFAULT_PATH_ENV", "EPOCH", "sniff"]
