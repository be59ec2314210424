"""The access port: how the store asks whether an interaction is allowed and reports what it
touched, without app/fhir knowing about tokens, scopes or the audit trail.

The store calls :meth:`Access.authorise` before each interaction (REST or Bundle entry) and
:meth:`Access.touched` after it succeeds. ``app.audit`` implements the port for a request;
:data:`OPEN_ACCESS` is for the server's own work (migrations, seeding, the CLI).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

#: A resource an interaction touched: its type, id and stored content (None for a deletion).
Touched = tuple[str, str, bytes | None]


class Access(Protocol):
    @property
    def source(self) -> str | None:
        """Who writes, recorded as each version's ``meta.source`` (None: leave it as sent)."""

    def authorise(
        self, interaction: str, resource_type: str, resource_id: str | None = None
    ) -> None:
        """Raise :class:`~app.fhir.errors.Forbidden` when the caller may not do this."""

    def permits(self, interaction: str, resource_type: str) -> bool:
        """Whether the caller may do this (nothing raised, nothing recorded)."""

    def touched(
        self,
        interaction: str,
        resource_type: str,
        resources: Sequence[Touched],
        *,
        query: str | None = None,
    ) -> None:
        """Note that ``interaction`` succeeded on ``resources`` (for a search, ``query``)."""

    def failed(
        self,
        interaction: str,
        resource_type: str,
        resource_id: str | None,
        *,
        status: int,
        reason: str,
    ) -> None:
        """Note that an interaction failed without failing the request (a batch entry)."""

    def consulted(self, resources: Sequence[Touched]) -> None:
        """Note resources the server read for its own rules while serving the caller (an
        operation's summary reads them; the audit trail decides what to record)."""


class OpenAccess:
    """Everything allowed, nothing recorded: the server's own work, on its own or on behalf
    of a caller (``source``) whose write it follows up."""

    def __init__(self, source: str | None = None) -> None:
        self.source = source

    def authorise(
        self, interaction: str, resource_type: str, resource_id: str | None = None
    ) -> None:
        return None

    def permits(self, interaction: str, resource_type: str) -> bool:
        return True

    def touched(
        self,
        interaction: str,
        resource_type: str,
        resources: Sequence[Touched],
        *,
        query: str | None = None,
    ) -> None:
        return None

    def failed(
        self,
        interaction: str,
        resource_type: str,
        resource_id: str | None,
        *,
        status: int,
        reason: str,
    ) -> None:
        return None

    def consulted(self, resources: Sequence[Touched]) -> None:
        return None


OPEN_ACCESS = OpenAccess()
