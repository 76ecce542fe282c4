"""`kill`, `pause`, `resume`, `update`."""
from __future__ import annotations

import sys

from corert import jsonio
from corert.cli.context import Context
from corert.errors import HostUnsupported, UsageError


def cmd_kill(ctx: Context, ns) -> int:  # noqa: ANN001 - argparse.Namespace
    from corert.engine.control import kill
    from corert.engine.signals import parse_signal

    sig = parse_signal(ns.signal or "SIGTERM")
    kill(ctx.store, ns.container_id, sig, all=ns.all)
    return 0


def cmd_pause(ctx: Context, ns) -> int:  # noqa: ANN001
    from corert.engine.control import pause

    pause(ctx.store, ns.container_id)
    return 0


def cmd_resume(ctx: Context, ns) -> int:  # noqa: ANN001
    from corert.engine.control import resume

    resume(ctx.store, ns.container_id)
    return 0


def cmd_update(ctx: Context, ns) -> int:  # noqa: ANN001
    from corert.engine.control import update

    update(ctx.store, ns.container_id, build_resources(ns))
    return 0


def build_resources(ns) -> dict:  # noqa: ANN001
    """OCI linux.resources from `update` flags, or verbatim from --resources FILE|- (flags then ignored)."""
    if ns.resources:
        try:
            if ns.resources == "-":
                data = jsonio.loads(sys.stdin.buffer.read())
            else:
                with open(ns.resources, "rb") as f:
                    data = jsonio.loads(f.read())
        except OSError as e:
            raise UsageError(f"--resources {ns.resources}: {e.strerror or e}") from None
        except ValueError as e:
            raise UsageError(f"--resources {ns.resources}: invalid JSON: {e}") from None
        if not isinstance(data, dict):
            raise UsageError(f"--resources {ns.resources}: expected a JSON object")
        return data
    if ns.l3_cache_schema or ns.mem_bw_schema:
        raise HostUnsupported("Intel RDT (--l3-cache-schema, --mem-bw-schema) is not supported")
    res: dict = {}

    def put(section: str, key: str, value: object) -> None:
        if value is not None:
            res.setdefault(section, {})[key] = value

    for flag, key in (("memory", "limit"), ("memory_reservation", "reservation"), ("memory_swap", "swap")):
        put("memory", key, _memory_value(flag, getattr(ns, flag)))
    put("cpu", "shares", ns.cpu_shares)
    put("cpu", "quota", ns.cpu_quota)
    put("cpu", "period", ns.cpu_period)
    put("cpu", "realtimeRuntime", ns.cpu_rt_runtime)
    put("cpu", "realtimePeriod", ns.cpu_rt_period)
    put("cpu", "cpus", ns.cpuset_cpus)
    put("cpu", "mems", ns.cpuset_mems)
    put("blockIO", "weight", ns.blkio_weight)
    put("pids", "limit", ns.pids_limit)
    return res


def _memory_value(flag: str, value: str | None) -> int | None:
    """runc: "-1" means unlimited, anything else goes through RAMInBytes ("512m", "1g", "4096")."""
    if value is None or value == "":
        return None
    if value == "-1":
        return -1
    from corert.spec.units import parse_size

    try:
        return parse_size(value)
    except UsageError as e:
        raise UsageError(f"invalid value for {flag.replace('_', '-')}: {e}") from None
