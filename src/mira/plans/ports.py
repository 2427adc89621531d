"""What publishing needs from GitHub and Jira, and the two ways an integration fails."""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

from mira.domain.messages import MessageError

T_co = TypeVar("T_co", covariant=True)


class IntegrationUnavailable(MessageError):
    """The integration is disabled or lacks configuration; `reason` names what is missing.

    409: the request is well formed but the service's configuration cannot carry it out; the
    operator (not the caller) must act, and repeating the request unchanged will not help.
    """

    status = 409

    def __init__(self, integration: str, reason: str) -> None:
        super().__init__(f"{integration} integration unavailable: {reason}")
        self.integration = integration
        self.reason = reason
        #: the setting to fix (e.g. "integrations.github.token"), reported as the error's field
        first = reason.split(" ", 1)[0].rstrip(":,")
        self.field = first if first.startswith("integrations.") else None


class IntegrationError(MessageError):
    """A call to GitHub or Jira failed; the message never contains a credential."""

    status = 502  # the HTTP answer Mira gives: the upstream service failed

    def __init__(
        self, integration: str, status: int | None, message: str, public: str = "the call failed"
    ) -> None:
        super().__init__(f"{integration}: {message}" + (f" (HTTP {status})" if status else ""))
        self.integration = integration
        self.upstream_status = status
        self.message = message
        self._public = public

    def public(self) -> str:
        """General words for the caller: no upstream URL, path or error text (those stay in the
        log and on the management listener's /ready)."""
        code = f" (HTTP {self.upstream_status})" if self.upstream_status else ""
        return f"{self.integration}: {self._public}{code}"


class Current(Protocol[T_co]):
    """Hands out the live client; read it afresh per call so a credential swap applies."""

    def current(self) -> T_co: ...


class GithubPort(Protocol):
    def list_milestones(self, repository: str) -> list[dict[str, Any]]: ...

    def create_milestone(
        self, repository: str, title: str, description: str, due_on: str | None
    ) -> dict[str, Any]: ...

    def list_issues(
        self, repository: str, milestone: int | None = None
    ) -> list[dict[str, Any]]: ...

    def create_issue(
        self, repository: str, title: str, body: str, milestone: int | None
    ) -> dict[str, Any]: ...


class JiraPort(Protocol):
    def issue_types(self, project: str) -> list[str]: ...

    def find_issues(
        self, project: str, summary: str, issue_type: str | None = None
    ) -> list[dict[str, Any]]: ...

    def create_issue(
        self,
        project: str,
        summary: str,
        description: str,
        issue_type: str = "Task",
        labels: tuple[str, ...] = (),
    ) -> dict[str, Any]: ...
