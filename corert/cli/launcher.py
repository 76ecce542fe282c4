"""A faster `corert` command: the console script with `python -I -S` instead of a full interpreter start.

Engines start the runtime 3-4 times per container, so interpreter start-up is a large share of every
verb. The script pip writes runs `site` (~3 ms here: venv detection, .pth files such as setuptools'
distutils hack); this launcher skips it (-S, and -I: no PYTHON* variables, no user site, no script dir on
sys.path) and puts the install's own site-packages on sys.path itself. If corert is not importable that
way (an editable install found through a .pth file), it falls back to running `site` first.

`scripts/setup` runs `python -m corert.cli.launcher .venv/bin/corert` after installing; a later plain
`pip install` just puts pip's (slower, equivalent) script back.
"""
from __future__ import annotations

import os
import sys
import sysconfig

TEMPLATE = """#!{python} -IS
# Written by `python -m corert.cli.launcher` (corert/cli/launcher.py): pip's console script, minus `site`.
import sys
sys.path.extend({paths!r})
try:
    from corert.cli import console_main
except ImportError:
    import site
    site.main()
    from corert.cli import console_main
console_main()
"""


def launcher_text(python: str | None = None) -> str:
    """The script for this interpreter (a venv's python: its site-packages dirs, deduplicated)."""
    paths: list[str] = []
    for key in ("purelib", "platlib"):
        path = sysconfig.get_paths()[key]
        if path not in paths:
            paths.append(path)
    return TEMPLATE.format(python=python or sys.executable, paths=paths)


def install(target: str) -> None:
    """Replace `target` (pip's console script) atomically with the launcher, mode 0755."""
    tmp = f"{target}.corert-launcher.tmp"
    with open(tmp, "w") as f:
        f.write(launcher_text())
    os.chmod(tmp, 0o755)
    os.replace(tmp, target)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m corert.cli.launcher PATH-OF-THE-CORERT-SCRIPT")
    install(sys.argv[1])
