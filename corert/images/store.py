"""The image store: content-addressed blobs, shared read-only layer dirs, SQLite (WAL) metadata.

    <root>/blobs/sha256/<hex>        configs and layer blobs, as imported (verified)
    <root>/layers/<chainid>/diff/    each layer unpacked once, in overlayfs form (see layout.py)
    <root>/tmp/<pid>-<token>/        staging of one import; removed by the next open once <pid> is gone
    <root>/images.db                 names, images, layers, image users
    <root>/lock                      flock serialising writers (import, remove, gc)

Crash safety: files are built in tmp/ and renamed into place only when complete; the database rows that
make them visible are written afterwards in one transaction. A crash leaves at worst unreferenced layer
dirs or blobs, which `gc()` removes (a complete orphan layer dir is simply reused by a later import).
"""
from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from corert.errors import ImageError
from corert.images import layout
from corert.images.layout import DEFAULT_IMAGE, default_store_root
from corert.rootless import remove_tree   # rootless: layers hold files of subordinate ids

if TYPE_CHECKING:
    from corert.images.export import OciParts

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS images(
    id TEXT PRIMARY KEY, config TEXT NOT NULL, layers TEXT NOT NULL, created TEXT NOT NULL,
    size INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS names(
    name TEXT PRIMARY KEY, image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE);
CREATE INDEX IF NOT EXISTS names_image ON names(image_id);
CREATE TABLE IF NOT EXISTS image_layers(
    image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE, idx INTEGER NOT NULL,
    chain_id TEXT NOT NULL REFERENCES layers(chain_id), PRIMARY KEY(image_id, idx));
CREATE INDEX IF NOT EXISTS image_layers_chain ON image_layers(chain_id);
CREATE TABLE IF NOT EXISTS layers(
    chain_id TEXT PRIMARY KEY, parent TEXT, diff_id TEXT NOT NULL, blob TEXT NOT NULL,
    media_type TEXT NOT NULL, blob_size INTEGER NOT NULL, size INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS users(
    container_id TEXT PRIMARY KEY, image_id TEXT NOT NULL REFERENCES images(id));
CREATE INDEX IF NOT EXISTS users_image ON users(image_id);
"""
# One query returns everything an Image needs (the ensure_default fast path).
_IMAGE_COLUMNS = (
    "i.id, i.config, i.layers, i.created, i.size, "
    "(SELECT group_concat(n2.name, char(10)) FROM names n2 WHERE n2.image_id = i.id)"
)


@dataclass
class Image:
    id: str                       # sha256 hex of the config blob
    names: list[str]              # "repo:tag"
    config: dict                  # the OCI config's "config" object (Env, Cmd, Entrypoint, WorkingDir, ...)
    layers: list[str]             # chain ids (hex), bottom layer first
    created: str
    size: int                     # bytes of file content over all layers

    @property
    def short_id(self) -> str:
        return self.id[:12]


def normalize_name(ref: str) -> str:
    """'busybox' -> 'busybox:latest'; a tag in the last path component (or a digest) is kept."""
    if "@" in ref:
        return ref
    last = ref.rsplit("/", 1)[-1]
    return ref if ":" in last else ref + ":latest"


def _check_name(name: str) -> str:
    if not name or any(c.isspace() or ord(c) < 32 for c in name) or name.startswith(("sha256:", "-")):
        raise ImageError(f"invalid image name {name!r}")
    norm = normalize_name(name)
    repo = norm.rsplit(":", 1)[0]
    if len(repo) == 64 and all(c in "0123456789abcdef" for c in repo):
        raise ImageError(f"invalid image name {name!r}: it looks like an image id")
    return norm


class ImageStore:
    def __init__(self, root: Path | None = None, *, rootless: bool | None = None) -> None:
        import sqlite3

        self.root = Path(root) if root is not None else default_store_root()
        self.rootless = os.geteuid() != 0 if rootless is None else rootless
        self._tmp = self.root / "tmp"
        self.last_notes: list[str] = []  # what the last import skipped or downgraded (devices, xattrs)
        if not (self.root / "images.db").exists():
            for sub in ("blobs/sha256", "layers", "tmp"):
                (self.root / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
        self._clean_tmp()
        try:
            self.db = sqlite3.connect(self.root / "images.db", isolation_level=None, timeout=30.0,
                                      check_same_thread=False)
        except sqlite3.Error as e:
            raise ImageError(f"cannot open image database {self.root / 'images.db'}: {e}") from None
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a crash loses at most the last commit
        if self.db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
            with self._lock():
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.executescript(_SCHEMA)
                self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    @property
    def opaque_xattr(self) -> str:
        """The xattr that marks opaque directories in this store's layers."""
        return layout.OPAQUE_XATTR_ROOTLESS if self.rootless else layout.OPAQUE_XATTR_ROOT

    def close(self) -> None:
        db = getattr(self, "db", None)
        if db is not None:
            db.close()
            self.db = None  # type: ignore[assignment]

    def __enter__(self) -> ImageStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- housekeeping ------------------------------------------------------------------------------------
    def _clean_tmp(self) -> None:
        """Remove staging dirs left by processes that died mid-import."""
        try:
            entries = os.listdir(self._tmp)
        except FileNotFoundError:
            return
        for name in entries:
            pid_text = name.split("-", 1)[0]
            if pid_text.isdigit() and _pid_alive(int(pid_text)):
                continue
            remove_tree(self._tmp / name)

    @contextmanager
    def _lock(self) -> Iterator[None]:
        import fcntl

        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    @contextmanager
    def _txn(self) -> Iterator[None]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    @contextmanager
    def staging(self) -> Iterator[Path]:
        """A fresh dir under tmp/ (<pid>-<token>: a crash leaves it for the next open to remove)."""
        from corert.images.formats import new_tmp_name

        path = self._tmp / new_tmp_name()
        path.mkdir(mode=0o700, parents=True)
        try:
            yield path
        finally:
            remove_tree(path)

    # ---- queries -----------------------------------------------------------------------------------------
    def _row_to_image(self, row) -> Image:
        names = sorted(row[5].split("\n")) if row[5] else []
        return Image(id=row[0], names=names, config=json.loads(row[1]), layers=json.loads(row[2]),
                     created=row[3], size=row[4])

    def _by_name(self, name: str) -> Image | None:
        row = self.db.execute(
            f"SELECT {_IMAGE_COLUMNS} FROM names n JOIN images i ON i.id = n.image_id WHERE n.name = ?",
            (name,)).fetchone()
        return self._row_to_image(row) if row else None

    def _by_id(self, image_id: str) -> Image | None:
        row = self.db.execute(f"SELECT {_IMAGE_COLUMNS} FROM images i WHERE i.id = ?", (image_id,)).fetchone()
        return self._row_to_image(row) if row else None

    def get(self, ref: str) -> Image:
        """Look up by name ('busybox', 'busybox:latest', 'docker.io/library/busybox'), or full/short id."""
        if not ref:
            raise ImageError("empty image reference")
        hexref = ref[7:] if ref.startswith("sha256:") else ref
        if not ref.startswith("sha256:"):
            norm = normalize_name(ref)
            img = self._by_name(norm)
            if img is not None:
                return img
            # a short name matches a unique fully-qualified one (alpine -> docker.io/library/alpine:latest)
            rows = self.db.execute("SELECT name, image_id FROM names WHERE name LIKE ? ESCAPE '\\'",
                                   ("%/" + _like_escape(norm),)).fetchall()
            ids = {r[1] for r in rows if r[0].endswith("/" + norm)}  # LIKE ignores case
            if len(ids) == 1:
                return self._by_id(ids.pop())  # type: ignore[return-value]
        if 3 <= len(hexref) <= 64 and all(c in "0123456789abcdef" for c in hexref):
            rows = self.db.execute("SELECT id FROM images WHERE id >= ? AND id < ? LIMIT 2",
                                   (hexref, hexref + "g")).fetchall()
            if len(rows) == 1:
                return self._by_id(rows[0][0])  # type: ignore[return-value]
            if len(rows) > 1:
                raise ImageError(f"image id prefix {hexref!r} is ambiguous")
        raise ImageError(f"image {ref!r} not found")

    def list(self) -> list[Image]:
        rows = self.db.execute(f"SELECT {_IMAGE_COLUMNS} FROM images i ORDER BY i.created, i.id").fetchall()
        return [self._row_to_image(r) for r in rows]

    def layer_dirs(self, image: Image) -> list[Path]:
        """The layers' diff/ directories, bottom layer first (for overlay: reverse for lowerdir order)."""
        return [layout.layer_dir(self.root, c) / "diff" for c in image.layers]

    def oci_config(self, ref: str) -> dict:
        """The full OCI image config (architecture, os, rootfs, history, config) of an image."""
        img = self.get(ref)
        try:
            return json.loads(layout.blob_path(self.root, img.id).read_bytes())
        except FileNotFoundError:
            raise ImageError(f"image {img.short_id}: config blob missing from the store") from None

    def inspect(self, ref: str) -> dict:
        img = self.get(ref)
        full = self.oci_config(img.id)
        layers = []
        for chain in img.layers:
            row = self.db.execute("SELECT diff_id, blob, media_type, blob_size, size FROM layers WHERE chain_id=?",
                                  (chain,)).fetchone()
            layers.append({"chain_id": chain, "diff_id": row[0], "blob": row[1], "media_type": row[2],
                           "blob_size": row[3], "size": row[4],
                           "path": str(layout.layer_dir(self.root, chain) / "diff")})
        users = [r[0] for r in self.db.execute("SELECT container_id FROM users WHERE image_id=? ORDER BY 1",
                                                (img.id,))]
        return {"id": img.id, "names": img.names, "created": img.created, "size": img.size,
                "architecture": full.get("architecture"), "os": full.get("os"), "config": img.config,
                "history": full.get("history", []), "layers": layers, "containers": users}

    # ---- import ------------------------------------------------------------------------------------------
    def import_path(self, path: Path, name: str | None = None) -> Image:
        """Import an OCI layout (dir/tar), a docker-archive, a rootfs tar(.gz/.xz/.zst/.bz2) or rootfs dir."""
        from corert.images.formats import Staging, read_source

        path = Path(path)
        if name is not None:
            name = _check_name(name)
        with self._lock(), self.staging() as tmp:
            try:
                staging = Staging(self.root, tmp)
                source = read_source(path, staging, name, rootless=self.rootless)
                return self._commit(source, staging)
            except OSError as e:
                raise ImageError(f"importing {path}: {e.strerror or e}") from None

    def import_staged(self, stage) -> Image:
        """Commit an image whose blobs the caller fetched and verified itself (a registry pull):
        `stage(staging)` moves them into the staging dir and returns the Source; runs under the store lock."""
        from corert.images.formats import Staging

        with self._lock(), self.staging() as tmp:
            try:
                staging = Staging(self.root, tmp)
                return self._commit(stage(staging), staging)
            except OSError as e:
                raise ImageError(f"storing the image: {e.strerror or e}") from None

    def _commit(self, source, staging) -> Image:
        """Unpack the staged layers, move files into place, then record everything in one transaction."""
        import hashlib

        self.last_notes = []
        config_bytes = source.config_bytes
        image_id = hashlib.sha256(config_bytes).hexdigest()
        try:
            full = json.loads(config_bytes)
        except ValueError as e:
            raise ImageError(f"image config is not valid JSON: {e}") from None
        if not isinstance(full, dict):
            raise ImageError("image config is not a JSON object")
        names = [_check_name(n) for n in source.names]
        if self._by_id(image_id) is not None:
            with self._txn():
                self._set_names(image_id, names)
            return self._by_id(image_id)  # type: ignore[return-value]
        diff_ids = (full.get("rootfs") or {}).get("diff_ids")
        if not isinstance(diff_ids, list) or len(diff_ids) != len(source.layers):
            raise ImageError(f"image config lists {len(diff_ids or [])} layers but the image has "
                             f"{len(source.layers)}")
        chains = layout.chain_ids(diff_ids)
        new_dirs: list[Path] = []
        new_blobs: list[Path] = []
        try:
            layer_rows = []
            for i, (src_layer, diff_id, chain) in enumerate(zip(source.layers, diff_ids, chains)):
                row = self.db.execute("SELECT size FROM layers WHERE chain_id=?", (chain,)).fetchone()
                final = layout.layer_dir(self.root, chain)
                if row is not None and final.is_dir():
                    continue
                size = self._unpack_into_place(src_layer.blob.path, diff_id, chain, staging, i, new_dirs)
                layer_rows.append((chain, chains[i - 1] if i else None, layout.digest_hex(diff_id),
                                   src_layer.blob, src_layer.media_type, size))
            for row in layer_rows:
                self._place_blob(row[3], new_blobs)
            config_blob = staging.put_bytes(config_bytes)
            self._place_blob(config_blob, new_blobs)
            sizes = []
            with self._txn():
                for chain, parent, diff_hex, blob, media_type, size in layer_rows:
                    self.db.execute("INSERT OR REPLACE INTO layers VALUES (?,?,?,?,?,?,?)",
                                    (chain, parent, diff_hex, blob.hex, media_type, blob.size, size))
                for chain in chains:
                    sizes.append(self.db.execute("SELECT size FROM layers WHERE chain_id=?", (chain,)).fetchone()[0])
                self.db.execute("INSERT INTO images VALUES (?,?,?,?,?)",
                                (image_id, json.dumps(full.get("config") or {}), json.dumps(chains),
                                 str(full.get("created") or ""), sum(sizes)))
                self.db.executemany("INSERT INTO image_layers VALUES (?,?,?)",
                                    [(image_id, i, c) for i, c in enumerate(chains)])
                self._set_names(image_id, names)
        except BaseException:
            for p in new_dirs:
                remove_tree(p)
            for p in new_blobs:
                p.unlink(missing_ok=True)
            raise
        return self._by_id(image_id)  # type: ignore[return-value]

    def _unpack_into_place(self, blob_path: Path, diff_id: str, chain: str, staging, index: int,
                           new_dirs: list[Path]) -> int:
        from corert.images.compression import HashingReader, open_decompressed
        from corert.images.progress import Progress
        from corert.images.unpack import unpack_layer

        work = staging.new_path("layer")
        (work / "diff").mkdir(parents=True, mode=0o700)
        os.chmod(work / "diff", 0o755)
        progress = Progress(f"unpacking layer {index + 1} ({chain[:12]})", blob_path.stat().st_size)
        fd = os.open(work / "diff", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            with open_decompressed(blob_path, progress.advance) as stream:
                reader = HashingReader(stream)
                result = unpack_layer(reader, fd, rootless=self.rootless)
                reader.drain()
        finally:
            os.close(fd)
            progress.finish()
        if reader.hexdigest() != layout.digest_hex(diff_id):
            raise ImageError(f"layer {index + 1}: content does not match the config's diff_id "
                             f"(expected {diff_id}, got sha256:{reader.hexdigest()})")
        self.last_notes.extend(result.notes)
        for note in result.notes:
            _note(note)
        final = layout.layer_dir(self.root, chain)
        if final.is_dir():  # a complete orphan from an interrupted import: identical content by construction
            remove_tree(work)
            return result.size
        os.rename(work, final)
        new_dirs.append(final)
        return result.size

    def _place_blob(self, blob, new_blobs: list[Path]) -> None:
        if blob.in_store:
            return
        final = layout.blob_path(self.root, blob.hex)
        if final.exists():
            return
        os.chmod(blob.path, 0o644)
        os.rename(blob.path, final)
        new_blobs.append(final)

    def _set_names(self, image_id: str, names: list[str]) -> None:
        # a name points at one image: re-using it moves it (docker semantics)
        self.db.executemany("INSERT OR REPLACE INTO names VALUES (?,?)", [(n, image_id) for n in names])

    # ---- names, removal, users ---------------------------------------------------------------------------
    def tag(self, ref: str, new_name: str) -> None:
        img = self.get(ref)
        with self._txn():
            self._set_names(img.id, [_check_name(new_name)])

    def remove(self, ref: str) -> None:
        """Remove an image (by id, or by its only name) and gc its layers; refused while a container uses it.

        Like docker rmi, a name of an image that has other names is only untagged.
        """
        img = self.get(ref)
        by_name = not ref.startswith("sha256:") and normalize_name(ref) in img.names
        with self._lock():
            with self._txn():
                if by_name and len(img.names) > 1:
                    self.db.execute("DELETE FROM names WHERE name=?", (normalize_name(ref),))
                    return
                users = [r[0] for r in self.db.execute("SELECT container_id FROM users WHERE image_id=?",
                                                        (img.id,))]
                if users:
                    raise ImageError(f"image {ref!r} is in use by container(s): {', '.join(sorted(users))}")
                self.db.execute("DELETE FROM names WHERE image_id=?", (img.id,))
                self.db.execute("DELETE FROM image_layers WHERE image_id=?", (img.id,))
                self.db.execute("DELETE FROM images WHERE id=?", (img.id,))
            self._gc_locked()

    def add_user(self, image_id: str, container_id: str) -> None:
        """Record that a container uses an image (remove() refuses until remove_user)."""
        with self._txn():
            if self.db.execute("SELECT 1 FROM images WHERE id=?", (image_id,)).fetchone() is None:
                raise ImageError(f"image {image_id!r} not found")
            self.db.execute("INSERT OR REPLACE INTO users VALUES (?,?)", (container_id, image_id))

    def remove_user(self, container_id: str) -> None:
        with self._txn():
            self.db.execute("DELETE FROM users WHERE container_id=?", (container_id,))

    def gc(self) -> None:
        """Remove layers no image references, and blobs and directories nothing references."""
        with self._lock():
            self._gc_locked()

    def _gc_locked(self) -> None:
        with self._txn():
            dead = [r[0] for r in self.db.execute(
                "SELECT chain_id FROM layers WHERE chain_id NOT IN (SELECT chain_id FROM image_layers)")]
            self.db.executemany("DELETE FROM layers WHERE chain_id=?", [(c,) for c in dead])
        known_layers = {r[0] for r in self.db.execute("SELECT chain_id FROM layers")}
        for name in os.listdir(self.root / "layers"):
            if name not in known_layers:
                remove_tree(self.root / "layers" / name)
        known_blobs = {r[0] for r in self.db.execute("SELECT blob FROM layers UNION SELECT id FROM images")}
        for name in os.listdir(self.root / "blobs" / "sha256"):
            if name not in known_blobs:
                (self.root / "blobs" / "sha256" / name).unlink(missing_ok=True)

    # ---- commit and export -------------------------------------------------------------------------------
    def add_layer_from_dir(self, parent: Image | None, diff_dir: Path | None, config: dict, name: str | None,
                           *, created_by: str = "corert commit") -> Image:
        """A new image: `parent`'s layers plus `diff_dir` (in overlay form, e.g. a container's upper dir).

        diff_dir None: no new layer, only a new config (a build's ENV, CMD, ... step: an empty_layer in the
        history); `created_by` is the history entry's text."""
        from corert.images.formats import Source, SourceLayer, Staging, canonical_json, host_arch
        from corert.images.tarwriter import write_layer_tar

        if parent is not None:
            full = self.oci_config(parent.id)
        else:
            full = {"architecture": host_arch(), "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        new_name = _check_name(name) if name else None
        with self._lock(), self.staging() as tmp:
            staging = Staging(self.root, tmp)
            new_layers = []
            if diff_dir is not None:
                out = staging.new_path("commit")
                try:
                    with open(out, "xb") as f:
                        write_layer_tar(diff_dir, f, overlay_form=True, rootless=self.rootless)
                    blob = staging.adopt(out)
                except OSError as e:
                    raise ImageError(f"committing {diff_dir}: {e.strerror or e}") from None
                new_layers.append(SourceLayer(blob, "application/vnd.oci.image.layer.v1.tar"))
            full = dict(full)
            full["created"] = now
            full["config"] = config
            full["rootfs"] = {"type": "layers",
                              "diff_ids": list((full.get("rootfs") or {}).get("diff_ids", []))
                              + [f"sha256:{layer.blob.hex}" for layer in new_layers]}
            entry = {"created": now, "created_by": created_by}
            if diff_dir is None:
                entry["empty_layer"] = True
            full["history"] = list(full.get("history", [])) + [entry]
            parent_layers = self._source_layers(parent) if parent is not None else []
            source = Source(canonical_json(full), parent_layers + new_layers, [new_name] if new_name else [])
            return self._commit(source, staging)

    def _source_layers(self, image: Image):
        """The existing layers of an image as already-present Source layers (nothing is re-unpacked)."""
        from corert.images.formats import SourceLayer, StagedBlob

        out = []
        for chain in image.layers:
            blob_hex, media_type, size = self.db.execute(
                "SELECT blob, media_type, blob_size FROM layers WHERE chain_id=?", (chain,)).fetchone()
            out.append(SourceLayer(StagedBlob(blob_hex, size, layout.blob_path(self.root, blob_hex), True), media_type))
        return out

    def oci_parts(self, ref: str) -> OciParts:
        """The blobs an OCI manifest of the image names (export and push), each checked present."""
        from corert.images.export import LayerBlob, OciParts

        img = self.get(ref)
        config_path = layout.blob_path(self.root, img.id)
        try:
            config_size = config_path.stat().st_size
        except FileNotFoundError:
            raise ImageError(f"image {img.short_id}: config blob missing from the store") from None
        layers = []
        for chain in img.layers:
            blob_hex, media_type, size = self.db.execute(
                "SELECT blob, media_type, blob_size FROM layers WHERE chain_id=?", (chain,)).fetchone()
            path = layout.blob_path(self.root, blob_hex)
            if not path.is_file():
                raise ImageError(f"image {img.short_id}: layer blob sha256:{blob_hex} missing from the store")
            layers.append(LayerBlob(path, blob_hex, media_type, size))
        return OciParts(config_path, img.id, config_size, layers, img.names)

    def export_oci(self, ref: str, dest: Path) -> None:
        """Write the image as an OCI image layout: a directory, or a tar file when dest ends in .tar."""
        from corert.images.export import write_oci_layout

        write_oci_layout(Path(dest), self.oci_parts(ref))

    # ---- default image -----------------------------------------------------------------------------------
    def ensure_default(self) -> Image:
        """The built-in `busybox:latest` image; built from the host's busybox on first use."""
        img = self._by_name(DEFAULT_IMAGE)
        if img is not None:
            return img
        from corert.images import busybox
        from corert.images.formats import Source, SourceLayer, Staging

        with self._lock():
            img = self._by_name(DEFAULT_IMAGE)  # another process may have built it while we waited
            if img is not None:
                return img
            tar = busybox.build_layer()
            with self.staging() as tmp:
                staging = Staging(self.root, tmp)
                blob = staging.put_bytes(tar)
                source = Source(busybox.build_config(blob.hex), [SourceLayer(blob, layout.LAYER_TAR)],
                                [DEFAULT_IMAGE])
                return self._commit(source, staging)


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _note(text: str) -> None:
    import sys

    if sys.stderr.isatty():
        sys.stderr.write(f"corert: note: {text}\n")
