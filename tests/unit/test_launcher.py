"""The fast `corert` launcher (python -I -S): the same CLI, without `site`."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from corert.cli import launcher


def _bin(tmp_path: Path) -> Path:
    """A bin dir for the command (the Python CLI goes to ../libexec/corert/ from there)."""
    (tmp_path / "bin").mkdir(exist_ok=True)
    return tmp_path / "bin"


def test_launcher_runs_the_cli_without_site(tmp_path: Path) -> None:
    target = _bin(tmp_path) / "corert"
    target.write_text("placeholder")
    script = Path(launcher.install(str(target)))
    # The command is the native front (corert/cli/native/); the Python CLI is a script named corert too.
    assert script == tmp_path / "libexec" / "corert" / "corert"
    assert target.read_bytes()[:4] == b"\x7fELF"
    assert os.stat(target).st_mode & 0o777 == 0o755 and os.stat(script).st_mode & 0o777 == 0o755
    text = script.read_text()
    assert text.startswith(f"#!{sys.executable} -IS\n")
    out = subprocess.run([str(target), "--version"], capture_output=True, text=True, env={}, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("corert version ")
    # The same script body, asked which modules it loaded: `site` is not among them.
    probe = text.replace("console_main()\n", "print('site' in sys.modules, 'corert.cli' in sys.modules)\n")
    script.write_text(probe)
    out = subprocess.run([str(script)], capture_output=True, text=True, env={"PYTHONPATH": "/nonexistent"},
                         timeout=60)
    assert out.stdout.split() == ["False", "True"], out.stderr
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]   # incl. dot-files


def test_unknown_verb_exit_code_through_the_launcher(tmp_path: Path) -> None:
    target = _bin(tmp_path) / "corert"
    launcher.install(str(target))
    out = subprocess.run([str(target), "--root", str(tmp_path / "state"), "state", "nosuch"],
                         capture_output=True, text=True, env={}, timeout=60)
    assert out.returncode == 1
    assert out.stderr.strip() == "corert: container 'nosuch' does not exist"


def _copy_of_installed_corert(dest: Path) -> Path:
    """A private site-packages holding a copy of the installed corert (the test edits its sources)."""
    import shutil

    import corert

    site = dest / "site"
    shutil.copytree(Path(corert.__file__).parent, site / "corert",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return site


# Run through the launcher's own script body: which loader each module came from.
_PROBE = """
import corert.cli.lifecycle, corert.engine.state
for name in ("corert", "corert.cli.lifecycle", "corert.engine.state"):
    print(name, type(sys.modules[name].__spec__.loader).__name__, getattr(sys.modules[name], "MARK", "-"))
print("file", sys.modules["corert.engine.state"].__file__)
"""


def _loaders(script: Path) -> dict[str, list[str]]:
    probe = script.read_text().replace("console_main()\n", _PROBE)
    probe_script = script.with_name("probe")
    probe_script.write_text(probe)
    out = subprocess.run([sys.executable, "-I", "-S", str(probe_script)], capture_output=True, text=True,
                         env={}, timeout=60)
    assert out.returncode == 0, out.stderr
    return {line.split()[0]: line.split()[1:] for line in out.stdout.splitlines()}


def test_modules_come_from_the_bundle_until_their_source_changes(tmp_path: Path) -> None:
    site = _copy_of_installed_corert(tmp_path)
    target = _bin(tmp_path) / "corert"
    script = Path(launcher.install(str(target), paths=[str(site)]))
    assert (tmp_path / "bin" / "corert.bundle").stat().st_size > 100_000
    loaders = _loaders(script)
    assert loaders["corert"] == ["_CodeBundle", "-"]
    assert loaders["corert.cli.lifecycle"] == ["_CodeBundle", "-"]
    assert loaders["corert.engine.state"] == ["_CodeBundle", "-"]
    assert loaders["file"] == [str(site / "corert" / "engine" / "state.py")]

    # An edited module is read from its file again; the others still come from the bundle.
    state_py = site / "corert" / "engine" / "state.py"
    state_py.write_text(state_py.read_text() + "\nMARK = 'edited'\n")
    loaders = _loaders(script)
    assert loaders["corert.engine.state"] == ["SourceFileLoader", "edited"]
    assert loaders["corert.cli.lifecycle"] == ["_CodeBundle", "-"]

    # The CLI still works through the launcher with a bundle that is partly stale.
    out = subprocess.run([str(target), "--root", str(tmp_path / "state"), "state", "nosuch"],
                         capture_output=True, text=True, env={}, timeout=60)
    assert (out.returncode, out.stderr.strip()) == (1, "corert: container 'nosuch' does not exist")


def test_a_broken_bundle_is_ignored(tmp_path: Path) -> None:
    site = _copy_of_installed_corert(tmp_path)
    target = _bin(tmp_path) / "corert"
    script = Path(launcher.install(str(target), paths=[str(site)]))
    (tmp_path / "bin" / "corert.bundle").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not marshal")
    assert _loaders(script)["corert.engine.state"] == ["SourceFileLoader", "-"]
    (tmp_path / "bin" / "corert.bundle").unlink()
    assert _loaders(script)["corert.engine.state"] == ["SourceFileLoader", "-"]
    out = subprocess.run([str(target), "--version"], capture_output=True, text=True, env={}, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("corert version "), out.stderr


def test_the_bundle_survives_its_fd_being_closed_and_reused(tmp_path: Path) -> None:
    """A forked helper (`run -d --rm`'s watcher) closes every fd, then imports more of corert while other
    files take the freed numbers: modules still come from the bundle, never from whatever the fd is now."""
    site = _copy_of_installed_corert(tmp_path)
    script = Path(launcher.install(str(_bin(tmp_path) / "corert"), paths=[str(site)]))
    other = tmp_path / "other"
    other.write_bytes(b"\xe3" * 4096)   # marshal's code-object type byte: the worst thing to read instead
    probe = script.read_text().replace("console_main()\n", f"""
import os
os.closerange(3, 1024)
held = [os.open({str(other)!r}, os.O_RDONLY) for _ in range(8)]
import corert.engine.delete
print(type(sys.modules["corert.engine.delete"].__spec__.loader).__name__)
""")
    (tmp_path / "probe").write_text(probe)
    out = subprocess.run([sys.executable, "-I", "-S", str(tmp_path / "probe")], capture_output=True, text=True,
                         env={}, timeout=60)
    assert (out.returncode, out.stdout.strip()) == (0, "_CodeBundle"), out.stderr


def test_no_bundle_where_corert_is_not_installed(tmp_path: Path) -> None:
    """An install the launcher's paths do not hold (editable, found through a .pth file): no bundle, no
    finder and no native front (the script is the command), and a stale bundle from an earlier install goes."""
    script = _bin(tmp_path) / "corert"
    (tmp_path / "bin" / "corert.bundle").write_bytes(b"stale")
    (tmp_path / "empty").mkdir()
    assert launcher.install(str(script), paths=[str(tmp_path / "empty")]) == str(script)
    assert not (tmp_path / "bin" / "corert.bundle").exists()
    assert "_CodeBundle" not in script.read_text()
    out = subprocess.run([str(script), "--version"], capture_output=True, text=True, env={}, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("corert version "), out.stderr
