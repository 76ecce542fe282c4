"""corert.spec: defaults vs runc, validation rules (each with the JSON path it must name), features,
mount options (checked against the kernel too), and the docker-like unit parsers."""
from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from corert.errors import ConfigError, CorertError, UsageError
from corert.drivers.security.capabilities import caps_to_mask, kernel_cap_last_cap
from corert.spec import capabilities, defaults, features, host, load, mountopts, units
from corert.spec.defaults import default_spec, write_spec
from corert.spec.load import ioprio_value, load_config, validate, validate_process
from corert.spec.mountopts import (MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_RDONLY, MS_REC,
                                   MS_SHARED, MS_SLAVE, MS_STRICTATIME, MS_RELATIME, NAMESPACE_FLAGS,
                                   parse_mount_options)
from support import proc_status_field

REFERENCE = Path("/work/shared/reference/engine-argv/runc-spec-config.json")
RUNC = shutil.which("runc") or ("/usr/sbin/runc" if os.path.exists("/usr/sbin/runc") else None)
needs_runc = pytest.mark.skipif(RUNC is None, reason="runc is not installed")


def without_version(spec: dict) -> dict:
    spec = copy.deepcopy(spec)
    spec.pop("ociVersion")
    return spec


def run_runc_spec(directory: Path, *extra: str, user: int | None = None) -> dict:
    cmd = [RUNC, "spec", *extra]
    if user is not None:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *cmd]
    subprocess.run(cmd, cwd=directory, check=True, capture_output=True)
    return json.loads((directory / "config.json").read_text())


# --- defaults ----------------------------------------------------------------------------------------------

def test_default_spec_matches_reference_file():
    ref = json.loads(REFERENCE.read_text())
    ours = default_spec()
    # The reference was captured with a test command; everything else is runc's default.
    assert ours["process"]["args"] == ["sh"] and ours["process"]["terminal"] is True
    for key in ("terminal", "args"):
        ref["process"].pop(key)
        ours["process"].pop(key)
    assert without_version(ours) == without_version(ref)
    assert list(ours) == list(ref)  # same key order, so the written file reads the same
    assert ours["ociVersion"] == "1.2.0"


@needs_runc
def test_default_spec_matches_live_runc(tmp_path):
    assert without_version(default_spec()) == without_version(run_runc_spec(tmp_path))


@needs_runc
def test_rootless_spec_matches_live_runc(tmp_path):
    ours = default_spec(rootless=True)
    assert without_version(ours) == without_version(run_runc_spec(tmp_path, "--rootless"))
    linux = ours["linux"]
    assert {"type": "user"} in linux["namespaces"]
    assert {"type": "network"} not in linux["namespaces"]
    assert "resources" not in linux
    assert linux["uidMappings"] == [{"containerID": 0, "hostID": os.geteuid(), "size": 1}]
    assert linux["gidMappings"] == [{"containerID": 0, "hostID": os.getegid(), "size": 1}]
    sys_mount = next(m for m in ours["mounts"] if m["destination"] == "/sys")
    assert sys_mount == {"destination": "/sys", "type": "none", "source": "/sys",
                         "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]}
    pts = next(m for m in ours["mounts"] if m["destination"] == "/dev/pts")
    assert "gid=5" not in pts["options"]


@needs_runc
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root to switch uid")
def test_rootless_spec_as_unprivileged_user_matches_runc(tmp_path):
    # Mappings use the caller's euid/egid: compare both programs run as uid 65534.
    tmp_path.chmod(0o777)
    (tmp_path / "runc").mkdir(mode=0o777)
    (tmp_path / "runc").chmod(0o777)
    theirs = run_runc_spec(tmp_path / "runc", "--rootless", user=65534)
    code = ("import json,sys; from corert.spec.defaults import default_spec; "
            "json.dump(default_spec(rootless=True), sys.stdout)")
    out = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", code],
                         check=True, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    ours = json.loads(out.stdout)
    assert ours["linux"]["uidMappings"][0]["hostID"] == 65534
    assert without_version(ours) == without_version(theirs)


def test_default_spec_args_and_independent_copies():
    a = default_spec(args=["echo", "hi"])
    assert a["process"]["args"] == ["echo", "hi"]
    a["mounts"].clear()
    a["process"]["capabilities"]["bounding"].append("CAP_SYS_ADMIN")
    b = default_spec()
    assert len(b["mounts"]) == 7
    assert b["process"]["capabilities"]["bounding"] == ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    assert b["process"]["capabilities"]["ambient"] == b["process"]["capabilities"]["bounding"]


@needs_runc
@pytest.mark.parametrize("rootless", [False, True])
def test_write_spec_file_text_matches_runc(tmp_path, rootless):
    (tmp_path / "ours").mkdir()
    (tmp_path / "runc").mkdir()
    path = Path(write_spec(tmp_path / "ours", rootless))
    assert path == tmp_path / "ours" / "config.json"
    run_runc_spec(tmp_path / "runc", *(["--rootless"] if rootless else []))
    ours = path.read_text().splitlines()
    theirs = (tmp_path / "runc" / "config.json").read_text().splitlines()
    assert ours[1] == '\t"ociVersion": "1.2.0",'
    del ours[1], theirs[1]
    assert ours == theirs


def test_write_spec_refuses_existing_config(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ConfigError) as e:
        write_spec(tmp_path, False)
    assert str(e.value) == "File config.json exists. Remove it first"
    assert (tmp_path / "config.json").read_text() == "{}"


def test_write_spec_missing_bundle(tmp_path):
    with pytest.raises(CorertError, match="not a directory"):
        write_spec(tmp_path / "nope", False)
    assert not (tmp_path / "nope").exists()


# --- load_config -------------------------------------------------------------------------------------------

def test_load_config_reads_and_rejects(tmp_path):
    with pytest.raises(ConfigError, match="config.json not found"):
        load_config(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(tmp_path)
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="JSON object"):
        load_config(tmp_path)
    (tmp_path / "config.json").write_bytes(b'{"a": "\xff"}')
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(tmp_path)
    write_path = tmp_path / "b"
    write_path.mkdir()
    write_spec(write_path, False)
    assert load_config(write_path) == default_spec()
    (write_path / "rootfs").mkdir()
    assert load.load_and_validate(write_path) == default_spec()


# --- validate: the defaults pass, each rule fails with its path ---------------------------------------------

@pytest.fixture
def bundle(tmp_path) -> Path:
    (tmp_path / "rootfs").mkdir()
    return tmp_path


@pytest.mark.parametrize("rootless", [False, True])
def test_default_spec_is_valid(bundle, rootless):
    validate(default_spec(rootless=rootless), bundle)


def test_unknown_fields_are_ignored(bundle):
    cfg = default_spec()
    cfg["someFutureField"] = {"x": 1}
    cfg["process"]["futureProcessField"] = True
    cfg["linux"]["futureLinuxField"] = [1]
    cfg["annotations"] = {"a": "b"}
    validate(cfg, bundle)


def ns(*types: str) -> list[dict]:
    return [{"type": t} for t in types]


def _set(path: str, value):
    """A mutation that sets cfg[a][b][i]... = value (path with dots and [i])."""
    def apply(cfg: dict) -> None:
        parts: list = []
        for part in path.split("."):
            name, _, rest = part.partition("[")
            parts.append(name)
            if rest:
                parts.extend(int(x) for x in rest.rstrip("]").split("]["))
        obj = cfg
        for p in parts[:-1]:
            obj = obj[p]
        obj[parts[-1]] = value
    return apply


def _del(path: str):
    def apply(cfg: dict) -> None:
        *parents, last = path.split(".")
        obj = cfg
        for p in parents:
            obj = obj[p]
        del obj[last]
    return apply


def _seq(*fns):
    def apply(cfg: dict) -> None:
        for fn in fns:
            fn(cfg)
    return apply


FAILING = {
    # version and root
    "version-missing": (_del("ociVersion"), "ociVersion"),
    "version-2": (_set("ociVersion", "2.0.0"), "ociVersion"),
    "version-junk": (_set("ociVersion", "1.x"), "ociVersion"),
    "root-missing": (_del("root"), "root"),
    "root-path-missing": (_set("root", {"readonly": True}), "root.path"),
    "rootfs-absent": (_set("root.path", "nothere"), "root.path"),
    "root-readonly-type": (_set("root.readonly", "yes"), "root.readonly"),
    # process
    "process-missing": (_del("process"), "process"),
    "args-empty": (_set("process.args", []), "process.args"),
    "args-not-list": (_set("process.args", "sh"), "process.args"),
    "args-not-str": (_set("process.args", ["sh", 3]), "process.args[1]"),
    "cwd-relative": (_set("process.cwd", "tmp"), "process.cwd"),
    "cwd-missing": (_del("process.cwd"), "process.cwd"),
    "env-no-equals": (_set("process.env", ["A=1", "BROKEN"]), "process.env[1]"),
    "env-empty-key": (_set("process.env", ["=x"]), "process.env[0]"),
    "uid-negative": (_set("process.user.uid", -1), "process.user.uid"),
    "gid-string": (_set("process.user.gid", "0"), "process.user.gid"),
    "uid-bool": (_set("process.user.uid", True), "process.user.uid"),
    "uid-missing": (_set("process.user", {"gid": 0}), "process.user.uid"),
    "extra-gid": (_set("process.user.additionalGids", [1, -2]), "process.user.additionalGids[1]"),
    "terminal-type": (_set("process.terminal", 1), "process.terminal"),
    "cap-unknown": (_set("process.capabilities.bounding", ["CAP_KILL", "CAP_FLY"]),
                    "process.capabilities.bounding[1]"),
    "cap-lowercase": (_set("process.capabilities.ambient", ["cap_kill"]), "process.capabilities.ambient[0]"),
    "rlimit-type": (_set("process.rlimits", [{"type": "RLIMIT_WINGS", "soft": 1, "hard": 1}]),
                    "process.rlimits[0].type"),
    "rlimit-soft-above-hard": (_set("process.rlimits", [{"type": "RLIMIT_NOFILE", "soft": 10, "hard": 5}]),
                               "process.rlimits[0]"),
    "rlimit-duplicate": (_set("process.rlimits", [{"type": "RLIMIT_CORE", "soft": 0, "hard": 0},
                                                  {"type": "RLIMIT_CORE", "soft": 1, "hard": 1}]),
                         "process.rlimits[1].type"),
    "rlimit-negative": (_set("process.rlimits", [{"type": "RLIMIT_CORE", "soft": -1, "hard": 0}]),
                        "process.rlimits[0].soft"),
    "oom-range": (_set("process.oomScoreAdj", 1001), "process.oomScoreAdj"),
    "scheduler": (_set("process.scheduler", {"policy": "SCHED_FIFO", "priority": 1}), "process.scheduler"),
    "ioprio-class": (_set("process.ioPriority", {"class": "IOPRIO_CLASS_FAST", "priority": 0}),
                     "process.ioPriority.class"),
    "ioprio-level": (_set("process.ioPriority", {"class": "IOPRIO_CLASS_BE", "priority": 8}),
                     "process.ioPriority.priority"),
    "exec-cpu-affinity": (_set("process.execCPUAffinity", {"initial": "0"}), "process.execCPUAffinity"),
    # hostname / uts
    "hostname-no-uts": (_set("linux.namespaces", ns("pid", "mount")), "hostname"),
    "domainname-no-uts": (_seq(_set("linux.namespaces", ns("pid", "mount")), _del("hostname"),
                               _set("domainname", "example")), "domainname"),
    # namespaces
    "ns-unknown": (_set("linux.namespaces", ns("pid", "network", "wormhole")), "linux.namespaces[2].type"),
    "ns-duplicate": (_set("linux.namespaces", ns("pid", "network", "ipc", "uts", "mount", "pid")),
                     "linux.namespaces[5].type"),
    "ns-relative-path": (_set("linux.namespaces", [{"type": "pid"}, {"type": "network", "path": "proc/1/ns/net"}]),
                         "linux.namespaces[1].path"),
    # user namespace mappings
    "userns-no-maps": (_set("linux.namespaces", ns("pid", "ipc", "uts", "mount", "user")), "linux.uidMappings"),
    "maps-without-userns": (_set("linux.uidMappings", [{"containerID": 0, "hostID": 1000, "size": 1}]),
                            "linux.uidMappings"),
    "maps-joined-userns": (_seq(_set("linux.namespaces", [*ns("pid", "uts", "mount"),
                                                          {"type": "user", "path": "/proc/1/ns/user"}]),
                                _set("linux.gidMappings", [{"containerID": 0, "hostID": 1000, "size": 1}])),
                           "linux.gidMappings"),
}


def _userns(uid_maps, gid_maps=None):
    return _seq(_set("linux.namespaces", ns("pid", "ipc", "uts", "mount", "user")),
                _set("linux.uidMappings", uid_maps),
                _set("linux.gidMappings", gid_maps if gid_maps is not None else [{"containerID": 0, "hostID": 0, "size": 1}]))


FAILING.update({
    "map-size-zero": (_userns([{"containerID": 0, "hostID": 1000, "size": 0}]), "linux.uidMappings[0].size"),
    "map-missing-host": (_userns([{"containerID": 0, "size": 1}]), "linux.uidMappings[0].hostID"),
    "map-overlap-container": (_userns([{"containerID": 0, "hostID": 1000, "size": 10},
                                       {"containerID": 5, "hostID": 5000, "size": 10}]),
                              "linux.uidMappings[1].containerID"),
    "map-overlap-host": (_userns([{"containerID": 0, "hostID": 0, "size": 1}],
                                 [{"containerID": 0, "hostID": 100, "size": 10},
                                  {"containerID": 100, "hostID": 105, "size": 1}]),
                         "linux.gidMappings[1].hostID"),
    "gid-maps-missing": (_userns([{"containerID": 0, "hostID": 0, "size": 1}], []), "linux.gidMappings"),
    # mounts
    "mount-relative": (_set("mounts[3].destination", "dev/shm"), "mounts[3].destination"),
    "mount-no-destination": (_set("mounts[0]", {"type": "proc", "source": "proc"}), "mounts[0].destination"),
    "mount-type-unknown": (_set("mounts[1].type", "zfs-magic"), "mounts[1].type"),
    "mount-type-missing": (_set("mounts[0]", {"destination": "/proc", "source": "proc"}), "mounts[0].type"),
    "mount-bind-type-no-option": (_set("mounts[0]", {"destination": "/x", "type": "bind", "source": "/tmp"}),
                                  "mounts[0].options"),
    "mount-bind-no-source": (_set("mounts[0]", {"destination": "/x", "type": "none", "options": ["rbind"]}),
                             "mounts[0].source"),
    "mount-rro": (_set("mounts[2].options", ["nosuid", "rro"]), "mounts[2].options[1]"),
    "mount-tmpcopyup": (_set("mounts[1].options", ["tmpcopyup"]), "mounts[1].options[0]"),
    "mount-idmap-option": (_set("mounts[0]", {"destination": "/x", "type": "bind", "source": "/tmp",
                                              "options": ["bind", "idmap"]}), "mounts[0].options[1]"),
    "mount-idmap-mappings": (_set("mounts[0]", {"destination": "/x", "type": "bind", "source": "/tmp",
                                                "options": ["rbind"],
                                                "uidMappings": [{"containerID": 0, "hostID": 1, "size": 1}]}),
                             "mounts[0].uidMappings"),
    "mount-option-not-str": (_set("mounts[1].options", ["nosuid", 5]), "mounts[1].options[1]"),
    # sysctl
    "sysctl-ipc-shared": (_seq(_set("linux.namespaces", ns("pid", "uts", "mount")),
                               _set("linux.sysctl", {"kernel.shmmax": "1"})), "linux.sysctl.kernel.shmmax"),
    "sysctl-mqueue-shared": (_seq(_set("linux.namespaces", ns("pid", "uts", "mount")),
                                  _set("linux.sysctl", {"fs.mqueue.msg_max": "10"})),
                             "linux.sysctl.fs.mqueue.msg_max"),
    "sysctl-net-shared": (_seq(_set("linux.namespaces", ns("pid", "ipc", "uts", "mount")),
                               _set("linux.sysctl", {"net.ipv4.ip_forward": "1"})), "linux.sysctl.net.ipv4.ip_forward"),
    "sysctl-net-host-path": (_seq(_set("linux.namespaces", [*ns("pid", "ipc", "uts", "mount"),
                                                            {"type": "network", "path": "/proc/self/ns/net"}]),
                                  _set("linux.sysctl", {"net.ipv4.ip_forward": "1"})),
                             "linux.sysctl.net.ipv4.ip_forward"),
    "sysctl-hostname": (_set("linux.sysctl", {"kernel.hostname": "x"}), "linux.sysctl.kernel.hostname"),
    "sysctl-domainname-shared-uts": (_seq(_set("linux.namespaces", ns("pid", "ipc", "mount")), _del("hostname"),
                                          _set("linux.sysctl", {"kernel.domainname": "x"})),
                                     "linux.sysctl.kernel.domainname"),
    "sysctl-not-namespaced": (_set("linux.sysctl", {"vm.swappiness": "10"}), "linux.sysctl.vm.swappiness"),
    "sysctl-value-type": (_set("linux.sysctl", {"kernel.shmmax": 5}), "linux.sysctl.kernel.shmmax"),
    # time namespace
    "timeoffsets-no-timens": (_set("linux.timeOffsets", {"monotonic": {"secs": 10}}), "linux.timeOffsets"),
    "timeoffsets-joined-timens": (_seq(_set("linux.namespaces", [*ns("pid", "uts", "mount"),
                                                                 {"type": "time", "path": "/proc/1/ns/time"}]),
                                       _set("linux.timeOffsets", {"boottime": {"secs": 1}})), "linux.timeOffsets"),
    "timeoffsets-bad-clock": (_seq(_set("linux.namespaces", ns("pid", "uts", "mount", "time")),
                                   _set("linux.timeOffsets", {"realtime": {"secs": 1}})),
                              "linux.timeOffsets.realtime"),
    "timeoffsets-bad-nanos": (_seq(_set("linux.namespaces", ns("pid", "uts", "mount", "time")),
                                   _set("linux.timeOffsets", {"monotonic": {"secs": 1, "nanosecs": 10**9}})),
                              "linux.timeOffsets.monotonic.nanosecs"),
    # seccomp
    "seccomp-default": (_set("linux.seccomp", {"defaultAction": "SCMP_ACT_MAYBE"}), "linux.seccomp.defaultAction"),
    "seccomp-default-missing": (_set("linux.seccomp", {"syscalls": []}), "linux.seccomp.defaultAction"),
    "seccomp-default-notify": (_set("linux.seccomp", {"defaultAction": "SCMP_ACT_NOTIFY",
                                                      "listenerPath": "/run/l.sock"}), "linux.seccomp.defaultAction"),
    "seccomp-action": (_set("linux.seccomp", {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["getpid"], "action": "SCMP_ACT_ERRNO"},
        {"names": ["mount"], "action": "SCMP_ACT_EXPLODE"}]}), "linux.seccomp.syscalls[1].action"),
    "seccomp-names-empty": (_set("linux.seccomp", {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": [], "action": "SCMP_ACT_ERRNO"}]}), "linux.seccomp.syscalls[0].names"),
    "seccomp-op": (_set("linux.seccomp", {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["personality"], "action": "SCMP_ACT_ERRNO",
         "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_ROUGHLY"}]}]}), "linux.seccomp.syscalls[0].args[0].op"),
    "seccomp-arg-index": (_set("linux.seccomp", {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["personality"], "action": "SCMP_ACT_ERRNO",
         "args": [{"index": 6, "value": 8, "op": "SCMP_CMP_EQ"}]}]}), "linux.seccomp.syscalls[0].args[0].index"),
    "seccomp-arch": (_set("linux.seccomp", {"defaultAction": "SCMP_ACT_ALLOW",
                                            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_Z80"]}),
                     "linux.seccomp.architectures[1]"),
    "seccomp-flag": (_set("linux.seccomp", {"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_X"]}),
                     "linux.seccomp.flags[0]"),
    "seccomp-notify-no-listener": (_set("linux.seccomp", {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]}), "linux.seccomp.listenerPath"),
    "seccomp-notify-write": (_set("linux.seccomp", {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/l",
                                                    "syscalls": [{"names": ["write"], "action": "SCMP_ACT_NOTIFY"}]}),
                             "linux.seccomp.syscalls[0].action"),
    # hooks
    "hook-relative": (_set("hooks", {"prestart": [{"path": "bin/true"}]}), "hooks.prestart[0].path"),
    "hook-missing-path": (_set("hooks", {"createRuntime": [{"path": "/bin/true"}, {"args": ["x"]}]}),
                          "hooks.createRuntime[1].path"),
    "hook-timeout": (_set("hooks", {"poststop": [{"path": "/bin/true", "timeout": 0}]}), "hooks.poststop[0].timeout"),
    "hook-args-type": (_set("hooks", {"poststart": [{"path": "/bin/true", "args": ["a", None]}]}),
                       "hooks.poststart[0].args[1]"),
    # things corert cannot honour
    "intel-rdt": (_set("linux.intelRdt", {"closID": "x"}), "linux.intelRdt"),
    "personality-domain": (_set("linux.personality", {"domain": "SVR4"}), "linux.personality.domain"),
    "personality-flags": (_set("linux.personality", {"domain": "LINUX", "flags": ["ADDR_NO_RANDOMIZE"]}),
                          "linux.personality.flags"),
    # other linux fields
    "masked-relative": (_set("linux.maskedPaths", ["/proc/kcore", "proc/keys"]), "linux.maskedPaths[1]"),
    "readonly-relative": (_set("linux.readonlyPaths", ["sys"]), "linux.readonlyPaths[0]"),
    "rootfs-propagation": (_set("linux.rootfsPropagation", "sideways"), "linux.rootfsPropagation"),
    "device-type": (_set("linux.devices", [{"path": "/dev/fuse", "type": "x", "major": 10, "minor": 229}]),
                    "linux.devices[0].type"),
    "device-relative": (_set("linux.devices", [{"path": "dev/fuse", "type": "c", "major": 10, "minor": 229}]),
                        "linux.devices[0].path"),
    "device-major": (_set("linux.devices", [{"path": "/dev/fuse", "type": "c", "minor": 229}]),
                     "linux.devices[0].major"),
    "resources-device-access": (_set("linux.resources.devices", [{"allow": False, "access": "rwx"}]),
                                "linux.resources.devices[0].access"),
    "resources-device-allow": (_set("linux.resources.devices", [{"access": "rwm"}]),
                               "linux.resources.devices[0].allow"),
    "linux-not-object": (_set("linux", []), "linux"),
})


@pytest.mark.parametrize("name", sorted(FAILING))
def test_validate_refuses(bundle, name):
    mutate, expected_path = FAILING[name]
    cfg = default_spec()
    mutate(cfg)
    with pytest.raises(ConfigError) as e:
        validate(cfg, bundle)
    assert e.value.path == expected_path, str(e.value)
    msg = str(e.value)
    assert msg.startswith(expected_path + ": ") and "\n" not in msg and len(msg) > len(expected_path) + 5


PASSING = {
    "userns-maps": _userns([{"containerID": 0, "hostID": 100000, "size": 65536}],
                           [{"containerID": 0, "hostID": 100000, "size": 65536}]),
    "userns-maps-adjacent": _userns([{"containerID": 0, "hostID": 1000, "size": 1},
                                     {"containerID": 1, "hostID": 100000, "size": 65535}]),
    "joined-userns-no-maps": _set("linux.namespaces", [*ns("pid", "uts", "mount"),
                                                        {"type": "user", "path": "/proc/1/ns/user"}]),
    "all-namespace-types": _userns([{"containerID": 0, "hostID": 0, "size": 1}]),
    "ns-null-path": _set("linux.namespaces", [{"type": "pid", "path": None}, *ns("uts", "mount")]),
    "sysctls-namespaced": _set("linux.sysctl", {"kernel.shmmax": "1", "kernel.msgmax": "8192", "kernel.sem": "1 2 3 4",
                                                "kernel.shm_rmid_forced": "1", "fs.mqueue.msg_max": "10",
                                                "net.ipv4.ip_forward": "1", "net/ipv4/ping_group_range": "0 0",
                                                "kernel.domainname": "example.org"}),
    "timeoffsets-new-timens": _seq(_set("linux.namespaces", ns("pid", "uts", "mount", "time")),
                                   _set("linux.timeOffsets", {"monotonic": {"secs": -5, "nanosecs": 3},
                                                              "boottime": {"secs": 86400}})),
    "personality-linux32": _set("linux.personality", {"domain": "LINUX32"}),
    "ioprio": _set("process.ioPriority", {"class": "IOPRIO_CLASS_IDLE", "priority": 7}),
    "seccomp-full": _set("linux.seccomp", {
        "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1, "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
        "flags": ["SECCOMP_FILTER_FLAG_LOG"], "listenerPath": "/run/corert-listener.sock",
        "syscalls": [{"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
                     {"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"},
                     {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                      "args": [{"index": 0, "value": 0xFFFFFFFF, "op": "SCMP_CMP_EQ"}]}]}),
    "hooks": _set("hooks", {"prestart": [{"path": "/bin/true", "args": ["true"], "env": ["A=1"], "timeout": 5}],
                            "someFutureHook": [{"path": "relative-is-ignored"}]}),
    "bind-mounts": _set("mounts", [{"destination": "/data", "type": "bind", "source": "/tmp", "options": ["rbind", "ro"]},
                                   {"destination": "/etc/x", "source": "/etc/hosts", "options": ["bind"]},
                                   {"destination": "/c", "type": "cgroup2", "source": "cgroup2",
                                    "options": ["rprivate", "nosuid"]}]),
    "devices": _set("linux.devices", [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 0o666},
                                      {"path": "/dev/myfifo", "type": "p"}]),
    "empty-hostname-shared-uts": _seq(_set("linux.namespaces", ns("pid", "mount")), _set("hostname", "")),
    "hostname-joined-uts": _set("linux.namespaces", [*ns("pid", "mount"), {"type": "uts", "path": "/proc/1/ns/uts"}]),
}


@pytest.mark.parametrize("name", sorted(PASSING))
def test_validate_accepts(bundle, name):
    cfg = default_spec()
    PASSING[name](cfg)
    validate(cfg, bundle)


def test_validate_without_process_when_not_creating(bundle):
    cfg = default_spec()
    del cfg["process"]
    validate(cfg, bundle, require_process=False)
    with pytest.raises(ConfigError, match="^process: "):
        validate(cfg, bundle)


def test_rootfs_absolute_and_relative(tmp_path, bundle):
    cfg = default_spec()
    other = tmp_path / "elsewhere"
    other.mkdir()
    cfg["root"]["path"] = str(other)
    validate(cfg, bundle)
    (bundle / "file").write_text("")
    cfg["root"]["path"] = "file"
    with pytest.raises(ConfigError, match="^root.path: rootfs .*file' is not a directory"):
        validate(cfg, bundle)


def test_validate_process_for_exec():
    validate_process({"args": ["ls"], "cwd": "/", "user": {"uid": 1, "gid": 1}})
    with pytest.raises(ConfigError) as e:
        validate_process({"args": ["ls"], "cwd": "rel", "user": {"uid": 1, "gid": 1}})
    assert e.value.path == "process.cwd"


def test_hostname_refusal_message(bundle):
    cfg = default_spec()
    cfg["linux"]["namespaces"] = ns("pid", "mount")
    with pytest.raises(ConfigError, match="^hostname: cannot set the hostname without a private UTS namespace$"):
        validate(cfg, bundle)


def test_intel_rdt_message(bundle):
    cfg = default_spec()
    cfg["linux"]["intelRdt"] = {"closID": "guaranteed"}
    with pytest.raises(ConfigError) as e:
        validate(cfg, bundle)
    assert str(e.value) == "linux.intelRdt: Intel RDT is not supported by corert"


@pytest.mark.parametrize("field,checker", [("apparmorProfile", "apparmor_enabled"),
                                           ("selinuxLabel", "selinux_enabled")])
def test_lsm_fields_follow_host_support(bundle, monkeypatch, field, checker):
    cfg = default_spec()
    cfg["process"][field] = "some-profile"
    monkeypatch.setattr(host, checker, lambda: False)
    with pytest.raises(ConfigError) as e:
        validate(cfg, bundle)
    assert e.value.path == f"process.{field}" and "not enabled on this host" in str(e.value)
    monkeypatch.setattr(host, checker, lambda: True)
    validate(cfg, bundle)


def test_mount_label_follows_selinux(bundle, monkeypatch):
    cfg = default_spec()
    cfg["linux"]["mountLabel"] = "system_u:object_r:container_file_t:s0"
    monkeypatch.setattr(host, "selinux_enabled", lambda: False)
    with pytest.raises(ConfigError, match="^linux.mountLabel: "):
        validate(cfg, bundle)
    monkeypatch.setattr(host, "selinux_enabled", lambda: True)
    validate(cfg, bundle)


def test_lsm_detection_matches_host_files(bundle):
    aa = os.path.isdir("/sys/kernel/security/apparmor")
    if aa:
        aa = Path("/sys/module/apparmor/parameters/enabled").read_text().startswith("Y")
    assert host.apparmor_enabled() is aa
    assert host.selinux_enabled() is os.path.exists("/sys/fs/selinux/enforce")
    if not aa:  # on this host an AppArmor profile is refused for real, nothing patched
        cfg = default_spec()
        cfg["process"]["apparmorProfile"] = "docker-default"
        with pytest.raises(ConfigError, match="^process.apparmorProfile: AppArmor is not enabled on this host$"):
            validate(cfg, bundle)


def test_ioprio_value():
    assert ioprio_value({"class": "IOPRIO_CLASS_RT", "priority": 0}) == 1 << 13
    assert ioprio_value({"class": "IOPRIO_CLASS_BE", "priority": 4}) == (2 << 13) | 4
    assert ioprio_value({"class": "IOPRIO_CLASS_IDLE", "priority": 7}) == (3 << 13) | 7
    assert ioprio_value({"class": "IOPRIO_CLASS_BE"}) == 2 << 13
    with pytest.raises(ConfigError, match=r"^process.ioPriority.priority: "):
        ioprio_value({"class": "IOPRIO_CLASS_BE", "priority": -1})


def test_ioprio_value_accepted_by_kernel():
    # ioprio_set(IOPRIO_WHO_PROCESS, 0, value) in a child: the kernel must take what we compute.
    code = ("import ctypes,sys; libc=ctypes.CDLL(None, use_errno=True); "
            "r=libc.syscall(251, 1, 0, int(sys.argv[1])); "  # x86_64 SYS_ioprio_set
            "g=libc.syscall(252, 1, 0); print(r, g)")      # SYS_ioprio_get
    if os.uname().machine != "x86_64":
        pytest.skip("syscall numbers are x86_64's")
    value = ioprio_value({"class": "IOPRIO_CLASS_BE", "priority": 6})
    out = subprocess.run([sys.executable, "-c", code, str(value)], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0", str(value)]


def test_validate_is_fast(bundle):
    import time
    cfg = default_spec()
    start = time.perf_counter()
    for _ in range(200):
        validate(cfg, bundle)
    assert (time.perf_counter() - start) / 200 < 0.002  # far below a ms in practice


def test_load_imports_are_light():
    code = ("import sys; import corert.spec.load, corert.spec.defaults; "
            "print(' '.join(m for m in ('trio','pyroute2','pyfuse3','pyseccomp','subprocess','logging','sqlite3',"
            "'tarfile','typing','pathlib','json','re','enum') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    # Both are on every create: strings for paths, corert.jsonio for JSON (no pathlib, json or re).
    assert out.stdout.split() == []


# --- capabilities ------------------------------------------------------------------------------------------

def test_capability_table():
    caps = capabilities.CAPABILITIES
    assert caps["CAP_CHOWN"] == 0 and caps["CAP_SYS_ADMIN"] == 21 and caps["CAP_AUDIT_READ"] == 37
    assert caps["CAP_CHECKPOINT_RESTORE"] == 40 and len(caps) == 41
    assert sorted(caps.values()) == list(range(41))
    assert capabilities.CAP_NAMES[21] == "CAP_SYS_ADMIN"
    mask = caps_to_mask(["CAP_KILL", "CAP_NET_BIND_SERVICE"], "x")
    assert mask == (1 << 5) | (1 << 10)
    assert capabilities.mask_to_caps(mask | 1 << 45) == ["CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_45"]
    assert kernel_cap_last_cap() >= 40  # kernel 6.x


def test_capability_numbers_match_kernel_status():
    # The bounding set of this (root) test process, as the kernel reports it, decodes to known names.
    bnd = int(proc_status_field(os.getpid(), "CapBnd"), 16)
    last = kernel_cap_last_cap()
    if os.geteuid() == 0 and bnd == (1 << (last + 1)) - 1:
        assert caps_to_mask(capabilities.ALL_CAPABILITIES, "x") == bnd & ((1 << 41) - 1)


# --- features ----------------------------------------------------------------------------------------------

def test_features_shape():
    f = features.features()
    assert f["ociVersionMin"] == "1.0.0" and f["ociVersionMax"] == defaults.OCI_VERSION
    assert f["hooks"] == ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"]
    assert set(f["linux"]["namespaces"]) == {"pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time"}
    assert f["linux"]["capabilities"] == list(capabilities.CAPABILITIES)
    assert f["linux"]["cgroup"] == {"v1": True, "v2": True, "systemd": False, "systemdUser": False}
    assert f["linux"]["apparmor"] == {"enabled": host.apparmor_enabled()}
    assert f["linux"]["selinux"] == {"enabled": host.selinux_enabled()}
    seccomp = f["linux"]["seccomp"]
    assert seccomp["enabled"] is True  # kernel has seccomp and pyseccomp is installed here
    assert "SCMP_ACT_ERRNO" in seccomp["actions"] and "SCMP_CMP_MASKED_EQ" in seccomp["operators"]
    assert "SCMP_ARCH_X86_64" in seccomp["archs"]
    assert set(f["annotations"]) == {"io.github.corert.version"}
    json.dumps(f)
    # Every listed mount option is understood as a flag or propagation, never passed on as data.
    for opt in f["mountOptions"]:
        parsed = parse_mount_options([opt])
        assert parsed.data == "" and (parsed.flags or parsed.propagation or parsed.cleared or opt == "defaults"), opt


@needs_runc
def test_features_against_runc():
    runc = json.loads(subprocess.run([RUNC, "features"], capture_output=True, text=True, check=True).stdout)
    ours = features.features()
    assert ours["hooks"] == runc["hooks"]
    assert ours["linux"]["capabilities"] == runc["linux"]["capabilities"]
    assert set(runc["linux"]["namespaces"]) <= set(ours["linux"]["namespaces"])
    for key in ("actions", "operators"):
        assert ours["linux"]["seccomp"][key] == runc["linux"]["seccomp"][key]
    assert set(runc["linux"]["seccomp"]["archs"]) <= set(ours["linux"]["seccomp"]["archs"])
    # runc's mount options minus those corert refuses (recursive attributes, tmpcopyup).
    refused = mountopts.RECURSIVE_OPTIONS | set(mountopts.REFUSED_OPTIONS)
    assert ours["mountOptions"] == sorted(set(runc["mountOptions"]) - refused)


# --- mount options -----------------------------------------------------------------------------------------

def test_mount_option_flags():
    o = parse_mount_options(["nosuid", "noexec", "nodev", "ro"])
    assert (o.flags, o.propagation, o.data, o.is_bind, o.recursive) == (
        MS_NOSUID | MS_NOEXEC | MS_NODEV | MS_RDONLY, 0, "", False, False)
    o = parse_mount_options(["nosuid", "strictatime", "mode=755", "size=65536k"])
    assert o.flags == MS_NOSUID | MS_STRICTATIME and o.data == "mode=755,size=65536k"
    o = parse_mount_options(["ro", "rw", "nosuid", "suid", "relatime", "norelatime"])
    assert o.flags == 0 and o.cleared == MS_RDONLY | MS_NOSUID | MS_RELATIME
    o = parse_mount_options(["rw", "ro"])
    assert o.flags == MS_RDONLY and o.cleared == 0


def test_mount_option_bind_and_propagation():
    o = parse_mount_options(["rbind", "ro", "rprivate"])
    assert o.is_bind and o.recursive and o.flags == MS_BIND | MS_REC | MS_RDONLY
    assert o.propagation == MS_PRIVATE | MS_REC
    o = parse_mount_options(["bind", "shared"])
    assert o.is_bind and not o.recursive and o.propagation == MS_SHARED
    assert parse_mount_options(["private", "slave"]).propagation == MS_SLAVE  # the last one wins
    assert parse_mount_options(["runbindable"]).propagation == mountopts.MS_UNBINDABLE | MS_REC
    assert parse_mount_options(None) == mountopts.MountOptions()
    assert parse_mount_options(["newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]).data == \
        "newinstance,ptmxmode=0666,mode=0620,gid=5"


@pytest.mark.parametrize("opt,word", [("rro", "recursive"), ("rnosuid", "recursive"), ("rrw", "recursive"),
                                      ("tmpcopyup", "tmpcopyup"), ("idmap", "idmap"), ("ridmap", "ridmap")])
def test_mount_option_refused(opt, word):
    with pytest.raises(ConfigError) as e:
        parse_mount_options(["nodev", opt], "mounts[4].options")
    assert e.value.path == "mounts[4].options[1]" and word in str(e.value) and "corert" in str(e.value)


def test_mount_constants():
    assert (mountopts.MS_RDONLY, mountopts.MS_REMOUNT, MS_BIND, mountopts.MS_MOVE, MS_REC) == (1, 32, 4096, 8192, 16384)
    assert (mountopts.MS_UNBINDABLE, MS_PRIVATE, MS_SLAVE, MS_SHARED) == (1 << 17, 1 << 18, 1 << 19, 1 << 20)
    assert (MS_RELATIME, MS_STRICTATIME, mountopts.MS_SILENT) == (1 << 21, 1 << 24, 32768)
    assert NAMESPACE_FLAGS == {"pid": 0x20000000, "network": 0x40000000, "mount": 0x00020000, "ipc": 0x08000000,
                               "uts": 0x04000000, "user": 0x10000000, "cgroup": 0x02000000, "time": 0x80}
    assert set(NAMESPACE_FLAGS) == load.NAMESPACE_TYPES


_MOUNT_PROBE = r"""
import ctypes, os, sys, json
libc = ctypes.CDLL(None, use_errno=True)
flags, data, target = int(sys.argv[1]), sys.argv[2], sys.argv[3]
if libc.mount(b"corert-test", target.encode(), b"tmpfs", flags, data.encode() or None) != 0:
    raise SystemExit("mount: " + os.strerror(ctypes.get_errno()))
for line in open("/proc/self/mountinfo"):
    f = line.split()
    if f[4] == target:
        sep = f.index("-")
        print(json.dumps({"vfs": f[5].split(","), "super": f[sep + 3].split(",")}))
"""


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root for a mount namespace")
def test_parsed_options_as_the_kernel_sees_them(tmp_path):
    # Mount a tmpfs with the parsed flags/data in a throwaway mount namespace; nothing reaches ours.
    target = tmp_path / "mnt"
    target.mkdir()
    o = parse_mount_options(["nosuid", "nodev", "noexec", "ro", "noatime", "mode=0711", "size=1m"])
    out = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable, "-c", _MOUNT_PROBE,
                          str(o.flags), o.data, str(target)], capture_output=True, text=True, check=True)
    seen = json.loads(out.stdout)
    assert {"ro", "nosuid", "nodev", "noexec", "noatime"} <= set(seen["vfs"])
    assert "mode=711" in seen["super"] and "size=1024k" in seen["super"]
    assert str(target) not in Path("/proc/self/mountinfo").read_text()


# --- units -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,value", [
    ("64M", 64 << 20), ("64m", 64 << 20), ("64mb", 64 << 20), ("64MiB", 64 << 20), ("512k", 512 << 10),
    ("1.5g", 3 << 29), ("2G", 2 << 30), ("1t", 1 << 40), ("100b", 100), ("100", 100), ("0", 0), (" 8K ", 8192),
    (4096, 4096), ("18446744073709551615", 18446744073709551615),
])
def test_parse_size(text, value):
    assert units.parse_size(text) == value


@pytest.mark.parametrize("text", ["", "abc", "-1m", "1.2.3", "1e3", "nan", "inf", "12q", "m", "1_000", "٣m", None, -5])
def test_parse_size_junk(text):
    with pytest.raises(UsageError) as e:
        units.parse_size(text)
    assert "invalid size" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("text,expected", [("1.5", (150000, 100000)), ("2", (200000, 100000)),
                                           ("0.01", (1000, 100000)), (0.5, (50000, 100000)), (".25", (25000, 100000))])
def test_parse_cpus(text, expected):
    assert units.parse_cpus(text) == expected


@pytest.mark.parametrize("text", ["0", "-1", "abc", "", "0.001", "1,5", "inf", "nan", float("nan")])
def test_parse_cpus_junk(text):
    with pytest.raises(UsageError, match="invalid number of CPUs"):
        units.parse_cpus(text)
