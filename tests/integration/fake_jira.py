"""A local stand-in for Jira's REST v2 (no internet here): real HTTP on 127.0.0.1, projects and
issues in memory, every call recorded; Cloud mode adds /search/jql, Server mode lacks it."""

from __future__ import annotations

import base64
import re
from typing import Any

from tests.integration.fake_github import FakeRestServer, Reply

_JQL = re.compile(r'project = "(?P<key>\w+)"(?: AND summary ~ "(?P<text>[^"]*)")?')


def basic(user: str, token: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()


def _words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


class FakeJira(FakeRestServer):
    """Jira projects with issue types; search by JQL (project + summary text), create issues."""

    def __init__(
        self,
        accepted_auth: set[str],
        projects: dict[str, tuple[str, ...]] | None = None,
        cloud: bool = True,
    ) -> None:
        super().__init__(accepted_auth)
        self.cloud = cloud
        self.types = projects or {"MIRA": ("Task", "Epic")}
        self.issues: list[dict[str, Any]] = []

    @property
    def url(self) -> str:
        return self.origin

    def unauthorized(self) -> Reply:
        return 401, {"errorMessages": ["You are not authenticated."]}, {}

    def route(self, method: str, path: str, query: dict[str, str], body: Any) -> Reply:
        if (method, path) == ("GET", "/rest/api/2/myself"):
            return 200, {"name": "mira", "emailAddress": "bot@example.com"}, {}
        if method == "GET" and path.startswith("/rest/api/2/project/"):
            key = path.rsplit("/", 1)[1]
            if key not in self.types:
                return 404, {"errorMessages": [f"No project could be found with key '{key}'."]}, {}
            return 200, {"key": key, "issueTypes": [{"name": t} for t in self.types[key]]}, {}
        if (method, path) == ("GET", "/rest/api/2/search/jql") and self.cloud:
            return self._search(query, token_paging=True)
        if (method, path) == ("GET", "/rest/api/2/search"):
            return self._search(query, token_paging=False)
        if (method, path) == ("POST", "/rest/api/2/issue"):
            return self._create(body["fields"])
        return 404, {"errorMessages": ["Not found"]}, {}

    def _search(self, query: dict[str, str], token_paging: bool) -> Reply:
        parsed = _JQL.fullmatch(query.get("jql", ""))
        if not parsed:
            return 400, {"errorMessages": [f"unsupported JQL {query.get('jql')!r}"]}, {}
        wanted = _words(parsed["text"] or "")
        hits = [
            {"key": i["key"], "fields": {k: i[k] for k in ("summary", "issuetype")}}
            for i in self.issues
            if i["project"] == parsed["key"] and wanted <= _words(i["summary"])
        ]
        size = int(query.get("maxResults", 50))
        start = int(query.get("nextPageToken" if token_paging else "startAt", 0))
        page = hits[start : start + size]
        if not token_paging:
            return 200, {"startAt": start, "total": len(hits), "issues": page}, {}
        more = start + size < len(hits)
        reply = {"issues": page, "isLast": not more}
        if more:
            reply["nextPageToken"] = str(start + size)
        return 200, reply, {}

    def _create(self, fields: dict[str, Any]) -> Reply:
        key = fields["project"]["key"]
        kind = fields["issuetype"]["name"]
        if kind not in self.types.get(key, ()):
            return 400, {"errorMessages": [], "errors": {"issuetype": "invalid issue type"}}, {}
        number = len(self.issues) + 1
        issue = {
            "key": f"{key}-{number}",
            "project": key,
            "summary": fields["summary"],
            "issuetype": {"name": kind},
            "labels": fields.get("labels", []),
        }
        self.issues.append(issue)
        return 201, {"id": str(10000 + number), "key": issue["key"]}, {}

    def seed(self, project: str, summary: str, kind: str = "Task") -> None:
        with self.lock:
            number = len(self.issues) + 1
            self.issues.append(
                {"key": f"{project}-{number}", "project": project, "summary": summary,
                 "issuetype": {"name": kind}, "labels": []}
            )  # fmt: skip
