"""The `corert` command: runc's OCI CLI, plus the docker-like front door (`corert run IMAGE CMD`).

Only what the invoked verb needs is imported (cold start: engines call the runtime 3-4 times per
container). Every error ends here: one line "corert: <message>" on stderr (and in --log FILE in runc's
text/json format), exit code from corert.errors.exit_code_for.
"""
from __future__ import annotations

import sys

from corert.cli.parse import is_oci_run  # noqa: F401 - part of the public CLI API

__all__ = ["main", "is_oci_run"]

_HELP = """\
NAME:
   corert - a container runtime (runc-compatible OCI CLI, docker-like front door)

USAGE:
   corert [global options] command [command options] [arguments...]

OCI COMMANDS (as runc):
   create     create a container
   start      executes the user defined process in a created container
   state      output the state of a container
   kill       send a signal (default: SIGTERM) to the container's init process
   delete     delete any resources held by the container
   run        create and run a container (OCI form: with --bundle, or ./config.json and one id)
   exec       execute new process inside the container
   list, ls   lists containers started by corert with the given root
   ps         ps displays the processes running inside a container (OCI form: ps ID)
   pause      pause suspends all processes inside the container
   resume     resumes all processes that have been previously paused
   update     update container resource constraints
   events     display container events (OOM notifications, resource usage statistics)
   spec       create a new specification file
   features   show the enabled features

FRONT DOOR:
   run IMAGE [CMD...], ps [-a], images, image, logs, stop, rm, diff, commit, pull, build, stats

GLOBAL OPTIONS:
   --debug             enable debug logging
   --log value         set the log file to write corert logs to (default is stderr)
   --log-format value  set the log format ('text' (default), or 'json')
   --root value        root directory for storage of container state (default: /run/corert for root)
   --systemd-cgroup    not supported (accepted; create/run refuse it)
   --rootless value    ignore cgroup permission errors ('true', 'false', or 'auto') (default: "auto")
   --help, -h          show help
   --version, -v       print the version
"""


def _version_text() -> str:
    from corert.spec import OCI_VERSION

    try:
        from corert import __version__ as version  # type: ignore[attr-defined]
    except ImportError:
        try:
            from importlib.metadata import version as dist_version

            version = dist_version("corert")
        except Exception:  # not installed (running from a source tree)
            version = "unknown"
    return f"corert version {version}\nspec: {OCI_VERSION}\n"


def _handler(verb: str):  # -> Callable[[Context, Namespace], int]
    """The verb's handler, importing only its module."""
    if verb in ("state", "list", "ps", "events"):
        from corert.cli import query as mod
    elif verb in ("kill", "pause", "resume", "update"):
        from corert.cli import control as mod
    else:
        from corert.cli import lifecycle as mod
    if verb in ("checkpoint", "restore"):
        return mod.cmd_unsupported
    return getattr(mod, f"cmd_{verb}")


def _front_door(argv: list[str]) -> int:
    """Hand the whole argv to the docker-like front door (added separately as corert.cli.front)."""
    try:
        import corert.cli.front as front  # type: ignore[import-not-found]
    except ModuleNotFoundError as e:
        if e.name not in ("corert.cli.front",):
            raise
        from corert.errors import HostUnsupported

        raise HostUnsupported("the docker-like front door (corert.cli.front) is not installed") from None
    return int(front.main(argv) or 0)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `corert` console script; returns the process exit code."""
    from corert.cli.log import Log
    from corert.errors import CorertError, exit_code_for

    if argv is None:
        argv = sys.argv[1:]
    log = Log()
    frontend = False
    try:
        from corert.cli.parse import parse_verb, route, scan_globals

        options, verb, rest = scan_globals(argv)
        log = Log(options.log, options.log_format, options.debug)
        if options.version:
            sys.stdout.write(_version_text())
            return 0
        if verb is None or options.help or verb in ("help", "h"):
            sys.stdout.write(_HELP)
            return 0
        log.debug(f"corert {' '.join(argv)}")
        where = route(verb, rest)
        if where == "oci" and verb == "exec":  # `exec NAME` / `exec -it`: docker's, which resolves names
            from corert.cli.parse import is_front_exec
            from corert.engine.state import default_root

            if is_front_exec(rest, options.root or default_root()):
                where = "front"
        if where == "front":
            frontend = True
            return _front_door(argv)
        ns = parse_verb(verb, rest)
        from corert.cli.context import Context

        return _handler(ns.verb)(Context(options, log), ns)
    except CorertError as e:
        log.error(e.message)
        return exit_code_for(e, frontend=frontend)
    except SystemExit as e:  # argparse --help
        return e.code if isinstance(e.code, int) else 0
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 1
    except OSError as e:
        log.error(f"{e.strerror or e}" + (f": {e.filename}" if e.filename else ""))
        return exit_code_for(e, frontend=frontend)
    except Exception as e:  # a bug: still one line (traceback with --debug)
        log.error(f"internal error: {type(e).__name__}: {e}")
        if log.debug_enabled:
            import traceback

            traceback.print_exc()
        return exit_code_for(e, frontend=frontend)


def console_main() -> None:
    """The `corert` console script: main(), flush, and leave without the interpreter's teardown.

    Tearing the interpreter down costs ~8 ms per call, and engines call the runtime 3-4 times per
    container. Nothing on the CLI path relies on atexit handlers (the log is written with os.write)."""
    import os

    code = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code if 0 <= code <= 255 else 1)
