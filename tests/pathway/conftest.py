"""Pathway tests run on the app as production runs it: the pathway rules installed, the
definitions and the demo directory loaded by the same code as ``waymark seed-demo``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from app import pathway
from app.config import Settings
from app.db import make_engine, transaction
from app.pathway.seed import load_demo
from app.runtime import Runtime
from tests.conftest import empty_tables
from tests.pathway.referrals import SettableClock


@pytest.fixture
async def runtime(settings: Settings) -> AsyncIterator[Runtime]:
    engine = make_engine(settings)
    await empty_tables(engine)
    runtime = Runtime(settings=settings, engine=engine, hooks=pathway.hooks())
    async with transaction(engine, write=True) as conn:
        await load_demo(
            runtime.store(conn),
            conn,
            base_url=settings.base_url,
            max_entries=settings.max_bundle_entries,
        )
    yield runtime
    await engine.dispose()


@pytest.fixture
def clock(runtime: Runtime) -> SettableClock:
    """The runtime's clinical clock, stopped at 1 June 2026, 09:00 (modules may start it
    elsewhere with a fixture of their own)."""
    runtime.clock = SettableClock(datetime(2026, 6, 1, 9, 0, tzinfo=UTC))
    return runtime.clock
