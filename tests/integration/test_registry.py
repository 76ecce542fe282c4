"""`corert pull` / `corert push` against a real registry (Debian's docker-registry, distribution 2.8) that
each test starts on 127.0.0.1 with a private storage dir, and stops after.

Token auth is real: the registry is configured with `auth: token` and trusts a self-signed certificate
made here with the openssl CLI; a small token server (a thread of this process) signs RS256 JWTs with that
key (x5c header) - anonymous callers get pull, the user of the auth file gets pull+push. Faults (a wrong
digest, a connection dropped mid-blob) come from a test proxy in front of the registry.
"""
from __future__ import annotations

import base64
import gzip
import hashlib
import http.client
import http.server
import io
import json
import os
import socket
import subprocess
import tarfile
import threading
import time
import urllib.parse
from pathlib import Path

import pytest

from support import Front, installed, poll

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="integration tests run as root")

SERVICE, ISSUER = "corert-test-registry", "corert-test-issuer"
USER, PASSWORD = "tester", "s3cret"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"


# ---- the registry -----------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Registry:
    """docker-registry on 127.0.0.1:<free port>, storage and config under `base`."""

    def __init__(self, base: Path, auth: dict | None = None) -> None:
        self.base = base
        self.auth = auth
        self.proc: subprocess.Popen | None = None
        self.port = 0

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "Registry":
        for _ in range(5):   # the free port may be taken between the probe and the bind: try another
            self.port = free_port()
            config = {"version": 0.1, "log": {"level": "warn"},
                      "storage": {"filesystem": {"rootdirectory": str(self.base / "data")},
                                  "delete": {"enabled": True}},
                      "http": {"addr": self.host}}
            if self.auth:
                config["auth"] = {"token": self.auth}
            (self.base / "config.yml").write_text(json.dumps(config))   # YAML is a superset of JSON
            self.log = open(self.base / "registry.log", "wb")
            self.proc = subprocess.Popen([installed("docker-registry"), "serve", str(self.base / "config.yml")],
                                         stdout=self.log, stderr=subprocess.STDOUT)
            # until it answers, or died (the port was taken after all)
            if poll(lambda: self.proc.poll() is not None or self._answers(), timeout=15) and self.proc.poll() is None:
                return self
            self.stop()
        raise RuntimeError(f"docker-registry did not start: {(self.base / 'registry.log').read_text()[-2000:]}")

    def _answers(self) -> bool:
        try:
            conn = http.client.HTTPConnection(self.host, timeout=2)
            conn.request("GET", "/v2/")
            conn.getresponse().read()
            conn.close()
            return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
            self.log.close()


def http_call(host: str, method: str, path: str, body: bytes = b"", headers: dict | None = None,
              token: str | None = None) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection(host, timeout=30)
    hdrs = dict(headers or {})
    if token:
        hdrs["Authorization"] = f"Bearer {token}"
    conn.request(method, path, body=body or None, headers=hdrs)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data


def upload_blob(host: str, repo: str, data: bytes) -> dict:
    """POST + PUT one blob (test-side, independent of corert's client); returns its descriptor."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    status, headers, _ = http_call(host, "POST", f"/v2/{repo}/blobs/uploads/")
    assert status == 202, status
    loc = urllib.parse.urlsplit(headers["location"])
    status, _, body = http_call(host, "PUT", f"{loc.path}?{loc.query}&digest={digest}", data,
                                {"Content-Type": "application/octet-stream"})
    assert status == 201, body
    return {"digest": digest, "size": len(data)}


def put_manifest(host: str, repo: str, tag: str, doc: dict, media_type: str) -> dict:
    raw = json.dumps(doc).encode()
    status, _, body = http_call(host, "PUT", f"/v2/{repo}/manifests/{tag}", raw, {"Content-Type": media_type})
    assert status == 201, body
    return {"mediaType": media_type, "digest": "sha256:" + hashlib.sha256(raw).hexdigest(), "size": len(raw)}


def get_manifest(host: str, repo: str, tag: str) -> tuple[dict, dict]:
    status, headers, body = http_call(host, "GET", f"/v2/{repo}/manifests/{tag}",
                                      headers={"Accept": f"{OCI_MANIFEST}, {OCI_INDEX}"})
    assert status == 200, body
    return json.loads(body), headers


# ---- token auth -------------------------------------------------------------------------------------------
def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class _LoopbackServer:
    """An http.server on 127.0.0.1 (a free port) in a daemon thread; stop() shuts it down."""

    def _serve(self, handler: type) -> None:
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


class _QuietHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


class TokenServer(_LoopbackServer):
    """Issues registry tokens: RS256 JWTs signed with a throwaway key whose self-signed cert the registry
    trusts (rootcertbundle). Anonymous: pull; USER/PASSWORD: pull and push; wrong password: 401."""

    def __init__(self, base: Path) -> None:
        key, cert = base / "token.key", base / "token.crt"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                        "-out", str(cert), "-days", "2", "-subj", "/CN=corert-test-token"],
                       check=True, capture_output=True)
        self.cert = cert
        pem = cert.read_text()
        self.x5c = "".join(pem.split("-----")[2].split())        # the DER, base64 (standard)
        text = subprocess.run(["openssl", "rsa", "-in", str(key), "-noout", "-text"], check=True,
                              capture_output=True, text=True).stdout
        self.n, self.d = _rsa_field(text, "modulus"), _rsa_field(text, "privateExponent")
        self.requests: list[dict] = []
        server = self

        class Handler(_QuietHandler):
            def do_GET(self) -> None:   # noqa: N802 - http.server's naming
                q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
                auth = self.headers.get("Authorization", "")
                server.requests.append({"query": q, "auth": auth})
                user = None
                if auth.startswith("Basic "):
                    if base64.b64decode(auth[6:]).decode() != f"{USER}:{PASSWORD}":
                        self.send_response(401)
                        self.end_headers()
                        return
                    user = USER
                access = []
                for scope in filter(None, q.get("scope", "").split(" ")):
                    kind, name, actions = scope.split(":")
                    allowed = [a for a in actions.split(",") if a == "pull" or (a == "push" and user)]
                    access.append({"type": kind, "name": name, "actions": allowed})
                body = json.dumps({"token": server.sign(user or "", q.get("service", ""), access),
                                   "expires_in": 300}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._serve(Handler)

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def registry_auth(self) -> dict:
        return {"realm": self.realm, "service": SERVICE, "issuer": ISSUER, "rootcertbundle": str(self.cert)}

    def sign(self, subject: str, audience: str, access: list) -> str:
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        claims = {"iss": ISSUER, "sub": subject, "aud": audience, "exp": now + 300, "nbf": now - 10,
                  "iat": now, "jti": os.urandom(8).hex(), "access": access}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        # RSASSA-PKCS1-v1_5 with SHA-256: the DigestInfo prefix, padded with 0xff to the key size
        digest_info = bytes.fromhex("3031300d060960864801650304020105000420") + \
            hashlib.sha256(signing_input.encode()).digest()
        k = (self.n.bit_length() + 7) // 8
        em = b"\x00\x01" + b"\xff" * (k - len(digest_info) - 3) + b"\x00" + digest_info
        sig = pow(int.from_bytes(em, "big"), self.d, self.n).to_bytes(k, "big")
        return f"{signing_input}.{_b64url(sig)}"



def _rsa_field(text: str, name: str) -> int:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(name + ":"))
    hexdigits = ""
    for line in lines[start + 1:]:
        if not line.startswith(" "):
            break
        hexdigits += line.strip().replace(":", "")
    return int(hexdigits, 16)


# ---- a faulty proxy ---------------------------------------------------------------------------------------
class FaultyProxy(_LoopbackServer):
    """Forwards to the registry; for layer blob GETs (bodies over `min_size`) it can flip a byte
    (`mode = "corrupt"`) or send the headers and `drop_after` bytes then close (`mode = "drop"`)."""

    def __init__(self, upstream: str, min_size: int = 1 << 20, drop_after: int = 256 << 10) -> None:
        self.upstream, self.min_size, self.drop_after = upstream, min_size, drop_after
        self.mode = "ok"
        self.ranges: list[str] = []
        proxy = self

        class Handler(_QuietHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                if "/blobs/" in self.path and self.command == "GET":
                    proxy.ranges.append(self.headers.get("Range", ""))
                status, resp_headers, data = http_call(proxy.upstream, self.command, self.path, body or b"",
                                                       headers)
                big = "/blobs/sha256:" in self.path and self.command == "GET" and len(data) >= proxy.min_size
                self.send_response(status)
                for k, v in resp_headers.items():
                    if k not in ("content-length", "connection", "transfer-encoding", "date"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command == "HEAD":
                    return
                if big and proxy.mode == "corrupt":
                    data = data[:-100] + bytes([data[-100] ^ 0xFF]) + data[-99:]
                if big and proxy.mode == "drop":
                    self.wfile.write(data[:proxy.drop_after])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(data)

            do_GET = do_HEAD = _forward   # noqa: N815

        self._serve(Handler)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"



# ---- fixtures ---------------------------------------------------------------------------------------------
class RegistryFront(Front):
    def push(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return self("push", *args, **kw)

    def push_ok(self, *args: str) -> subprocess.CompletedProcess:
        r = self.push(*args)
        assert r.returncode == 0, f"corert push {' '.join(args)} exited {r.returncode}: {r.stderr}"
        return r

    def store_content(self) -> dict[str, list[str]]:
        """What the image store holds: images (ls rows), layer dirs, blobs, and download leftovers."""
        rows = self.ok("images").splitlines()[1:]
        return {"images": rows, "layers": _ls(self.data / "layers"), "blobs": _ls(self.data / "blobs/sha256"),
                "downloads": _ls(self.data / "downloads")}


def _ls(path: Path) -> list[str]:
    return sorted(os.listdir(path)) if path.is_dir() else []


@pytest.fixture
def front(tmp_path) -> RegistryFront:
    f = RegistryFront(tmp_path)
    yield f
    f.cleanup()


@pytest.fixture
def registry(tmp_path) -> Registry:
    (tmp_path / "reg").mkdir()
    reg = Registry(tmp_path / "reg").start()
    yield reg
    reg.stop()


@pytest.fixture
def token_registry(tmp_path):
    """(registry with token auth, token server)."""
    (tmp_path / "treg").mkdir()
    tokens = TokenServer(tmp_path / "treg")
    reg = Registry(tmp_path / "treg", auth=tokens.registry_auth())
    try:
        reg.start()
        yield reg, tokens
    finally:
        reg.stop()
        tokens.stop()


@pytest.fixture
def proxy(registry):
    p = FaultyProxy(registry.host)
    yield p
    p.stop()


def _make_two_layer_image(front: Front, name: str) -> str:
    """busybox plus a committed layer: `corert run` writes a file, `corert commit` makes the image."""
    front.ok("run", "--name", "maker", "busybox", "sh", "-c", "echo made-here > /greeting")
    image_id = front.ok("commit", "maker", name).strip()
    front.ok("rm", "maker")
    return image_id


# ---- tests ------------------------------------------------------------------------------------------------
def test_push_remove_pull_run_with_token_auth(front, token_registry, tmp_path):
    reg, tokens = token_registry
    image_id = _make_two_layer_image(front, "local/greeter:1")
    dest = f"{reg.host}/team/greeter:1"
    # anonymous tokens carry pull only: the registry refuses the upload, and says so
    r = front.push("local/greeter:1", dest)
    assert r.returncode == 125 and "denied" in r.stderr.lower(), r.stderr
    auth_file = tmp_path / "auth.json"
    auth_file.write_text(json.dumps({"auths": {reg.host: {
        "auth": base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}}}))
    front.env["REGISTRY_AUTH_FILE"] = str(auth_file)
    digest = front.push_ok("local/greeter:1", dest).stdout.strip()
    assert any(q["query"].get("scope") == "repository:team/greeter:pull,push" and q["auth"].startswith("Basic ")
               for q in tokens.requests)
    manifest, headers = get_manifest_with_token(reg, tokens, "team/greeter", "1")
    assert headers["docker-content-digest"] == digest and manifest["mediaType"] == OCI_MANIFEST
    assert manifest["config"]["digest"] == f"sha256:{image_id}" and len(manifest["layers"]) == 2
    # a second push finds every blob there (HEAD) and uploads nothing
    again = front.push_ok("local/greeter:1", dest)
    assert again.stderr.count("already on the registry") == 3
    # big blobs go up in PATCH chunks: 300 kB chunks split the busybox layer
    front.push_ok("--chunk-size", "300000", "local/greeter:1", f"{reg.host}/team/chunked:1")

    front.ok("image", "rm", "local/greeter:1", "busybox")
    assert front.store_content() == {"images": [], "layers": [], "blobs": [], "downloads": []}
    del front.env["REGISTRY_AUTH_FILE"]      # pulling needs no credentials: anonymous tokens allow it
    pulled = front("pull", dest)   # its progress on stderr is checked too
    assert pulled.returncode == 0, pulled.stderr
    assert pulled.stdout.strip() == image_id
    assert "layer 1/2" in pulled.stderr and "layer 2/2" in pulled.stderr
    assert front.ok("run", "--rm", dest, "cat", "/greeting") == "made-here\n"
    assert front.ok("pull", f"{reg.host}/team/chunked:1").strip() == image_id
    content = front.store_content()
    assert len(content["layers"]) == 2 and content["downloads"] == []
    front.assert_clean()


def get_manifest_with_token(reg: Registry, tokens: TokenServer, repo: str, tag: str) -> tuple[dict, dict]:
    token = tokens.sign("", SERVICE, [{"type": "repository", "name": repo, "actions": ["pull"]}])
    status, headers, body = http_call(reg.host, "GET", f"/v2/{repo}/manifests/{tag}", token=token,
                                      headers={"Accept": OCI_MANIFEST})
    assert status == 200, body
    return json.loads(body), headers


def _fake_image(host: str, repo: str, arch: str) -> dict:
    """An image for another architecture, uploaded blob by blob; returns its manifest descriptor."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo("arch")
        info.size = len(arch)
        tf.addfile(info, io.BytesIO(arch.encode()))
    layer = buf.getvalue()
    blob = gzip.compress(layer, mtime=0)
    config = json.dumps({"architecture": arch, "os": "linux", "config": {"Cmd": ["/bin/sh"]},
                         "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]}
                         }).encode()
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **upload_blob(host, repo, config)},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                            **upload_blob(host, repo, blob)}]}
    return put_manifest(host, repo, f"only-{arch}", manifest, OCI_MANIFEST)


@pytest.mark.parametrize("list_type", [OCI_INDEX, DOCKER_LIST])
def test_manifest_list_picks_linux_amd64(front, registry, list_type):
    host, repo = registry.host, "multi/bb"
    image_id = front.ok("image", "ensure-default").strip()
    front.push_ok("busybox", f"{host}/{repo}:amd64-only")
    status, headers, raw = http_call(host, "GET", f"/v2/{repo}/manifests/amd64-only",
                                     headers={"Accept": OCI_MANIFEST})
    assert status == 200
    descs = [dict(_fake_image(host, repo, "arm64"), platform={"os": "linux", "architecture": "arm64",
                                                              "variant": "v8"}),
             dict(_fake_image(host, repo, "s390x"), platform={"os": "linux", "architecture": "s390x"}),
             {"mediaType": OCI_MANIFEST, "digest": headers["docker-content-digest"], "size": len(raw),
              "platform": {"os": "linux", "architecture": "amd64"}}]
    put_manifest(host, repo, "multi", {"schemaVersion": 2, "mediaType": list_type, "manifests": descs}, list_type)
    put_manifest(host, repo, "no-amd64", {"schemaVersion": 2, "mediaType": list_type, "manifests": descs[:2]},
                 list_type)
    front.ok("image", "rm", "busybox")

    assert front.ok("pull", f"{host}/{repo}:multi").strip() == image_id
    assert front.ok("run", "--rm", f"{host}/{repo}:multi", "uname", "-m") == "x86_64\n"
    r = front("pull", f"{host}/{repo}:no-amd64")
    assert r.returncode == 125
    assert "no image for linux/amd64" in r.stderr and "linux/arm64/v8" in r.stderr and "linux/s390x" in r.stderr
    assert len(front.store_content()["images"]) == 1
    front.assert_clean()


def _only_in_the_registry(front, registry, path: str) -> None:
    """busybox pushed to registry/path and then removed locally: a pull has to fetch every blob."""
    front.ok("image", "ensure-default")
    front.push_ok("busybox", f"{registry.host}/{path}")
    front.ok("image", "rm", "busybox")


def test_wrong_digest_is_an_error_and_stores_nothing(front, registry, proxy):
    _only_in_the_registry(front, registry, "bad/bb:1")
    proxy.mode = "corrupt"
    r = front("pull", f"{proxy.host}/bad/bb:1")
    assert r.returncode == 125
    assert "digest mismatch" in r.stderr and "nothing was stored" in r.stderr, r.stderr
    assert front.store_content() == {"images": [], "layers": [], "blobs": [], "downloads": []}
    proxy.mode = "ok"
    front.ok("pull", f"{proxy.host}/bad/bb:1")
    assert front.ok("run", "--rm", f"{proxy.host}/bad/bb:1", "echo", "fine") == "fine\n"
    front.assert_clean()


def test_dropped_connection_leaves_no_image_and_the_next_pull_resumes(front, registry, proxy):
    _only_in_the_registry(front, registry, "drop/bb:1")
    proxy.mode = "drop"
    r = front("pull", f"{proxy.host}/drop/bb:1")
    assert r.returncode == 125 and "connection dropped" in r.stderr and "pull again to resume" in r.stderr, r.stderr
    # within the pull, each retry asked for the rest only
    offsets = [int(h[6:-1]) for h in proxy.ranges if h]
    assert offsets == [proxy.drop_after, 2 * proxy.drop_after], proxy.ranges
    content = front.store_content()
    assert content["images"] == [] and content["layers"] == [] and content["blobs"] == []
    partial = [n for n in content["downloads"] if n.endswith(".partial")]
    assert len(partial) == 1 and (front.data / "downloads" / partial[0]).stat().st_size == 3 * proxy.drop_after

    proxy.mode, proxy.ranges = "ok", []
    front.ok("pull", f"{proxy.host}/drop/bb:1")
    assert proxy.ranges[-1] == f"bytes={3 * proxy.drop_after}-"      # resumed, not restarted
    assert front.ok("run", "--rm", f"{proxy.host}/drop/bb:1", "echo", "resumed") == "resumed\n"
    assert front.store_content()["downloads"] == []
    front.assert_clean()


def test_unknown_image_tag_or_registry_is_a_clear_error(front, registry):
    front.ok("image", "ensure-default")
    front.push_ok("busybox", f"{registry.host}/known/bb:1")
    cases = {f"{registry.host}/known/bb:nope": "not found",
             f"{registry.host}/unknown/repo:1": "not found",
             f"127.0.0.1:{free_port()}/x/y:1": "cannot reach registry",
             f"{registry.host}/Bad/Name": "invalid image reference"}
    for ref, words in cases.items():
        r = front("pull", ref)
        assert r.returncode == 125 and words in r.stderr, (ref, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = front.push("no-such-local-image", f"{registry.host}/x/y:1")
    assert r.returncode == 125 and "not found" in r.stderr
    assert len(front.store_content()["images"]) == 1
    front.assert_clean()
