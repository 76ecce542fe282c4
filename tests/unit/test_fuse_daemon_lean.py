"""What the FUSE daemon loads (its memory, issue 4): its command line, and trio taken in parts.

Each case that imports runs in a fresh interpreter: the test process may hold trio already.
"""
from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from corert.drivers.storage.fuse.__main__ import _parse

def modules_after(code: str) -> set[str]:
    """sys.modules of a fresh `python -P` after code, which is run in it."""
    out = subprocess.run([sys.executable, "-P", "-c", code + "\nimport sys\nprint(sorted(sys.modules))"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return set(ast.literal_eval(out.strip().splitlines()[-1]))


def test_daemon_imports_neither_the_driver_nor_the_whole_trio_api() -> None:
    # what `python -m corert.drivers.storage.fuse` loads before it serves
    modules = modules_after("from corert.drivers.storage.fuse import __main__\n"
                            "from corert.drivers.storage.fuse import daemon")
    assert "pyfuse3" in modules and "trio._core" in modules
    unwanted = {"argparse", "pathlib", "corert.drivers.storage.fuse.driver", "corert.engine.state",
                "trio._ssl", "trio._dtls", "trio._highlevel_socket", "trio._subprocess", "trio._path"}
    assert not modules & unwanted


def test_slim_trio_gives_the_rest_of_trio_on_first_use() -> None:
    modules = modules_after(
        "from corert.drivers.storage.fuse import lean\n"
        "lean.slim_trio()\n"
        "import trio\n"
        "assert 'trio._highlevel_open_tcp_stream' not in __import__('sys').modules\n"
        "async def main():\n"
        "    lock = trio.Lock()\n"
        "    async with lock:\n"
        "        await trio.sleep(0)\n"                      # not in the parts: the whole API loads
        "    assert callable(trio.open_tcp_stream) and callable(trio.lowlevel.open_process)\n"
        "trio.run(main)\n")
    assert "trio._highlevel_open_tcp_stream" in modules and "trio._subprocess" in modules


def test_daemon_command_line() -> None:
    args = _parse(["--daemonize", "--ready-fd", "1", "--log", "L", "--upper", "U", "--work=W", "--lower", "a",
                   "--lower", "b", "--volatile", "MNT"])
    assert (args.upper, args.work, args.lower, args.log, args.mountpoint) == ("U", "W", ["a", "b"], "L", "MNT")
    assert args.daemonize and args.volatile and args.ready_fd == 1 and args.handoff is None
    args = _parse(["--upper", "U", "--work", "W", "--handoff", "S", "MNT"])
    assert (args.handoff, args.ready_fd, args.daemonize, args.volatile, args.lower) == ("S", -1, False, False, [])


@pytest.mark.parametrize("argv", [
    ["--upper", "U", "MNT"],                                 # no --work
    ["--upper", "U", "--work", "W"],                         # no mountpoint
    ["--upper", "U", "--work", "W", "A", "B"],               # two mountpoints
    ["--upper", "U", "--work", "W", "--ready-fd", "x", "M"],
    ["--upper", "U", "--work", "W", "--bogus", "M"],
    ["--upper", "U", "--work", "W", "M", "--lower"],         # a value missing
])
def test_daemon_command_line_errors(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as e:
        _parse(argv)
    assert e.value.code != 0
