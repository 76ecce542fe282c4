"""Network drivers (issue 7): start latency per driver, and container -> host throughput over a published port.

- network-start: `corert --root R run --rm --net=D busybox true`, one cold CLI process per round. none,
  host, bridge as root; none, slirp, pasta rootless, as an unprivileged user made for the module through
  `runuser` (its wrapper alone is measured too, so it can be told apart from the driver's cost).
- network-throughput: a container serves PAYLOAD_MIB of zeros (`dd if=/dev/zero | nc -l -p 8000`) on a
  published port; one round is the host connecting to 127.0.0.1:PORT with a Python socket and reading it
  to EOF. Over the bridge (root, DNAT on loopback) and over slirp4netns (rootless, `--net=slirp -p`), next
  to the same busybox nc served straight on the host's loopback (what nc itself can do). extra_info holds
  MiB/s of the median round. Starting the server and waiting until it listens is untimed setup.

Traffic only on 127.0.0.1 and the bridge. /dev/net/tun is opened (0666) for the module and put back;
containers are removed, `corert network prune` runs at the end, the user is deleted. Nothing asserts a time.
"""
from __future__ import annotations

import os
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Callable

import pytest

from bundles import CORERT, ROUNDS, settle
from support import BUSYBOX, make_test_user, remove_test_user, user_runtime_dir, wait_for

ROOT_DRIVERS = ["none", "host", "bridge"]
ROOTLESS_DRIVERS = ["none", "slirp", "pasta"]
USER = "corert-benchnet"
USER_SUBIDS = "700000:65536"
TUN = "/dev/net/tun"
PAYLOAD_MIB = int(os.environ.get("BENCH_NET_MIB", "200"))
PAYLOAD = PAYLOAD_MIB << 20
# Each throughput round moves PAYLOAD_MIB and needs a fresh server container: fewer rounds than latency.
TP_ROUNDS = int(os.environ.get("BENCH_NET_ROUNDS", str(min(ROUNDS, 10))))
CTR_PORT = 8000
PORTS = {"bridge": 18181, "slirp": 18182, "loopback": 18183}
# {bb}: "" in the container (busybox applets on PATH), "busybox " on the host.
SERVER = "{bb}dd if=/dev/zero bs=1M count={mib} 2>/dev/null | {bb}nc -l -p {port}"
SERVER_NAME = "bench-net-tp"
PROC_TCP = ("/proc/net/tcp", "/proc/net/tcp6")

Argv = Callable[..., list[str]]


def _note(benchmark, label: str, runtime: str, **extra) -> None:
    benchmark.extra_info.update(label=label, runtime=runtime, loadavg=os.getloadavg()[0], **extra)


def _run(argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    # Files, not pipes: a detached container inherits stdout/stderr (see support.Cli).
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        rc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, timeout=timeout).returncode
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(argv, rc, out.read().decode(errors="replace"),
                                           err.read().decode(errors="replace"))


def _ok(argv: list[str]) -> str:
    r = _run(argv)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {r.returncode}: {r.stderr.strip()}")
    return r.stdout


# ---- fixtures ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def _prune_at_end():
    """The bridge stays between containers (like docker0): remove it, its NAT table and leases at the end."""
    yield
    _ok([CORERT, "network", "prune"])


@pytest.fixture(scope="module")
def root_cli(tmp_path_factory) -> Argv:
    state = str(tmp_path_factory.mktemp("netbench") / "state")
    return lambda *a: [CORERT, "--root", state, *a]


@pytest.fixture
def tun_open() -> Callable[[], None]:
    """/dev/net/tun as many hosts ship it (0666) for one rootless benchmark, put back afterwards. Yields
    the setup for its rounds: other jobs on a shared machine may restore the mode meanwhile, so each round
    opens it again (untimed) before it starts."""
    mode = os.stat(TUN).st_mode & 0o777

    def reopen() -> None:
        if os.stat(TUN).st_mode & 0o777 != 0o666:
            os.chmod(TUN, 0o666)
        settle()

    reopen()
    yield reopen
    os.chmod(TUN, mode)


@pytest.fixture(scope="module")
def user_cli() -> Argv:
    """argv builder running the installed corert as a fresh unprivileged user (runuser, private --root).
    Teardown removes its containers, sweeps its slirp4netns/pasta helpers and deletes the user."""
    entry = make_test_user(USER, USER_SUBIDS)
    runtime = user_runtime_dir(entry.pw_uid)
    os.makedirs(runtime, mode=0o700, exist_ok=True)
    os.chown(runtime, entry.pw_uid, entry.pw_gid)
    env = ["PATH=/usr/bin:/bin", f"HOME={entry.pw_dir}", f"USER={USER}", f"XDG_RUNTIME_DIR={runtime}"]
    wrap = ["runuser", "-u", USER, "--", "env", *env]
    cli: Argv = lambda *a: [*wrap, CORERT, "--root", f"{runtime}/state", *a]   # noqa: E731
    cli.wrapper = wrap  # type: ignore[attr-defined]
    try:
        _ok(cli("run", "--rm", "busybox", "true"))   # untimed: the user's image store gets busybox
        yield cli
    finally:
        for name in _run(cli("ps", "-aq")).stdout.split():
            _run(cli("rm", "-f", name))
        _run(cli("network", "prune"))
        remove_test_user(USER)


# ---- start latency -----------------------------------------------------------------------------------------
@pytest.mark.benchmark(group="network-start")
@pytest.mark.parametrize("driver", ROOT_DRIVERS)
def test_start_root(benchmark, driver: str, root_cli: Argv, runner) -> None:
    """`corert run --rm --net=D busybox true` as root."""
    _note(benchmark, f"--net={driver} (root)", "corert", driver=driver, rootless=False)
    benchmark.pedantic(runner, args=(root_cli("run", "--rm", f"--net={driver}", "busybox", "true"),),
                       setup=settle, rounds=ROUNDS, warmup_rounds=2)


@pytest.mark.benchmark(group="network-start")
@pytest.mark.parametrize("driver", ROOTLESS_DRIVERS)
def test_start_rootless(benchmark, driver: str, user_cli: Argv, tun_open, runner) -> None:
    """The same as an unprivileged user (through runuser; see test_runuser_wrapper)."""
    _note(benchmark, f"--net={driver} (rootless)", "corert", driver=driver, rootless=True)
    benchmark.pedantic(runner, args=(user_cli("run", "--rm", f"--net={driver}", "busybox", "true"),),
                       setup=tun_open, rounds=ROUNDS, warmup_rounds=2)


@pytest.mark.benchmark(group="network-start")
def test_runuser_wrapper(benchmark, user_cli: Argv, runner) -> None:
    """`runuser -u USER -- env ... true` alone: part of every rootless round above."""
    _note(benchmark, "runuser wrapper alone (rootless overhead)", "wrapper", rootless=True)
    benchmark.pedantic(runner, args=([*user_cli.wrapper, "true"],), setup=settle, rounds=ROUNDS,
                       warmup_rounds=2)


# ---- throughput --------------------------------------------------------------------------------------------
def _listening(proc_net_tcp: str, port: int) -> bool:
    """A LISTEN (state 0A) socket on port in /proc/net/tcp{,6} text (busybox nc listens on [::])."""
    for line in proc_net_tcp.splitlines():
        fields = line.split()
        if len(fields) > 3 and fields[1].endswith(f":{port:04X}") and fields[3] == "0A":
            return True
    return False


def read_all(port: int) -> int:
    """One timed round: connect to 127.0.0.1:port and read to EOF. Returns the byte count."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        total = 0
        while n := s.recv_into(view):
            total += n
    if total != PAYLOAD:
        raise RuntimeError(f"127.0.0.1:{port}: read {total} bytes, expected {PAYLOAD}")
    return total


def _throughput(benchmark) -> None:
    """MiB/s of the median round (pytest-benchmark fills stats after the run; none with --benchmark-disable)."""
    if benchmark.stats is None:
        return
    benchmark.extra_info.update(mib_per_s=round(PAYLOAD_MIB / benchmark.stats.stats.median, 1),
                                payload_mib=PAYLOAD_MIB)


class ContainerServer:
    """setup() for pedantic: a fresh detached server container on a published port, listening when it
    returns (checked in its own network namespace, untimed). close() removes it."""

    def __init__(self, cli: Argv, net: str, port: int, before: Callable[[], None] | None = None) -> None:
        self.cli, self.net, self.port, self.before = cli, net, port, before or (lambda: None)

    def __call__(self) -> None:
        self.close()
        self.before()
        _ok(self.cli("run", "-d", "--name", SERVER_NAME, f"--net={self.net}", "-p", f"{self.port}:{CTR_PORT}",
                     "busybox", "sh", "-c", SERVER.format(bb="", mib=PAYLOAD_MIB, port=CTR_PORT)))
        wait_for(lambda: _listening(_run(self.cli("exec", SERVER_NAME, "cat", *PROC_TCP)).stdout, CTR_PORT),
                 f"nc in container {SERVER_NAME}")
        settle()

    def close(self) -> None:
        _run(self.cli("rm", "-f", SERVER_NAME))


@pytest.mark.benchmark(group="network-throughput")
def test_throughput_bridge(benchmark, root_cli: Argv) -> None:
    """Container -> host over the bridge: published port (DNAT on 127.0.0.1), veth, corert0."""
    _container_throughput(benchmark, root_cli, "bridge", f"bridge, -p (root), {PAYLOAD_MIB} MiB")


@pytest.mark.benchmark(group="network-throughput")
def test_throughput_slirp(benchmark, user_cli: Argv, tun_open) -> None:
    """Container -> host over slirp4netns: its port forwarder on the host, user-mode TCP into the tap."""
    _container_throughput(benchmark, user_cli, "slirp", f"slirp4netns, -p (rootless), {PAYLOAD_MIB} MiB",
                          before=tun_open)


def _container_throughput(benchmark, cli: Argv, driver: str, label: str, before=None) -> None:
    """Read the container's payload from 127.0.0.1 through a published port; the server is restarted
    (untimed) before every round."""
    _note(benchmark, label, "corert", driver=driver)
    server = ContainerServer(cli, driver, PORTS[driver], before=before)
    try:
        benchmark.pedantic(read_all, args=(PORTS[driver],), setup=server, rounds=TP_ROUNDS, warmup_rounds=1)
    finally:
        server.close()
    _throughput(benchmark)


@pytest.mark.benchmark(group="network-throughput")
def test_throughput_loopback_reference(benchmark) -> None:
    """The same busybox dd | nc on the host's loopback, no container: the ceiling of the server itself."""
    _note(benchmark, f"host loopback, no container (reference), {PAYLOAD_MIB} MiB", "reference",
          driver="loopback")
    port = PORTS["loopback"]
    procs: list[subprocess.Popen] = []

    def serve() -> None:
        for p in procs:
            p.wait(30)
        procs.clear()
        server = SERVER.format(bb=f"{BUSYBOX} ", mib=PAYLOAD_MIB, port=port)
        procs.append(subprocess.Popen([BUSYBOX, "sh", "-c", server], stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL))
        wait_for(lambda: _listening("".join(Path(p).read_text() for p in PROC_TCP), port), "nc on the host")
        settle()

    try:
        benchmark.pedantic(read_all, args=(port,), setup=serve, rounds=TP_ROUNDS, warmup_rounds=1)
    finally:
        for p in procs:
            p.kill()
            p.wait()
    _throughput(benchmark)
