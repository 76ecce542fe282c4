"""Fixtures shared by the rootless tests."""
from __future__ import annotations

import os

import pytest


@pytest.fixture
def fuse_open():
    """/dev/fuse as a typical host has it (0666), restored afterwards (it is 0600 on the test VM)."""
    mode = os.stat("/dev/fuse").st_mode & 0o777
    os.chmod("/dev/fuse", 0o666)
    yield
    os.chmod("/dev/fuse", mode)
