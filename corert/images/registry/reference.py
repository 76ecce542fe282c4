"""Image references as docker and podman spell them: [REGISTRY/]REPOSITORY[:TAG][@DIGEST].

The first path component is a registry when it has a '.' or a ':' or is 'localhost' (docker's rule);
otherwise the image is on Docker Hub, where one-component names live under 'library/'.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from corert.errors import ImageError

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"   # where docker.io's distribution API answers
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*\Z")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}\Z")


@dataclass(frozen=True)
class Reference:
    registry: str               # host[:port] as written ("docker.io" for Hub)
    repository: str             # "library/busybox", "team/app"
    tag: str | None = None      # None only when pulled by digest alone
    digest: str | None = None   # "sha256:<hex>"

    @property
    def api_host(self) -> str:
        """host[:port] to connect to."""
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    @property
    def target(self) -> str:
        """What the manifest endpoint is asked for: the digest when given (it is exact), else the tag."""
        return self.digest or self.tag or "latest"

    @property
    def name(self) -> str:
        """The image store name: registry/repository:tag, or registry/repository@digest."""
        base = f"{self.registry}/{self.repository}"
        return f"{base}@{self.digest}" if self.digest and not self.tag else f"{base}:{self.tag}"

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def _is_registry(component: str) -> bool:
    return "." in component or ":" in component or component == "localhost"


def parse_reference(text: str) -> Reference:
    """Parse and validate an image reference; ImageError with the reason when it is malformed."""
    if not text or text != text.strip():
        raise ImageError(f"invalid image reference {text!r}")
    rest, _, digest = text.partition("@")
    if digest and not _DIGEST.match(digest):
        raise ImageError(f"invalid image reference {text!r}: digest must be sha256:<64 hex digits>")
    first, slash, remainder = rest.partition("/")
    if slash and _is_registry(first):
        registry, path = first, remainder
    else:
        registry, path = DOCKER_HUB, rest
    tag = None
    last = path.rsplit("/", 1)[-1]
    if ":" in last:
        path, tag = path.rsplit(":", 1)
        if not _TAG.match(tag):
            raise ImageError(f"invalid image reference {text!r}: bad tag {tag!r}")
    components = path.split("/")
    if not path or not all(_COMPONENT.match(c) for c in components):
        raise ImageError(f"invalid image reference {text!r}: repository names are lowercase "
                         "letters, digits and separators (. _ -)")
    if registry == DOCKER_HUB and len(components) == 1:
        path = f"library/{path}"
    if tag is None and not digest:
        tag = "latest"
    return Reference(registry, path, tag, digest or None)
