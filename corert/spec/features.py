"""`corert features`: what this runtime supports, in the shape `runc features` prints."""
from __future__ import annotations

from corert.spec import host
from corert.spec.capabilities import ALL_CAPABILITIES
from corert.spec import OCI_VERSION
from corert.spec.load import (HOOK_NAMES, NAMESPACE_TYPES, SECCOMP_ACTIONS, SECCOMP_ARCHS, SECCOMP_FLAGS,
                              SECCOMP_OPERATORS)
from corert.spec.mountopts import SUPPORTED_OPTIONS

OCI_VERSION_MIN = "1.0.0"
VERSION_ANNOTATION = "io.github.corert.version"


def _corert_version() -> str:
    try:
        from corert import __version__  # type: ignore[attr-defined]
    except ImportError:
        return "unknown"
    return str(__version__)


def features() -> dict:
    """The features document (runtime-spec features.md); lists only what corert implements."""
    # seccomp needs both the kernel filter support and libseccomp through pyseccomp (found, not imported).
    from importlib.util import find_spec

    seccomp_on = host.seccomp_enabled() and find_spec("pyseccomp") is not None
    seccomp: dict = {"enabled": seccomp_on}
    if seccomp_on:
        seccomp.update(
            actions=sorted(SECCOMP_ACTIONS),
            operators=sorted(SECCOMP_OPERATORS),
            archs=sorted(SECCOMP_ARCHS),
            knownFlags=sorted(SECCOMP_FLAGS),
            supportedFlags=sorted(SECCOMP_FLAGS),
        )
    return {
        "ociVersionMin": OCI_VERSION_MIN,
        "ociVersionMax": OCI_VERSION,
        "hooks": list(HOOK_NAMES),
        "mountOptions": list(SUPPORTED_OPTIONS),
        "linux": {
            "namespaces": sorted(NAMESPACE_TYPES),
            "capabilities": list(ALL_CAPABILITIES),
            "cgroup": {"v1": True, "v2": True, "systemd": False, "systemdUser": False},
            "seccomp": seccomp,
            "apparmor": {"enabled": host.apparmor_enabled()},
            "selinux": {"enabled": host.selinux_enabled()},
            "intelRdt": {"enabled": False},
            "mountExtensions": {"idmap": {"enabled": False}},
        },
        "annotations": {VERSION_ANNOTATION: _corert_version()},
    }
