"""Command-line parsing, runc-compatible.

Global options are scanned by hand up to the verb, with Go `flag` rules (what runc's urfave/cli uses):
`--flag value`, `--flag=value`, and the single-dash long forms `-root DIR` / `-log-format=json`.
Each verb then gets its own small argparse parser, built only for the verb being run (cold start); its
argv is first rewritten so that Go-style single-dash long options and `--boolflag=true|false` work too.
`exec` and `ps` pass everything after the container id through untouched (the command / ps options).
"""
from __future__ import annotations

import os
from corert.errors import UsageError


class GlobalOptions:
    """runc's global flags."""

    __slots__ = ("root", "log", "log_format", "debug", "systemd_cgroup", "rootless", "criu", "help",
                 "version")

    def __init__(self) -> None:
        self.root: str | None = None
        self.log: str | None = None
        self.log_format = "text"
        self.debug = False
        self.systemd_cgroup = False
        self.rootless = "auto"
        self.criu = "criu"
        self.help = False
        self.version = False


# name -> (attribute, takes a value)
_GLOBAL_FLAGS: dict[str, tuple[str, bool]] = {
    "root": ("root", True),
    "log": ("log", True),
    "log-format": ("log_format", True),
    "debug": ("debug", False),
    "systemd-cgroup": ("systemd_cgroup", False),
    "rootless": ("rootless", True),
    "criu": ("criu", True),
    "help": ("help", False),
    "h": ("help", False),
    "version": ("version", False),
    "v": ("version", False),
}

_TRUE = ("1", "t", "T", "true", "TRUE", "True")
_FALSE = ("0", "f", "F", "false", "FALSE", "False")


def _go_bool(name: str, value: str) -> bool:
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise UsageError(f"invalid boolean value {value!r} for -{name}")


def scan_globals(argv: list[str]) -> tuple[GlobalOptions, str | None, list[str]]:
    """Split argv into (global options, verb, the verb's arguments); verb is None if absent."""
    opts = GlobalOptions()
    i = 0
    while i < len(argv):
        tok = argv[i]
        if tok == "--":
            i += 1
            break
        if not tok.startswith("-") or tok == "-" or tok.startswith("---"):
            break
        name, eq, value = tok.lstrip("-").partition("=")
        spec = _GLOBAL_FLAGS.get(name)
        if spec is None:
            raise UsageError(f"flag provided but not defined: -{name}")
        attr, takes_value = spec
        if takes_value:
            if not eq:
                i += 1
                if i >= len(argv):
                    raise UsageError(f"flag needs an argument: -{name}")
                value = argv[i]
            setattr(opts, attr, value)
        else:
            setattr(opts, attr, _go_bool(name, value) if eq else True)
        i += 1
    if opts.log_format not in ("text", "json"):
        raise UsageError(f"invalid log-format: {opts.log_format}")
    if opts.rootless not in ("auto", "true", "false"):
        raise UsageError(f"invalid --rootless value {opts.rootless!r}: use true, false or auto")
    verb = argv[i] if i < len(argv) else None
    return opts, verb, argv[i + 1:]


class Opt:
    """One verb option: flags ("--bundle", "-b"), kind (bool | str | int | list | intlist), dest, help."""

    __slots__ = ("flags", "kind", "dest", "help")

    def __init__(self, flags: tuple[str, ...], kind: str, dest: str, help: str) -> None:  # noqa: A002
        self.flags, self.kind, self.dest, self.help = flags, kind, dest, help


class VerbSpec:
    """A verb: its options, positionals ((dest, nargs)...), and for exec/ps the dest of the raw tail."""

    __slots__ = ("help", "opts", "positionals", "tail")

    def __init__(self, help: str, opts: tuple[Opt, ...] = (),  # noqa: A002
                 positionals: tuple[tuple[str, str | None], ...] = (("container_id", None),),
                 tail: str | None = None) -> None:
        self.help, self.opts, self.positionals, self.tail = help, opts, positionals, tail


_BUNDLE = Opt(("--bundle", "-b"), "str", "bundle", "path to the root of the bundle directory (default: .)")
_CONSOLE = Opt(("--console-socket",), "str", "console_socket",
               "AF_UNIX socket that receives the pty master of a terminal container")
_PIDFILE = Opt(("--pid-file",), "str", "pid_file", "file to write the process id to")
_NOPIVOT = Opt(("--no-pivot",), "bool", "no_pivot", "do not use pivot_root (rootfs on a ramdisk)")
_NOKEYRING = Opt(("--no-new-keyring",), "bool", "no_new_keyring", "do not create a new session keyring")
_FDS = Opt(("--preserve-fds",), "int", "preserve_fds", "pass N additional fds to the container")
_DETACH = Opt(("--detach", "-d"), "bool", "detach", "detach from the container's process")
_FORMAT = Opt(("--format", "-f"), "str", "format", "table or json (default: table)")

VERBS: dict[str, VerbSpec] = {
    "spec": VerbSpec("create a new specification file (config.json)", (
        _BUNDLE, Opt(("--rootless",), "bool", "rootless", "a configuration for a rootless container"),
    ), positionals=()),
    "create": VerbSpec("create a container", (_BUNDLE, _CONSOLE, _PIDFILE, _NOPIVOT, _NOKEYRING, _FDS)),
    "start": VerbSpec("run the user-defined process of a created container"),
    "state": VerbSpec("output the state of a container"),
    "kill": VerbSpec("send a signal (default SIGTERM) to the container's init", (
        Opt(("--all", "-a"), "bool", "all", "signal all processes of the container"),
    ), positionals=(("container_id", None), ("signal", "?"))),
    "delete": VerbSpec("delete a container and everything it holds", (
        Opt(("--force", "-f"), "bool", "force", "SIGKILL the container first if it is running"),
    )),
    "run": VerbSpec("create and run a container", (
        _BUNDLE, _CONSOLE, _DETACH, Opt(("--keep",), "bool", "keep", "do not delete the container after it exits"),
        _PIDFILE, Opt(("--no-subreaper",), "bool", "no_subreaper", "accepted for runc compatibility"),
        _NOPIVOT, _NOKEYRING, _FDS,
    )),
    "exec": VerbSpec("execute a new process inside the container", (
        _CONSOLE,
        Opt(("--cwd",), "str", "cwd", "working directory in the container"),
        Opt(("--env", "-e"), "list", "env", "set an environment variable (K=V)"),
        Opt(("--tty", "-t"), "bool", "tty", "allocate a pseudo-TTY"),
        Opt(("--user", "-u"), "str", "user", "UID[:GID]"),
        Opt(("--additional-gids", "-g"), "intlist", "additional_gids", "additional gid"),
        Opt(("--process", "-p"), "str", "process", "path to a process.json"),
        _DETACH, _PIDFILE,
        Opt(("--process-label",), "str", "process_label", "SELinux label of the process"),
        Opt(("--apparmor",), "str", "apparmor", "AppArmor profile of the process"),
        Opt(("--no-new-privs",), "bool", "no_new_privs", "set no_new_privs for the process"),
        Opt(("--cap", "-c"), "list", "cap", "add a capability to the process"),
        _FDS,
        Opt(("--cgroup",), "str", "cgroup", "not supported"),
        Opt(("--ignore-paused",), "bool", "ignore_paused", "allow exec in a paused container"),
    ), tail="command"),
    "list": VerbSpec("list containers under the root", (
        _FORMAT, Opt(("--quiet", "-q"), "bool", "quiet", "display only container ids"),
    ), positionals=()),
    "ps": VerbSpec("display the processes running inside a container", (_FORMAT,), tail="ps_args"),
    "pause": VerbSpec("suspend all processes of the container"),
    "resume": VerbSpec("resume all processes of a paused container"),
    "update": VerbSpec("update container resource constraints", (
        Opt(("--resources", "-r"), "str", "resources", "file with OCI linux.resources JSON, or - for stdin"),
        Opt(("--blkio-weight",), "int", "blkio_weight", "block IO weight (10-1000)"),
        Opt(("--cpu-period",), "int", "cpu_period", "CFS period (us)"),
        Opt(("--cpu-quota",), "int", "cpu_quota", "CFS quota (us)"),
        Opt(("--cpu-share", "--cpu-shares"), "int", "cpu_shares", "CPU shares"),
        Opt(("--cpu-rt-period",), "int", "cpu_rt_period", "realtime period (us)"),
        Opt(("--cpu-rt-runtime",), "int", "cpu_rt_runtime", "realtime runtime (us)"),
        Opt(("--cpuset-cpus",), "str", "cpuset_cpus", "CPUs to use"),
        Opt(("--cpuset-mems",), "str", "cpuset_mems", "memory nodes to use"),
        Opt(("--memory",), "str", "memory", "memory limit (bytes, or 512m, 1g...)"),
        Opt(("--memory-reservation",), "str", "memory_reservation", "memory soft limit"),
        Opt(("--memory-swap",), "str", "memory_swap", "memory + swap limit; -1 = unlimited"),
        Opt(("--pids-limit",), "int", "pids_limit", "maximum number of pids"),
        Opt(("--l3-cache-schema",), "str", "l3_cache_schema", "not supported"),
        Opt(("--mem-bw-schema",), "str", "mem_bw_schema", "not supported"),
    )),
    "events": VerbSpec("display container events (OOM) and resource statistics", (
        Opt(("--interval",), "str", "interval", "stats interval (default 5s)"),
        Opt(("--stats",), "bool", "stats", "display the container's stats once, then exit"),
    )),
    "features": VerbSpec("show the enabled features", positionals=()),
    "checkpoint": VerbSpec("not supported", positionals=(("args", "*"),)),
    "restore": VerbSpec("not supported", positionals=(("args", "*"),)),
}
ALIASES = {"ls": "list"}


def _option_table(spec: VerbSpec) -> dict[str, Opt]:
    table = {}
    for opt in spec.opts:
        for flag in opt.flags:
            table[flag] = opt
    return table


def _looks_like_option(tok: str) -> bool:
    return tok.startswith("-") and tok != "-" and not tok[1:2].isdigit()


def split_verb_args(spec: VerbSpec, args: list[str]) -> tuple[list[str], list[str]]:
    """Rewrite Go-style forms to argparse ones and, for tail verbs, cut off what follows the id.

    Returns (argv for argparse, tail).
    """
    table = _option_table(spec)
    head: list[str] = []
    i = 0
    while i < len(args):
        tok = args[i]
        if tok == "--":
            rest = args[i + 1:]
            if spec.tail and rest:
                return head + ["--", rest[0]], rest[1:]
            return head + args[i:], []
        if not _looks_like_option(tok):
            head.append(tok)
            if spec.tail:
                return head, args[i + 1:]
            i += 1
            continue
        name, eq, value = tok.partition("=")
        if not name.startswith("--") and len(name) > 2 and ("-" + name) in table:
            name = "-" + name  # Go flag accepts -bundle for --bundle
        opt = table.get(name)
        if opt is not None and opt.kind == "bool" and eq:
            if _go_bool(name.lstrip("-"), value):
                head.append(name)
            i += 1
            continue
        head.append(name + eq + value)
        if opt is not None and opt.kind != "bool" and not eq and i + 1 < len(args):
            head.append(args[i + 1])  # the option's value, whatever it looks like
            i += 1
        i += 1
    return head, []


def _build_parser(verb: str, spec: VerbSpec):  # -> argparse.ArgumentParser
    import argparse

    class Parser(argparse.ArgumentParser):
        def error(self, message: str) -> None:  # type: ignore[override]
            raise UsageError(f"{verb}: {message}")

    def formatter(prog: str) -> argparse.HelpFormatter:
        # An explicit width keeps argparse from importing shutil for the terminal size.
        return argparse.HelpFormatter(prog, width=int(os.environ.get("COLUMNS", "") or 0) or 100)

    parser = Parser(prog=f"corert {verb}", description=spec.help, allow_abbrev=False, formatter_class=formatter)
    for opt in spec.opts:
        if opt.kind == "bool":
            parser.add_argument(*opt.flags, dest=opt.dest, action="store_true", help=opt.help)
        elif opt.kind == "str":
            parser.add_argument(*opt.flags, dest=opt.dest, metavar="VALUE", help=opt.help)
        elif opt.kind == "int":
            parser.add_argument(*opt.flags, dest=opt.dest, type=int, metavar="N", help=opt.help)
        elif opt.kind == "list":
            parser.add_argument(*opt.flags, dest=opt.dest, action="append", default=[], metavar="VALUE",
                                help=opt.help)
        elif opt.kind == "intlist":
            parser.add_argument(*opt.flags, dest=opt.dest, action="append", type=int, default=[],
                                metavar="N", help=opt.help)
    for dest, nargs in spec.positionals:
        parser.add_argument(dest, nargs=nargs)
    if spec.tail:
        parser.epilog = f"Everything after the container id is passed through ({spec.tail})."
    return parser


class Namespace:
    """Parsed verb arguments (what argparse.Namespace would hold)."""

    def __init__(self, **kwargs: object) -> None:
        self.__dict__.update(kwargs)


_DEFAULTS = {"bool": False, "str": None, "int": None}


def _parse_plain(spec: VerbSpec, head: list[str]) -> Namespace | None:
    """The common case without argparse (importing and building it costs ~10 ms of every engine call).

    Returns None for anything unusual (help, an unknown flag, a bad value, wrong positionals): argparse then
    parses the same arguments and produces its usual message."""
    table = _option_table(spec)
    values: dict[str, object] = {}
    for opt in spec.opts:
        values[opt.dest] = [] if opt.kind in ("list", "intlist") else _DEFAULTS[opt.kind]
    positionals: list[str] = []
    i = 0
    while i < len(head):
        tok = head[i]
        if tok == "--":
            positionals.extend(head[i + 1:])
            break
        if not _looks_like_option(tok):
            positionals.append(tok)
            i += 1
            continue
        name, eq, value = tok.partition("=")
        opt = table.get(name)
        if opt is None:
            return None
        if opt.kind == "bool":
            if eq:
                return None
            values[opt.dest] = True
        else:
            if not eq:
                if i + 1 >= len(head):
                    return None
                i += 1
                value = head[i]
            if opt.kind in ("int", "intlist"):
                try:
                    number: object = int(value)
                except ValueError:
                    return None
            else:
                number = value
            if opt.kind in ("list", "intlist"):
                values[opt.dest].append(number)  # type: ignore[union-attr]
            else:
                values[opt.dest] = number
        i += 1
    for dest, nargs in spec.positionals:
        if nargs is None:
            if not positionals:
                return None
            values[dest] = positionals.pop(0)
        elif nargs == "?":
            values[dest] = positionals.pop(0) if positionals else None
        else:  # "*"
            values[dest], positionals = positionals, []
    if positionals:
        return None
    return Namespace(**values)


def parse_verb(verb: str, args: list[str]):  # -> Namespace
    """Parse one verb's arguments; UsageError on anything runc would refuse."""
    verb = ALIASES.get(verb, verb)
    spec = VERBS.get(verb)
    if spec is None:
        raise UsageError(f"unknown command {verb!r} (see corert --help)")
    head, tail = split_verb_args(spec, args)
    ns = _parse_plain(spec, head) or _build_parser(verb, spec).parse_args(head)
    if spec.tail:
        setattr(ns, spec.tail, tail)
    ns.verb = verb
    return ns


# ---- front door dispatch -------------------------------------------------------------------------

FRONT_VERBS = frozenset({"images", "image", "logs", "stop", "rm", "diff", "commit", "pull", "push", "build", "stats",
                         "network"})

_OCI_RUN_VALUE_FLAGS = frozenset({"--bundle", "-b", "--pid-file", "--console-socket", "--preserve-fds"})
_OCI_RUN_BOOL_FLAGS = frozenset({"--detach", "-d", "--keep", "--no-pivot", "--no-new-keyring",
                                 "--no-subreaper"})


def is_oci_run(args: list[str], cwd: str | None = None) -> bool:
    """`run` is runc's when --bundle/-b is given, or when the arguments are only runc `run` options and
    exactly one positional (the container id) and ./config.json exists; else it is `corert run IMAGE CMD`."""
    positionals = 0
    foreign = False
    i = 0
    while i < len(args):
        tok = args[i]
        if tok == "--":
            positionals += len(args) - i - 1
            break
        if _looks_like_option(tok):
            name, eq, _ = tok.partition("=")
            if not name.startswith("--") and len(name) > 2:
                name = "-" + name
            if name in ("--bundle", "-b"):
                return True
            if name in _OCI_RUN_VALUE_FLAGS:
                i += 0 if eq else 1
            elif name not in _OCI_RUN_BOOL_FLAGS:
                foreign = True
        else:
            positionals += 1
        i += 1
    return (not foreign and positionals == 1
            and os.path.exists(os.path.join(cwd or os.getcwd(), "config.json")))


def is_oci_ps(args: list[str]) -> bool:
    """`ps ID [ps options]` is runc's; `ps` with no id, or with -a/--all, is the front door's."""
    i = 0
    while i < len(args):
        tok = args[i]
        if tok == "--":
            return i + 1 < len(args)
        if _looks_like_option(tok):
            name, eq, _ = tok.partition("=")
            if name in ("-a", "--all"):
                return False
            if name in ("--format", "-f", "-format") and not eq:
                i += 1
        else:
            return True
        i += 1
    return False


_FRONT_EXEC_FLAGS = frozenset({"-i", "--interactive", "-w", "--workdir"})


def is_front_exec(args: list[str], state_root: str) -> bool:
    """`exec` is the front door's (docker's) when it uses a docker-only flag (-i, -w, combined short flags
    such as -it) or names its container by something that is no container directory under the state root
    (a container name or an id prefix); otherwise it is runc's."""
    table = _option_table(VERBS["exec"])
    target = None
    i = 0
    while i < len(args):
        tok = args[i]
        if tok == "--":
            target = args[i + 1] if i + 1 < len(args) else None
            break
        if not _looks_like_option(tok):
            target = tok
            break
        name, eq, _ = tok.partition("=")
        if name in _FRONT_EXEC_FLAGS:
            return True
        if not name.startswith("--") and len(name) > 2:
            if ("-" + name) not in table:
                return True  # combined short flags: runc has none
            name = "-" + name
        opt = table.get(name)
        if opt is not None and opt.kind != "bool" and not eq:
            i += 1
        i += 1
    if not target or os.path.isdir(os.path.join(state_root, target)):
        return False
    # Not a container id: docker's exec if it names a front-door container (by name or id prefix);
    # otherwise runc's, which reports the missing container with runc's exit code.
    return _names_a_container(state_root, target)


def _names_a_container(state_root: str, ref: str) -> bool:
    from corert import jsonio

    try:
        entries = os.listdir(state_root)
    except OSError:
        return False
    for entry in entries:
        if entry.startswith(ref):
            return True
        try:
            with open(os.path.join(state_root, entry, "state.json"), "rb") as f:
                if jsonio.loads(f.read()).get("extra", {}).get("name") == ref:
                    return True
        except (OSError, ValueError):
            continue
    return False


def route(verb: str, args: list[str]) -> str:
    """"front" or "oci": which CLI handles this verb invocation."""
    if verb in FRONT_VERBS:
        return "front"
    if verb == "run":
        return "oci" if is_oci_run(args) else "front"
    if verb == "ps":
        return "oci" if is_oci_ps(args) else "front"
    return "oci"
