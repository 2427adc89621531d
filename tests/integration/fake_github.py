"""A local stand-in for GitHub's REST v3 (no internet here): real HTTP on 127.0.0.1, state in
memory, every call recorded (method, path, query, headers, body, status), injectable failures."""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qsl, urlencode, urlsplit

Reply = tuple[int, Any, dict[str, str]]


@dataclass(frozen=True)
class Call:
    """One request as the server saw it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    status: int
    at: float


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as requests' connection pool expects
    disable_nagle_algorithm = True  # headers and body go out in two writes: avoid 40 ms stalls

    def do_GET(self) -> None:
        self.server.app.dispatch(self)  # type: ignore[attr-defined]

    def do_POST(self) -> None:
        self.server.app.dispatch(self)  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the recorded calls are the log."""


class FakeRestServer:
    """Threaded HTTP server base: records calls, fails the next N on demand, checks auth."""

    def __init__(self, accepted_auth: set[str]) -> None:
        self.accepted_auth = set(accepted_auth)
        self.calls: list[Call] = []
        self.lock = threading.Lock()
        self._failures: list[tuple[int, dict[str, str]]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.app = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,))

    @property
    def origin(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def fail_next(
        self,
        count: int,
        status: int = 503,
        retry_after: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        headers = {**(headers or {}), **({"Retry-After": retry_after} if retry_after else {})}
        with self.lock:
            self._failures.extend([(status, headers)] * count)

    def calls_matching(self, method: str, pattern: str) -> list[Call]:
        with self.lock:
            return [c for c in self.calls if c.method == method and re.search(pattern, c.path)]

    def dispatch(self, request: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(request.path)
        length = int(request.headers.get("Content-Length") or 0)
        raw = request.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        query = dict(parse_qsl(parts.query))
        with self.lock:
            failure = self._failures.pop(0) if self._failures else None
            if failure:
                status, payload, headers = failure[0], {"message": "injected failure"}, failure[1]
            elif request.headers.get("Authorization") not in self.accepted_auth:
                status, payload, headers = self.unauthorized()
            else:
                status, payload, headers = self.route(request.command, parts.path, query, body)
            self.calls.append(
                Call(request.command, parts.path, query, dict(request.headers), body, status,
                     time.monotonic())
            )  # fmt: skip
        data = json.dumps(payload).encode()
        request.send_response(status)
        for name, value in {**headers, "Content-Type": "application/json"}.items():
            request.send_header(name, value)
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)

    def unauthorized(self) -> Reply:
        return 401, {"message": "Bad credentials"}, {}

    def route(self, method: str, path: str, query: dict[str, str], body: Any) -> Reply:
        raise NotImplementedError


class FakeGithub(FakeRestServer):
    """GitHub REST v3 under `/api/v3` (like GitHub Enterprise): milestones, issues, /user."""

    PREFIX = "/api/v3"

    def __init__(
        self,
        tokens: set[str],
        repositories: tuple[str, ...] = ("acme/app",),
        any_repository: bool = False,
    ) -> None:
        super().__init__({f"Bearer {t}" for t in tokens})
        self.milestones: dict[str, list[dict[str, Any]]] = {r: [] for r in repositories}
        self.issues: dict[str, list[dict[str, Any]]] = {r: [] for r in repositories}
        self.any_repository = any_repository  # every repository exists (empty at first)

    @property
    def base_url(self) -> str:
        return self.origin + self.PREFIX

    def set_tokens(self, tokens: set[str]) -> None:
        with self.lock:
            self.accepted_auth = {f"Bearer {t}" for t in tokens}

    def seed_issue(self, repository: str, title: str, pull_request: bool = False) -> None:
        with self.lock:
            items = self.issues[repository]
            issue: dict[str, Any] = {"number": len(items) + 1, "title": title, "state": "open"}
            if pull_request:
                issue["pull_request"] = {"url": "..."}
            items.append(issue)

    def route(self, method: str, path: str, query: dict[str, str], body: Any) -> Reply:
        path = path.removeprefix(self.PREFIX)
        if (method, path) == ("GET", "/user"):
            return 200, {"login": "mira-bot"}, {}
        found = re.fullmatch(r"/repos/([^/]+/[^/]+)/(milestones|issues)", path)
        if found and self.any_repository:
            self.milestones.setdefault(found[1], [])
            self.issues.setdefault(found[1], [])
        if not found or found[1] not in self.milestones:
            return 404, {"message": "Not Found"}, {}
        repo, kind = found[1], found[2]
        if method == "GET":
            items = self.milestones[repo] if kind == "milestones" else self._issues(repo, query)
            return self._page(path, query, items)
        if kind == "milestones":
            return self._create_milestone(repo, body)
        return self._create_issue(repo, body)

    def _issues(self, repo: str, query: dict[str, str]) -> list[dict[str, Any]]:
        wanted = query.get("milestone")
        items = self.issues[repo]
        if wanted in (None, "*"):
            return [i for i in items if wanted is None or i.get("milestone")]
        return [i for i in items if (i.get("milestone") or {}).get("number") == int(wanted)]

    def _page(self, path: str, query: dict[str, str], items: list[Any]) -> Reply:
        size = min(int(query.get("per_page", 30)), 100)
        page = int(query.get("page", 1))
        headers = {}
        if page * size < len(items):
            nxt = urlencode({**query, "page": str(page + 1)})
            headers["Link"] = f'<{self.base_url}{path}?{nxt}>; rel="next"'
        return 200, items[(page - 1) * size : page * size], headers

    def _create_milestone(self, repo: str, body: dict[str, Any]) -> Reply:
        items = self.milestones[repo]
        if any(m["title"] == body.get("title") for m in items):
            return 422, {"message": "Validation Failed", "errors": [{"code": "already_exists"}]}, {}
        made = {"number": len(items) + 1, "state": "open", **body}
        items.append(made)
        return 201, made, {}

    def _create_issue(self, repo: str, body: dict[str, Any]) -> Reply:
        number = body.get("milestone")
        milestone = next((m for m in self.milestones[repo] if m["number"] == number), None)
        if number is not None and milestone is None:
            return 422, {"message": "Validation Failed", "errors": [{"field": "milestone"}]}, {}
        items = self.issues[repo]
        made = {**body, "number": len(items) + 1, "state": "open", "milestone": milestone}
        items.append(made)
        return 201, made, {}
