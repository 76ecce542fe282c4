"""Writing an image out as an OCI image layout (directory or tar).

The config blob is written byte for byte, so importing the export gives the same image id; layer blobs are
the ones imported (or, for committed layers, the OCI tar made from the overlay form with whiteouts restored).
"""
from __future__ import annotations

import json
import os
import shutil
import tarfile
from pathlib import Path
from typing import NamedTuple

from corert.errors import ImageError
from corert.images import layout


class LayerBlob(NamedTuple):
    path: Path          # the blob in the store
    hex: str            # its sha256
    media_type: str
    size: int


class OciParts(NamedTuple):
    """What an image's OCI manifest names, every blob checked present in the store (ImageStore.oci_parts)."""
    config_path: Path
    config_hex: str     # the image id
    config_size: int
    layers: list[LayerBlob]   # bottom first
    names: list[str]


def manifest(parts: OciParts) -> bytes:
    """The image's OCI manifest, byte for byte what export and push write (its digest names the image)."""
    doc = {
        "schemaVersion": 2,
        "mediaType": layout.MANIFEST_MEDIA_TYPE,
        "config": {"mediaType": layout.CONFIG_MEDIA_TYPE, "digest": f"sha256:{parts.config_hex}",
                   "size": parts.config_size},
        "layers": [{"mediaType": lay.media_type, "digest": f"sha256:{lay.hex}", "size": lay.size}
                   for lay in parts.layers],
    }
    return json.dumps(doc, indent=2, sort_keys=True).encode()


def _index(manifest_hex: str, manifest_size: int, names: list[str]) -> bytes:
    base = {"mediaType": layout.MANIFEST_MEDIA_TYPE, "digest": f"sha256:{manifest_hex}", "size": manifest_size}
    manifests = []
    for name in names or [None]:
        desc = dict(base)
        if name:
            tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else "latest"
            desc["annotations"] = {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": tag}
        manifests.append(desc)
    doc = {"schemaVersion": 2, "mediaType": layout.INDEX_MEDIA_TYPE, "manifests": manifests}
    return json.dumps(doc, indent=2, sort_keys=True).encode()


def write_oci_layout(dest: Path, parts: OciParts) -> None:
    """The image as an OCI image layout: a directory, or a tar file when dest ends in .tar."""
    import hashlib

    config = parts.config_path.read_bytes()
    data = manifest(parts)
    manifest_hex = hashlib.sha256(data).hexdigest()
    index = _index(manifest_hex, len(data), parts.names)
    small = {
        "oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}).encode(),
        "index.json": index,
        f"blobs/sha256/{manifest_hex}": data,
        f"blobs/sha256/{parts.config_hex}": config,
    }
    big = {f"blobs/sha256/{lay.hex}": lay.path for lay in parts.layers}
    if dest.suffix == ".tar":
        _write_tar(dest, small, big)
    else:
        _write_dir(dest, small, big)


def _write_dir(dest: Path, small: dict[str, bytes], big: dict[str, Path]) -> None:
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ImageError(f"{dest} exists and is not an empty directory")
    tmp = dest.with_name(f".{dest.name}.corert-tmp-{os.getpid()}")
    try:
        (tmp / "blobs" / "sha256").mkdir(parents=True)
        for name, data in small.items():
            (tmp / name).write_bytes(data)
        for name, src in big.items():
            shutil.copyfile(src, tmp / name)
        if dest.exists():
            dest.rmdir()
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_tar(dest: Path, small: dict[str, bytes], big: dict[str, Path]) -> None:
    import io

    if dest.exists():
        raise ImageError(f"{dest} already exists")
    tmp = dest.with_name(f".{dest.name}.corert-tmp-{os.getpid()}")
    try:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tf:
            for d in ("blobs/", "blobs/sha256/"):
                info = tarfile.TarInfo(d)
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(info)
            for name, data in small.items():
                info = tarfile.TarInfo(name)
                info.size, info.mode = len(data), 0o644
                tf.addfile(info, io.BytesIO(data))
            for name, src in big.items():
                info = tarfile.TarInfo(name)
                info.size, info.mode = src.stat().st_size, 0o644
                with open(src, "rb") as f:
                    tf.addfile(info, f)
        os.rename(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
