"""Pure conversions of the cgroup drivers: OCI values -> cgroup file values, paths, parsers, BPF program."""
from __future__ import annotations

import itertools
import struct

import pytest

from corert.drivers.cgroups.convert import (blkio_weight_to_io_weight, cpu_max_value, device_rule_v1, expand_slice,
                                            host_dir, normalize_device_rule, parse_cgroup_mounts, parse_proc_cgroup,
                                            pids_max_value, requested_limits, resolve_cgroups_path, shares_to_weight,
                                            swap_to_v2, v2_limit)
from corert.drivers.cgroups.devices_bpf import device_rules_to_bpf
from corert.drivers.cgroups.v2 import required_controllers
from corert.errors import ResourceError


@pytest.mark.parametrize("shares, weight", [(0, 0), (2, 1), (1, 1), (1024, 39), (512, 20), (262144, 10000),
                                            (1 << 20, 10000)])
def test_shares_to_weight_matches_runc_formula(shares: int, weight: int) -> None:
    assert shares_to_weight(shares) == weight


@pytest.mark.parametrize("blkio, io", [(0, 0), (10, 1), (1000, 10000), (500, 4950), (100, 910)])
def test_blkio_weight_to_io_weight(blkio: int, io: int) -> None:
    assert blkio_weight_to_io_weight(blkio) == io


def test_swap_to_v2() -> None:
    assert swap_to_v2(None, 100) is None
    assert swap_to_v2(0, 100) is None
    assert swap_to_v2(-1, 100) == -1
    assert swap_to_v2(300, 100) == 200
    assert swap_to_v2(100, 100) == 0
    with pytest.raises(ResourceError, match="needs a memory limit"):
        swap_to_v2(300, None)
    with pytest.raises(ResourceError, match="needs a memory limit"):
        swap_to_v2(300, -1)
    with pytest.raises(ResourceError, match=">= memory.limit"):
        swap_to_v2(50, 100)


def test_cpu_max_and_pids_and_limits() -> None:
    assert cpu_max_value(None, None) is None
    assert cpu_max_value(0, 0) is None
    assert cpu_max_value(50000, 100000) == "50000 100000"
    assert cpu_max_value(20000, None) == "20000"
    assert cpu_max_value(-1, None) == "max"
    assert cpu_max_value(None, 200000) == "max 200000"
    assert pids_max_value(None) is None
    assert pids_max_value(0) is None
    assert pids_max_value(-1) == "max"
    assert pids_max_value(32) == "32"
    assert v2_limit(-1) == "max"
    assert v2_limit(4096) == "4096"


def test_device_rules_v1() -> None:
    assert device_rule_v1({"allow": False, "access": "rwm"}, 0) == ("devices.deny", "a")
    assert device_rule_v1({"allow": True}, 0) == ("devices.allow", "a")
    assert device_rule_v1({"allow": True, "type": "c", "major": 1, "minor": 3, "access": "wr"}, 0) == \
        ("devices.allow", "c 1:3 rw")
    assert device_rule_v1({"allow": True, "type": "c", "major": 136, "access": "rwm"}, 0) == \
        ("devices.allow", "c 136:* rwm")
    assert device_rule_v1({"allow": False, "type": "b", "major": -1, "minor": 0, "access": "m"}, 0) == \
        ("devices.deny", "b *:0 m")
    assert device_rule_v1({"allow": True, "type": "a", "major": 5, "access": "r"}, 0) == \
        ("devices.allow", "a 5:* r")


@pytest.mark.parametrize("rule, field", [({"type": "c"}, "needs 'allow'"), ({"allow": True, "type": "x"}, "type"),
                                         ({"allow": True, "access": "rwx"}, "access"),
                                         ({"allow": True, "major": "1"}, "major"),
                                         ({"allow": True, "minor": -5}, "minor")])
def test_device_rule_validation(rule: dict, field: str) -> None:
    with pytest.raises(ResourceError, match=r"linux\.resources\.devices\[3\]"):
        try:
            normalize_device_rule(rule, 3)
        except ResourceError as e:
            assert field in str(e)
            raise


def test_expand_slice() -> None:
    assert expand_slice("system.slice") == "/system.slice"
    assert expand_slice("a-b-c.slice") == "/a.slice/a-b.slice/a-b-c.slice"
    assert expand_slice("-.slice") == ""
    for bad in ("foo", "a--b.slice", "-a.slice", "a/b.slice"):
        with pytest.raises(ResourceError):
            expand_slice(bad)


def test_resolve_cgroups_path() -> None:
    cur = "/process_api/abc"
    assert resolve_cgroups_path("c1", None, cur) == "/process_api/abc/corert-c1"
    assert resolve_cgroups_path("c1", None, "/") == "/corert-c1"
    assert resolve_cgroups_path("c1", "/machine/c1", cur) == "/machine/c1"
    assert resolve_cgroups_path("c1", "sub/c1", cur) == "/process_api/abc/sub/c1"
    assert resolve_cgroups_path("c1", "machine.slice:libpod:c1", cur) == "/machine.slice/libpod-c1.scope"
    assert resolve_cgroups_path("c1", "a-b.slice:crio:x", cur) == "/a.slice/a-b.slice/crio-x.scope"
    assert resolve_cgroups_path("c1", ":corert:x", cur) == "/system.slice/corert-x.scope"
    assert resolve_cgroups_path("c1", "user.slice::x", cur) == "/user.slice/x.scope"
    assert resolve_cgroups_path("c1", "//a/./b/", cur) == "/a/b"
    for bad in ("/a/../b", "../x", "a/.."):
        with pytest.raises(ResourceError, match=r"\.\."):
            resolve_cgroups_path("c1", bad, cur)
    for bad_id in ("", "a/b", ".."):
        with pytest.raises(ResourceError, match="container id"):
            resolve_cgroups_path(bad_id, None, cur)


MOUNTINFO = """\
22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:5 - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 /docker/x /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
42 22 0:39 / /mnt/with\\040space rw - cgroup cgroup rw,pids
"""


def test_parse_cgroup_mounts() -> None:
    mounts = parse_cgroup_mounts(MOUNTINFO)
    assert mounts == [
        ("cgroup", "/sys/fs/cgroup/cpu,cpuacct", "/", frozenset({"cpu", "cpuacct"})),
        ("cgroup", "/sys/fs/cgroup/memory", "/docker/x", frozenset({"memory"})),
        ("cgroup", "/sys/fs/cgroup/systemd", "/", frozenset({"name=systemd"})),
        ("cgroup2", "/sys/fs/cgroup/unified", "/", frozenset()),
        ("cgroup", "/mnt/with space", "/", frozenset({"pids"})),
    ]


def test_parse_proc_cgroup_and_host_dir() -> None:
    text = "9:name=systemd:/\n4:memory:/process_api/h\n2:cpu,cpuacct:/a\n0::/u\n"
    assert parse_proc_cgroup(text) == {"name=systemd": "/", "memory": "/process_api/h", "cpu": "/a",
                                       "cpuacct": "/a", "": "/u"}
    assert host_dir("/sys/fs/cgroup/memory", "/", "/process_api/h") == "/sys/fs/cgroup/memory/process_api/h"
    assert host_dir("/sys/fs/cgroup/memory", "/", "/") == "/sys/fs/cgroup/memory"
    assert host_dir("/sys/fs/cgroup/memory", "/docker/x", "/docker/x/c1") == "/sys/fs/cgroup/memory/c1"
    assert host_dir("/sys/fs/cgroup/memory", "/docker/x", "/docker/x") == "/sys/fs/cgroup/memory"


def test_requested_limits_and_v2_controllers() -> None:
    assert requested_limits(None) == []
    unset = {"memory": {"limit": 0, "swap": -1}, "cpu": {"cpus": "", "quota": -1}, "pids": {"limit": 0},
             "hugepageLimits": [{"pageSize": "2MB", "limit": 0}], "unified": {},
             "blockIO": {"weightDevice": [{"major": 8, "minor": 0}]}}
    assert requested_limits(unset) == []
    res = {"memory": {"limit": 1 << 20}, "cpu": {"shares": 512, "cpus": "0"}, "pids": {"limit": 4},
           "devices": [{"allow": False}], "unified": {"memory.high": "max", "cgroup.max.depth": "3"},
           "blockIO": {"throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 10}]}}
    paths = requested_limits(res)
    assert "linux.resources.memory.limit" in paths and "linux.resources.devices" in paths
    assert "linux.resources.blockIO.throttleReadBpsDevice[0].rate" in paths
    assert "linux.resources.devices" not in requested_limits(res, include_devices=False)
    assert set(required_controllers(res)) == {"memory", "cpu", "cpuset", "pids", "io"}
    assert required_controllers({"memory": {"disableOOMKiller": True}}) == {
        "memory": "linux.resources.memory.disableOOMKiller"}


# ------------------------------------------------------------------ BPF: run the program in a tiny interpreter

def _run_bpf(program: bytes, dev_type: int, major: int, minor: int, access: int) -> int:
    """Interpret the opcodes device_rules_to_bpf emits, against one bpf_cgroup_dev_ctx."""
    ctx = struct.pack("=III", dev_type | (access << 16), major, minor)
    regs = [0] * 11
    insns = [struct.unpack_from("=BBhi", program, i) for i in range(0, len(program), 8)]
    pc, steps = 0, 0
    mask32 = 0xFFFFFFFF
    while True:
        steps += 1
        assert steps < 10000 and 0 <= pc < len(insns), "ran off the program"
        code, regbyte, off, imm = insns[pc]
        dst, src = regbyte & 0xF, regbyte >> 4
        pc += 1
        if code == 0x61:
            regs[dst] = struct.unpack_from("=I", ctx, off)[0] if src == 1 else pytest.fail("ldx from non-ctx")
        elif code == 0x54:
            regs[dst] = (regs[dst] & imm) & mask32
        elif code == 0x74:
            regs[dst] = (regs[dst] & mask32) >> imm
        elif code == 0xBC:
            regs[dst] = regs[src] & mask32
        elif code == 0xB7:
            regs[dst] = imm
        elif code == 0x55:
            if regs[dst] != (imm & ((1 << 64) - 1)):
                assert off > 0, "backward or null jump"
                pc += off
        elif code == 0x95:
            return regs[0]
        else:
            pytest.fail(f"unexpected opcode {code:#x}")


def _reference(rules: list[dict], kind: str, major: int, minor: int, access: str) -> int:
    """OCI semantics as runc implements them: the last matching rule decides, no match = deny."""
    verdict = 0
    for i, rule in enumerate(rules):
        allow, rkind, rmaj, rmin, racc = normalize_device_rule(rule, i)
        if (rkind in ("a", kind) and rmaj in (-1, major) and rmin in (-1, minor) and set(access) <= set(racc)):
            verdict = 1 if allow else 0
    return verdict


RULESETS = [
    [],
    [{"allow": False, "access": "rwm"}],
    [{"allow": True, "access": "rwm"}],
    [{"allow": False, "access": "rwm"}, {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
     {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "rw"},
     {"allow": True, "type": "c", "major": 136, "access": "rwm"},
     {"allow": True, "type": "b", "major": 8, "minor": 0, "access": "r"}],
    [{"allow": True, "access": "rwm"}, {"allow": False, "type": "c", "major": 1, "minor": 3, "access": "w"},
     {"allow": False, "type": "b", "access": "m"}],
    [{"allow": True, "type": "c", "access": "r"}, {"allow": False, "type": "c", "major": 5}],
]


@pytest.mark.parametrize("rules", RULESETS)
def test_bpf_program_matches_oci_semantics(rules: list[dict]) -> None:
    program = device_rules_to_bpf(rules)
    assert len(program) % 8 == 0
    insns = [struct.unpack_from("=BBhi", program, i) for i in range(0, len(program), 8)]
    assert insns[-1][0] == 0x95   # ends in exit: nothing unreachable after an unconditional verdict
    kinds = {"c": 2, "b": 1}
    accesses = ["r", "w", "m", "rw", "rwm", "wm"]
    for kind, major, minor, access in itertools.product("cb", (1, 5, 8, 136), (0, 3, 5), accesses):
        got = _run_bpf(program, kinds[kind], major, minor, sum({"m": 1, "r": 2, "w": 4}[c] for c in access))
        assert got == _reference(rules, kind, major, minor, access), (kind, major, minor, access)


def test_bpf_unconditional_rule_truncates_program() -> None:
    # "allow all" last: everything before it is unreachable and must not be emitted.
    short = device_rules_to_bpf([{"allow": False, "type": "c", "major": 1, "minor": 3}, {"allow": True}])
    assert len(short) // 8 == 6 + 2   # prologue + mov/exit
