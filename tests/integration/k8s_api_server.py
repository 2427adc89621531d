"""A local TLS server speaking the Kubernetes Secrets REST paths, for the real client.

No Kubernetes cluster (nor Docker, nor kind) can run on the test machines, so the
integration tests point the real `kubernetes` client at this server instead. It serves
`GET /api/v1/namespaces/{ns}/secrets/{name}`, the namespaced list (honouring
`fieldSelector=metadata.name=NAME`) and `?watch=true` streams of JSON lines, checks the
bearer token, records every request, and lets a test rotate, delete and expire (410 Gone).
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import ipaddress
import json
import queue
import select
import socket
import ssl
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

_Event = dict[str, Any]
_CLOSE = object()


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    authorized: bool


@dataclass
class _OpenWatch:
    namespace: str
    name: str | None
    events: queue.Queue[object]


def write_self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """Write a self-signed CA-capable certificate for 127.0.0.1 and its key; return paths."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mira-test-kube-apiserver")])
    now = datetime.datetime.now(datetime.UTC)
    san = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "apiserver.crt", directory / "apiserver.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def in_cluster_files(directory: Path, server: FakeKubeApiServer) -> dict[str, Any]:
    """Write service-account token/CA files; return `InClusterConfigLoader` style arguments.

    Keys: `environ` (KUBERNETES_SERVICE_HOST/PORT), `token_filename`, `cert_filename`.
    The token file has no trailing newline: the client would send it inside the header.
    """
    token_file, ca_file = directory / "token", directory / "ca.crt"
    token_file.write_text(server.token)
    ca_file.write_bytes(server.cert_path.read_bytes())
    environ = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(server.port)}
    return {"environ": environ, "token_filename": str(token_file), "cert_filename": str(ca_file)}


def write_kubeconfig(directory: Path, server: FakeKubeApiServer, context: str = "mira") -> Path:
    """Write a kubeconfig whose `context` points at the server with its token; return path."""
    ca_data = base64.b64encode(server.cert_path.read_bytes()).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "local",
                "cluster": {"server": server.url, "certificate-authority-data": ca_data},
            }
        ],
        "users": [{"name": "tester", "user": {"token": server.token}}],
        "contexts": [{"name": context, "context": {"cluster": "local", "user": "tester"}}],
        "current-context": context,
    }
    path = directory / "kubeconfig"
    path.write_text(json.dumps(config))  # JSON is valid YAML
    return path


class FakeKubeApiServer:
    """Threaded HTTPS server on 127.0.0.1 holding Secrets in memory (see module docstring)."""

    def __init__(self, cert_path: Path, key_path: Path, token: str = "test-token") -> None:
        self.cert_path, self.key_path, self.token = cert_path, key_path, token
        self.port = 0
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self._history: list[tuple[int, str, dict[str, Any]]] = []
        self._rv = 100
        self._oldest_rv = 0
        self._watches: list[_OpenWatch] = []
        self._conns: set[socket.socket] = set()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Listen (on the same port again after a `stop()`) and serve in a thread."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_path, self.key_path)
        httpd = _Server(("127.0.0.1", self.port), _Handler, self, context)
        self.port = httpd.server_address[1]
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, name="fake-kube", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Close the listener, every open watch and every kept-alive connection."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        with self._lock:
            for watch in self._watches:
                watch.events.put(_CLOSE)
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)

    # --- test controls -------------------------------------------------------------------

    def put_secret(self, name: str, data: dict[str, str], namespace: str = "default") -> int:
        """Create or update a Secret, push ADDED/MODIFIED to open watches; return its RV."""
        encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
        with self._lock:
            kind = "MODIFIED" if (namespace, name) in self._secrets else "ADDED"
            self._rv += 1
            obj = _secret_object(namespace, name, encoded, self._rv)
            self._secrets[(namespace, name)] = obj
            self._publish(kind, obj)
            return self._rv

    def delete_secret(self, name: str, namespace: str = "default") -> None:
        with self._lock:
            obj = self._secrets.pop((namespace, name))
            self._rv += 1
            deleted = {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(self._rv)}}
            self._publish("DELETED", deleted)

    def expire_watches(self) -> None:
        """Send ERROR 410 Gone on open watches and forget history (old RVs now answer 410)."""
        with self._lock:
            self._oldest_rv = self._rv
            self._history.clear()
            for watch in self._watches:
                watch.events.put(_gone_event())
                watch.events.put(_CLOSE)

    def open_watch_count(self) -> int:
        with self._lock:
            return len(self._watches)

    def count_requests(self, *, watch: bool | None = None, list_only: bool = False) -> int:
        with self._lock:
            found = self.requests[:]
        if list_only:
            found = [r for r in found if r.path.endswith("/secrets")]
        if watch is not None:
            found = [r for r in found if (r.query.get("watch") == "true") == watch]
        return len(found)

    # --- used by the handler -------------------------------------------------------------

    def _publish(self, kind: str, obj: dict[str, Any]) -> None:
        self._history.append((self._rv, kind, obj))
        ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        for watch in self._watches:
            if watch.namespace == ns and watch.name in (None, name):
                watch.events.put({"type": kind, "object": obj})

    def record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def track(self, conn: socket.socket, alive: bool) -> None:
        with self._lock:
            if alive:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            return self._secrets.get((namespace, name))

    def list(self, namespace: str, name: str | None) -> dict[str, Any]:
        with self._lock:
            items = [
                obj
                for (ns, n), obj in sorted(self._secrets.items())
                if ns == namespace and name in (None, n)
            ]
            meta = {"resourceVersion": str(self._rv)}
        return {"kind": "SecretList", "apiVersion": "v1", "metadata": meta, "items": items}

    def open_watch(self, namespace: str, name: str | None, since: str | None) -> _OpenWatch:
        """Register a watch, preloaded with the events it missed (or ERROR 410)."""
        watch = _OpenWatch(namespace, name, queue.Queue())
        with self._lock:
            if since and int(since) < self._oldest_rv:
                watch.events.put(_gone_event())
                watch.events.put(_CLOSE)
                return watch
            if since:
                backlog = [(k, o) for rv, k, o in self._history if rv > int(since)]
            else:
                backlog = [("ADDED", o) for o in self._secrets.values()]
            for kind, obj in backlog:
                meta = obj["metadata"]
                if meta["namespace"] == namespace and name in (None, meta["name"]):
                    watch.events.put({"type": kind, "object": obj})
            self._watches.append(watch)
        return watch

    def close_watch(self, watch: _OpenWatch) -> None:
        with self._lock:
            if watch in self._watches:
                self._watches.remove(watch)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        fake: FakeKubeApiServer,
        context: ssl.SSLContext,
    ) -> None:
        self.fake, self.context = fake, context
        super().__init__(address, handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, addr = self.socket.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # headers and body: 2 writes
        # The TLS handshake runs in the handler thread, not in the accept loop.
        return self.context.wrap_socket(conn, server_side=True, do_handshake_on_connect=False), addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Connections cut by stop() or by a client closing its watch are expected here.
        if not isinstance(sys.exception(), OSError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        self.server.fake.track(self.request, alive=True)
        self.request.settimeout(30)
        self.request.do_handshake()
        super().setup()

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.fake.track(self.request, alive=False)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        fake = self.server.fake
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        authorized = self.headers.get("Authorization", "").lower() == f"bearer {fake.token}"
        fake.record(RecordedRequest("GET", parts.path, query, authorized))
        if not authorized:
            self._send_json(401, _status(401, "Unauthorized", "Unauthorized"))
            return
        segments = parts.path.strip("/").split("/")
        if segments[:3] != ["api", "v1", "namespaces"] or len(segments) not in (5, 6):
            self._send_json(404, _status(404, "NotFound", "the server could not find it"))
            return
        if segments[4] != "secrets":
            self._send_json(404, _status(404, "NotFound", f"unknown resource {segments[4]}"))
            return
        namespace = segments[3]
        if len(segments) == 6:
            obj = fake.get(namespace, segments[5])
            if obj is None:
                self._send_json(404, _status(404, "NotFound", f'secrets "{segments[5]}" not found'))
            else:
                self._send_json(200, obj)
            return
        selector = query.get("fieldSelector", "")
        name = selector.removeprefix("metadata.name=") if selector else None
        if query.get("watch") == "true":
            self._stream_watch(namespace, name, query)
        else:
            self._send_json(200, fake.list(namespace, name))

    def _stream_watch(self, namespace: str, name: str | None, query: dict[str, str]) -> None:
        fake = self.server.fake
        watch = fake.open_watch(namespace, name, query.get("resourceVersion") or None)
        deadline = time.monotonic() + float(query.get("timeoutSeconds", "1800"))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for event in _drain(watch, deadline, self.request):
                line = json.dumps(event).encode() + b"\n"
                self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            self.close_connection = True
        finally:
            fake.close_watch(watch)

    def _send_json(self, code: int, body: dict[str, Any]) -> None:
        payload = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def _drain(watch: _OpenWatch, deadline: float, conn: socket.socket) -> Iterator[_Event]:
    while (left := deadline - time.monotonic()) > 0:
        try:
            event = watch.events.get(timeout=min(left, 0.05))
        except queue.Empty:
            if _peer_closed(conn):
                return
            continue
        if event is _CLOSE:
            return
        assert isinstance(event, dict)
        yield event


def _peer_closed(conn: socket.socket) -> bool:
    """True when a watching client hung up (it never sends anything on a watch)."""
    if not select.select([conn], [], [], 0)[0]:
        return False
    try:
        return not conn.recv(1)
    except OSError:
        return True


def _secret_object(ns: str, name: str, data: dict[str, str], rv: int) -> dict[str, Any]:
    metadata = {"name": name, "namespace": ns, "resourceVersion": str(rv), "uid": f"uid-{name}"}
    return {
        "kind": "Secret",
        "apiVersion": "v1",
        "metadata": metadata,
        "type": "Opaque",
        "data": data,
    }


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def _gone_event() -> _Event:
    return {"type": "ERROR", "object": _status(410, "Expired", "too old resource version")}


@pytest.fixture
def kube_api(tmp_path: Path) -> Iterator[FakeKubeApiServer]:
    """A started FakeKubeApiServer, always stopped at the end of the test."""
    cert, key = write_self_signed_cert(tmp_path)
    server = FakeKubeApiServer(cert, key, token="s3rv1ce-acc0unt-t0ken")
    server.start()
    try:
        yield server
    finally:
        server.stop()
