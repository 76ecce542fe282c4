"""Cold start: the OCI verbs engines call 3-4 times per container must not import heavy modules.

Each case runs the real CLI entry point in a fresh interpreter (same python and the same `corert` this
test imports) and lists sys.modules afterwards.
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys
import tempfile
from importlib.util import find_spec
from pathlib import Path

import pytest

HEAVY = {"trio", "pyroute2", "pyfuse3", "pyseccomp", "seccomp", "sqlite3", "tarfile", "logging",
         "subprocess", "asyncio", "threading", "concurrent", "http", "email", "xml", "ssl", "hashlib"}

# stdlib modules the OCI verbs avoid too: each costs milliseconds of every cold start (pathlib pulls in re,
# fnmatch and urllib; json pulls in re; signal pulls in enum). corert.jsonio, os.path and _signal instead.
COLD = {"pathlib", "json", "re", "enum", "signal", "dataclasses", "typing", "inspect", "shutil",
        "collections", "functools", "urllib", "ipaddress", "fnmatch"}

# No imports of its own beyond sys (json would hide the CLI's): argv as is, the result as a repr.
WRAPPER = """
import sys
sys.argv = ["corert"] + sys.argv[1:]
from corert.cli import main
code = main()
sys.stdout.write("\\n@@" + repr([code, sorted(sys.modules)]) + "\\n")
"""


def _corert_parent() -> str:
    spec = find_spec("corert")
    assert spec is not None and spec.submodule_search_locations
    return str(Path(list(spec.submodule_search_locations)[0]).parent)


def imported_after(argv: list[str]) -> tuple[int, set[str]]:
    """As the installed launcher runs it (corert/cli/launcher.py): python -I -S, corert's dir on sys.path."""
    prelude = f"import sys; sys.path.append({_corert_parent()!r})\n"
    # Files, not pipes: a container left by `create` holds its stdio until it is deleted.
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        subprocess.run([sys.executable, "-I", "-S", "-c", prelude + WRAPPER, *argv], stdout=out, stderr=err,
                       timeout=60)
        out.seek(0)
        err.seek(0)
        marker = out.read().rsplit("@@", 1)
        assert len(marker) == 2, err.read()
    code, modules = ast.literal_eval(marker[1].strip())
    return code, {m.split(".")[0] for m in modules}


@pytest.mark.parametrize("argv", [
    ["state", "nosuch"],
    ["kill", "nosuch", "KILL"],
    ["start", "nosuch"],
    ["delete", "nosuch"],
    ["delete", "--force", "nosuch"],
    ["list"],
    ["list", "--format", "json"],
    ["pause", "nosuch"],
    ["--help"],
])
def test_hot_verbs_stay_light(tmp_path: Path, argv: list[str]) -> None:
    if argv[0] == "delete" and find_spec("corert.engine.delete") is None:
        pytest.skip("corert.engine.delete is not written yet")
    code, modules = imported_after(["--root", str(tmp_path), "--log", str(tmp_path / "log.json"),
                                    "--log-format", "json", *argv])
    assert code in (0, 1) or argv[:2] == ["delete", "--force"]
    assert not (modules & HEAVY), f"corert {' '.join(argv)} imported {sorted(modules & HEAVY)}"
    assert not (modules & COLD), f"corert {' '.join(argv)} imported {sorted(modules & COLD)}"


@pytest.mark.skipif(os.geteuid() != 0, reason="runs real containers (root)")
def test_run_and_create_of_a_real_bundle_stay_light(tmp_path: Path, bundle: Path) -> None:
    """The whole lifecycle of a container, each verb a fresh interpreter as engines call it."""
    root = str(tmp_path / "state")
    for argv in (["run", "--bundle", str(bundle), "c1"], ["create", "--bundle", str(bundle), "c2"],
                 ["start", "c2"], ["state", "c2"], ["delete", "--force", "c2"]):
        code, modules = imported_after(["--root", root, *argv])
        assert code == 0, argv
        assert not (modules & (HEAVY | COLD)), f"corert {argv[0]} imported {sorted(modules & (HEAVY | COLD))}"


def test_the_probe_sees_lazy_imports(tmp_path: Path) -> None:
    """The probe is not blind: `ps` of a live container shells out to ps(1), so subprocess shows up."""
    from corert.engine.state import StateStore, proc_start_time

    store = StateStore(tmp_path / "root")
    record = store.reserve("c1")
    child = subprocess.Popen(["sleep", "60"])
    try:
        record.pid, record.pid_start, record.status = child.pid, proc_start_time(child.pid) or 0, "running"
        store.save(record)
        code, modules = imported_after(["--root", str(store.root), "ps", "c1"])
        assert code == 0 and "subprocess" in modules
        code, modules = imported_after(["--root", str(store.root), "state", "c1"])
        assert code == 0 and not (modules & HEAVY)
    finally:
        child.kill()
        child.wait()
