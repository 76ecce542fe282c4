"""`spec`, `create`, `start`, `run`, `exec`, `delete`, `features` (the engine does the work)."""
from __future__ import annotations

import os

from corert import jsonio
from corert.cli.context import Context, abspath
from corert.errors import CorertError, HostUnsupported, UsageError


def cmd_spec(ctx: Context, ns) -> int:  # noqa: ANN001 - argparse.Namespace
    from corert.spec.defaults import write_spec

    write_spec(abspath(ns.bundle or "."), ns.rootless)
    return 0


def cmd_features(ctx: Context, ns) -> int:  # noqa: ANN001
    from corert.spec.features import features

    from corert.cli.output import write

    write(jsonio.dumps(features(), indent=4) + "\n")
    return 0


def cmd_create(ctx: Context, ns) -> int:  # noqa: ANN001
    from corert.engine.create import create

    ctx.refuse_systemd_cgroup()
    create(ctx.store, ns.container_id, abspath(ns.bundle or "."), pid_file=abspath(ns.pid_file),
           console_socket=ns.console_socket, preserve_fds=ns.preserve_fds or 0, no_pivot=ns.no_pivot)
    return 0


def cmd_start(ctx: Context, ns) -> int:  # noqa: ANN001
    from corert.engine.control import start

    start(ctx.store, ns.container_id, warn=ctx.log.warning)
    return 0


def cmd_delete(ctx: Context, ns) -> int:  # noqa: ANN001
    from corert.engine.delete import delete

    delete(ctx.store, ns.container_id, force=ns.force)
    return 0


def cmd_run(ctx: Context, ns) -> int:  # noqa: ANN001
    from corert.engine.run import run

    ctx.refuse_systemd_cgroup()
    return run(ctx.store, ns.container_id, abspath(ns.bundle or "."), detach=ns.detach,
               pid_file=abspath(ns.pid_file), keep=ns.keep, console_socket=ns.console_socket,
               preserve_fds=ns.preserve_fds or 0, no_pivot=ns.no_pivot)


def cmd_exec(ctx: Context, ns) -> int:  # noqa: ANN001
    from corert.engine.exec import exec_process

    if ns.cgroup:
        raise HostUnsupported("exec --cgroup (a sub-cgroup for the process) is not supported")
    process = build_process(ctx, ns)
    return exec_process(ctx.store, ns.container_id, process, detach=ns.detach, pid_file=abspath(ns.pid_file),
                        console_socket=ns.console_socket, preserve_fds=ns.preserve_fds or 0)


def cmd_unsupported(ctx: Context, ns) -> int:  # noqa: ANN001
    raise HostUnsupported(f"{ns.verb} is not supported by corert (no CRIU integration)")


def build_process(ctx: Context, ns) -> dict:  # noqa: ANN001
    """The OCI process for `exec`: --process FILE as is (runc then ignores the other flags), or the
    container's config.json process with args, cwd, env, user, terminal, caps... from the flags."""
    if ns.process:
        try:
            with open(ns.process, "rb") as f:
                process = jsonio.loads(f.read())
        except OSError as e:
            raise UsageError(f"--process {ns.process}: {e.strerror or e}") from None
        except ValueError as e:
            raise UsageError(f"--process {ns.process}: invalid JSON: {e}") from None
        if not isinstance(process, dict) or not process.get("args"):
            raise UsageError(f"--process {ns.process}: a process object with non-empty args is required")
        return process
    if not ns.command:
        raise UsageError("exec: no command given (put it after the container id, or use --process)")
    process = _config_process(ctx, ns.container_id)
    process["args"] = list(ns.command)
    if ns.cwd:
        process["cwd"] = ns.cwd
    process["env"] = _merge_env(process.get("env") or [], ns.env)
    process["terminal"] = bool(ns.tty)
    if ns.no_new_privs:
        process["noNewPrivileges"] = True
    if ns.apparmor:
        process["apparmorProfile"] = ns.apparmor
    if ns.process_label:
        process["selinuxLabel"] = ns.process_label
    user = dict(process.get("user") or {"uid": 0, "gid": 0})
    if ns.user:
        uid, _, gid = ns.user.partition(":")
        user["uid"] = _int_id(uid, "uid")
        if gid:
            user["gid"] = _int_id(gid, "gid")
    if ns.additional_gids:
        user["additionalGids"] = list(user.get("additionalGids") or []) + list(ns.additional_gids)
    process["user"] = user
    if ns.cap:
        caps = {k: list(v) for k, v in (process.get("capabilities") or {}).items()}
        for cap in ns.cap:
            name = cap.upper()
            name = name if name.startswith("CAP_") else "CAP_" + name
            # As runc: bounding, effective, permitted; ambient only if the spec has inheritable caps.
            sets = ["bounding", "effective", "permitted"] + (["ambient"] if "inheritable" in caps else [])
            for s in sets:
                if name not in caps.setdefault(s, []):
                    caps[s].append(name)
        process["capabilities"] = caps
    return process


def _config_process(ctx: Context, container_id: str) -> dict:
    record = ctx.store.load(container_id)
    try:
        with open(os.path.join(record.bundle, "config.json"), "rb") as f:
            process = jsonio.loads(f.read()).get("process") or {}
    except (OSError, ValueError, AttributeError):
        process = {}  # the bundle may be gone by now: start from an empty process
    if not isinstance(process, dict):
        process = {}
    process.pop("consoleSize", None)
    process.setdefault("cwd", "/")
    return process


def _merge_env(base: list[str], extra: list[str]) -> list[str]:
    """Append K=V pairs; a key already present is replaced in place (the exec'd value wins)."""
    env = list(base)
    index = {e.partition("=")[0]: i for i, e in enumerate(env)}
    for entry in extra:
        key = entry.partition("=")[0]
        if not key:
            raise UsageError(f"invalid environment variable {entry!r}")
        if key in index:
            env[index[key]] = entry
        else:
            index[key] = len(env)
            env.append(entry)
    return env


def _int_id(text: str, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"invalid {what} {text!r}: --user takes numeric UID[:GID]") from None
    if value < 0:
        raise CorertError(f"invalid {what} {text!r}")
    return value
