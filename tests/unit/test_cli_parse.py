"""The runc-compatible CLI: the argv engines really send parses into the right verb and flags; run/ps
dispatch between the OCI CLI and the front door; errors are one line, runc's exit code, runc's log line.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest

from corert.cli.log import Log
from corert.cli.output import go_json, tabwriter
from corert.cli.parse import is_oci_ps, is_oci_run, parse_verb, route, scan_globals
from corert.cli.query import parse_duration
from corert.errors import UsageError

REFERENCE = Path("/work/shared/reference/engine-argv")
CTR = "/tmp/ctrd/state/io.containerd.runtime.v2.task/default/k1"
USERDATA = "/run/containers/storage/overlay-containers/ID/userdata"

# Verbatim argv lines from the podman/containerd runc logs (<ID> -> ID).
ENGINE_ARGV = [
    # containerd
    f"--root /tmp/ctrd/runc/default --log {CTR}/log.json --log-format json create --bundle {CTR} "
    f"--pid-file {CTR}/init.pid k1",
    f"--root /tmp/ctrd/runc/default --log {CTR}/log.json --log-format json create --bundle {CTR} "
    f"--pid-file {CTR}/init.pid --console-socket /tmp/pty1186331908/pty.sock k1",
    f"--root /tmp/ctrd/runc/default --log {CTR}/log.json --log-format json start k1",
    f"--root /tmp/ctrd/runc/default --log {CTR}/log.json --log-format json delete --force k1",
    f"--root /tmp/ctrd/runc/default --log {CTR}/log.json --log-format json exec --process "
    f"/tmp/runc-process4255092110 --console-socket /tmp/pty3830770667/pty.sock --detach --pid-file {CTR}/e4.pid k1",
    f"--root /tmp/ctrd/runc/default --log {CTR}/log.json --log-format json ps --format json k1",
    f"--root /tmp/ctrd/runc/default --log {CTR}/log.json --log-format json pause k1",
    f"--root /tmp/ctrd/runc/default --log {CTR}/log.json --log-format json resume k1",
    f"--root /tmp/ctrd/runc/default --log {CTR}/log.json --log-format json kill k1 10",
    f"--root /tmp/ctrd/runc/default --log {CTR}/log.json --log-format json kill --all k1 9",
    # podman (conmon and podman itself)
    f"--log-format=json --log {USERDATA}/oci-log create --bundle /var/lib/x/userdata --pid-file {USERDATA}/pidfile ID",
    f"--log-format=json --log {USERDATA}/oci-log create --bundle /var/lib/x/userdata --pid-file "
    f"{USERDATA}/pidfile --console-socket /tmp/conmon-term.DQHJZ3 ID",
    "start ID",
    "delete --force ID",
    f"--log-format=json --log {USERDATA}/ID/oci-log exec --pid-file {USERDATA}/ID/exec_pid --process "
    f"{USERDATA}/ID/exec-process-819185683 --detach --tty --console-socket /tmp/conmon-term.VE0EZ3 ID",
    "kill ID 15",
    "kill --all ID 15",
    "update --resources=/var/tmp/podman2937043012 ID",
]


def parse(line: str):
    options, verb, rest = scan_globals(line.split())
    assert route(verb, rest) == "oci"
    return options, parse_verb(verb, rest)


def test_containerd_create() -> None:
    options, ns = parse(ENGINE_ARGV[0])
    assert (options.root, options.log, options.log_format) == ("/tmp/ctrd/runc/default", f"{CTR}/log.json", "json")
    assert (ns.verb, ns.container_id, ns.bundle, ns.pid_file) == ("create", "k1", CTR, f"{CTR}/init.pid")
    assert ns.console_socket is None and ns.preserve_fds is None and not ns.no_pivot
    _, ns = parse(ENGINE_ARGV[1])
    assert ns.console_socket == "/tmp/pty1186331908/pty.sock"


def test_log_format_both_spellings() -> None:
    for argv in (["--log-format=json", "state", "x"], ["--log-format", "json", "state", "x"],
                 ["-log-format=json", "state", "x"], ["-log-format", "json", "state", "x"]):
        options, verb, rest = scan_globals(argv)
        assert (options.log_format, verb, rest) == ("json", "state", ["x"])
    with pytest.raises(UsageError, match="invalid log-format: xml"):
        scan_globals(["--log-format", "xml", "list"])


def test_engine_exec_kill_update_ps() -> None:
    _, ns = parse(ENGINE_ARGV[4])
    assert (ns.verb, ns.process, ns.detach, ns.container_id, ns.command) == (
        "exec", "/tmp/runc-process4255092110", True, "k1", [])
    _, ns = parse(ENGINE_ARGV[14])
    assert ns.tty and ns.detach and ns.console_socket == "/tmp/conmon-term.VE0EZ3"
    assert ns.pid_file == f"{USERDATA}/ID/exec_pid"
    _, ns = parse(ENGINE_ARGV[5])
    assert (ns.verb, ns.format, ns.container_id, ns.ps_args) == ("ps", "json", "k1", [])
    _, ns = parse(ENGINE_ARGV[8])
    assert (ns.verb, ns.container_id, ns.signal, ns.all) == ("kill", "k1", "10", False)
    _, ns = parse(ENGINE_ARGV[9])
    assert (ns.container_id, ns.signal, ns.all) == ("k1", "9", True)
    _, ns = parse(ENGINE_ARGV[-1])
    assert (ns.verb, ns.resources, ns.container_id) == ("update", "/var/tmp/podman2937043012", "ID")
    _, ns = parse("delete --force ID")
    assert ns.force and ns.container_id == "ID"


@pytest.mark.parametrize("line", ENGINE_ARGV)
def test_every_engine_line_parses(line: str) -> None:
    options, ns = parse(line)
    assert ns.container_id in ("k1", "ID")


def _reference_lines() -> list[str]:
    lines = []
    if REFERENCE.is_dir():
        for log in sorted(REFERENCE.glob("*argv.log")):
            for line in log.read_text().splitlines():
                if " argv: " in line:
                    lines.append(line.split(" argv: ", 1)[1].replace("<ID>", "ID"))
    return lines


@pytest.mark.skipif(not REFERENCE.is_dir(), reason="engine argv reference logs not present")
def test_all_reference_argv_parse() -> None:
    lines = _reference_lines()
    assert len(lines) > 50
    for line in lines:
        options, verb, rest = scan_globals(line.split())
        ns = parse_verb(verb, rest)
        assert ns.container_id in ("k1", "k2", "k3", "k4", "ID"), line


def test_single_dash_long_forms_and_go_bools() -> None:
    options, verb, rest = scan_globals("-root /r -debug create -bundle /b -pid-file=/p c1".split())
    ns = parse_verb(verb, rest)
    assert (options.root, options.debug, ns.bundle, ns.pid_file, ns.container_id) == ("/r", True, "/b", "/p", "c1")
    assert parse_verb("run", ["--detach=true", "-b", "/b", "c"]).detach
    assert not parse_verb("run", ["--detach=false", "-b", "/b", "c"]).detach
    assert parse_verb("create", ["-b=/b", "c"]).bundle == "/b"
    with pytest.raises(UsageError, match="flag provided but not defined: -bogus"):
        scan_globals(["--bogus", "state", "x"])
    with pytest.raises(UsageError, match="flag needs an argument: -root"):
        scan_globals(["--root"])


def test_exec_and_ps_pass_the_tail_through() -> None:
    ns = parse_verb("exec", ["-t", "-e", "A=1", "--env=B=2", "c1", "ls", "-t", "--env", "-e"])
    assert ns.tty and ns.env == ["A=1", "B=2"] and ns.container_id == "c1"
    assert ns.command == ["ls", "-t", "--env", "-e"]
    ns = parse_verb("exec", ["-u", "1000:0", "--cwd", "/tmp", "--", "c1", "sh", "-c", "x"])
    assert (ns.user, ns.cwd, ns.container_id, ns.command) == ("1000:0", "/tmp", "c1", ["sh", "-c", "x"])
    ns = parse_verb("ps", ["c1", "-o", "pid,comm"])
    assert (ns.format, ns.container_id, ns.ps_args) == (None, "c1", ["-o", "pid,comm"])


def test_verb_errors() -> None:
    with pytest.raises(UsageError, match="state: the following arguments are required"):
        parse_verb("state", [])
    with pytest.raises(UsageError, match="unrecognized arguments"):
        parse_verb("state", ["a", "b"])
    with pytest.raises(UsageError, match="unknown command"):
        parse_verb("frobnicate", [])
    with pytest.raises(UsageError, match="invalid int value"):
        parse_verb("create", ["--preserve-fds", "x", "c"])
    assert parse_verb("ls", ["-q"]).verb == "list"
    assert parse_verb("kill", ["c"]).signal is None  # the CLI defaults it to SIGTERM


def test_is_oci_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert is_oci_run(["--bundle", "/b", "c1"])
    assert is_oci_run(["-b", "/b", "c1"])
    assert is_oci_run(["-bundle=/b", "c1"])
    assert not is_oci_run(["c1"])                         # no ./config.json: an image name
    (tmp_path / "config.json").write_text("{}")
    assert is_oci_run(["c1"])
    assert is_oci_run(["-d", "--pid-file", "/p", "c1"])
    assert not is_oci_run(["busybox", "echo", "hi"])      # two or more positionals: front door
    assert not is_oci_run(["--rm", "busybox"])            # a flag runc's run does not have
    assert not is_oci_run(["--storage=fuse", "busybox"])
    assert not is_oci_run([])
    assert route("run", ["busybox", "true"]) == "front"


def test_ps_and_front_door_routing() -> None:
    assert is_oci_ps(["c1"]) and is_oci_ps(["--format", "json", "c1"]) and is_oci_ps(["-f", "json", "c1"])
    assert not is_oci_ps([]) and not is_oci_ps(["-a"]) and not is_oci_ps(["--format", "json"])
    for verb in ("images", "image", "logs", "stop", "rm", "diff", "commit", "pull", "build", "stats"):
        assert route(verb, ["x"]) == "front"
    for verb in ("create", "start", "state", "kill", "delete", "exec", "list", "pause", "update", "events"):
        assert route(verb, ["x"]) == "oci"


def test_update_resources_from_flags() -> None:
    from corert.cli.control import build_resources

    ns = parse_verb("update", ["--memory", "1g", "--memory-swap=-1", "--cpu-share", "512", "--cpu-quota",
                               "50000", "--cpuset-cpus", "0-1", "--pids-limit", "100", "--blkio-weight", "300",
                               "c1"])
    assert build_resources(ns) == {
        "memory": {"limit": 1 << 30, "swap": -1},
        "cpu": {"shares": 512, "quota": 50000, "cpus": "0-1"},
        "pids": {"limit": 100},
        "blockIO": {"weight": 300},
    }
    with pytest.raises(UsageError, match="invalid value for memory"):
        build_resources(parse_verb("update", ["--memory", "1gx", "c1"]))


def test_update_resources_file_wins(tmp_path: Path) -> None:
    from corert.cli.control import build_resources

    f = tmp_path / "res.json"
    f.write_text('{"memory": {"limit": 123}}')
    ns = parse_verb("update", [f"--resources={f}", "--memory", "1g", "c1"])
    assert build_resources(ns) == {"memory": {"limit": 123}}


def test_exec_process_from_flags(tmp_path: Path) -> None:
    from corert.cli.context import Context
    from corert.cli.lifecycle import build_process
    from corert.cli.parse import GlobalOptions

    options = GlobalOptions()
    options.root = str(tmp_path / "root")
    ctx = Context(options, Log())
    record = ctx.store.reserve("c1")
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps({"process": {
        "args": ["sh"], "env": ["PATH=/bin", "A=1"], "cwd": "/", "user": {"uid": 0, "gid": 0},
        "capabilities": {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"], "permitted": ["CAP_KILL"]},
        "terminal": True}}))
    record.bundle = str(bundle)
    ctx.store.save(record)
    ns = parse_verb("exec", ["-e", "A=2", "-e", "B=3", "--cwd", "/tmp", "-u", "1000:10", "-g", "5",
                             "--cap", "net_admin", "--no-new-privs", "c1", "echo", "hi"])
    p = build_process(ctx, ns)
    assert p["args"] == ["echo", "hi"] and p["cwd"] == "/tmp" and p["terminal"] is False
    assert p["env"] == ["PATH=/bin", "A=2", "B=3"]
    assert p["user"] == {"uid": 1000, "gid": 10, "additionalGids": [5]}
    assert p["capabilities"]["bounding"] == ["CAP_KILL", "CAP_NET_ADMIN"]
    assert "ambient" not in p["capabilities"] and p["noNewPrivileges"] is True
    with pytest.raises(UsageError, match="no command"):
        build_process(ctx, parse_verb("exec", ["c1"]))
    proc_file = tmp_path / "process.json"
    proc_file.write_text('{"args": ["true"], "cwd": "/"}')
    assert build_process(ctx, parse_verb("exec", ["-p", str(proc_file), "-e", "X=1", "c1"])) == {
        "args": ["true"], "cwd": "/"}


def test_parse_duration() -> None:
    assert parse_duration("5s") == 5.0
    assert parse_duration("1m30s") == 90.0
    assert parse_duration("250ms") == 0.25
    assert parse_duration("1.5h") == 5400.0
    for bad in ("5x", "", "s", "5"):
        with pytest.raises(UsageError, match="parse error"):
            parse_duration(bad)


def test_runc_output_formats() -> None:
    # `runc list` table, byte for byte (tabwriter min width 12, padding 3; last column unpadded)
    rows = [["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"],
            ["c1", "6140", "created", "/tmp/corert-runcprobe.lser", "2026-11-22T15:35:45.503193037Z", "root"]]
    assert tabwriter(rows) == (
        "ID          PID         STATUS      BUNDLE                       CREATED                          OWNER\n"
        "c1          6140        created     /tmp/corert-runcprobe.lser   2026-11-22T15:35:45.503193037Z   root\n")
    assert tabwriter(rows[:1]) == "ID          PID         STATUS      BUNDLE      CREATED     OWNER\n"
    assert go_json({"a": "<&>", "b": "é"}) == '{"a":"\\u003c\\u0026\\u003e","b":"é"}'
    assert go_json({"a": [1]}, indent="  ") == '{\n  "a": [\n    1\n  ]\n}'


# ---- the CLI as engines run it -------------------------------------------------------------------

def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    spec = find_spec("corert")
    assert spec is not None and spec.submodule_search_locations
    src = str(Path(list(spec.submodule_search_locations)[0]).parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return subprocess.run([sys.executable, "-m", "corert", *args], capture_output=True, text=True, env=env,
                          cwd=cwd)


RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(Z|[+-]\d\d:\d\d)$")


def test_state_of_missing_container_json_log(tmp_path: Path) -> None:
    log = tmp_path / "log.json"
    out = run_cli("--root", str(tmp_path / "root"), "--log", str(log), "--log-format", "json", "state", "nosuch")
    assert out.returncode == 1
    assert out.stdout == ""
    assert out.stderr == "corert: container 'nosuch' does not exist\n"
    lines = log.read_text().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert list(entry) == ["level", "msg", "time"]  # logrus's JSON formatter sorts its keys
    assert entry["level"] == "error" and entry["msg"] == "container 'nosuch' does not exist"
    assert RFC3339.match(entry["time"])


def test_text_log_and_usage_error(tmp_path: Path) -> None:
    from corert.errors import exit_code_for

    log = tmp_path / "log.txt"
    out = run_cli("--root", str(tmp_path), "--log", str(log), "kill", "nosuch", "JUNK")
    assert out.returncode == exit_code_for(UsageError("x"))
    assert out.stderr == 'corert: unknown signal "JUNK"\n'
    line = log.read_text()
    assert re.fullmatch(r'time="[^"]+" level=error msg="unknown signal \\"JUNK\\""\n', line)
    out = run_cli("--root", str(tmp_path), "state")
    assert out.returncode == exit_code_for(UsageError("x")) and out.stderr.count("\n") == 1


def test_list_empty_and_version(tmp_path: Path) -> None:
    root = str(tmp_path / "nonexistent")
    assert run_cli("--root", root, "list").stdout == "ID          PID         STATUS      BUNDLE      CREATED     OWNER\n"
    assert run_cli("--root", root, "list", "--format=json").stdout == "null\n"
    assert run_cli("--root", root, "ls", "-q").stdout == ""
    out = run_cli("--version")
    assert out.returncode == 0 and re.fullmatch(r"corert version \S+\nspec: 1\.\d+\.\d+\n", out.stdout)
    assert run_cli("--help").stdout.startswith("NAME:\n   corert")


def test_state_of_a_live_container_prints_runc_json(tmp_path: Path) -> None:
    from corert.engine.state import StateStore, proc_start_time

    store = StateStore(tmp_path / "root")
    record = store.reserve("c1")
    child = subprocess.Popen(["sleep", "60"])
    try:
        record.pid, record.pid_start = child.pid, proc_start_time(child.pid) or 0
        record.bundle, record.rootfs, record.status = str(tmp_path), str(tmp_path / "rootfs"), "running"
        store.save(record)
        out = run_cli("--root", str(store.root), "state", "c1")
        assert out.returncode == 0 and not out.stdout.endswith("\n")  # runc writes no trailing newline
        assert out.stdout.startswith('{\n  "ociVersion": "')
        state = json.loads(out.stdout)
        assert (state["id"], state["pid"], state["status"], state["owner"]) == ("c1", child.pid, "running", "")
        listed = run_cli("--root", str(store.root), "list", "-f", "json").stdout
        assert json.loads(listed)[0]["owner"] != "" and listed.endswith("]\n")
        ps = run_cli("--root", str(store.root), "ps", "c1")
        header, *rows = ps.stdout.splitlines()
        assert header.split()[:2] == ["UID", "PID"] and len(rows) == 1 and rows[0].split()[1] == str(child.pid)
        assert run_cli("--root", str(store.root), "ps", "-f", "json", "c1").stdout == f"[{child.pid}]\n"
        assert run_cli("--root", str(store.root), "kill", "c1", "KILL").returncode == 0
        assert child.wait(timeout=5) == -9
        out = run_cli("--root", str(store.root), "kill", "c1")
        assert out.returncode == 1 and out.stderr == "corert: container not running\n"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_front_door_missing_is_an_error(tmp_path: Path) -> None:
    if find_spec("corert.cli.front") is not None:
        pytest.skip("the front door is installed")
    out = run_cli("--root", str(tmp_path), "run", "busybox", "true", cwd=tmp_path)
    assert out.returncode == 125 and "front door" in out.stderr
