"""corert.jsonio gives exactly what json gives (it only skips json's imports on the cold-start path)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from corert import jsonio

VALUES = [
    {}, [], "s", 1, -2.5, None, True, [[[]]], (1, 2),
    {"a": [1, 2.5, None, True, False, "x<é>\u2028\U0001F600"], "b": {}, "c": [], "d": {"e": {"f": [{}]}},
     1: 2, None: 3, 2.5: "float key", False: 0},
    {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf"), "big": 10 ** 30},
]


@pytest.mark.parametrize("value", VALUES, ids=range(len(VALUES)))
@pytest.mark.parametrize("ensure_ascii", [True, False])
def test_dumps_matches_json(value: object, ensure_ascii: bool) -> None:
    assert jsonio.dumps(value, ensure_ascii=ensure_ascii) == json.dumps(
        value, ensure_ascii=ensure_ascii, separators=(",", ":"))
    for indent in (2, 4, "  ", "\t", 0):
        assert jsonio.dumps(value, indent=indent, ensure_ascii=ensure_ascii) == json.dumps(
            value, indent=indent, ensure_ascii=ensure_ascii)


def test_sort_keys_matches_json() -> None:
    value = {"b": 1, "a": {"d": [1], "c": None}}
    assert jsonio.dumps(value, sort_keys=True) == json.dumps(value, sort_keys=True, separators=(",", ":"))
    assert jsonio.dumps(value, sort_keys=True, indent=2) == json.dumps(value, sort_keys=True, indent=2)


@pytest.mark.parametrize("bad", [{"a": object()}, [{1, 2}]])
def test_dumps_refuses_what_json_refuses(bad: object) -> None:
    for indent in (None, 2):
        with pytest.raises(TypeError):
            jsonio.dumps(bad, indent=indent)


@pytest.mark.parametrize("text", ['{"a": [1, 2, {"b": null}]}', " [1] ", b'{"x": "\xc3\xa9"}', '"\\ud83d\\ude00"',
                                  "1e400", "NaN", "-Infinity", b"\xef\xbb\xbf{}", "\n\t 3 \r\n"])
def test_loads_matches_json(text: str | bytes) -> None:
    assert repr(jsonio.loads(text)) == repr(json.loads(text))


def test_errors_are_json_errors_in_a_fresh_interpreter() -> None:
    """The C scanner reports syntax errors through json.decoder, which a cold CLI has not imported."""
    code = ("import sys; from corert import jsonio\n"
            "for bad in ['', '{', '[1,]', '{\"a\":1} x', b'\\xff', 'nul', '{\"a\":']:\n"
            "    try:\n        jsonio.loads(bad)\n    except ValueError as e:\n"
            "        print(type(e).__name__)\n    else:\n        print('accepted', bad)\n")
    src = str(Path(__file__).resolve().parents[2])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": src})
    assert out.stdout.split() == ["JSONDecodeError"] * 4 + ["UnicodeDecodeError"] + ["JSONDecodeError"] * 2
