"""What the benchmarks run: one busybox bundle (`corert spec` defaults, /bin/true), the C floor, the commands.

The rootfs comes from the tests' own builder (tests/support.py), so the benchmarks measure exactly the
bundle the integration tests use.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
if str(REPO / "tests") not in sys.path:
    sys.path.insert(0, str(REPO / "tests"))   # reuse tests/support.py rather than copying it

from support import CORERT, make_busybox_rootfs, read_config, write_config  # noqa: E402

RUNC = "/usr/sbin/runc"
CRUN = "/usr/bin/crun"
# crun 1.8.1 (Debian 12) refuses ociVersion 1.2.0 ("unknown version specified"); every runtime here
# accepts 1.0.2, and nothing else in the config depends on the version string.
BENCH_OCI_VERSION = "1.0.2"
# On this hybrid host crun sees the empty cgroup2 at /sys/fs/cgroup/unified and picks the wrong mode;
# it runs in a private mount namespace with that mount removed. UNSHARE_NOOP is that wrapper alone, so
# its cost can be subtracted from crun's numbers.
UNSHARE_NOOP = ["unshare", "-m", "sh", "-c", "umount /sys/fs/cgroup/unified; exec true"]


def make_bundle(dest: Path) -> Path:
    """dest/config.json (`corert spec`, args /bin/true, no terminal) + dest/rootfs (busybox)."""
    dest.mkdir(parents=True, exist_ok=True)
    make_busybox_rootfs(dest / "rootfs")
    subprocess.run([CORERT, "spec", "--bundle", str(dest)], check=True)
    config = read_config(dest)
    config["ociVersion"] = BENCH_OCI_VERSION
    config["process"]["args"] = ["/bin/true"]
    config["process"]["terminal"] = False
    write_config(dest, config)
    return dest


def compile_floor(dest_dir: Path) -> Path:
    """gcc benchmarks/floor.c -> dest_dir/floor."""
    binary = dest_dir / "floor"
    subprocess.run(["gcc", "-O2", "-Wall", "-o", str(binary), str(BENCH_DIR / "floor.c")], check=True)
    return binary


def crun_argv(*args: str) -> list[str]:
    """crun ARGS... inside `unshare -m` with the hybrid host's cgroup2 mount removed."""
    cmd = " ".join(shlex.quote(a) for a in (CRUN, *args))
    return ["unshare", "-m", "sh", "-c", f"umount /sys/fs/cgroup/unified && exec {cmd}"]


# Rounds per start-latency benchmark; BENCH_ROUNDS=3 gives a quick smoke run.
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "30"))
# Untimed pause before each round. Moving a process into a v1 cgroup costs an RCU grace period (~9 ms
# here) unless another move happened in the last ~20-50 ms, so back-to-back rounds of a fast runtime
# would get cheaper cgroup placement than a slow one's. With the pause every runtime pays it, as a
# single `docker run` does. BENCH_GAP_MS=0 measures back-to-back starts instead.
GAP_S = float(os.environ.get("BENCH_GAP_MS", "100")) / 1000


def settle() -> None:
    """pedantic(setup=settle): the untimed pause before a round."""
    time.sleep(GAP_S)


def interleaved(benchmark, calls: dict, rounds: int = ROUNDS) -> None:
    """One benchmark round runs every call of `calls` (name -> no-argument callable) once, each after an
    untimed settle(), in an order that rotates every round: the machine's slow drifts (this VM's speed
    moves 20-30% over minutes) then fall on every runtime alike, where separate benchmarks, one runtime
    after the other, catch them at different moments. The benchmark's own time is the whole round; the
    per-call medians and quartiles (ms) go to extra_info["interleaved"] for report.py's ratios."""
    import statistics

    names = list(calls)
    times: dict[str, list[float]] = {n: [] for n in names}
    done = [0]

    def one_round() -> None:
        k = done[0] % len(names)
        for name in names[k:] + names[:k]:
            settle()
            t = time.perf_counter()
            calls[name]()
            if done[0] > 0:   # the first call of one_round is pedantic's warm-up round
                times[name].append((time.perf_counter() - t) * 1e3)
        done[0] += 1

    benchmark.pedantic(one_round, rounds=rounds, warmup_rounds=1)
    benchmark.extra_info["interleaved"] = {
        n: {"median": statistics.median(v), "q1": statistics.quantiles(v, n=4)[0] if len(v) > 1 else v[0],
            "q3": statistics.quantiles(v, n=4)[2] if len(v) > 1 else v[0], "rounds": len(v)}
        for n, v in times.items()}


class Runner:
    """Runs one command per call with stdio on /dev/null (stderr kept in a file for the error message).

    A file, not a pipe: a created container inherits stderr, and EOF on a pipe would wait for it.
    """

    def __init__(self) -> None:
        self._err = tempfile.TemporaryFile()

    def __call__(self, argv: list[str]) -> None:
        self._err.seek(0)
        self._err.truncate()
        rc = subprocess.call(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._err)
        if rc != 0:
            self._err.seek(0)
            raise RuntimeError(f"{' '.join(argv)} exited {rc}: {self._err.read().decode(errors='replace')}")

    def close(self) -> None:
        self._err.close()
