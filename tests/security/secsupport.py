"""Helpers of the escape suite: reading what the probe and /proc/self/status report."""
from __future__ import annotations


def parse(stdout: str) -> dict[str, str]:
    """probe's "<what> OK" / "<what> ERR <ERRNO>" lines -> {what: "OK" | ERRNO}."""
    result = {}
    for line in stdout.splitlines():
        if line.endswith(" OK"):
            result[line[:-3]] = "OK"
        elif " ERR " in line:
            what, _, err = line.rpartition(" ERR ")
            result[what] = err.strip()
    return result


def status_fields(text: str) -> dict[str, str]:
    """/proc/self/status -> {field: value}."""
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields
