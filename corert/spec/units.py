"""Parsing of the docker-like size and CPU flags (`--memory 64m`, `--cpus 1.5`)."""
from __future__ import annotations

from corert.errors import UsageError

# Binary multipliers as docker's RAMInBytes uses them: k = 1024, m = 1024^2, ...
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}

CPU_PERIOD_US = 100_000     # the CFS period docker uses for --cpus
_MIN_QUOTA_US = 1_000       # the kernel refuses CFS quotas below 1 ms


def parse_size(text: str | int) -> int:
    """"64M", "1.5g", "512k", "100b", "4096" -> bytes; case-insensitive, optional b/ib suffix."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise UsageError(f"invalid size {text!r}: must not be negative")
        return text
    if not isinstance(text, str):
        raise UsageError(f"invalid size {text!r}")
    s = text.strip().lower()
    if s.endswith("ib"):
        s = s[:-2]
    elif s.endswith("b"):
        s = s[:-1]
    unit = ""
    if s and s[-1] in _UNITS:
        unit = s[-1]
        s = s[:-1]
    number = _parse_decimal(s, text, "size")
    value = number * _UNITS[unit]
    if value < 0:
        raise UsageError(f"invalid size {text!r}: must not be negative")
    return int(value)


def parse_cpus(text: str | float) -> tuple[int, int]:
    """"1.5" -> (150000, 100000): CFS quota and period in microseconds, as docker's --cpus."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        cpus = float(text)
    elif isinstance(text, str):
        cpus = _parse_decimal(text.strip(), text, "number of CPUs")
    else:
        raise UsageError(f"invalid number of CPUs {text!r}")
    if not cpus > 0 or cpus == float("inf"):
        raise UsageError(f"invalid number of CPUs {text!r}: must be greater than 0")
    quota = round(cpus * CPU_PERIOD_US)
    if quota < _MIN_QUOTA_US:
        raise UsageError(f"invalid number of CPUs {text!r}: the minimum is 0.01")
    return quota, CPU_PERIOD_US


def _parse_decimal(s: str, original: object, what: str) -> int | float:
    # Only plain decimals: float() alone would also take "nan", "inf", "1e3" and "_" separators.
    if not s.isascii() or not s.replace(".", "", 1).isdigit():
        hint = "a number with an optional k/m/g/t/p suffix" if what == "size" else "a decimal number"
        raise UsageError(f"invalid {what} {original!r}: expected {hint}")
    return float(s) if "." in s else int(s)  # int keeps large byte counts exact
