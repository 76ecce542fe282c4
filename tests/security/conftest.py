"""Fixtures of the escape suite: the static probe program, and running it through `corert run`.

Every attack goes through the front door as a user would type it (`corert run busybox ...` as root with
the defaults), or through the OCI CLI with a bundle where the attack needs a hand-made config.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

PROGS = Path(__file__).parent / "progs"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the escape suite runs as root")


@pytest.fixture(scope="session")
def probe_dir(tmp_path_factory) -> Path:
    """A directory holding `probe` (tests/security/progs/probe.c, built static), mounted into containers."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.fail("gcc is needed to build the security probes (scripts/setup installs it)")
    out = tmp_path_factory.mktemp("probe")
    subprocess.run([gcc, "-static", "-O2", "-o", str(out / "probe"), str(PROGS / "probe.c")], check=True)
    # World-searchable, so that a container whose root is an unprivileged host id can still exec it.
    for d in (out, out.parent):
        os.chmod(d, 0o755)
    return out


@pytest.fixture
def run_probe(corert, probe_dir):
    """run_probe(*probe_args, opts=[...]) -> CompletedProcess of `corert run --rm -v probe:/p:ro busybox /p/probe ...`."""
    def run(*args: str, opts: tuple[str, ...] = ()):
        r = corert("run", "--rm", "-v", f"{probe_dir}:/p:ro", *opts, "busybox", "/p/probe", *args)
        assert r.returncode == 0, r.stderr
        return r
    return run


@pytest.fixture
def sh(corert):
    """sh(script, opts=[...]) -> CompletedProcess of `corert run --rm busybox sh -c script`."""
    def run(script: str, opts: tuple[str, ...] = ()):
        return corert("run", "--rm", *opts, "busybox", "sh", "-c", script)
    return run
