"""Jira Cloud / Server REST v2 client: find issues by summary, create tasks and epics."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from typing import Any

import requests
import structlog

from mira.domain.config.model import JiraSettings
from mira.domain.secret_value import SecretValue
from mira.plans.http import Caller, is_http_url, retry_policy
from mira.plans.ports import IntegrationError, IntegrationUnavailable

log = structlog.get_logger("mira.integrations")
PAGE = 100
# Characters Jira's text search treats as operators; the exact match happens client-side anyway.
_TEXT_RESERVED = re.compile(r'[+\-&|!(){}\[\]^~*?\\:"/]+')


def _reveal(value: str | SecretValue | None) -> str:
    return value.reveal() if isinstance(value, SecretValue) else (value or "")


class JiraClient:
    """Basic auth (Cloud: e-mail + API token) or Bearer PAT (Server, username None).

    Raises IntegrationUnavailable naming the setting when the settings cannot work.
    """

    def __init__(
        self,
        settings: JiraSettings,
        username: str | SecretValue | None,
        api_token: str | SecretValue | None,
        session: requests.Session | None = None,
        *,
        sleep: Callable[[float], None] | None = None,
        observe: Callable[[str, str, float], None] | None = None,
    ) -> None:
        token, user = _reveal(api_token), _reveal(username)
        if not settings.url:
            raise IntegrationUnavailable("jira", "integrations.jira.url is not set")
        if not is_http_url(settings.url):
            raise IntegrationUnavailable(
                "jira", f"integrations.jira.url must be an http(s) URL, got {settings.url!r}"
            )
        if not token:
            raise IntegrationUnavailable(
                "jira", "integrations.jira.api_token is not set (nor JIRA_API_TOKEN)"
            )
        self._base = settings.url.rstrip("/")
        basic = base64.b64encode(f"{user}:{token}".encode()).decode()
        auth = f"Basic {basic}" if user else f"Bearer {token}"
        headers = {"Authorization": auth, "Accept": "application/json"}
        retry = retry_policy("jira", settings.max_retries, sleep)
        self._caller = Caller(
            "jira", retry, settings.timeout, headers, (token, basic), session, observe
        )
        self._legacy_search = False

    def __repr__(self) -> str:
        return f"JiraClient(url={self._base!r})"

    def check(self) -> str:
        """Verify the credentials (GET /rest/api/2/myself); return a one-line status."""
        me = self._json("GET", "/rest/api/2/myself")
        who = me.get("emailAddress") or me.get("name") or me.get("displayName") or "?"
        return f"jira ok: authenticated as {who} at {self._base}"

    def issue_types(self, project: str) -> list[str]:
        """Names of the issue types the project offers (also proves the project exists)."""
        body = self._json("GET", f"/rest/api/2/project/{project}")
        return [str(t.get("name")) for t in body.get("issueTypes", [])]

    def find_issues(
        self, project: str, summary: str, issue_type: str | None = None
    ) -> list[dict[str, Any]]:
        """Issues of `project` whose summary equals `summary` exactly (and of `issue_type`)."""
        words = _TEXT_RESERVED.sub(" ", summary).split()
        jql = f'project = "{project}"'
        if words:
            jql += f' AND summary ~ "{" ".join(words)}"'
        found = []
        for issue in self._search(jql):
            fields = issue.get("fields") or {}
            kind = (fields.get("issuetype") or {}).get("name")
            if fields.get("summary") == summary and issue_type in (None, kind):
                found.append(issue)
        return found

    def create_issue(
        self,
        project: str,
        summary: str,
        description: str,
        issue_type: str = "Task",
        labels: tuple[str, ...] = (),
    ) -> dict[str, Any]:
        fields = {
            "project": {"key": project},
            "summary": summary,
            "description": description,
            "issuetype": {"name": issue_type},
            "labels": list(labels),
        }
        made = self._json("POST", "/rest/api/2/issue", json={"fields": fields})
        log.info("jira_issue_created", project=project, key=made.get("key"), type=issue_type)
        return made

    def close(self) -> None:
        """Close the session now if idle, else when the last call in flight ends."""
        self._caller.close()

    def _search(self, jql: str) -> list[dict[str, Any]]:
        if not self._legacy_search:
            try:
                return self._search_enhanced(jql)
            except IntegrationError as exc:
                if exc.upstream_status != 404:
                    raise
                self._legacy_search = True  # Jira Server / Data Center: no /search/jql
        return self._search_legacy(jql)

    def _search_enhanced(self, jql: str) -> list[dict[str, Any]]:
        params = {"jql": jql, "fields": "summary,issuetype", "maxResults": str(PAGE)}
        issues: list[dict[str, Any]] = []
        while True:
            page = self._json("GET", "/rest/api/2/search/jql", params=params)
            issues.extend(page.get("issues", []))
            token = page.get("nextPageToken")
            if not token or page.get("isLast"):
                return issues
            params["nextPageToken"] = str(token)

    def _search_legacy(self, jql: str) -> list[dict[str, Any]]:
        params = {"jql": jql, "fields": "summary,issuetype", "maxResults": str(PAGE)}
        issues: list[dict[str, Any]] = []
        while True:
            page = self._json(
                "GET", "/rest/api/2/search", params={**params, "startAt": str(len(issues))}
            )
            batch = page.get("issues", [])
            issues.extend(batch)
            if not batch or len(issues) >= int(page.get("total", 0)):
                return issues

    def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = self._caller.request(method, f"{self._base}{path}", **kwargs)
        body = response.json()
        if not isinstance(body, dict):
            raise IntegrationError("jira", response.status_code, f"{path}: expected an object")
        return body
