"""GitHub REST v3 client for milestones and issues (github.com or Enterprise /api/v3)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import requests
import structlog

from mira.domain.config.model import GithubSettings
from mira.domain.secret_value import SecretValue
from mira.plans.http import Caller, is_http_url, retry_policy
from mira.plans.ports import IntegrationError, IntegrationUnavailable

log = structlog.get_logger("mira.integrations")
PER_PAGE = 100


class GithubClient:
    """One token, one session; cheap to build. `close()` waits for calls still in flight.

    Raises IntegrationUnavailable naming the setting when the settings cannot work.
    """

    def __init__(
        self,
        settings: GithubSettings,
        token: str | SecretValue | None,
        session: requests.Session | None = None,
        *,
        sleep: Callable[[float], None] | None = None,
        observe: Callable[[str, str, float], None] | None = None,
    ) -> None:
        secret = token.reveal() if isinstance(token, SecretValue) else token
        if not is_http_url(settings.base_url):
            raise IntegrationUnavailable(
                "github",
                f"integrations.github.base_url must be an http(s) URL, got {settings.base_url!r}",
            )
        if not secret:
            raise IntegrationUnavailable(
                "github", "integrations.github.token is not set (nor GITHUB_TOKEN)"
            )
        self._base = settings.base_url.rstrip("/")
        headers = {
            "Authorization": f"Bearer {secret}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
        }
        retry = retry_policy("github", settings.max_retries, sleep)
        self._caller = Caller(
            "github", retry, settings.timeout, headers, (secret,), session, observe
        )

    def __repr__(self) -> str:
        return f"GithubClient(base_url={self._base!r})"

    def check(self) -> str:
        """Verify the credentials (GET /user); return a one-line status."""
        user = self._json("GET", "/user")
        return f"github ok: authenticated as {user.get('login', '?')} at {self._base}"

    def list_milestones(self, repository: str) -> list[dict[str, Any]]:
        return self._pages(f"/repos/{repository}/milestones", {"state": "all"})

    def create_milestone(
        self, repository: str, title: str, description: str, due_on: str | None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"title": title, "description": description}
        if due_on:
            body["due_on"] = due_on
        made = self._json("POST", f"/repos/{repository}/milestones", json=body)
        log.info("github_milestone_created", repository=repository, number=made.get("number"))
        return made

    def list_issues(self, repository: str, milestone: int | None = None) -> list[dict[str, Any]]:
        """Issues in any state (pull requests left out), of one milestone or all."""
        params = {"state": "all"}  # no milestone filter: "*" would leave out issues without one
        if milestone is not None:
            params["milestone"] = str(milestone)
        items = self._pages(f"/repos/{repository}/issues", params)
        return [item for item in items if "pull_request" not in item]

    def create_issue(
        self, repository: str, title: str, body: str, milestone: int | None
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {"title": title, "body": body}
        if milestone is not None:
            payload["milestone"] = milestone
        made = self._json("POST", f"/repos/{repository}/issues", json=payload)
        log.info("github_issue_created", repository=repository, number=made.get("number"))
        return made

    def close(self) -> None:
        """Close the session now if idle, else when the last call in flight ends."""
        self._caller.close()

    def _pages(self, path: str, params: dict[str, str]) -> list[dict[str, Any]]:
        url: str | None = f"{self._base}{path}"
        query: dict[str, str] | None = {**params, "per_page": str(PER_PAGE)}
        items: list[dict[str, Any]] = []
        while url:
            response = self._send("GET", url, params=query)
            page = response.json()
            if not isinstance(page, list):
                raise IntegrationError("github", response.status_code, f"{path}: expected a list")
            items.extend(page)
            url, query = response.links.get("next", {}).get("url"), None  # next URL has the query
        return items

    def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = self._send(method, f"{self._base}{path}", **kwargs)
        body = response.json()
        if not isinstance(body, dict):
            raise IntegrationError("github", response.status_code, f"{path}: expected an object")
        return body

    def _send(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        return self._caller.request(method, url, **kwargs)
