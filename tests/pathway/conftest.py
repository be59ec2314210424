"""Pathway tests run on the app as production runs it: the pathway rules installed, the
definitions and the demo directory loaded by the same code as ``waymark seed-demo``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from app import pathway
from app.config import Settings
from app.db import make_engine, transaction
from app.pathway.seed import load_demo
from app.runtime import Runtime
from tests.conftest import empty_tables


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
