"""Fixtures for the benchmarks: the bundle, the C floor, and a quiet command runner.

Not part of the test suite (pyproject's testpaths is ["tests"]); run with `benchmarks/run`.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))   # --import-mode=importlib adds no rootdir
from bundles import Runner, compile_floor, make_bundle  # noqa: E402

import corert  # noqa: E402

# What gets measured is the installed corert (built: its Cython modules exist only there), never a source
# checkout that `python -m pytest` in the checkout would put first on sys.path: run with `python -P`.
if "site-packages" not in corert.__file__:
    raise SystemExit(f"benchmarks: corert imported from {corert.__file__}, not the installed package; "
                     "run them as benchmarks/run does (.venv/bin/python -P -m pytest ...)")


@pytest.fixture(scope="session", autouse=True)
def _root_only():
    if os.geteuid() != 0:
        pytest.skip("the start-latency benchmarks run as root (runc/crun/floor need it)")


@pytest.fixture(scope="session")
def runner():
    r = Runner()
    yield r
    r.close()


@pytest.fixture(scope="session")
def bench_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bench")


@pytest.fixture(scope="session")
def bench_bundle(bench_dir) -> Path:
    return make_bundle(bench_dir / "bundle")


@pytest.fixture(scope="session")
def floor_binary(bench_dir) -> Path:
    return compile_floor(bench_dir)
