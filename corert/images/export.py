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

from corert.errors import ImageError
from corert.images import layout


def _manifest(config_hex: str, config_size: int, layers: list[tuple[Path, str, str, int]]) -> bytes:
    doc = {
        "schemaVersion": 2,
        "mediaType": layout.MANIFEST_MEDIA_TYPE,
        "config": {"mediaType": layout.CONFIG_MEDIA_TYPE, "digest": f"sha256:{config_hex}", "size": config_size},
        "layers": [{"mediaType": mt, "digest": f"sha256:{h}", "size": size} for _, h, mt, size in layers],
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


def write_oci_layout(dest: Path, config_path: Path, config_hex: str, layers: list[tuple[Path, str, str, int]],
                     names: list[str]) -> None:
    """layers: (blob path, blob hex, media type, blob size), bottom first."""
    import hashlib

    try:
        config = config_path.read_bytes()
    except FileNotFoundError:
        raise ImageError(f"image {config_hex[:12]}: config blob missing from the store") from None
    for path, h, _, _ in layers:
        if not path.is_file():
            raise ImageError(f"image {config_hex[:12]}: layer blob sha256:{h} missing from the store")
    manifest = _manifest(config_hex, len(config), layers)
    manifest_hex = hashlib.sha256(manifest).hexdigest()
    index = _index(manifest_hex, len(manifest), names)
    small = {
        "oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}).encode(),
        "index.json": index,
        f"blobs/sha256/{manifest_hex}": manifest,
        f"blobs/sha256/{config_hex}": config,
    }
    big = {f"blobs/sha256/{h}": path for path, h, _, _ in layers}
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
