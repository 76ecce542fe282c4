"""One repository on one registry, over the OCI distribution API with http.client.

A client pings /v2/ once to learn the scheme (https; plain http only for --tls-verify=false or a loopback
registry, as docker treats those as insecure) and the auth challenge, then sends requests with the
Authorization it earned. A 401 on any request re-runs the challenge (tokens expire) and retries once.
Each thread has its own keep-alive connection, so blob transfers can run in parallel.
"""
from __future__ import annotations

import http.client
import ipaddress
import json
import socket
import ssl
import threading
import urllib.parse
from typing import BinaryIO

from corert.errors import ImageError
from corert.images.registry.auth import Challenge, basic_header, find_credentials, parse_challenge
from corert.images.registry.reference import Reference

MANIFEST_OCI = "application/vnd.oci.image.manifest.v1+json"
INDEX_OCI = "application/vnd.oci.image.index.v1+json"
MANIFEST_DOCKER = "application/vnd.docker.distribution.manifest.v2+json"
LIST_DOCKER = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_ACCEPT = ", ".join((MANIFEST_OCI, INDEX_OCI, MANIFEST_DOCKER, LIST_DOCKER))
TIMEOUT = 60.0
BLOCK = 1 << 20           # http.client's send block size (its 8 KiB default is slow for big blobs)
_NETWORK_ERRORS = (OSError, http.client.HTTPException)   # socket errors, timeouts, bad status lines


class RegistryError(ImageError):
    """A registry refused or failed a request; the message names the registry and the reason."""


class TransferInterrupted(RegistryError):
    """The connection dropped in the middle of a transfer (what was received so far may be resumed)."""


def is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 or host.startswith("[") else host
    name = name.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def error_text(status: int, body: bytes) -> str:
    """The registry's own error words (JSON `errors` list) or the HTTP status."""
    try:
        errors = json.loads(body).get("errors") or []
        parts = [f"{e.get('message') or e.get('code', '').lower()} ({e.get('code')})" for e in errors]
        if parts:
            return "; ".join(parts)
    except (ValueError, AttributeError, TypeError):
        pass
    return f"HTTP {status} {http.client.responses.get(status, '')}".rstrip()


class RegistryClient:
    def __init__(self, ref: Reference, *, tls_verify: bool = True, push: bool = False,
                 timeout: float = TIMEOUT) -> None:
        self.ref = ref
        self.host = ref.api_host
        self.repository = ref.repository
        self.scope = f"repository:{ref.repository}:{'pull,push' if push else 'pull'}"
        self.timeout = timeout
        self.insecure = not tls_verify or is_loopback(self.host)
        self._ssl = ssl.create_default_context()
        if not tls_verify:
            self._ssl.check_hostname = False
            self._ssl.verify_mode = ssl.CERT_NONE
        self.scheme = "https"
        self.credentials = find_credentials(ref.registry)
        self._auth: str | None = None
        self._auth_lock = threading.Lock()
        self._local = threading.local()
        self._all: list[http.client.HTTPConnection] = []   # every thread's connections, for close()
        self._all_lock = threading.Lock()

    # ---- connections -----------------------------------------------------------------------------------
    def _connection(self, scheme: str, host: str, *, fresh: bool = False) -> http.client.HTTPConnection:
        conns = self._local.__dict__.setdefault("conns", {})
        conn = conns.get((scheme, host))
        if conn is not None and fresh:
            conn.close()
            conn = None
        if conn is None:
            if scheme == "https":
                conn = http.client.HTTPSConnection(host, timeout=self.timeout, context=self._ssl, blocksize=BLOCK)
            else:
                conn = http.client.HTTPConnection(host, timeout=self.timeout, blocksize=BLOCK)
            conns[(scheme, host)] = conn
            with self._all_lock:
                self._all.append(conn)
        return conn

    def close(self) -> None:
        """Close every connection of every thread (call when the transfers are over)."""
        with self._all_lock:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()
        self._local = threading.local()

    def close_thread(self) -> None:
        """Drop this thread's connections: after a response abandoned mid-body the stream is unusable."""
        for conn in self._local.__dict__.pop("conns", {}).values():
            conn.close()

    # ---- ping and auth ---------------------------------------------------------------------------------
    def ping(self) -> None:
        """GET /v2/: pick the scheme and answer the auth challenge, if any."""
        try:
            resp = self._send("GET", "/v2/", {})
        except (ssl.SSLError, ConnectionError) as e:
            if not self.insecure:
                raise RegistryError(f"cannot reach registry {self.host} over https: {_reason(e)} "
                                    "(use --tls-verify=false for a plain-http registry)") from None
            self.scheme = "http"
            try:
                resp = self._send("GET", "/v2/", {})
            except _NETWORK_ERRORS as e2:
                raise RegistryError(f"cannot reach registry {self.host}: {_reason(e2)}") from None
        except _NETWORK_ERRORS as e:
            raise RegistryError(f"cannot reach registry {self.host}: {_reason(e)}") from None
        body = resp.read()
        if resp.status == 401:
            self._authenticate(resp.getheader("WWW-Authenticate", ""), None)
        elif resp.status != 200:
            raise RegistryError(f"{self.host} is not a registry (GET /v2/: {error_text(resp.status, body)})")

    def _authenticate(self, header: str, used: str | None) -> None:
        """Earn a new Authorization value from a challenge (once, when several threads hit a 401)."""
        with self._auth_lock:
            if self._auth != used:
                return  # another thread refreshed it meanwhile
            challenge = parse_challenge(header)
            if challenge is None:
                raise RegistryError(f"{self.host} refused the request (401) without an auth challenge")
            if challenge.scheme == "basic":
                if self.credentials is None:
                    raise RegistryError(f"{self.host} requires a login: no credentials for it in the auth file "
                                        "($REGISTRY_AUTH_FILE or ~/.config/containers/auth.json)")
                self._auth = basic_header(self.credentials)
            elif challenge.scheme == "bearer":
                self._auth = "Bearer " + self._fetch_token(challenge)
            else:
                raise RegistryError(f"{self.host} wants unsupported authentication {challenge.scheme!r}")

    def _fetch_token(self, challenge: Challenge) -> str:
        realm = challenge.params.get("realm")
        if not realm:
            raise RegistryError(f"{self.host}: bearer challenge without a realm")
        url = urllib.parse.urlsplit(realm)
        if url.scheme not in ("http", "https") or not url.netloc:
            raise RegistryError(f"{self.host}: bad token realm {realm!r}")
        query = [("service", challenge.params["service"])] if challenge.params.get("service") else []
        query.append(("scope", challenge.params.get("scope") or self.scope))
        headers = {"Accept": "application/json"}
        if self.credentials is not None:
            query.append(("account", self.credentials[0]))
            headers["Authorization"] = basic_header(self.credentials)
        path = (url.path or "/") + "?" + "&".join(
            filter(None, [url.query] + [urllib.parse.urlencode(query)]))
        conn = (http.client.HTTPSConnection(url.netloc, timeout=self.timeout, context=self._ssl)
                if url.scheme == "https" else http.client.HTTPConnection(url.netloc, timeout=self.timeout))
        try:
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
        except _NETWORK_ERRORS as e:
            raise RegistryError(f"cannot get a token from {url.netloc}: {_reason(e)}") from None
        finally:
            conn.close()
        if resp.status != 200:
            who = "the credentials" if self.credentials else "anonymous access (no credentials in the auth file)"
            raise RegistryError(f"token server {url.netloc} refused {who} for {self.scope}: "
                                f"{error_text(resp.status, body)}")
        try:
            doc = json.loads(body)
            token = doc.get("token") or doc.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise RegistryError(f"token server {url.netloc} answered without a token")
        return token

    # ---- requests --------------------------------------------------------------------------------------
    def _send(self, method: str, path: str, headers: dict[str, str], body: bytes | BinaryIO | None = None,
              *, scheme: str | None = None, host: str | None = None) -> http.client.HTTPResponse:
        """One request on this thread's connection; a stale keep-alive connection is replaced once."""
        scheme, host = scheme or self.scheme, host or self.host
        start = body.tell() if body is not None and hasattr(body, "tell") else None
        for attempt in (0, 1):
            conn = self._connection(scheme, host, fresh=attempt == 1)
            reused = conn.sock is not None
            try:
                conn.request(method, path, body=body, headers=headers)
                return conn.getresponse()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                conn.close()
                if not reused or attempt:
                    raise
                if start is not None:
                    body.seek(start)  # type: ignore[union-attr]
            except BaseException:
                conn.close()
                raise
        raise AssertionError("unreachable")

    def _send_checked(self, method: str, path: str, headers: dict[str, str], body=None, **kw):
        try:
            return self._send(method, path, headers, body, **kw)
        except _NETWORK_ERRORS as e:
            raise RegistryError(f"{method} {self.host}{path.split('?')[0]}: {_reason(e)}") from None

    def request(self, method: str, path: str, *, headers: dict[str, str] | None = None,
                body: bytes | BinaryIO | None = None, expect: tuple[int, ...] = (200,),
                what: str | None = None) -> http.client.HTTPResponse:
        """Send with auth (re-authenticating once on 401) and redirects; return the open response
        (the caller reads it) when its status is in `expect`, else raise RegistryError."""
        start = body.tell() if body is not None and hasattr(body, "tell") else None
        scheme, host = self.scheme, self.host
        for hop in range(6):
            hdrs = dict(headers or {})
            same_host = host == self.host
            used = self._auth
            if used and same_host:       # credentials never follow a redirect to another host
                hdrs["Authorization"] = used
            resp = self._send_checked(method, path, hdrs, body, scheme=scheme, host=host)
            if resp.status == 401 and same_host and hop == 0:
                resp.read()
                self._authenticate(resp.getheader("WWW-Authenticate", ""), used)
                if start is not None:
                    body.seek(start)  # type: ignore[union-attr]
                resp = self._send_checked(method, path, {**hdrs, "Authorization": self._auth or ""}, body,
                                          scheme=scheme, host=host)
            if resp.status in (301, 302, 303, 307, 308) and method in ("GET", "HEAD") \
                    and resp.status not in expect:
                resp.read()
                url = urllib.parse.urlsplit(urllib.parse.urljoin(f"{scheme}://{host}{path}",
                                                                 resp.getheader("Location", "")))
                scheme, host = url.scheme, url.netloc
                path = url.path + (f"?{url.query}" if url.query else "")
                continue
            if resp.status in expect:
                return resp
            if resp.status == 401 and same_host:   # still refused with fresh credentials
                text = error_text(401, resp.read(1 << 16))
                self.close_thread()
                who = (f"the credentials of {self.credentials[0]!r}" if self.credentials else
                       "anonymous access (no credentials for it in $REGISTRY_AUTH_FILE or "
                       "~/.config/containers/auth.json)")
                raise RegistryError(f"{what or method + ' ' + path.split('?')[0]}: {self.host} denied "
                                    f"{who}: {text}")
            body_text = resp.read(1 << 16) if method != "HEAD" else b""
            if not resp.isclosed():
                self.close_thread()
            raise RegistryError(f"{what or method + ' ' + path.split('?')[0]} on {self.host}: "
                                f"{error_text(resp.status, body_text)}")
        raise RegistryError(f"{method} {path}: too many redirects")

    def url_path(self, location: str) -> str:
        """A Location header (absolute or relative) as a path on this registry."""
        url = urllib.parse.urlsplit(urllib.parse.urljoin(f"{self.scheme}://{self.host}/v2/", location))
        if url.netloc and url.netloc != self.host:
            raise RegistryError(f"{self.host} sent an upload location on another host ({url.netloc})")
        return url.path + (f"?{url.query}" if url.query else "")


def _reason(e: BaseException) -> str:
    if isinstance(e, socket.timeout):
        return "timed out"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__
