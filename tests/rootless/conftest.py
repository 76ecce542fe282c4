"""Fixtures shared by the rootless tests."""
from __future__ import annotations

import os

import pytest

from support import assert_user_clean


@pytest.fixture
def fuse_open():
    """/dev/fuse as a typical host has it (0666), restored afterwards (it is 0600 on the test VM)."""
    mode = os.stat("/dev/fuse").st_mode & 0o777
    os.chmod("/dev/fuse", 0o666)
    yield
    os.chmod("/dev/fuse", mode)


@pytest.fixture
def clean_user(user):
    """Every test starts and ends with no container, mount or process of the user (`user`: the module's)."""
    yield user
    assert_user_clean(user)
