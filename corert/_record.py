"""A plain-data base class: dataclass-like construction without importing dataclasses.

The OCI CLI's hot path builds these on every call; `dataclasses` (and the `inspect` it pulls in) costs about
8 ms of import time, which is a third of a runc start. Fields are declared once, with their defaults.
"""
from __future__ import annotations


class Record:
    """Subclasses set FIELDS = {name: default}; a default of `list`/`dict` means a fresh one per instance."""

    __slots__ = ()
    FIELDS: dict = {}

    def __init__(self, *args, **kwargs) -> None:
        names = list(self.FIELDS)
        if len(args) > len(names):
            raise TypeError(f"{type(self).__name__} takes at most {len(names)} positional arguments")
        for name, value in zip(names, args):
            if name in kwargs:
                raise TypeError(f"{type(self).__name__} got {name!r} twice")
            kwargs[name] = value
        for name, default in self.FIELDS.items():
            if name in kwargs:
                value = kwargs.pop(name)
            elif default is list or default is dict:
                value = default()
            elif default is Required:
                raise TypeError(f"{type(self).__name__} needs {name!r}")
            else:
                value = default
            setattr(self, name, value)
        if kwargs:
            raise TypeError(f"{type(self).__name__} has no field {next(iter(kwargs))!r}")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self.FIELDS)

    def __repr__(self) -> str:
        body = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.FIELDS)
        return f"{type(self).__name__}({body})"


class Required:
    """Marker default: the field must be given."""
