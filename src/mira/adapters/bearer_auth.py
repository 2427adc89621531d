"""`Authorization: Bearer <token>` checked against the live tokens, in constant time."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Sequence

from mira.domain.secret_value import SecretValue

HEADER = "Authorization"


class BearerTokens:
    """The accepted tokens are read at each request: a rotated secret applies at once.

    `tokens()` gives the configured texts (literals or secret:// references); `resolve(text)`
    the value in use (None for a reference not resolved: it then matches nothing).
    """

    def __init__(
        self,
        tokens: Callable[[], Sequence[str]],
        resolve: Callable[[str | None], SecretValue | None],
    ) -> None:
        self._tokens, self._resolve = tokens, resolve

    @property
    def configured(self) -> bool:
        return bool(self._tokens())

    def problem(self, header: str | None) -> str | None:
        """None when the header carries a current token; else why not (never the token)."""
        if not header:
            return f"missing {HEADER} header (expected {HEADER}: Bearer <token>)"
        scheme, _, presented = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            return f"{HEADER} header must be 'Bearer <token>'"
        given = presented.strip().encode()
        matched = False
        for text in self._tokens():  # every token compared: no early exit on a match
            value = self._resolve(text)
            if value is not None:
                matched |= hmac.compare_digest(given, value.reveal().encode())
        return None if matched else f"invalid bearer token in the {HEADER} header"
