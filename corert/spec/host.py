"""Cheap host facts the config layer needs (which LSMs are on); a few stat/read calls, no imports."""
from __future__ import annotations

import os


def apparmor_enabled() -> bool:
    """AppArmor is usable: securityfs shows it and the module says enabled (as runc checks it)."""
    if not os.path.isdir("/sys/kernel/security/apparmor"):
        return False
    try:
        with open("/sys/module/apparmor/parameters/enabled", "rb") as f:
            return f.read(1) == b"Y"
    except OSError:
        return False


def selinux_enabled() -> bool:
    """SELinux is usable: selinuxfs is mounted at /sys/fs/selinux."""
    return os.path.exists("/sys/fs/selinux/enforce")


def seccomp_enabled() -> bool:
    """The kernel has seccomp filter support (a Seccomp: line in /proc/self/status)."""
    try:
        with open("/proc/self/status", "rb") as f:
            return any(line.startswith(b"Seccomp:") for line in f)
    except OSError:
        return False
