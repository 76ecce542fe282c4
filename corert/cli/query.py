"""`state`, `list`, `ps`, `events`: print what runc prints."""
from __future__ import annotations

from corert.cli.context import Context
from corert.cli.output import go_json, tabwriter, write
from corert.errors import CorertError, UsageError


def cmd_state(ctx: Context, ns) -> int:  # noqa: ANN001 - argparse.Namespace
    from corert.engine.query import state

    write(go_json(state(ctx.store, ns.container_id), indent="  "))  # runc: no trailing newline
    return 0


def cmd_list(ctx: Context, ns) -> int:  # noqa: ANN001
    from corert.engine.query import list_containers

    fmt = ns.format or "table"
    if fmt not in ("table", "json"):
        raise UsageError(f"invalid format option: {fmt}")
    items = list_containers(ctx.store)
    if ns.quiet:
        write("".join(item["id"] + "\n" for item in items))
    elif fmt == "json":
        write((go_json(items) if items else "null") + "\n")  # Go encodes an empty (nil) slice as null
    else:
        rows = [["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]]
        rows += [[i["id"], str(i["pid"]), i["status"], i["bundle"], i["created"], i["owner"]] for i in items]
        write(tabwriter(rows))
    return 0


def cmd_ps(ctx: Context, ns) -> int:  # noqa: ANN001
    from corert.engine.query import ps

    fmt = ns.format or "table"
    if fmt not in ("table", "json"):
        raise UsageError(f"invalid format option: {fmt}")
    pids = ps(ctx.store, ns.container_id)
    if fmt == "json":
        write((go_json(pids) if pids else "null") + "\n")
        return 0
    # Like runc: run the host's ps with the given options (default -ef) and keep the container's lines.
    import subprocess

    ps_args = ns.ps_args or ["-ef"]
    if len(ps_args) == 1 and " " in ps_args[0]:
        ps_args = ps_args[0].split(" ")
    try:
        proc = subprocess.run(["ps", *ps_args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    except OSError as e:
        raise CorertError(f"cannot run ps: {e.strerror or e}") from None
    output = proc.stdout.decode(errors="replace")
    if proc.returncode != 0:
        raise CorertError(f"ps {' '.join(ps_args)} failed: {output.strip()}")
    lines = output.split("\n")
    header = lines[0].split()
    if "PID" not in header:
        raise CorertError("couldn't find PID field in ps output")
    pid_index = header.index("PID")
    wanted = set(pids)
    out = [lines[0]]
    for line in lines[1:]:
        fields = line.split()
        if len(fields) > pid_index and fields[pid_index].isdigit() and int(fields[pid_index]) in wanted:
            out.append(line)
    write("\n".join(out) + "\n")
    return 0


def parse_duration(text: str) -> float:
    """Go's time.ParseDuration ("5s", "1m30s", "250ms", "1.5h") -> seconds."""
    import re

    units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    s = text.strip()
    sign = -1.0 if s.startswith("-") else 1.0
    s = s.lstrip("+-")
    if s == "0":
        return 0.0
    parts = re.findall(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)", s)
    if not s or "".join(a + b for a, b in parts) != s:
        raise UsageError(f'invalid value "{text}" for flag -interval: parse error')
    return sign * sum(float(num) * units[unit] for num, unit in parts)


def cmd_events(ctx: Context, ns) -> int:  # noqa: ANN001
    from corert.engine.control import events

    interval = parse_duration(ns.interval or "5s")
    events(ctx.store, ns.container_id, stats=ns.stats, interval=interval)
    return 0
