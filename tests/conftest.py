"""Shared fixtures: the corert CLI, busybox bundles, and the leak check that runs around every test.

The leak check is the project's promise that nothing outlives a container: after each test, no new mount,
no cgroup named corert*, no veth/corert link, no network namespace and no child process may remain that
was not there before. A test that leaks fails, even when its own assertions passed.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from support import CORERT, Cli, Front, bundle_config, leaks, make_busybox_rootfs, snapshot, write_config


@pytest.fixture(autouse=True)
def no_leaks(request):
    """Fail the test if it left a mount, cgroup, link, netns or child process behind."""
    if os.geteuid() != 0 or request.node.get_closest_marker("allow_leaks"):
        yield
        return
    before = snapshot()
    yield
    left = leaks(before, snapshot())
    if left:
        pytest.fail(f"resources leaked by the test: {left}")


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory) -> Path:
    return make_busybox_rootfs(tmp_path_factory.mktemp("rootfs") / "rootfs")


@pytest.fixture
def bundle(tmp_path, busybox_rootfs) -> Path:
    """A bundle dir with config.json (corert spec defaults, /bin/true, no terminal) and the busybox rootfs."""
    b = tmp_path / "bundle"
    b.mkdir()
    write_config(b, bundle_config(busybox_rootfs))
    return b


@pytest.fixture
def state_root(tmp_path) -> Path:
    root = tmp_path / "state"
    root.mkdir(mode=0o700)
    return root


@pytest.fixture
def corert(state_root) -> Cli:
    cli = Cli(CORERT, state_root)
    yield cli
    cli.cleanup()


@pytest.fixture
def runc(tmp_path) -> Cli:
    cli = Cli(shutil.which("runc") or "/usr/sbin/runc", tmp_path / "runc-state")
    yield cli
    cli.cleanup()


@pytest.fixture
def front(tmp_path) -> Front:
    """The front door with its own state root and image store under tmp_path; what a test left goes after."""
    f = Front(tmp_path)
    yield f
    f.cleanup()
