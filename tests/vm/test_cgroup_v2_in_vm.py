"""The cgroup v2 suite (tests/vm/guest/) in a qemu guest with a pure cgroup v2 hierarchy: one boot.

This host is hybrid (v1 owns the controllers), so the v2 driver can only be exercised for real in a
VM. Needs root (9p passthrough of /), qemu-system-x86 and Debian's apt (the kernel .deb); scripts/setup
installs the packages. CORERT_SKIP_VM=1 skips it explicitly; a missing tool is a failure, not a skip, so
that CI cannot silently lose the v2 coverage.
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

from vm import harness

REPO = Path(__file__).resolve().parents[2]
GUEST_SUITE = "tests/vm/guest/test_v2.py"

pytestmark = [pytest.mark.vm,
              pytest.mark.skipif(os.geteuid() != 0, reason="9p passthrough of / needs root"),
              pytest.mark.skipif(os.environ.get("CORERT_SKIP_VM") == "1", reason="CORERT_SKIP_VM=1")]


def test_cgroup_v2_suite_in_vm() -> None:
    missing = harness.missing_host_tools()
    assert not missing, f"missing for the cgroup v2 VM: {missing} (run scripts/setup)"
    argv = [sys.executable, "-P", "-m", "pytest", "-q", "-rfE", "--durations=5", "-p", "no:cacheprovider", GUEST_SUITE]
    # The checkout is shared explicitly: the guest's /tmp, /run and /dev/shm are its own tmpfs, and a CI
    # checkout may well live there.
    share = [str(REPO)] + ([sys.prefix] if not sys.prefix.startswith(str(REPO) + os.sep) else [])
    result = harness.run(argv, cwd=str(REPO), share=share, disk_mb=16, timeout=300,
                         env={"CORERT_VM_GUEST": "1", "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"})
    print(result.output)
    print(f"vm: guest pytest exit {result.returncode}; guest boot {result.boot_seconds:.1f} s, "
          f"qemu total {result.seconds:.1f} s")
    assert result.returncode == 0, f"the v2 suite failed in the VM:\n{result.output}"
    # Exit 0 with nothing run would prove nothing.
    assert re.search(r"\b\d+ passed\b", result.output) and " skipped" not in result.output, result.output
