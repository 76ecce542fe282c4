"""Registry pull and push over the OCI distribution API (stdlib http.client + ssl).

    reference.py  image references ([REGISTRY/]REPO[:TAG][@DIGEST])
    auth.py       WWW-Authenticate challenges, credentials from podman/docker auth files
    client.py     one repository on one registry: ping, token/basic auth, requests, per-thread connections
    pull.py       manifest/index resolution, verified resumable parallel blob downloads, store commit
    push.py       HEAD-skip, monolithic or chunked blob uploads, manifest PUT
"""
from __future__ import annotations

__all__ = ["pull", "push", "parse_reference", "RegistryError"]


def __getattr__(name: str):
    if name == "pull":
        from corert.images.registry.pull import pull
        return pull
    if name == "push":
        from corert.images.registry.push import push
        return push
    if name == "parse_reference":
        from corert.images.registry.reference import parse_reference
        return parse_reference
    if name == "RegistryError":
        from corert.images.registry.client import RegistryError
        return RegistryError
    raise AttributeError(f"module 'corert.images.registry' has no attribute {name!r}")
