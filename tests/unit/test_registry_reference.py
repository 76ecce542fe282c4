"""Image references, auth challenges, auth files and platform choice of the registry client (no network)."""
from __future__ import annotations

import base64
import json

import pytest

from corert.errors import ImageError
from corert.images.registry.auth import find_credentials, parse_challenge
from corert.images.registry.client import error_text, is_loopback
from corert.images.registry.pull import choose_platform
from corert.images.registry.reference import Reference, parse_reference


@pytest.mark.parametrize("text, expected", [
    ("busybox", Reference("docker.io", "library/busybox", "latest")),
    ("busybox:1.36", Reference("docker.io", "library/busybox", "1.36")),
    ("team/app", Reference("docker.io", "team/app", "latest")),
    ("localhost/app:v1", Reference("localhost", "app", "v1")),
    ("127.0.0.1:5000/a/b/c:x_y.z-1", Reference("127.0.0.1:5000", "a/b/c", "x_y.z-1")),
    ("quay.io/org/img@sha256:" + "a" * 64, Reference("quay.io", "org/img", None, "sha256:" + "a" * 64)),
    ("reg.example:443/img:t@sha256:" + "b" * 64, Reference("reg.example:443", "img", "t", "sha256:" + "b" * 64)),
])
def test_parse_reference(text, expected):
    assert parse_reference(text) == expected


def test_reference_names_and_targets():
    ref = parse_reference("127.0.0.1:5000/a/b")
    assert (ref.name, ref.target, ref.api_host) == ("127.0.0.1:5000/a/b:latest", "latest", "127.0.0.1:5000")
    by_digest = parse_reference("127.0.0.1:5000/a@sha256:" + "c" * 64)
    assert by_digest.name == "127.0.0.1:5000/a@sha256:" + "c" * 64 and by_digest.target.startswith("sha256:")
    assert parse_reference("alpine").api_host == "registry-1.docker.io"


@pytest.mark.parametrize("text", ["", " busybox", "Busybox", "reg:5000/UPPER", "a//b", "img:bad tag",
                                  "img:-dash", "img@sha256:short", "img@md5:" + "a" * 32, "/img", "img/"])
def test_bad_references(text):
    with pytest.raises(ImageError):
        parse_reference(text)


def test_parse_challenge():
    c = parse_challenge('Bearer realm="https://auth.example/token",service="registry.example",'
                        'scope="repository:a/b:pull,push"')
    assert c.scheme == "bearer"
    assert c.params == {"realm": "https://auth.example/token", "service": "registry.example",
                        "scope": "repository:a/b:pull,push"}
    assert parse_challenge('Basic realm="Registry Realm"').params == {"realm": "Registry Realm"}
    assert parse_challenge('Bearer realm=http://x/t, error="insufficient_scope"').params == {
        "realm": "http://x/t", "error": "insufficient_scope"}
    assert parse_challenge("") is None


def test_credentials_from_auth_files(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    auth = tmp_path / "auth.json"
    auth.write_text(json.dumps({"auths": {
        "127.0.0.1:5000": {"auth": base64.b64encode(b"me:pa:ss").decode()},
        "https://other.example": {"username": "u", "password": "p"}}}))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(auth))
    assert find_credentials("127.0.0.1:5000") == ("me", "pa:ss")
    assert find_credentials("other.example") == ("u", "p")
    assert find_credentials("unknown.example") is None
    (tmp_path / ".docker").mkdir()
    (tmp_path / ".docker" / "config.json").write_text(json.dumps({"auths": {
        "https://index.docker.io/v1/": {"auth": base64.b64encode(b"hub:pw").decode()}}}))
    assert find_credentials("docker.io") == ("hub", "pw")


def test_loopback_and_error_text():
    assert is_loopback("127.0.0.1:5000") and is_loopback("localhost") and is_loopback("[::1]:5000")
    assert not is_loopback("registry.example:5000") and not is_loopback("10.0.0.1")
    body = json.dumps({"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]}).encode()
    assert error_text(404, body) == "manifest unknown (MANIFEST_UNKNOWN)"
    assert error_text(502, b"<html>") == "HTTP 502 Bad Gateway"


def _entry(arch, variant=None, os_="linux"):
    plat = {"os": os_, "architecture": arch, **({"variant": variant} if variant else {})}
    return {"digest": f"sha256:{arch}{variant or ''}", "platform": plat}


def test_choose_platform():
    index = {"manifests": [_entry("arm", "v6"), _entry("arm", "v7"), _entry("amd64", os_="windows"),
                           _entry("amd64"), _entry("arm64", "v8"), _entry("unknown", os_="unknown")]}
    assert choose_platform(index, ("linux", "amd64", None), "x")["digest"] == "sha256:amd64"
    assert choose_platform(index, ("linux", "arm", "v7"), "x")["digest"] == "sha256:armv7"
    assert choose_platform(index, ("linux", "arm64", "v8"), "x")["digest"] == "sha256:arm64v8"
    with pytest.raises(ImageError, match=r"no image for linux/s390x \(it has: linux/amd64, linux/arm/v6"):
        choose_platform(index, ("linux", "s390x", None), "the list")
