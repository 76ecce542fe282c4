"""Shared fixtures for the engine tests (podman, containerd from Debian's packages)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from support import CORERT


@pytest.fixture(scope="session")
def image_tar(tmp_path_factory) -> Path:
    """The built-in busybox image as an OCI layout tar: what the engines import (no registry)."""
    path = tmp_path_factory.mktemp("image") / "busybox.tar"
    subprocess.run([CORERT, "image", "export", "busybox", str(path)], check=True, capture_output=True,
                   timeout=120)
    return path
