"""What the application holds for its lifetime: made in the lifespan, never at import time."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.clock import Clock, system_clock
from app.config import Settings
from app.fhir.hooks import WriteHooks
from app.fhir.repository import ResourceRepository
from app.fhir.store import FhirStore


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    hooks: WriteHooks = field(default_factory=WriteHooks)
    clock: Clock = system_clock

    def store(self, conn: AsyncConnection) -> FhirStore:
        return FhirStore(
            ResourceRepository(conn),
            clock=self.clock,
            hooks=self.hooks,
            chi_system=self.settings.chi_system,
            base_url=self.settings.base_url,
            default_page_size=self.settings.default_page_size,
            max_page_size=self.settings.max_page_size,
        )
