"""Where the milliseconds of one `corert run --bundle B ID` go: a phase breakdown over fresh processes.

    .venv/bin/python benchmarks/phases.py [--rounds N] [--json OUT] [BUNDLE]

Each round starts a new interpreter the way the installed `corert` launcher starts one (`python -I -S`,
corert's site-packages appended to sys.path: corert/cli/launcher.py) that imports the modules the OCI
`run` path needs, then calls corert.cli.main() with timing wrappers around the engine's steps.
Every clock here is CLOCK_MONOTONIC (time.perf_counter_ns, and the fast path's own child timestamps), so
the parent's spawn/exit times and the child's steps line up. Times are exclusive (a step's nested steps
are not counted twice); "python glue" is whatever the wrapped steps do not cover. Prints a markdown table
of medians; --json writes them for report.py.
"""
from __future__ import annotations

# Only what corert's own hot path imports at the top: the timed child imports this module too, and its
# start-up is measured (json, pathlib and the like are imported inside the parent's functions).
import os
import sys
import time

PY = sys.executable
HERE = os.path.dirname(os.path.abspath(__file__))
# As the installed launcher starts the CLI: no `site`, the install's site-packages appended.
LAUNCH = [PY, "-I", "-S"]


def _prelude() -> str:
    """What the installed launcher runs first: site-packages on sys.path and its code bundle's finder
    (parent side only: the launcher module is not something the CLI imports)."""
    from corert.cli.launcher import BUNDLE_SUFFIX, prelude, site_paths

    bundle = os.path.join(sys.prefix, "bin", "corert") + BUNDLE_SUFFIX
    return prelude(bundle if os.path.exists(bundle) else None, site_paths())
ID = "corert-phases"

# (label, module, attribute path): wrapped in the child; order is the order of the table.
WRAPPED = [
    ("argv parsing", "corert.cli.parse", "parse_verb"),
    ("config.json load + validate", "corert.spec.load", "load_and_validate"),
    ("state dir reserve (mkdir)", "corert.engine.state", "StateStore.reserve"),
    ("state.json writes (write, rename)", "corert.engine.state", "StateStore.save"),
    ("cgroup create (v1: mkdir x hierarchies)", "corert.drivers.cgroups.v1", "V1Driver.create"),
    ("launch plan (compile_plan)", "corert.plan", "compile_plan"),
    ("clone3 (Launcher.spawn)", "corert._fastpath", "Launcher.spawn"),
    # No "cgroup attach" row: the child places itself (writes "0" to each v1 `tasks`, or clone3 puts it in
    # the v2 cgroup); that is part of "child: clone -> go" below.
    ("child setup: namespaces, mounts, pivot (parent waits)", "corert._fastpath", "Launcher.wait_stage"),
    ("start: exec fifo handshake", "corert.engine.control", "start"),
    ("/bin/true runs and exits (waitpid)", "os", "waitpid"),
    ("delete: cgroup rmdir, state dir", "corert.engine.delete", "delete"),
]
SPAWN = "python start (exec + interpreter, -I -S as the launcher)"
PRELUDE = "launcher prelude (sys.path, code bundle finder)"
IMPORTS = "imports (corert CLI + engine + stdlib)"
GLUE = "python glue (unwrapped)"
EXIT = "python exit"
# The timed child: START is its first line, before the launcher's prelude (a row of its own: SPAWN then
# matches the `python -I -S -c pass` reference, which has none); CHILD follows the prelude. This module
# comes from its cached .pyc, as an installed corert would.
START = "import time; t_start = time.perf_counter_ns()\n"
CHILD = """t_main = time.perf_counter_ns()
import sys; sys.path.insert(0, sys.argv[1])
import phases; phases._child(t_start, t_main, sys.argv[2], sys.argv[3], [m for m in sys.argv[4].split(",") if m])
"""


# ---- child: one `run`, timed ---------------------------------------------------------------------------
def _child(t_start: int, t_main: int, bundle: str, root: str, modules: list[str]) -> None:
    import importlib

    for name in modules:
        importlib.import_module(name)
    # From the child's first line (this module's own imports are ones corert makes anyway).
    t_imports = time.perf_counter_ns() - t_main

    inclusive: dict[str, int] = {}
    nested: dict[str, int] = {}
    stack: list[str] = []

    def timed(label: str, fn):
        def wrapper(*a, **kw):
            stack.append(label)
            start = time.perf_counter_ns()
            try:
                return fn(*a, **kw)
            finally:
                dt = time.perf_counter_ns() - start
                stack.pop()
                inclusive[label] = inclusive.get(label, 0) + dt
                if stack:
                    nested[stack[-1]] = nested.get(stack[-1], 0) + dt
        return wrapper

    stamps: dict[str, int] = {}
    for label, module, attr in WRAPPED:
        owner = importlib.import_module(module)
        *path, name = attr.split(".")
        for part in path:
            owner = getattr(owner, part)
        if module == "corert._fastpath":
            continue   # an extension type: wrapped by subclassing below
        setattr(owner, name, timed(label, getattr(owner, name)))

    from corert import _fastpath

    labels = {attr: label for label, module, attr in WRAPPED if module == "corert._fastpath"}

    class TimedLauncher(_fastpath.Launcher):
        spawn = timed(labels["Launcher.spawn"], _fastpath.Launcher.spawn)
        _wait = timed(labels["Launcher.wait_stage"], _fastpath.Launcher.wait_stage)

        def wait_stage(self):
            result = self._wait()
            stamps.update(self.timestamps())
            return result

    _fastpath.Launcher = TimedLauncher
    from corert.cli import main

    code = main(["--root", root, "run", "--bundle", bundle, ID])
    t_end = time.perf_counter_ns()
    exclusive = {k: v - nested.get(k, 0) for k, v in inclusive.items()}
    print(repr({"code": code, "t_start": t_start, "t_main": t_main, "t_end": t_end, "imports": t_imports,
                "phases": exclusive, "stamps": stamps}))
    sys.stdout.flush()
    os._exit(0)   # as corert.cli.console_main leaves: no interpreter teardown


# ---- parent: rounds, medians, table --------------------------------------------------------------------
def _discover(bundle: str, root: str) -> list[str]:
    """The modules one `run` imports (in import order), so the timed children can import them up front."""
    import subprocess

    code = _prelude() + ("import sys; before = set(sys.modules); from corert.cli import main; "
            f"main(['--root', {root!r}, 'run', '--bundle', {bundle!r}, {ID!r}]); "
            "print('\\n'.join(m for m in sys.modules if m not in before "
            "and getattr(sys.modules[m], '__spec__', None) is not None))")   # not e.g. cython_runtime
    # cwd=/: `python -c` puts the cwd first on sys.path, and a source checkout there would shadow the
    # installed corert (which is what gets measured).
    out = subprocess.run([*LAUNCH, "-c", code], capture_output=True, text=True, check=True, cwd="/").stdout
    return [m for m in out.split() if m and m != "__main__"]


def _round(bundle: str, root: str, modules: list[str]) -> dict[str, float]:
    import ast
    import subprocess

    argv = [*LAUNCH, "-c", START + _prelude() + CHILD, HERE, bundle, root, ",".join(modules)]
    t_spawn = time.perf_counter_ns()   # SPAWN also holds compiling the -c source (the prelude's finder)
    p = subprocess.run(argv, capture_output=True, text=True, cwd="/")
    t_exit = time.perf_counter_ns()
    if p.returncode != 0:
        raise SystemExit(f"phases child failed ({p.returncode}): {p.stderr.strip()}")
    data = ast.literal_eval(p.stdout.strip().splitlines()[-1])
    if data["code"] != 0:
        raise SystemExit(f"corert run exited {data['code']}: {p.stderr.strip()}")
    ms = {SPAWN: (data["t_start"] - t_spawn) / 1e6, PRELUDE: (data["t_main"] - data["t_start"]) / 1e6,
          IMPORTS: data["imports"] / 1e6}
    for label, _module, _attr in WRAPPED:
        ms[label] = data["phases"].get(label, 0) / 1e6
    body = (data["t_end"] - data["t_main"]) / 1e6
    ms[GLUE] = body - sum(v for k, v in ms.items() if k not in (SPAWN, PRELUDE))   # both before t_main
    ms[EXIT] = (t_exit - data["t_end"]) / 1e6
    ms["total"] = (t_exit - t_spawn) / 1e6
    stamps = data["stamps"]
    if "cloned" in stamps and "ready" in stamps:
        ms["child: clone -> go (waits for the parent)"] = (stamps["go"] - stamps["cloned"]) / 1e6
        ms["child: go -> ready (namespaces, mounts, pivot, setup)"] = (stamps["ready"] - stamps["go"]) / 1e6
    return ms


def _python_floor(rounds: int) -> float:
    """Median of `python -I -S -c pass`: what any CLI started as corert's launcher pays before its first line."""
    import statistics
    import subprocess

    times = []
    for _ in range(rounds):
        t = time.perf_counter_ns()
        subprocess.run([*LAUNCH, "-c", "pass"], check=True, cwd="/")
        times.append((time.perf_counter_ns() - t) / 1e6)
    return statistics.median(times)


def measure(bundle: str, rounds: int) -> dict:
    import statistics
    import tempfile

    with tempfile.TemporaryDirectory(prefix="corert-phases-") as root:
        modules = _discover(bundle, root)
        samples = [_round(bundle, root, modules) for _ in range(rounds)]
    keys = list(dict.fromkeys(k for s in samples for k in s))
    medians = {k: statistics.median(s.get(k, 0.0) for s in samples) for k in keys}
    return {"rounds": rounds, "medians_ms": medians, "python_c_pass_ms": _python_floor(rounds),
            "modules_imported": len(modules), "verbs_ms": measure_verbs(bundle, rounds),
            "imports": import_profile(bundle, min(rounds, 5))}


def import_profile(bundle: str, rounds: int, top: int = 14) -> list[dict]:
    """`python -X importtime` of one `run` (median over rounds): the modules with the most self time,
    with their cumulative time and the module that imported them. importtime's own overhead inflates
    these numbers by roughly a third; they rank the costs, the phase table measures them."""
    import re
    import statistics
    import subprocess
    import tempfile

    line_re = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")
    runs: list[dict[str, tuple[int, int, str]]] = []
    with tempfile.TemporaryDirectory(prefix="corert-importtime-") as root:
        code = _prelude() + f"from corert.cli import main; main(['--root', {root!r}, 'run', '--bundle', {bundle!r}, {ID!r}])"
        for _ in range(rounds):
            err = subprocess.run([*LAUNCH, "-X", "importtime", "-c", code], capture_output=True, text=True,
                                 cwd="/").stderr
            rows = [(m.group(4), int(m.group(1)), int(m.group(2)), len(m.group(3)))
                    for m in map(line_re.match, err.splitlines()) if m]
            found = {}
            for i, (name, self_us, cum_us, depth) in enumerate(rows):
                # importtime prints children before their parent, one indent deeper
                parent = next((r[0] for r in rows[i + 1:] if r[3] < depth), "")
                found[name] = (self_us, cum_us, parent)
            runs.append(found)
    names = [n for n in runs[0] if all(n in r for r in runs)]
    stats = [{"module": n, "self_ms": statistics.median(r[n][0] for r in runs) / 1e3,
              "cumulative_ms": statistics.median(r[n][1] for r in runs) / 1e3, "imported_by": runs[0][n][2]}
             for n in names]
    stats.sort(key=lambda x: -x["self_ms"])
    return stats[:top] + [{"module": "(all modules)", "self_ms": sum(x["self_ms"] for x in stats),
                           "cumulative_ms": 0.0, "imported_by": f"{len(stats)} modules"}]


def imports_table(result: dict) -> str:
    rows = result.get("imports")
    if not rows:
        return ""
    lines = ["| module (python -X importtime, `run`) | self ms | cumulative ms | imported by |",
             "|---|---:|---:|---|"]
    for r in rows:
        cum = f"{r['cumulative_ms']:.2f}" if r["cumulative_ms"] else ""
        by = r["imported_by"] or "top level (interpreter start-up, or a function-level import)"
        lines.append(f"| {r['module']} | {r['self_ms']:.2f} | {cum} | {by} |")
    return "\n".join(lines)


VERBS = ("create", "state", "start", "delete")


def measure_verbs(bundle: str, rounds: int) -> dict[str, dict[str, float]]:
    """Median wall time of each OCI verb as its own cold process (what an engine pays per call), corert
    vs runc, with a pause between rounds so each create pays the same cgroup placement cost."""
    import statistics
    import subprocess
    import tempfile

    sys.path.insert(0, HERE)
    from bundles import CORERT, GAP_S, RUNC

    times: dict[str, dict[str, list[float]]] = {"corert": {}, "runc": {}}
    with tempfile.TemporaryDirectory(prefix="corert-verbs-") as root:
        for _ in range(rounds):
            for runtime, binary in (("corert", CORERT), ("runc", RUNC)):
                time.sleep(GAP_S)
                for verb in VERBS:
                    args = {"create": ["create", "--bundle", bundle, ID], "delete": ["delete", "--force", ID]}
                    argv = [binary, "--root", f"{root}/{runtime}", *args.get(verb, [verb, ID])]
                    t = time.perf_counter_ns()
                    p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.PIPE if verb != "create" else subprocess.DEVNULL)
                    times[runtime].setdefault(verb, []).append((time.perf_counter_ns() - t) / 1e6)
                    if p.returncode != 0:
                        raise SystemExit(f"{' '.join(argv)} exited {p.returncode}: {p.stderr or ''}")
    return {rt: {verb: statistics.median(v) for verb, v in per.items()} for rt, per in times.items()}


def verbs_table(result: dict) -> str:
    verbs = result.get("verbs_ms")
    if not verbs:
        return ""
    lines = ["| OCI verb, one cold process each | corert ms | runc ms | corert / runc |", "|---|---:|---:|---:|"]
    for verb in VERBS:
        c, r = verbs["corert"].get(verb), verbs["runc"].get(verb)
        if c is not None and r:
            lines.append(f"| `{verb}` | {c:.2f} | {r:.2f} | {c / r:.1f} |")
    return "\n".join(lines)


def table(result: dict) -> str:
    med = result["medians_ms"]
    total = med["total"]
    lines = ["| phase of `corert run --bundle B ID` | median ms | share |", "|---|---:|---:|"]
    for k, v in med.items():
        if k == "total" or k.startswith("child:"):
            continue
        lines.append(f"| {k} | {v:.2f} | {100 * v / total:.0f}% |")
    lines.append(f"| **total (wall, fresh process)** | **{total:.2f}** | |")
    for k, v in med.items():
        if k.startswith("child:"):
            lines.append(f"| {k} (fast path timestamps, overlaps the above) | {v:.2f} | |")
    lines.append(f"| reference: `python -I -S -c pass` | {result['python_c_pass_ms']:.2f} | |")
    return "\n".join(lines)


def main() -> None:
    import argparse
    import json
    import tempfile
    from pathlib import Path

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("bundle", nargs="?", help="an OCI bundle (default: build the benchmark bundle)")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--json", help="write the medians here")
    ns = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="corert-phases-bundle-") as tmp:
        bundle = ns.bundle
        if bundle is None:
            sys.path.insert(0, HERE)
            from bundles import make_bundle
            bundle = str(make_bundle(Path(tmp) / "bundle"))
        result = measure(os.path.abspath(bundle), ns.rounds)
    print(table(result))
    print()
    print(verbs_table(result))
    print()
    print(imports_table(result))
    if ns.json:
        Path(ns.json).parent.mkdir(parents=True, exist_ok=True)
        Path(ns.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
