"""The fast `corert` launcher (python -I -S): the same CLI, without `site`."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from corert.cli import launcher


def test_launcher_runs_the_cli_without_site(tmp_path: Path) -> None:
    script = tmp_path / "corert"
    script.write_text("placeholder")
    launcher.install(str(script))
    assert os.stat(script).st_mode & 0o777 == 0o755
    text = script.read_text()
    assert text.startswith(f"#!{sys.executable} -IS\n")
    out = subprocess.run([str(script), "--version"], capture_output=True, text=True, env={}, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("corert version ")
    # The same script body, asked which modules it loaded: `site` is not among them.
    probe = text.replace("console_main()\n", "print('site' in sys.modules, 'corert.cli' in sys.modules)\n")
    script.write_text(probe)
    out = subprocess.run([str(script)], capture_output=True, text=True, env={"PYTHONPATH": "/nonexistent"},
                         timeout=60)
    assert out.stdout.split() == ["False", "True"], out.stderr
    assert not list(tmp_path.glob("*.tmp"))


def test_unknown_verb_exit_code_through_the_launcher(tmp_path: Path) -> None:
    script = tmp_path / "corert"
    launcher.install(str(script))
    out = subprocess.run([str(script), "--root", str(tmp_path / "state"), "state", "nosuch"],
                         capture_output=True, text=True, env={}, timeout=60)
    assert out.returncode == 1
    assert out.stderr.strip() == "corert: container 'nosuch' does not exist"
