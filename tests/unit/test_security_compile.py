"""Security driver data and compilers: capability masks, docker's cap-add/drop rules, seccomp -> BPF + cache."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from corert.drivers.security import capabilities as caps
from corert.drivers.security import paths
from corert.drivers.security import seccomp
from corert.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


# --- capabilities -----------------------------------------------------------------------------------

def test_docker_default_caps_mask_matches_docker_capeff():
    # docker/podman containers show CapBnd/CapEff 00000000a80425fb in /proc/self/status.
    assert caps.caps_to_mask(list(caps.DOCKER_DEFAULT_CAPS), "process.capabilities.bounding") == 0xA80425FB
    assert len(set(caps.DOCKER_DEFAULT_CAPS)) == 14


def test_caps_to_mask_bits_and_unknown_name_path():
    assert caps.caps_to_mask([], "x") == 0
    assert caps.caps_to_mask(["CAP_CHOWN", "CAP_CHECKPOINT_RESTORE"], "x") == 1 | 1 << 40
    with pytest.raises(ConfigError) as e:
        caps.caps_to_mask(["CAP_CHOWN", "CAP_NOPE"], "process.capabilities.bounding")
    assert e.value.path == "process.capabilities.bounding[1]"
    assert "CAP_NOPE" in str(e.value)
    with pytest.raises(ConfigError):  # OCI names carry the prefix; docker's short form is for the CLI only
        caps.caps_to_mask(["CHOWN"], "process.capabilities.effective")


def test_privileged_caps_follow_the_kernel():
    last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    got = caps.privileged_caps()
    assert len(got) == min(last, 40) + 1
    assert got[0] == "CAP_CHOWN" and "CAP_SYS_ADMIN" in got
    assert caps.kernel_cap_mask() == (1 << (last + 1)) - 1
    assert caps.kernel_cap_mask(5) == 0b111111   # a cap_last_cap the caller has read already


def test_apply_cap_changes_docker_rules():
    base = list(caps.DOCKER_DEFAULT_CAPS)
    assert caps.apply_cap_changes(base, [], []) == base
    # prefix optional, any case, duplicates collapse
    got = caps.apply_cap_changes(base, ["sys_admin", "CAP_SYS_ADMIN"], ["net_raw", "CAP_MKNOD"])
    assert "CAP_SYS_ADMIN" in got and got.count("CAP_SYS_ADMIN") == 1
    assert "CAP_NET_RAW" not in got and "CAP_MKNOD" not in got
    assert len(got) == len(base) - 2 + 1
    # drop ALL keeps only the added ones
    assert caps.apply_cap_changes(base, ["chown"], ["ALL"]) == ["CAP_CHOWN"]
    assert caps.apply_cap_changes(base, [], ["all"]) == []
    # add ALL wins over drop ALL, and drops still apply to it
    everything = caps.apply_cap_changes(base, ["ALL"], ["ALL", "sys_module"])
    assert "CAP_SYS_MODULE" not in everything
    assert len(everything) == len(caps.privileged_caps()) - 1
    with pytest.raises(ConfigError) as e:
        caps.apply_cap_changes(base, ["NOT_A_CAP"], [])
    assert e.value.path == "--cap-add"
    with pytest.raises(ConfigError) as e:
        caps.apply_cap_changes(base, [], ["cap_nope"])
    assert e.value.path == "--cap-drop"


# --- paths ------------------------------------------------------------------------------------------

def test_default_paths():
    for path in paths.DEFAULT_MASKED_PATHS + paths.DEFAULT_READONLY_PATHS:
        assert path.startswith("/") and os.path.normpath(path) == path
    assert set(paths.DEFAULT_MASKED_PATHS).isdisjoint(paths.DEFAULT_READONLY_PATHS)
    assert {"/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"} <= set(paths.DEFAULT_MASKED_PATHS)
    assert {"/proc/sys", "/proc/sysrq-trigger"} <= set(paths.DEFAULT_READONLY_PATHS)


# --- seccomp: validation ----------------------------------------------------------------------------

def _profile(*syscalls: dict, **top) -> dict:
    return {"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"], "syscalls": list(syscalls), **top}


ALLOW_READ = {"names": ["read"], "action": "SCMP_ACT_ALLOW"}


@pytest.mark.parametrize(
    ("profile", "path"),
    [
        (_profile(ALLOW_READ, ALLOW_READ, ALLOW_READ, {"names": ["write"], "action": "SCMP_ACT_PERMIT"}),
         "linux.seccomp.syscalls[3].action"),
        (_profile(defaultAction="SCMP_ACT_NOPE"), "linux.seccomp.defaultAction"),
        (_profile(defaultAction="SCMP_ACT_NOTIFY"), "linux.seccomp.defaultAction"),
        ({"syscalls": []}, "linux.seccomp.defaultAction"),
        (_profile({"names": ["read"], "action": "SCMP_ACT_ALLOW",
                   "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}, {"index": 1, "value": 1, "op": "SCMP_CMP_ALMOST"}]}),
         "linux.seccomp.syscalls[0].args[1].op"),
        (_profile({"names": ["read"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}),
         "linux.seccomp.syscalls[0].args[0].index"),
        (_profile({"names": ["read"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": -1, "op": "SCMP_CMP_EQ"}]}),
         "linux.seccomp.syscalls[0].args[0].value"),
        (_profile({"names": ["read"], "action": "SCMP_ACT_ALLOW", "errnoRet": 5}), "linux.seccomp.syscalls[0].errnoRet"),
        (_profile({"names": [], "action": "SCMP_ACT_ALLOW"}), "linux.seccomp.syscalls[0].names"),
        (_profile(architectures=["SCMP_ARCH_X86_64", "SCMP_ARCH_Z80"]), "linux.seccomp.architectures[1]"),
        (_profile(flags=["SECCOMP_FILTER_FLAG_BOGUS"]), "linux.seccomp.flags[0]"),
        (_profile(architectures=["SCMP_ARCH_X86_64", "SCMP_ARCH_S390X"]), "linux.seccomp.architectures[1]"),
        (_profile(flags=["SECCOMP_FILTER_FLAG_NEW_LISTENER"]), "linux.seccomp.flags[0]"),
    ],
)
def test_invalid_profiles_name_the_json_path(profile, path, tmp_path):
    with pytest.raises(ConfigError) as e:
        seccomp.compile_seccomp(profile, tmp_path / "cache")
    assert e.value.path == path
    assert str(e.value).startswith(path + ": ")
    assert not (tmp_path / "cache").exists()  # nothing cached for a refused profile


def test_all_actions_and_operators_compile():
    actions = ["SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP",
               "SCMP_ACT_ERRNO", "SCMP_ACT_TRACE", "SCMP_ACT_ALLOW", "SCMP_ACT_LOG", "SCMP_ACT_NOTIFY"]
    names = ["getpid", "getppid", "gettid", "getuid", "getgid", "geteuid", "getegid", "sync", "uname"]
    rules = [{"names": [n], "action": a} for n, a in zip(names, actions)]
    ops = ["SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ"]
    rules += [{"names": ["read"], "action": "SCMP_ACT_ALLOW",
               "args": [{"index": i, "value": 3, "valueTwo": 1, "op": op} for i, op in enumerate(ops[:6])]},
              {"names": ["write"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 3, "valueTwo": 1, "op": ops[6]}]}]
    # Every little-endian arch this libseccomp knows (a filter cannot mix byte orders).
    arches = ["SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32", "SCMP_ARCH_ARM", "SCMP_ARCH_AARCH64",
              "SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64", "SCMP_ARCH_MIPSEL64N32", "SCMP_ARCH_PPC64LE", "SCMP_ARCH_RISCV64"]
    compiled = seccomp.compile_seccomp(
        {"defaultAction": "SCMP_ACT_KILL_PROCESS", "architectures": arches, "syscalls": rules,
         "flags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_TSYNC"]}, None)
    assert len(compiled.bpf) % 8 == 0 and compiled.instructions > len(rules)
    assert compiled.needs_listener
    # NOTIFY implies NEW_LISTENER; the kernel refuses TSYNC with it, so TSYNC is dropped.
    assert compiled.flags == seccomp.SECCOMP_FILTER_FLAG_LOG | seccomp.SECCOMP_FILTER_FLAG_NEW_LISTENER


def test_errno_values_end_up_in_the_program():
    # errnoRet / defaultErrnoRet become SECCOMP_RET_ERRNO | errno return instructions.
    compiled = seccomp.compile_seccomp(
        _profile({"names": ["getpid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 77}, ALLOW_READ, defaultErrnoRet=99), None)
    rets = {k for code, _, _, k in _insns(compiled.bpf) if code == 0x06}
    assert 0x00050000 | 77 in rets and 0x00050000 | 99 in rets
    assert 0x7FFF0000 in rets  # ALLOW
    assert compiled.flags == 0 and not compiled.needs_listener


def test_unknown_syscalls_are_skipped_like_runc():
    compiled = seccomp.compile_seccomp(_profile({"names": ["read", "corert_no_such_syscall"], "action": "SCMP_ACT_ALLOW"}), None)
    assert compiled.skipped == ("corert_no_such_syscall",)


def test_rule_equal_to_default_is_harmless():
    compiled = seccomp.compile_seccomp(_profile({"names": ["read"], "action": "SCMP_ACT_ERRNO"}), None)
    assert len(compiled.bpf) % 8 == 0


def _insns(bpf: bytes) -> list[tuple[int, int, int, int]]:
    import struct

    return [struct.unpack_from("=HBBI", bpf, off) for off in range(0, len(bpf), 8)]


# --- seccomp: default profile -----------------------------------------------------------------------

def test_default_profile_shape():
    profile = seccomp.load_default_profile("x86_64")
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO" and profile["defaultErrnoRet"] == 1
    assert profile["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    allowed = {n for e in profile["syscalls"] if e["action"] == "SCMP_ACT_ALLOW" for n in e["names"]}
    unconditional = {n for e in profile["syscalls"] if e["action"] == "SCMP_ACT_ALLOW" and not e.get("args")
                     for n in e["names"]}
    assert len(allowed) > 300
    forbidden = ("add_key keyctl request_key bpf kexec_load kexec_file_load init_module finit_module delete_module "
                 "mount umount2 pivot_root swapon swapoff reboot acct settimeofday clock_settime stime userfaultfd "
                 "perf_event_open open_by_handle_at name_to_handle_at lookup_dcookie quotactl unshare setns "
                 "io_uring_setup fsopen move_mount open_tree syslog").split()
    assert allowed.isdisjoint(forbidden)
    assert {"clone", "personality", "socket"}.isdisjoint(unconditional)
    assert {"read", "write", "openat", "execve", "exit_group", "futex", "mmap"} <= unconditional
    clone3 = [e for e in profile["syscalls"] if e["names"] == ["clone3"]]
    assert clone3 == [{"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}]
    assert seccomp.load_default_profile("aarch64")["architectures"] == ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    s390 = seccomp.load_default_profile("s390x")
    assert [a["index"] for e in s390["syscalls"] if e["names"] == ["clone"] for a in e["args"]] == [1]
    # each call returns a fresh copy
    assert seccomp.load_default_profile() is not seccomp.load_default_profile()


def test_default_profile_compiles_with_enosys_stub():
    compiled = seccomp.compile_seccomp(seccomp.load_default_profile(), None)
    assert len(compiled.bpf) % 8 == 0 and 0 < compiled.instructions <= seccomp.BPF_MAXINSNS
    assert compiled.flags == 0 and not compiled.needs_listener
    insns = _insns(compiled.bpf)
    assert insns[0] == (0x20, 0, 0, 4)  # load seccomp_data.arch first
    assert (0x06, 0, 0, 0x00050000 | 38) in insns  # RET ERRNO(ENOSYS) from the stub / clone3


# --- seccomp: cache ---------------------------------------------------------------------------------

def test_cache_hit_skips_pyseccomp_in_fresh_interpreter(tmp_path):
    cache = tmp_path / "seccomp-cache"
    profile = seccomp.load_default_profile()
    cold = seccomp.compile_seccomp(profile, cache)
    entries = sorted(p.name for p in cache.iterdir())
    assert len(entries) == 2 and entries[0].endswith(".bpf") and entries[1].endswith(".json")
    for p in cache.iterdir():
        assert p.stat().st_mode & 0o777 == 0o600
    assert cache.stat().st_mode & 0o777 == 0o700

    code = (
        "import sys, json\n"
        "from pathlib import Path\n"
        "from corert.drivers.security.seccomp import compile_seccomp, load_default_profile\n"
        f"c = compile_seccomp(load_default_profile(), Path({str(cache)!r}))\n"
        "print(json.dumps({'pyseccomp': 'pyseccomp' in sys.modules, 'ctypes': 'ctypes' in sys.modules,\n"
        "                  'hashlib': 'hashlib' in sys.modules,\n"
        "                  'sha': __import__('hashlib').sha256(c.bpf).hexdigest()}))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    import hashlib

    assert result == {"pyseccomp": False, "ctypes": False, "hashlib": False,
                      "sha": hashlib.sha256(cold.bpf).hexdigest()}

    # The same check on an empty cache proves the probe can see the import.
    out = subprocess.run([sys.executable, "-c", code.replace(str(cache), str(tmp_path / "empty"))],
                         env=env, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout)["pyseccomp"] is True


def test_cache_key_ignores_listener_path_but_not_rules(tmp_path):
    cache = tmp_path / "c"
    base = _profile(ALLOW_READ)
    seccomp.compile_seccomp(base, cache)
    seccomp.compile_seccomp({**base, "listenerPath": "/run/x.sock", "listenerMetadata": "m"}, cache)
    assert len(list(cache.glob("*.bpf"))) == 1
    seccomp.compile_seccomp(_profile({"names": ["write"], "action": "SCMP_ACT_ALLOW"}), cache)
    assert len(list(cache.glob("*.bpf"))) == 2


def test_corrupt_or_foreign_cache_entry_is_recompiled(tmp_path):
    cache = tmp_path / "c"
    profile = _profile(ALLOW_READ)
    good = seccomp.compile_seccomp(profile, cache)
    (bpf,) = cache.glob("*.bpf")
    # Same length, different content: the digest in the meta file catches it.
    bpf.write_bytes(b"\0" * len(good.bpf))
    assert seccomp.compile_seccomp(profile, cache).bpf == good.bpf
    assert bpf.read_bytes() == good.bpf  # rewritten
    # Group-writable entries are not trusted (another user could have planted them).
    bpf.chmod(0o620)
    assert seccomp.compile_seccomp(profile, cache).bpf == good.bpf
    assert bpf.stat().st_mode & 0o777 == 0o600
    assert not list(cache.glob(".*.tmp"))


def test_unwritable_cache_still_compiles(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a dir")
    compiled = seccomp.compile_seccomp(_profile(ALLOW_READ), blocker / "cache")
    assert len(compiled.bpf) % 8 == 0


def test_hot_path_modules_import_no_heavy_modules():
    code = (
        "import sys\n"
        "import corert.drivers.security.seccomp, corert.drivers.security.capabilities, corert.drivers.security.paths\n"
        "print(sorted(m for m in ('pyseccomp', 'ctypes', 'trio', 'hashlib', 'subprocess', 'logging') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(REPO)),
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
