"""corert: a container runtime in Python with a native fast path.

The embedding API (Runtime, Container, run_sync) is imported lazily, so that `import corert` on the
CLI's hot path costs nothing beyond this file.
"""
from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__", "Runtime", "Container", "ExecProcess", "ExitStatus", "RunResult", "Event",
           "ContainerInfo", "run_sync"]

_API_NAMES = frozenset(__all__) - {"__version__"}


def __getattr__(name: str):
    # `corert.Runtime` loads trio and the API on first use only (the CLI never touches these names).
    if name in _API_NAMES:
        from corert import api

        return getattr(api, name)
    raise AttributeError(f"module 'corert' has no attribute {name!r}")
