"""`corert stats`: docker's table (and a PSI table), JSON lines, and the sampling loop behind them.

The numbers come from corert.engine.stats.read_stats; this module picks the containers, turns two samples
into a frame of rates, and formats it. Writing the frames out is the CLI's (corert.cli.front).
"""
from __future__ import annotations

import time
from collections.abc import Iterator

from corert.engine.state import ContainerRecord, StateStore, live_status
from corert.engine.stats import LIVE, HostSample, Reading, read_stats

_BINARY = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
_DECIMAL = ("B", "kB", "MB", "GB", "TB", "PB")


def _size(value: float, base: float, units: tuple[str, ...], digits: int) -> str:
    i = 0
    while value >= base and i < len(units) - 1:
        value /= base
        i += 1
    return f"{value:.{digits}g}{units[i]}"


def binary_size(value: float) -> str:
    """docker's memory sizes: "1.234MiB"."""
    return _size(value, 1024.0, _BINARY, 4)


def decimal_size(value: float) -> str:
    """docker's network and block I/O sizes: "1.02kB"."""
    return _size(value, 1000.0, _DECIMAL, 3)


def _pair(a: int | None, b: int | None, fmt) -> str:
    return "--" if a is None or b is None else f"{fmt(a)} / {fmt(b)}"


def _psi_cell(pressure: dict, resource: str, kind: str) -> str:
    entry = (pressure.get(resource) or {}).get(kind)
    if not entry:
        return "--"
    return "/".join(f"{entry.get(k, 0.0):.2f}" for k in ("avg10", "avg60", "avg300"))


def tables(rows: list[dict], host_pressure: dict) -> tuple[list[list[str]], list[list[str]]]:
    """The cells of docker's `stats` table, and of the pressure of each container and of the host
    (avg10/avg60/avg300 %); header rows first."""
    main = [["CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "NET I/O", "BLOCK I/O", "PIDS"]]
    for r in rows:
        main.append([r["id"][:12], r["name"], f"{r['cpu_percent']:.2f}%",
                     _pair(r["mem_usage"], r["mem_limit"], binary_size), f"{r['mem_percent']:.2f}%",
                     _pair(r["net_rx_bytes"], r["net_tx_bytes"], decimal_size),
                     _pair(r["block_read_bytes"], r["block_write_bytes"], decimal_size), str(r["pids_current"])])
    kinds = [(res, kind) for res in ("cpu", "memory", "io") for kind in ("some", "full")]
    header = ["PSI avg10/60/300 %"] + [f"{'MEM' if res == 'memory' else res.upper()} {kind.upper()}"
                                       for res, kind in kinds]
    psi_rows = [header] + [[r["name"]] + [_psi_cell(r["pressure"], res, kind) for res, kind in kinds] for r in rows]
    psi_rows.append(["(host)"] + [_psi_cell(host_pressure, res, kind) for res, kind in kinds])
    return main, psi_rows


def format_json(rows: list[dict]) -> str:
    """One JSON object per container and line (the dict read_stats returns), as docker's --format json."""
    import json

    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)


def frames(store: StateStore, refs: list[str], *, all_containers: bool = False, stream: bool = True,
           interval: float = 1.0) -> Iterator[tuple[list[dict], dict]]:
    """Sample every container (named ones, else the running managed ones, or all with all_containers),
    wait `interval`, yield a frame (read_stats rows with the rates over it, the host's pressure); repeat
    while `stream`. An unknown name fails before the first frame."""
    from corert.frontend.containers import find

    named = [find(store, ref) for ref in refs]
    previous: dict[str, Reading] = {}

    def records() -> list[ContainerRecord]:
        if named:
            return [_reload(store, r) for r in named]
        found = [r for r in store.list() if r.extra.get("managed")]
        return found if all_containers else [r for r in found if live_status(store, r) in LIVE]

    host = HostSample()
    for r in records():
        previous[r.id] = read_stats(store, r, host=host)[1]
    while True:
        time.sleep(interval)
        host = HostSample()
        rows = []
        for r in records():
            row, previous[r.id] = read_stats(store, r, previous.get(r.id), host)
            rows.append(row)
        yield rows, host.pressure
        if not stream:
            return


def _reload(store: StateStore, record: ContainerRecord) -> ContainerRecord:
    """The record as stored now (a removed container keeps its last record, shown as stopped)."""
    from corert.errors import ContainerNotFound

    try:
        return store.load(record.id)
    except ContainerNotFound:
        record.status = "stopped"
        return record
