"""corert: a container runtime in Python with a native fast path.

The embedding API (Runtime, Container, run_sync) is imported lazily, so that `import corert` on the
CLI's hot path costs nothing beyond this file.
"""
from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
