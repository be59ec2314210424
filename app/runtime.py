"""What the application holds for its lifetime: made in the lifespan, never at import time."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.audit.trail import AuditTrail
from app.clock import Clock, system_clock
from app.config import Settings
from app.fhir.access import OPEN_ACCESS, Access
from app.fhir.budget import RequestBudget
from app.fhir.hooks import WriteHooks
from app.fhir.repository import ResourceRepository
from app.fhir.store import FhirStore
from app.security.tokens import TokenService


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    hooks: WriteHooks = field(default_factory=WriteHooks)
    #: The clinical clock: lastUpdated, timelines, waits. Tests move it by days or months.
    clock: Clock = system_clock
    #: The clock tokens and assertions are checked against: real time, apart from tests of
    #: expiry, so that moving the clinical clock does not expire every caller's token.
    token_clock: Clock = system_clock
    #: Made from the settings; reads its signing key on first use, so making it is cheap.
    tokens: TokenService = field(init=False)
    #: Where the AuditEvents of reads and refusals are written, in batches.
    audit_trail: AuditTrail = field(init=False)

    def __post_init__(self) -> None:
        # The tokens follow token_clock, even when a test replaces it later.
        self.tokens = TokenService.from_settings(
            self.settings, clock=lambda: self.token_clock(), engine=self.engine
        )
        self.audit_trail = AuditTrail(self.engine, self.store)

    def store(self, conn: AsyncConnection, access: Access = OPEN_ACCESS) -> FhirStore:
        """The store on ``conn``; ``access`` authorises and records a caller's interactions
        (the default is the server's own unrestricted, unrecorded access)."""
        return FhirStore(
            ResourceRepository(conn),
            clock=self.clock,
            hooks=self.hooks,
            chi_system=self.settings.chi_system,
            base_url=self.settings.base_url,
            default_page_size=self.settings.default_page_size,
            max_page_size=self.settings.max_page_size,
            access=access,
            budget=RequestBudget(
                max_resources=self.settings.max_request_resources,
                max_bytes=self.settings.max_response_bytes,
            ),
        )
