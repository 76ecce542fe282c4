"""Containerfile text -> a list of Instructions, with every syntax error as one `file:line: message` line.

Docker's rules: an instruction is its first word (any case) and the rest of its logical line; a line ending
in a backslash continues on the next one; a line whose first non-blank character is `#` is a comment, also
inside a continuation (parser directives such as `# syntax=` are comments here). Arguments that are a JSON
array of strings are the exec form, anything else the shell form. Leading `--flag=value` words of COPY,
ADD and RUN are the instruction's flags.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from corert.errors import UsageError

INSTRUCTIONS = frozenset({"FROM", "RUN", "COPY", "ADD", "ENV", "WORKDIR", "USER", "EXPOSE", "LABEL", "ARG",
                          "CMD", "ENTRYPOINT", "STOPSIGNAL", "VOLUME", "SHELL"})
# Known to docker but not part of this subset: named in the error instead of "unknown".
UNSUPPORTED = frozenset({"HEALTHCHECK", "ONBUILD", "MAINTAINER"})
FLAGS = {"COPY": {"chown", "chmod"}, "ADD": {"chown", "chmod"}, "RUN": set()}
EXEC_FORM = frozenset({"RUN", "CMD", "ENTRYPOINT", "SHELL", "VOLUME", "COPY", "ADD"})


class BuildSyntaxError(UsageError):
    """A Containerfile that cannot be parsed: the message starts with file:line."""


@dataclass
class Instruction:
    keyword: str                       # upper case: "RUN"
    args: str                          # the text after the keyword (flags removed), continuations joined
    line: int                          # 1-based line of the keyword
    exec_form: list[str] | None = None   # the JSON array form, when the arguments are one
    flags: dict[str, str] = field(default_factory=dict)
    source: str = ""                   # file name, for messages

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"

    @property
    def text(self) -> str:
        """The instruction as written (flags included): what the step line shows."""
        flags = "".join(f"--{k}={v} " for k, v in self.flags.items())
        return f"{self.keyword} {flags}{self.args}".rstrip()


def parse(text: str, source: str = "Containerfile") -> list[Instruction]:
    """All instructions of a Containerfile; the first one (after ARGs) must be FROM."""
    out: list[Instruction] = []
    for start, logical in _logical_lines(text, source):
        keyword, _, rest = logical.strip().partition(" ")
        if "\t" in keyword:
            keyword, _, more = keyword.partition("\t")
            rest = more + " " + rest
        upper = keyword.upper()
        where = f"{source}:{start}"
        if upper in UNSUPPORTED:
            raise BuildSyntaxError(f"{where}: {upper} is not supported by corert build")
        if upper not in INSTRUCTIONS:
            raise BuildSyntaxError(f"{where}: unknown instruction: {keyword}")
        rest = rest.strip()
        flags: dict[str, str] = {}
        if upper in FLAGS:
            rest, flags = _flags(rest, upper, where)
        if not rest:
            raise BuildSyntaxError(f"{where}: {upper} requires at least one argument")
        exec_form = _exec_form(rest, where) if upper in EXEC_FORM else None
        out.append(Instruction(upper, rest, start, exec_form, flags, source))
    if not out:
        raise BuildSyntaxError(f"{source}: the file has no instructions")
    first = next((i for i in out if i.keyword != "ARG"), None)
    if first is None or first.keyword != "FROM":
        where = first.where if first else f"{source}:{out[-1].line}"
        raise BuildSyntaxError(f"{where}: the first instruction (after ARG) must be FROM")
    return out


def _logical_lines(text: str, source: str):
    """(first line number, joined text) of each instruction."""
    start = 0
    parts: list[str] = []
    lines = text.split("\n")
    for n, raw in enumerate(lines, 1):
        line = raw.rstrip("\r")
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue   # comments and blank lines are skipped, also inside a continuation
        if not parts:
            start = n
        if line.rstrip().endswith("\\"):
            parts.append(line.rstrip()[:-1])
            continue
        parts.append(line)
        yield start, "".join(parts)
        parts = []
    if parts:
        joined = "".join(parts).strip()
        if joined:   # a trailing backslash at the end of the file: docker takes the text as is
            yield start, joined


def _flags(rest: str, keyword: str, where: str) -> tuple[str, dict[str, str]]:
    flags: dict[str, str] = {}
    while rest.startswith("--"):
        word, _, after = rest.partition(" ")
        name, eq, value = word[2:].partition("=")
        if name not in FLAGS[keyword]:
            raise BuildSyntaxError(f"{where}: {keyword} --{name} is not supported by corert build")
        if not eq or not value:
            raise BuildSyntaxError(f"{where}: {keyword} --{name} needs a value (--{name}=VALUE)")
        flags[name] = value
        rest = after.strip()
    return rest, flags


def _exec_form(rest: str, where: str) -> list[str] | None:
    if not rest.startswith("["):
        return None
    try:
        value = json.loads(rest)
    except ValueError:
        return None   # docker too: text that is not valid JSON is the shell form
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BuildSyntaxError(f"{where}: the exec form must be a JSON array of strings")
    return value
