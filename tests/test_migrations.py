"""pytest-alembic's checks, on a fresh SQLite and a fresh PostgreSQL database.

Alembic is the only way the schema is made; these prove the migrations upgrade cleanly, go
down and up again, have one head, and match the models exactly (``alembic check``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from alembic.config import Config
from pytest_alembic import tests as alembic_checks
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from app.migrate import alembic_config as make_alembic_config
from tests.conftest import fresh_database


@pytest.fixture
def empty_database_url(
    database_kind: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    with fresh_database(database_kind, tmp_path_factory) as url:
        yield url


@pytest.fixture
def alembic_config(empty_database_url: str) -> Config:
    return make_alembic_config(empty_database_url)


@pytest.fixture
def alembic_engine(empty_database_url: str) -> Iterator[AsyncEngine]:
    engine = create_async_engine(empty_database_url, poolclass=NullPool)
    yield engine
    asyncio.run(engine.dispose())


test_single_head_revision = alembic_checks.test_single_head_revision
test_upgrade = alembic_checks.test_upgrade
test_model_definitions_match_ddl = alembic_checks.test_model_definitions_match_ddl
test_up_down_consistency = alembic_checks.test_up_down_consistency
