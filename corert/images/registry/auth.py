"""Registry authentication: WWW-Authenticate challenges and stored credentials.

Credentials are read, never written, from the files podman and docker keep (`{"auths": {HOST: {"auth":
base64("user:password")}}}`): $REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json,
~/.config/containers/auth.json, ~/.docker/config.json - the first that names the registry wins.
"""
from __future__ import annotations

import base64
import json
import os
import re
from dataclasses import dataclass, field

_PARAM = re.compile(r'\s*([A-Za-z][\w-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*,?')


@dataclass
class Challenge:
    scheme: str                                       # "bearer" or "basic" (lowercased)
    params: dict[str, str] = field(default_factory=dict)


def parse_challenge(header: str) -> Challenge | None:
    """`Bearer realm="https://auth/token",service="reg",scope="repository:a:pull"` -> Challenge."""
    header = header.strip()
    if not header:
        return None
    scheme, _, rest = header.partition(" ")
    params: dict[str, str] = {}
    pos = 0
    while pos < len(rest):
        m = _PARAM.match(rest, pos)
        if m is None or m.end() == pos:
            break
        quoted, bare = m.group(2), m.group(3)
        params[m.group(1).lower()] = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare
        pos = m.end()
    return Challenge(scheme.lower(), params)


def _auth_files() -> list[str]:
    files = []
    if os.environ.get("REGISTRY_AUTH_FILE"):
        files.append(os.environ["REGISTRY_AUTH_FILE"])
    if os.environ.get("XDG_RUNTIME_DIR"):
        files.append(os.path.join(os.environ["XDG_RUNTIME_DIR"], "containers", "auth.json"))
    home = os.path.expanduser("~")
    files.append(os.path.join(home, ".config", "containers", "auth.json"))
    files.append(os.path.join(home, ".docker", "config.json"))
    return files


def _keys_for(registry: str) -> tuple[str, ...]:
    keys = (registry, f"https://{registry}", f"http://{registry}")
    if registry in ("docker.io", "registry-1.docker.io"):
        keys += ("https://index.docker.io/v1/", "index.docker.io")
    return keys


def find_credentials(registry: str) -> tuple[str, str] | None:
    """(user, password) for `registry` (host[:port]) from the first auth file that has it, else None."""
    for path in _auth_files():
        try:
            with open(path) as f:
                auths = (json.load(f) or {}).get("auths") or {}
        except (OSError, ValueError, AttributeError):
            continue
        for key in _keys_for(registry):
            entry = auths.get(key)
            if not isinstance(entry, dict):
                continue
            if entry.get("auth"):
                try:
                    user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
                except (ValueError, UnicodeDecodeError):
                    continue
                return user, password
            if entry.get("username"):
                return entry["username"], entry.get("password", "")
    return None


def basic_header(credentials: tuple[str, str]) -> str:
    return "Basic " + base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode()
