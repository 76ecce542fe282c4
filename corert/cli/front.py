"""The docker-like front door: run IMAGE, ps -a, logs, stop, rm, exec, images, image ..., diff, commit.

Exit codes follow docker: 125 for corert's own errors (mapped in corert.errors), 126 cannot execute, 127
command not found, otherwise the container process's code.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from corert.errors import UsageError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, a UsageError -> exit 125 on the front door
        raise UsageError(f"{self.prog}: {message}")


def _store(options):
    from pathlib import Path
    from corert.engine.state import StateStore, default_root
    return StateStore(Path(options.root).absolute() if options.root else default_root())


def _run_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="corert run", add_help=False)   # -h is docker's --hostname
    p.add_argument("--help", action="help")
    p.add_argument("--name")
    p.add_argument("--rm", action="store_true")
    p.add_argument("-d", "--detach", action="store_true")
    p.add_argument("-i", "--interactive", action="store_true")
    p.add_argument("-t", "--tty", action="store_true")
    p.add_argument("-e", "--env", action="append", default=[])
    p.add_argument("-w", "--workdir")
    p.add_argument("-u", "--user")
    p.add_argument("-v", "--volume", action="append", default=[])
    p.add_argument("--tmpfs", action="append", default=[])
    p.add_argument("--read-only", action="store_true")
    p.add_argument("-h", "--hostname")
    p.add_argument("--storage", "--storage-driver", dest="storage")
    p.add_argument("-m", "--memory")
    p.add_argument("--cpus")
    p.add_argument("--pids-limit", type=int)
    p.add_argument("--net", "--network", dest="net", default="none")
    p.add_argument("-p", "--publish", action="append", default=[], help="[HOSTIP:]HOSTPORT:CTRPORT[/tcp|udp]")
    p.add_argument("--entrypoint")
    p.add_argument("--cap-add", action="append", default=[])
    p.add_argument("--cap-drop", action="append", default=[])
    p.add_argument("--privileged", action="store_true")
    p.add_argument("--security-opt", action="append", default=[])
    p.add_argument("--userns", help="auto: map container root to a free unprivileged host id range")
    p.add_argument("--cgroup-manager", default="auto", choices=["auto", "v1", "v2", "none"])
    p.add_argument("--trace", action="store_true", help="print where the milliseconds of the start go")
    p.add_argument("--init", action="store_true", help="a tiny init as PID 1: reaps zombies, forwards signals")
    p.add_argument("--stop-signal", help="the signal `corert stop` sends first (default: the image's, SIGTERM)")
    p.add_argument("image")
    p.add_argument("command", nargs=argparse.REMAINDER)
    return p


def cmd_run(options, args: list[str]) -> int:
    from corert.frontend.config import RunOptions
    from corert.frontend.containers import create_managed, discard

    ns = _run_parser().parse_args(args)
    if ns.privileged:
        print("corert: warning: --privileged gives the container every capability, no seccomp filter and "
              "no masked paths: it can take over the host", file=sys.stderr)
    opts = RunOptions(
        command=ns.command, entrypoint=[ns.entrypoint] if ns.entrypoint else None, env=ns.env,
        workdir=ns.workdir, user=ns.user, hostname=ns.hostname, tty=ns.tty, interactive=ns.interactive,
        volumes=ns.volume, tmpfs=ns.tmpfs, read_only=ns.read_only, memory=ns.memory, cpus=ns.cpus,
        pids_limit=ns.pids_limit, net=ns.net, publish=ns.publish, cap_add=ns.cap_add, cap_drop=ns.cap_drop,
        privileged=ns.privileged, security_opt=ns.security_opt, userns=ns.userns, init=ns.init,
        stop_signal=ns.stop_signal)
    store = _store(options)
    stdio = None
    null = -1
    if not ns.interactive and not ns.tty and not ns.detach:
        null = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)   # docker gives no stdin without -i
        stdio = (null, 1, 2)
    try:
        managed = create_managed(store, ns.image, opts, name=ns.name, storage=ns.storage, detach=ns.detach,
                                 auto_remove=ns.rm, cgroup_manager=ns.cgroup_manager, trace=ns.trace,
                                 stdio=stdio)
    finally:
        if null >= 0:
            os.close(null)
    record, created = managed.record, managed.created
    from corert.engine.control import start
    if ns.detach:
        for fd in (created.pidfd, created.pty_master):
            if fd >= 0:
                os.close(fd)
        try:
            start(store, record.id)
        except BaseException:   # a container that never ran is not left behind
            discard(store, record)
            raise
        if ns.rm:
            from corert.frontend.containers import remove_when_exited
            remove_when_exited(store, record)
        print(record.id)
        return 0
    from corert.engine.run import supervise
    try:
        # Without --rm a stopped container stays for `ps -a`, `logs`, `diff`, `commit` and `rm`.
        return supervise(store, record.id, created, keep=True, start=start)
    finally:
        if ns.rm:   # also when interrupted: --rm leaves nothing
            discard(store, record)


def _age(seconds: float) -> str:
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return f"{int(seconds)} seconds ago"


def cmd_ps(options, args: list[str]) -> int:
    from corert.engine.state import live_status

    p = _Parser(prog="corert ps")
    p.add_argument("-a", "--all", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    ns = p.parse_args(args)
    store = _store(options)
    rows = []
    for r in store.list():
        if not r.extra.get("managed"):
            continue
        status = live_status(store, r)
        if status != "running" and not ns.all:
            continue
        rows.append((r.id[:12], r.extra.get("image_ref", ""), " ".join(r.extra.get("command", []))[:30],
                     _age(time.time() - r.extra.get("created_unix", time.time())), status, r.extra.get("name", "")))
    if ns.quiet:
        for row in rows:
            print(row[0])
        return 0
    header = ("CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "NAMES")
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for row in [header] + rows:
        print("   ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip())
    return 0


def _find(options, ref: str):
    from corert.frontend.containers import find
    store = _store(options)
    return store, find(store, ref)


def cmd_logs(options, args: list[str]) -> int:
    p = _Parser(prog="corert logs")
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("container")
    ns = p.parse_args(args)
    store, record = _find(options, ns.container)
    log = record.extra.get("log")
    if not log or not os.path.exists(log):
        return 0
    from corert.engine.state import init_alive
    with open(log, "rb") as f:
        while True:
            chunk = f.read(65536)
            if chunk:
                sys.stdout.buffer.write(chunk)
                sys.stdout.buffer.flush()
                continue
            if not ns.follow or not init_alive(record):
                return 0
            time.sleep(0.1)


def cmd_stop(options, args: list[str]) -> int:
    from corert.frontend.containers import stop
    p = _Parser(prog="corert stop")
    p.add_argument("-t", "--time", "--timeout", dest="time", type=float, default=10.0)
    p.add_argument("-s", "--signal", help="instead of the container's stop signal")
    p.add_argument("containers", nargs="+")
    ns = p.parse_args(args)
    from corert.engine.signals import parse_signal
    sig = parse_signal(ns.signal) if ns.signal else None
    for ref in ns.containers:
        store, record = _find(options, ref)
        stop(store, record, ns.time, sig)
        print(ref)
    return 0


def cmd_rm(options, args: list[str]) -> int:
    from corert.frontend.containers import remove_managed
    p = _Parser(prog="corert rm")
    p.add_argument("-f", "--force", action="store_true")
    p.add_argument("containers", nargs="+")
    ns = p.parse_args(args)
    for ref in ns.containers:
        store, record = _find(options, ref)
        remove_managed(store, record, force=ns.force)
        print(ref)
    return 0


def cmd_diff(options, args: list[str]) -> int:
    from corert.drivers.storage import load_prepared
    p = _Parser(prog="corert diff")
    p.add_argument("container")
    ns = p.parse_args(args)
    _store_, record = _find(options, ns.container)
    if not record.storage:
        raise UsageError(f"{ns.container} has no corert-managed rootfs")
    for kind, path in load_prepared(record.storage).changes():
        print(f"{kind} {path}")
    return 0


def cmd_commit(options, args: list[str]) -> int:
    from corert.frontend.commit import commit
    p = _Parser(prog="corert commit")
    p.add_argument("container")
    p.add_argument("name")
    ns = p.parse_args(args)
    store, record = _find(options, ns.container)
    image = commit(record, ns.name, store=store)
    print(image.id)
    return 0


def cmd_images(options, args: list[str]) -> int:
    return _image_verb(["ls", *args])


def cmd_image(options, args: list[str]) -> int:
    return _image_verb(args)


def _image_verb(args: list[str]) -> int:
    from corert.frontend.containers import data_root
    from corert.images.store import ImageStore

    p = _Parser(prog="corert image")
    sub = p.add_subparsers(dest="action", required=True)
    sub.add_parser("ls")
    imp = sub.add_parser("import")
    imp.add_argument("path")
    imp.add_argument("name", nargs="?")
    rm = sub.add_parser("rm")
    rm.add_argument("images", nargs="+")
    tag = sub.add_parser("tag")
    tag.add_argument("source")
    tag.add_argument("target")
    insp = sub.add_parser("inspect")
    insp.add_argument("image")
    exp = sub.add_parser("export")
    exp.add_argument("image")
    exp.add_argument("dest")
    sub.add_parser("ensure-default")
    ns = p.parse_args(args)
    store = ImageStore(data_root())
    try:
        if ns.action == "ls":
            # one row per name, as docker lists tags (a joined cell would not split into columns)
            rows = [(name, i.id[:12], i.created, f"{i.size / 1e6:.1f}MB")
                    for i in store.list() for name in (i.names or ["<none>"])]
            header = ("REPOSITORY:TAG", "IMAGE ID", "CREATED", "SIZE")
            widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
            for row in [header] + rows:
                print("   ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip())
        elif ns.action == "import":
            from pathlib import Path
            print(store.import_path(Path(ns.path), ns.name).id)
        elif ns.action == "rm":
            for ref in ns.images:
                store.remove(ref)
                print(f"Deleted: {ref}")
        elif ns.action == "tag":
            store.tag(ns.source, ns.target)
        elif ns.action == "inspect":
            import json
            print(json.dumps(store.inspect(ns.image), indent=2))
        elif ns.action == "export":
            from pathlib import Path
            store.export_oci(ns.image, Path(ns.dest))
        elif ns.action == "ensure-default":
            print(store.ensure_default().id)
    finally:
        store.close()
    return 0


def cmd_exec(options, args: list[str]) -> int:
    """`corert exec [-it] [-e K=V] [-u U] [-w D] CONTAINER CMD...` by name, docker style."""
    from corert.engine.exec import exec_process
    p = _Parser(prog="corert exec")
    p.add_argument("-i", "--interactive", action="store_true")
    p.add_argument("-t", "--tty", action="store_true")
    p.add_argument("-d", "--detach", action="store_true")
    p.add_argument("-e", "--env", action="append", default=[])
    p.add_argument("-u", "--user")
    p.add_argument("-w", "--workdir")
    p.add_argument("container")
    p.add_argument("command", nargs=argparse.REMAINDER)
    ns = p.parse_args(args)
    if not ns.command:
        raise UsageError("corert exec: a command is required")
    store, record = _find(options, ns.container)
    from corert.frontend.config import resolve_user
    from corert.spec.load import load_config
    base_env = (load_config(record.bundle).get("process") or {}).get("env") or []
    process = {"args": ns.command, "env": base_env + ns.env, "terminal": ns.tty}
    if ns.workdir:
        process["cwd"] = ns.workdir
    if ns.user:
        uid, gid = resolve_user(ns.user, __import__("pathlib").Path(record.rootfs))
        process["user"] = {"uid": uid, "gid": gid}
    return exec_process(store, record.id, process, detach=ns.detach)


def cmd_network(options, args: list[str]) -> int:
    """`corert network create|ls|inspect|rm|connect|disconnect|prune`: user-defined bridge networks
    (corert.drivers.network.networks, .connect) and cleanup after crashes."""
    p = _Parser(prog="corert network")
    sub = p.add_subparsers(dest="action", required=True)
    create = sub.add_parser("create")
    create.add_argument("--subnet")
    create.add_argument("--gateway")
    create.add_argument("--internal", action="store_true")
    create.add_argument("--driver", "-d", default="bridge", choices=["bridge"])
    create.add_argument("name")
    sub.add_parser("ls")
    insp = sub.add_parser("inspect")
    insp.add_argument("networks", nargs="+")
    rm = sub.add_parser("rm")
    rm.add_argument("networks", nargs="+")
    for verb in ("connect", "disconnect"):
        c = sub.add_parser(verb)
        c.add_argument("network")
        c.add_argument("container")
    sub.add_parser("prune")
    ns = p.parse_args(args)
    from corert.drivers.network import bridge, networks
    if ns.action == "prune":
        from corert.drivers.network.usermode import sweep_helpers
        lines = sweep_helpers() + (bridge.prune() if os.geteuid() == 0 else [])
        for line in lines:
            print(f"removed {line}")
    elif ns.action == "create":
        print(networks.create(ns.name, ns.subnet, ns.gateway, ns.internal)["id"])
    elif ns.action == "ls":
        from corert.cli.output import tabwriter
        rows = [[n["name"], n["id"][:12], n["driver"], n["subnet"]] for n in networks.list_networks()]
        sys.stdout.write(tabwriter([["NAME", "NETWORK ID", "DRIVER", "SUBNET"]] + rows))
    elif ns.action == "inspect":
        import json
        print(json.dumps([networks.inspect(ref) for ref in ns.networks], indent=2))
    elif ns.action == "rm":
        for ref in ns.networks:
            print(networks.remove(ref))
    else:
        from corert.drivers.network import connect
        store, record = _find(options, ns.container)
        getattr(connect, ns.action)(store, record, ns.network)
    return 0


def _tls_verify(value: str) -> bool:
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise UsageError(f"--tls-verify: expected true or false, not {value!r}")


def cmd_pull(options, args: list[str]) -> int:
    """`corert pull [--tls-verify=false] [-j N] REF`: prints the image id (progress goes to stderr)."""
    from corert.frontend.containers import data_root
    from corert.images.registry.pull import DEFAULT_JOBS, pull
    from corert.images.store import ImageStore
    p = _Parser(prog="corert pull")
    p.add_argument("--tls-verify", default="true", type=_tls_verify)
    p.add_argument("-j", "--jobs", type=int, default=DEFAULT_JOBS, help="parallel blob downloads")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("ref")
    ns = p.parse_args(args)
    with ImageStore(data_root()) as store:
        image = pull(store, ns.ref, tls_verify=ns.tls_verify, jobs=ns.jobs,
                     stream=open(os.devnull, "w") if ns.quiet else None)
    print(image.id)
    return 0


def cmd_push(options, args: list[str]) -> int:
    """`corert push [--tls-verify=false] NAME[:TAG] [REF]`: prints the manifest digest."""
    from corert.frontend.containers import data_root
    from corert.images.registry.push import DEFAULT_CHUNK, DEFAULT_JOBS, push
    from corert.images.store import ImageStore
    p = _Parser(prog="corert push")
    p.add_argument("--tls-verify", default="true", type=_tls_verify)
    p.add_argument("-j", "--jobs", type=int, default=DEFAULT_JOBS, help="parallel blob uploads")
    p.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK, help="bytes per PATCH for big blobs")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("image")
    p.add_argument("dest", nargs="?")
    ns = p.parse_args(args)
    with ImageStore(data_root()) as store:
        digest = push(store, ns.image, ns.dest, tls_verify=ns.tls_verify, jobs=ns.jobs,
                      chunk_size=ns.chunk_size, stream=open(os.devnull, "w") if ns.quiet else None)
    print(digest)
    return 0


def cmd_build(options, args: list[str]) -> int:
    """`corert build -t NAME[:TAG] [-f FILE] [--no-cache] [--build-arg K=V] CONTEXT` (logic: corert.build)."""
    from corert.build.executor import BuildOptions, build
    p = _Parser(prog="corert build")
    p.add_argument("-t", "--tag")
    p.add_argument("-f", "--file")
    p.add_argument("--no-cache", action="store_true")
    p.add_argument("--build-arg", action="append", default=[])
    p.add_argument("--network", "--net", dest="network", default="host", choices=["host", "none"])
    p.add_argument("--storage", "--storage-driver", dest="storage")
    p.add_argument("context")
    ns = p.parse_args(args)
    build_args = {}
    for item in ns.build_arg:
        key, eq, value = item.partition("=")
        if eq or key in os.environ:   # `--build-arg K` passes the caller's value, as docker does
            build_args[key] = value if eq else os.environ[key]
    build(_store(options), BuildOptions(context=ns.context, file=ns.file, tag=ns.tag, no_cache=ns.no_cache,
                                        build_args=build_args, network=ns.network, storage=ns.storage))
    return 0


def cmd_stats(options, args: list[str]) -> int:
    """`corert stats [-a] [--no-stream] [--format table|json] [NAME...]`: docker's live table plus PSI
    (corert.frontend.stats); on a terminal every frame replaces the previous one."""
    from corert.cli.output import tabwriter
    from corert.frontend.stats import format_json, frames, tables
    p = _Parser(prog="corert stats")
    p.add_argument("-a", "--all", action="store_true", help="all containers (default: running ones)")
    p.add_argument("--no-stream", action="store_true", help="print one frame and exit")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.add_argument("containers", nargs="*")
    ns = p.parse_args(args)
    clear = not ns.no_stream and ns.format != "json" and sys.stdout.isatty()
    try:
        for rows, host_pressure in frames(_store(options), ns.containers, all_containers=ns.all,
                                          stream=not ns.no_stream):
            text = (format_json(rows) if ns.format == "json"
                    else "\n".join(tabwriter(t, minwidth=10) for t in tables(rows, host_pressure)))
            sys.stdout.write(("\033[2J\033[H" if clear else "") + text)
            sys.stdout.flush()
    except KeyboardInterrupt:
        pass
    return 0


VERBS = {"run": cmd_run, "ps": cmd_ps, "logs": cmd_logs, "stop": cmd_stop, "rm": cmd_rm, "diff": cmd_diff,
         "commit": cmd_commit, "images": cmd_images, "image": cmd_image, "exec": cmd_exec,
         "network": cmd_network,
         "pull": cmd_pull, "push": cmd_push,
         "build": cmd_build,
         "stats": cmd_stats}


def main(argv: list[str]) -> int:
    from corert.cli.parse import scan_globals
    options, verb, rest = scan_globals(argv)
    handler = VERBS.get(verb)
    if handler is None:
        raise UsageError(f"corert {verb}: not available in this version")
    return handler(options, rest)
