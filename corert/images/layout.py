"""The on-disk contract of the image store, shared with the storage drivers.

Layer directories (`<store>/layers/<chain-id-hex>/diff/`) hold a layer's files in *overlayfs form*:

- an OCI whiteout `.wh.NAME` is a character device 0:0 named NAME (see `is_whiteout`);
- an OCI opaque marker `.wh..wh..opq` is the xattr `trusted.overlay.opaque=y` on the directory when the
  store is root-owned, `user.overlay.opaque=y` for a rootless store (kernel overlay `userxattr`); a driver
  should accept either name (`OPAQUE_XATTRS`);
- rootless stores own every file as the user; the original "uid:gid:mode" is kept in `OWNER_XATTR` when it
  differs from root ownership with the requested mode.

Light imports only: the storage drivers import this on the container start path.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

DEFAULT_IMAGE = "busybox:latest"
WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
# Any other `.wh..wh.` name is an aufs-internal entry (e.g. `.wh..wh.plnk`) with no meaning for OCI.
AUFS_META_PREFIX = ".wh..wh."

OPAQUE_XATTR_ROOT = "trusted.overlay.opaque"
OPAQUE_XATTR_ROOTLESS = "user.overlay.opaque"
OPAQUE_XATTRS: tuple[str, ...] = (OPAQUE_XATTR_ROOT, OPAQUE_XATTR_ROOTLESS)
OWNER_XATTR = "user.corert.owner"
# xattrs that only the store itself may set: a layer tar carrying them could forge whiteouts, redirects or
# ownership records, so they are dropped on unpack and stripped on export.
RESERVED_XATTR_PREFIXES: tuple[str, ...] = ("trusted.overlay.", "user.overlay.", "user.corert.")

LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
LAYER_TAR_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYER_TAR_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"


def is_whiteout(st: os.stat_result) -> bool:
    """True when `st` (an lstat result) is an overlayfs whiteout: a character device with rdev 0:0."""
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def is_opaque_dir(path: str | Path | int) -> bool:
    """True when the directory (path, or an fd) carries either overlay opaque xattr set to "y"."""
    for name in OPAQUE_XATTRS:
        try:
            value = os.getxattr(path, name) if isinstance(path, int) else os.getxattr(path, name, follow_symlinks=False)
            if value == b"y":
                return True
        except OSError:
            continue
    return False


def is_reserved_xattr(name: str) -> bool:
    return name.startswith(RESERVED_XATTR_PREFIXES)


def stored_owner(st: os.stat_result, recorded: bytes | None) -> tuple[int, int, int]:
    """(uid, gid, mode) in the container of an entry of a rootless store, given its `OWNER_XATTR` value:
    that record when there is one (ValueError when malformed), else the entry's own ids, the current user's
    being root. Inside the user namespace with the full map the current user is 0 and subordinate ids show
    as the container's; outside it only the record can hold another owner."""
    if recorded is not None:
        uid, gid, mode = recorded.decode().split(":")
        return int(uid), int(gid), int(mode, 8)
    # uid and gid each on their own: root:www-data stays 0:33
    return (0 if st.st_uid == os.geteuid() else st.st_uid), (0 if st.st_gid == os.getegid() else st.st_gid), \
        stat.S_IMODE(st.st_mode)


ENV_DATA_ROOT = "CORERT_DATA_ROOT"


def default_store_root() -> Path:
    """$CORERT_DATA_ROOT if set; else /var/lib/corert for root, $XDG_DATA_HOME/corert (default
    ~/.local/share/corert) for other users."""
    override = os.environ.get(ENV_DATA_ROOT)
    if override:
        return Path(os.path.abspath(override))
    if os.geteuid() == 0:
        return Path("/var/lib/corert")
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(data) / "corert"


def digest_hex(digest: str) -> str:
    """'sha256:<hex>' or '<hex>' -> '<hex>', validated (64 lowercase hex digits)."""
    from corert.errors import ImageError

    algo, sep, hexpart = digest.partition(":")
    if not sep:
        algo, hexpart = "sha256", digest
    if algo != "sha256":
        raise ImageError(f"unsupported digest algorithm {algo!r} (only sha256)")
    if len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart):
        raise ImageError(f"malformed digest {digest!r}")
    return hexpart


def chain_ids(diff_ids: list[str]) -> list[str]:
    """OCI chain ids (hex) of a layer stack: ChainID(L0)=DiffID(L0), ChainID(Ln)=sha256(ChainID(n-1)+' '+DiffID(n))."""
    import hashlib

    out: list[str] = []
    for diff_id in diff_ids:
        hexpart = digest_hex(diff_id)
        if not out:
            out.append(hexpart)
        else:
            text = f"sha256:{out[-1]} sha256:{hexpart}"
            out.append(hashlib.sha256(text.encode()).hexdigest())
    return out


def layer_dir(store_root: Path, chain_id: str) -> Path:
    """The layer's own directory; its files are in `layer_dir(...)/"diff"`."""
    return store_root / "layers" / chain_id


def blob_path(store_root: Path, digest: str) -> Path:
    return store_root / "blobs" / "sha256" / digest_hex(digest)
