"""Security defaults of `corert run` and their flags, read back from inside the container.

What the kernel reports in /proc/self/status (CapEff/CapPrm/CapBnd/CapInh/CapAmb, NoNewPrivs, Seccomp)
is the ground truth; the expected values are docker's documented defaults, and podman (with runc) run on
the same image exported by corert is the oracle for the comparison test.
"""
from __future__ import annotations

import json
import resource
import shutil
import subprocess

import pytest

from corert.drivers.security.capabilities import DOCKER_DEFAULT_CAPS, caps_to_mask, kernel_cap_mask
from security.secsupport import status_fields

DOCKER_MASK = caps_to_mask(DOCKER_DEFAULT_CAPS, "docker")   # 0xa80425fb
STATUS = "cat /proc/self/status"


def _status(sh, *opts: str) -> dict[str, str]:
    r = sh(STATUS, opts=opts)
    assert r.returncode == 0, r.stderr
    return status_fields(r.stdout)


def _caps(fields: dict, name: str) -> int:
    return int(fields[name], 16)


def test_default_capabilities_nnp_and_seccomp(sh):
    """Defaults: docker's capability set in every set but inheritable/ambient, no_new_privs on, and a
    seccomp filter (mode 2)."""
    f = _status(sh)
    assert DOCKER_MASK == 0xA80425FB
    for name in ("CapEff", "CapPrm", "CapBnd"):
        assert _caps(f, name) == DOCKER_MASK, (name, f[name])
    assert _caps(f, "CapInh") == 0 and _caps(f, "CapAmb") == 0
    assert f["NoNewPrivs"] == "1"
    assert f["Seccomp"] == "2"


@pytest.mark.parametrize("opts,added,removed", [
    (("--cap-add", "SYS_ADMIN"), 1 << 21, 0),
    (("--cap-drop", "NET_RAW"), 0, 1 << 13),
    (("--cap-add", "cap_sys_ptrace", "--cap-drop", "CHOWN"), 1 << 19, 1 << 0),
])
def test_cap_add_and_drop(sh, opts, added, removed):
    """--cap-add/--cap-drop change the effective and bounding sets by exactly those bits."""
    f = _status(sh, *opts)
    expected = (DOCKER_MASK | added) & ~removed
    assert _caps(f, "CapEff") == expected and _caps(f, "CapBnd") == expected


def test_cap_drop_all_keeps_only_added(sh):
    """--cap-drop ALL --cap-add CHOWN: only CAP_CHOWN is left, in every set."""
    f = _status(sh, "--cap-drop", "ALL", "--cap-add", "CHOWN")
    assert _caps(f, "CapEff") == 1 and _caps(f, "CapBnd") == 1


def _own_bounding() -> int:
    with open("/proc/self/status") as f:
        return _caps(status_fields(f.read()), "CapBnd")


def test_privileged_warns_and_gives_everything(corert):
    """--privileged prints what it gives away, and gives it: every capability, no seccomp, no masks."""
    r = corert("run", "--rm", "--privileged", "busybox", "sh", "-c", f"{STATUS}; wc -c < /proc/timer_list")
    assert r.returncode == 0, r.stderr
    assert "--privileged gives the container every capability, no seccomp filter and no masked paths" in r.stderr
    f = status_fields(r.stdout)
    everything = kernel_cap_mask() & _own_bounding()   # all we have (root here lacks CAP_SYS_RESOURCE)
    assert _caps(f, "CapEff") == everything and _caps(f, "CapBnd") == everything
    assert f["Seccomp"] == "0"
    assert int(r.stdout.splitlines()[-1]) > 0   # /proc/timer_list is no longer masked


def test_security_opt_seccomp_unconfined(sh):
    f = _status(sh, "--security-opt", "seccomp=unconfined")
    assert f["Seccomp"] == "0" and f["NoNewPrivs"] == "1"


def test_security_opt_seccomp_file(sh, tmp_path):
    """--security-opt seccomp=FILE loads that profile: mkdir fails with the profile's errno (EPERM)."""
    profile = {"defaultAction": "SCMP_ACT_ALLOW",
               "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(profile))
    r = sh("grep ^Seccomp: /proc/self/status; mkdir /tmp/d && echo made; ls /bin/busybox",
           opts=("--security-opt", f"seccomp={path}"))
    assert "Seccomp:\t2" in r.stdout
    assert "made" not in r.stdout and "Operation not permitted" in r.stderr
    assert "/bin/busybox" in r.stdout


def test_security_opt_no_new_privileges(sh):
    assert _status(sh, "--security-opt", "no-new-privileges")["NoNewPrivs"] == "1"
    f = _status(sh, "--security-opt", "no-new-privileges=false")
    assert f["NoNewPrivs"] == "0" and f["Seccomp"] == "2"   # the filter is loaded before the uid switch


def test_read_only_rootfs(sh):
    """--read-only: / is read-only (EROFS); the tmpfs mounts (/dev, /dev/shm) stay writable, /tmp too when
    asked with --tmpfs (docker adds no /tmp of its own)."""
    r = sh("touch /x 2>&1; touch /tmp/x 2>&1; touch /dev/shm/x && echo shm-ok", opts=("--read-only",))
    assert r.stdout.count("Read-only file system") == 2 and "shm-ok" in r.stdout
    r = sh("touch /tmp/x && echo tmp-ok; touch /x 2>&1", opts=("--read-only", "--tmpfs", "/tmp"))
    assert "tmp-ok" in r.stdout and "Read-only file system" in r.stdout


def test_sys_and_proc_sys_read_only(sh):
    """/sys is mounted read-only and /proc/sys is a read-only bind: their mount options say "ro"."""
    r = sh("grep -E ' /sys | /proc/sys ' /proc/self/mountinfo")
    lines = r.stdout.splitlines()
    assert len(lines) == 2
    for line in lines:
        assert "ro" in line.split()[5].split(","), line


def test_userns_auto_maps_root_to_unprivileged_range(sh):
    """--userns=auto: container root is an unprivileged host id (a free 65536-id slot), with the same
    capability sets inside its own user namespace; the host-owned image shows as nobody and cannot be
    written, /tmp can."""
    r = sh(f"cat /proc/self/uid_map /proc/self/gid_map; {STATUS}; touch /etc/x 2>&1; touch /tmp/x && echo tmp-ok",
           opts=("--userns=auto",))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    uid_map, gid_map = lines[0].split(), lines[1].split()
    assert uid_map[0] == "0" and uid_map[2] == "65536" and int(uid_map[1]) >= 65536
    assert gid_map[0] == "0" and gid_map[2] == "65536" and int(gid_map[1]) >= 65536
    f = status_fields(r.stdout)
    assert _caps(f, "CapEff") == DOCKER_MASK and f["NoNewPrivs"] == "1" and f["Seccomp"] == "2"
    assert "Permission denied" in r.stdout and "tmp-ok" in r.stdout


def test_userns_rejects_unknown_mode(corert):
    r = corert("run", "--rm", "--userns=keep-id", "busybox", "true")
    assert r.returncode == 125 and "unsupported --userns" in r.stderr


# ---- podman as the oracle ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def podman_status(tmp_path_factory) -> dict[str, str]:
    """/proc/self/status of `podman --runtime runc run` with podman's defaults on corert's busybox image.

    Module-scoped: podman sets up its own storage mounts once, outside any test's leak snapshot."""
    from support import CORERT, installed
    podman = installed("podman")
    tar = tmp_path_factory.mktemp("podman") / "busybox.tar"
    subprocess.run([CORERT, "image", "export", "busybox", str(tar)], check=True)
    loaded = subprocess.run([podman, "load", "-i", str(tar)], capture_output=True, text=True, check=True)
    image = loaded.stdout.strip().rsplit(" ", 1)[-1]
    # This host's root lacks CAP_SYS_RESOURCE: podman's default nofile/nproc limits cannot be set, so
    # lower ones are given (limits do not change the security fields compared here).
    nproc = min(4096, resource.getrlimit(resource.RLIMIT_NPROC)[1])
    r = subprocess.run([podman, "--runtime", shutil.which("runc") or "/usr/sbin/runc", "run", "--rm",
                        "--network", "none", "--ulimit", "nofile=1024:1024", "--ulimit", f"nproc={nproc}:{nproc}",
                        image, "cat", "/proc/self/status"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return status_fields(r.stdout)


# podman >= 4 (containers.conf default_capabilities) trims docker's set by these three.
PODMAN_TRIMMED = caps_to_mask(["CAP_NET_RAW", "CAP_MKNOD", "CAP_AUDIT_WRITE"], "podman")


def test_defaults_match_podman(sh, podman_status):
    """corert run vs podman run on the same image: the same seccomp mode and inheritable/ambient sets;
    corert's effective/bounding sets are docker's, which is podman's plus exactly NET_RAW, MKNOD and
    AUDIT_WRITE (podman 4 dropped them from docker's list); no_new_privs is on in corert, off in podman."""
    ours = _status(sh)
    theirs = podman_status
    assert ours["Seccomp"] == theirs["Seccomp"] == "2"
    assert ours["CapInh"] == theirs["CapInh"] and ours["CapAmb"] == theirs["CapAmb"]
    for name in ("CapEff", "CapPrm", "CapBnd"):
        assert _caps(ours, name) == _caps(theirs, name) | PODMAN_TRIMMED, (name, ours[name], theirs[name])
    assert int(ours["NoNewPrivs"]) >= int(theirs["NoNewPrivs"])


def test_podman_cap_set_matches_with_caps_dropped(sh, podman_status):
    """The other way round: corert with podman's three caps dropped and no_new_privs off shows exactly
    podman's CapEff/CapPrm/CapBnd/CapInh/CapAmb, Seccomp and NoNewPrivs."""
    ours = _status(sh, "--cap-drop", "NET_RAW", "--cap-drop", "MKNOD", "--cap-drop", "AUDIT_WRITE",
                   "--security-opt", "no-new-privileges=false")
    for name in ("CapEff", "CapPrm", "CapBnd", "CapInh", "CapAmb", "Seccomp", "NoNewPrivs"):
        assert ours[name] == podman_status[name], (name, ours[name], podman_status[name])
