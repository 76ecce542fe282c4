"""The build itself: one image step per instruction, each looked up in the cache before it is executed.

- RUN runs in a managed container of the step's parent image (the same create path, storage driver and
  engine as `corert run`; --network host by default so package managers can fetch), and its changes are
  committed as a layer through corert.frontend.commit; the container is removed whatever happens.
- COPY/ADD/WORKDIR write a diff dir against the parent's layers (layer.py); config-only steps (ENV, CMD,
  ...) make an image with the parent's layers and a new config (an empty_layer history entry).
- A step that fails leaves no image and no cache entry of its own, and no container, mount or cgroup;
  the steps before it stay cached (docker does the same). The name is set only when every step succeeded.
"""
from __future__ import annotations

import json
import os
import posixpath
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, TextIO, TypeVar

from corert.build.cache import BuildCache, cache_key
from corert.build.context import BuildContext
from corert.build.parser import Instruction, parse
from corert.build.words import expand, split_words
from corert.errors import CorertError, ImageError, UsageError

if TYPE_CHECKING:
    from corert.build.layer import DiffWriter
    from corert.drivers.storage.base import LayerView

_T = TypeVar("_T")

DEFAULT_SHELL = ["/bin/sh", "-c"]
CONTAINERFILES = ("Containerfile", "Dockerfile")


class BuildError(CorertError):
    """A step failed: `file:line: what` in one line."""


@dataclass
class BuildOptions:
    context: str
    file: str | None = None              # default: CONTEXT/Containerfile, else CONTEXT/Dockerfile
    tag: str | None = None
    no_cache: bool = False
    build_args: dict[str, str] = field(default_factory=dict)
    network: str = "host"
    storage: str | None = None


@dataclass
class _Stage:
    image: object | None = None          # corert.images.store.Image; None = scratch
    config: dict = field(default_factory=dict)
    args: dict[str, str] = field(default_factory=dict)   # ARGs in scope with their values
    shell: list[str] = field(default_factory=lambda: list(DEFAULT_SHELL))
    cmd_set: bool = False                # CMD given in this stage (ENTRYPOINT then keeps it)

    @property
    def parent_id(self) -> str:
        return self.image.id if self.image is not None else "scratch"   # type: ignore[attr-defined]

    def env(self) -> dict[str, str]:
        """Substitution environment: ARGs, overridden by the image's ENV (docker's precedence)."""
        out = dict(self.args)
        for item in self.config.get("Env") or []:
            k, _, v = item.partition("=")
            out[k] = v
        return out


def containerfile_path(opts: BuildOptions) -> str:
    if opts.file:
        return opts.file
    for name in CONTAINERFILES:
        path = os.path.join(opts.context, name)
        if os.path.exists(path):
            return path
    raise UsageError(f"no Containerfile or Dockerfile in {opts.context} (use -f)")


def build(state_store, opts: BuildOptions, out: TextIO = sys.stdout):
    """Build the Containerfile in opts.context; returns the final Image (tagged opts.tag when given)."""
    from corert.frontend.containers import data_root
    from corert.images.store import ImageStore

    path = containerfile_path(opts)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}") from None
    instructions = parse(text, os.path.basename(path))
    context = BuildContext(opts.context)
    images = ImageStore(data_root())
    try:
        tag = None
        if opts.tag:
            from corert.images.store import _check_name
            tag = _check_name(opts.tag)   # a bad name fails before any step runs
        image = _Builder(state_store, images, context, opts, out).run(instructions)
        if image is None:
            raise BuildError(f"{instructions[-1].where}: the build produced no image (FROM scratch only)")
        if tag:
            images.tag(image.id, tag)
            out.write(f"Successfully tagged {tag}\n")
        out.write(f"{image.id}\n")
        out.flush()
        return image
    finally:
        images.close()


class _Builder:
    def __init__(self, state_store, images, context: BuildContext, opts: BuildOptions, out: TextIO) -> None:
        self.state_store = state_store
        self.images = images
        self.context = context
        self.opts = opts
        self.out = out
        self.cache = BuildCache(images.root)
        self.global_args: dict[str, str] = {}

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()   # before a RUN's own output, which goes straight to fd 1

    def run(self, instructions: list[Instruction]):
        stage: _Stage | None = None
        total = len(instructions)
        for n, ins in enumerate(instructions, 1):
            self.say(f"STEP {n}/{total}: {ins.text}")
            try:
                if ins.keyword == "FROM":
                    stage = self._from(ins)
                elif ins.keyword == "ARG":
                    self._arg(ins, stage)
                else:
                    assert stage is not None   # the parser checked that FROM comes first
                    self._step(ins, stage)
            except BuildError:
                raise
            except CorertError as e:
                raise BuildError(f"{ins.where}: {ins.keyword}: {e}") from None
            except OSError as e:
                raise BuildError(f"{ins.where}: {ins.keyword}: {e.strerror or e}"
                                 + (f": {e.filename}" if e.filename else "")) from None
        return stage.image if stage is not None else None

    # ---- FROM and ARG --------------------------------------------------------------------------------------
    def _from(self, ins: Instruction) -> _Stage:
        words = split_words(ins.args, self.global_args)
        if len(words) not in (1, 3) or (len(words) == 3 and words[1].lower() != "as"):
            raise BuildError(f"{ins.where}: FROM takes IMAGE [AS NAME]")
        ref = words[0]
        if ref == "scratch":
            self.say("--> scratch")
            return _Stage()
        from corert.images.layout import DEFAULT_IMAGE
        from corert.images.store import normalize_name
        try:
            image = self.images.get(ref)
        except ImageError:
            if normalize_name(ref) != DEFAULT_IMAGE:
                raise BuildError(f"{ins.where}: FROM: image {ref!r} is not in the image store "
                                 "(import or pull it first)") from None
            image = self.images.ensure_default()
        self.say(f"--> {image.short_id}")
        return _Stage(image=image, config=json.loads(json.dumps(image.config)))

    def _arg(self, ins: Instruction, stage: _Stage | None) -> None:
        scope = self.global_args if stage is None else stage.args
        env = self.global_args if stage is None else stage.env()
        for word in split_words(ins.args, env):
            name, eq, default = word.partition("=")
            if not name.replace("_", "a").isalnum():
                raise BuildError(f"{ins.where}: ARG: invalid name {name!r}")
            if name in self.opts.build_args:
                scope[name] = self.opts.build_args[name]
            elif eq:
                scope[name] = default
            elif stage is not None and name in self.global_args:
                scope[name] = self.global_args[name]   # a global ARG re-declared in the stage
            else:
                scope[name] = ""
        if stage is not None and stage.image is not None:
            self.say(f"--> {stage.image.short_id}")   # type: ignore[attr-defined]

    # ---- the other steps -----------------------------------------------------------------------------------
    def _step(self, ins: Instruction, stage: _Stage) -> None:
        kw = ins.keyword
        if kw == "RUN":
            argv = ins.exec_form if ins.exec_form is not None else stage.shell + [ins.args]
            arg_env = [f"{k}={v}" for k, v in sorted(stage.args.items())
                       if k not in {e.partition("=")[0] for e in stage.config.get("Env") or []}]
            key_text = f"RUN {json.dumps(argv)} {json.dumps(arg_env)}"
            self._cached_or(stage, key_text, "", lambda: self._run(ins, stage, argv, arg_env))
        elif kw in ("COPY", "ADD"):
            self._copy(ins, stage)
        elif kw == "WORKDIR":
            self._workdir(ins, stage)
        else:
            config = self._config_change(ins, stage)
            text = f"{kw} {json.dumps(config, sort_keys=True)}"
            self._cached_or(stage, text, "", lambda: self._commit(stage, config, ins.text))

    def _cached_or(self, stage: _Stage, text: str, content: str, make) -> None:
        """The cached image of this step, else make() (which builds it); either becomes the stage's image."""
        key = cache_key(stage.parent_id, text, content)
        image_id = None if self.opts.no_cache else self.cache.get(key, self.images)
        if image_id is not None:
            self.say(f"--> Using cache {image_id}")
            image = self.images.get(image_id)
        else:
            image = make()
            self.cache.put(key, image.id)   # only once the step's image exists: a failed step has no entry
            self.say(f"--> {image.short_id}")
        stage.image = image
        stage.config = json.loads(json.dumps(image.config))

    def _commit(self, stage: _Stage, config: dict, created_by: str, diff_dir: Path | None = None):
        """A new unnamed image: the stage's image + config (+ the layer diff_dir, when given)."""
        return self.images.add_layer_from_dir(stage.image, diff_dir, config, None, created_by=created_by)

    def _config_change(self, ins: Instruction, stage: _Stage) -> dict:
        """The image config after ENV, LABEL, EXPOSE, USER, CMD, ENTRYPOINT, STOPSIGNAL, VOLUME, SHELL."""
        kw = ins.keyword
        config = json.loads(json.dumps(stage.config))
        env = stage.env()
        if kw in ("ENV", "LABEL"):
            pairs = _pairs(ins, env)
            if kw == "ENV":
                current = [e for e in config.get("Env") or []]
                for k, v in pairs:
                    current = [e for e in current if e.partition("=")[0] != k] + [f"{k}={v}"]
                config["Env"] = current
            else:
                config["Labels"] = {**(config.get("Labels") or {}), **dict(pairs)}
        elif kw == "EXPOSE":
            ports = dict(config.get("ExposedPorts") or {})
            for word in split_words(ins.args, env):
                port, _, proto = word.partition("/")
                if not port.replace("-", "").isdigit() or proto not in ("", "tcp", "udp", "sctp"):
                    raise BuildError(f"{ins.where}: EXPOSE: invalid port {word!r}")
                ports[f"{port}/{proto or 'tcp'}"] = {}
            config["ExposedPorts"] = ports
        elif kw == "USER":
            config["User"] = expand(ins.args.strip(), env)
        elif kw in ("CMD", "ENTRYPOINT"):
            argv = ins.exec_form if ins.exec_form is not None else stage.shell + [ins.args]
            config["Cmd" if kw == "CMD" else "Entrypoint"] = argv
            if kw == "CMD":
                stage.cmd_set = True
            elif not stage.cmd_set:
                config["Cmd"] = None   # docker: a new ENTRYPOINT drops the base image's CMD
        elif kw == "STOPSIGNAL":
            config["StopSignal"] = expand(ins.args.strip(), env)
        elif kw == "VOLUME":
            paths = ins.exec_form if ins.exec_form is not None else split_words(ins.args, env)
            config["Volumes"] = {**(config.get("Volumes") or {}), **{p: {} for p in paths}}
        elif kw == "SHELL":
            if not ins.exec_form:
                raise BuildError(f"{ins.where}: SHELL requires the JSON array form")
            stage.shell = list(ins.exec_form)
        return config

    def _workdir(self, ins: Instruction, stage: _Stage) -> None:
        path = expand(ins.args.strip(), stage.env())
        current = stage.config.get("WorkingDir") or "/"
        path = posixpath.normpath(posixpath.join(current, path))
        config = {**json.loads(json.dumps(stage.config)), "WorkingDir": path}

        def fill(writer: DiffWriter) -> bool:
            """Whether the step has a layer: docker creates a missing WORKDIR."""
            target = writer.resolve(path)
            if writer.is_dir(target):
                return False
            writer.ensure_dir(target, (0, 0))
            return True

        def make():
            with self.images.staging() as diff:
                made = self._write_diff(stage, diff, fill)
                return self._commit(stage, config, f"WORKDIR {path}", diff if made else None)

        self._cached_or(stage, f"WORKDIR {path}", "", make)

    def _copy(self, ins: Instruction, stage: _Stage) -> None:
        env = stage.env()
        words = ins.exec_form if ins.exec_form is not None else split_words(ins.args, env)
        if len(words) < 2:
            raise BuildError(f"{ins.where}: {ins.keyword} needs at least one source and a destination")
        *specs, dest = words
        if ins.keyword == "ADD" and any(s.startswith(("http://", "https://", "git@")) for s in specs):
            raise BuildError(f"{ins.where}: ADD of a URL is not supported by corert build (local files only)")
        if not dest.startswith("/"):
            dest = posixpath.join(stage.config.get("WorkingDir") or "/", dest) + ("/" if dest.endswith("/") else "")
        sources = [s for spec in specs for s in self.context.resolve(spec)]
        chown = expand(ins.flags["chown"], env) if "chown" in ins.flags else None
        chmod = ins.flags.get("chmod")
        mode = None
        if chmod is not None:
            try:
                mode = int(chmod, 8)
            except ValueError:
                raise BuildError(f"{ins.where}: {ins.keyword} --chmod={chmod}: expected an octal mode") from None
        content = self.context.digest(sources)
        text = f"{ins.keyword} {json.dumps([s.rel for s in sources])} {dest} chown={chown} chmod={chmod}"

        def fill(writer: DiffWriter) -> None:
            from corert.build.layer import is_archive

            owner = _owner(chown, writer.view) if chown else (0, 0)
            plain = []
            for source in sources:
                if ins.keyword == "ADD" and not source.is_dir and is_archive(self.context.path(source.rel)):
                    writer.unpack(self.context.path(source.rel), dest, owner)
                else:
                    plain.append(source)
            if plain:
                writer.copy(self.context, plain, dest, owner=owner, mode=mode)

        def make():
            with self.images.staging() as diff:
                self._write_diff(stage, diff, fill)
                return self._commit(stage, stage.config, f"{ins.keyword} sha256:{content} in {dest}", diff)

        self._cached_or(stage, text, content, make)

    def _write_diff(self, stage: _Stage, diff: Path, fill: Callable[[DiffWriter], _T]) -> _T:
        """fill(a DiffWriter of `diff` over the stage's layers); rootless in one user-namespace child."""
        from corert.build.layer import write_diff

        layers = self.images.layer_dirs(stage.image) if stage.image is not None else []
        return write_diff(diff, layers, fill, rootless=self.images.rootless)

    # ---- RUN -----------------------------------------------------------------------------------------------
    def _run(self, ins: Instruction, stage: _Stage, argv: list[str], arg_env: list[str]):
        from corert.engine.control import start
        from corert.engine.run import supervise
        from corert.frontend.commit import commit
        from corert.frontend.config import RunOptions
        from corert.frontend.containers import create_managed, discard

        if stage.image is None:
            raise BuildError(f"{ins.where}: RUN needs an image with a shell: FROM scratch has none")
        opts = RunOptions(command=argv, entrypoint=[], env=arg_env, net=self.opts.network)
        null = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
        try:
            managed = create_managed(self.state_store, stage.image.id, opts,   # type: ignore[attr-defined]
                                     name=f"corert-build-{os.urandom(6).hex()}", storage=self.opts.storage,
                                     stdio=(null, 1, 2))
        finally:
            os.close(null)
        record = managed.record
        try:
            code = supervise(self.state_store, record.id, managed.created, keep=True, start=start)
            if code != 0:
                raise BuildError(f"{ins.where}: RUN exited with code {code}: {ins.args}")
            _drop_mount_stubs(record)
            return commit(record, None, created_by=f"RUN {' '.join(argv)}")
        finally:
            discard(self.state_store, record)


def _owner(spec: str, view: LayerView) -> tuple[int, int]:
    """--chown=USER[:GROUP], names looked up in the image's /etc/passwd and /etc/group: each in the layer
    that holds it (a later `RUN addgroup` may have changed only /etc/group)."""
    from corert.frontend.config import resolve_user

    def root_of(rel: str) -> Path:
        host = view.lookup(rel)
        return Path(host).parent.parent if host else Path("/nonexistent")

    return resolve_user(spec, root_of("etc/passwd"), group_rootfs=root_of("etc/group"))


def _pairs(ins: Instruction, env: dict[str, str]) -> list[tuple[str, str]]:
    """ENV/LABEL arguments: K=V ... (quoted values allowed), or the legacy `K value with spaces`."""
    first = ins.args.split(None, 1)[0]
    if "=" not in first:
        key, _, rest = ins.args.strip().partition(" ")
        if not rest.strip():
            raise BuildError(f"{ins.where}: {ins.keyword} {key} needs a value")
        return [(key, expand(rest.strip(), env))]
    out = []
    for word in split_words(ins.args, env):
        key, eq, value = word.partition("=")
        if not eq or not key:
            raise BuildError(f"{ins.where}: {ins.keyword}: expected KEY=VALUE, got {word!r}")
        out.append((key, value))
    return out


def _drop_mount_stubs(record) -> None:
    """Remove what the runtime itself made in the upper dir: empty directories created as mount points
    (e.g. /sys/fs/cgroup under a host /sys), which are not the RUN's changes (BuildKit drops them too)."""
    from corert.drivers.storage import load_prepared
    from corert.drivers.storage.base import LayerView, is_opaque
    from corert.spec.load import load_config

    prepared = load_prepared(record.storage)
    upper = getattr(prepared, "upper", None)
    if upper is None:
        return   # vfs: changes() compares with the image, and a created mount point is an empty dir anyway
    view = LayerView(getattr(prepared, "layers", []))
    mounts = load_config(record.bundle).get("mounts") or []
    for dest in sorted({m.get("destination", "") for m in mounts}, key=len, reverse=True):
        parts = [p for p in dest.split("/") if p]
        while parts:
            rel = "/".join(parts)
            path = os.path.join(upper, rel)
            if os.path.isfile(path) and not os.path.islink(path):
                if os.path.getsize(path) == 0 and view.lookup(rel) is None:
                    os.unlink(path)   # an empty file made to bind a file (resolv.conf, hosts) onto
                parts.pop()
                continue
            if not os.path.isdir(path) or os.path.islink(path) or os.listdir(path) or is_opaque(path):
                break
            lower = view.lookup(rel)
            if lower is not None:
                lst, st = os.lstat(lower), os.lstat(path)
                if (lst.st_mode, lst.st_uid, lst.st_gid) != (st.st_mode, st.st_uid, st.st_gid):
                    break   # the RUN changed the image's dir: keep it
            os.rmdir(path)   # a stub, or an unchanged copy of the image's dir: the overlay shows the lower
            parts.pop()
