"""Image store: content-addressed blobs, layers unpacked once in overlay form, SQLite metadata.

Importing this package is cheap; `ImageStore` and `Image` load their module on first access.
"""
from __future__ import annotations

from corert.images.layout import OPAQUE_XATTRS, default_store_root, is_whiteout

__all__ = ["Image", "ImageStore", "OPAQUE_XATTRS", "default_store_root", "is_whiteout", "normalize_name"]


def __getattr__(name: str):
    if name in ("Image", "ImageStore", "normalize_name"):
        from corert.images import store

        return getattr(store, name)
    raise AttributeError(f"module 'corert.images' has no attribute {name!r}")
