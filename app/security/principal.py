"""The caller of a request, as the access token says."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Principal:
    """A registered client acting with the scopes its access token grants.

    ``scopes`` holds the granted SMART scope strings exactly as the token carries them
    (e.g. ``system/Task.rs``); what they permit is decided in ``app.security.scopes``.
    """

    client_id: str
    scopes: frozenset[str]
    token_id: str | None = None
    #: The access token's ``iat``: tokens issued before a client's revocation are refused.
    issued_at: int | None = None
