"""Alembic environment: the only way Waymark's schema is made."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app.config import get_settings
from app.fhir.models import Base
from app.pathway import models as _pathway_models  # noqa: F401  (registers its tables)
from app.security import models as _security_models  # noqa: F401  (registers its tables)

config = context.config
target_metadata = Base.metadata

# A lock timeout keeps a migration from queueing behind live traffic forever on PostgreSQL.
POSTGRES_LOCK_TIMEOUT = "5s"


def _database_url() -> str:
    return config.get_main_option("sqlalchemy.url") or get_settings().database_url


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )


def _run_sync(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"SET lock_timeout = '{POSTGRES_LOCK_TIMEOUT}'")
    _configure(connection)
    with context.begin_transaction():
        context.run_migrations()


async def _run_async(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        await connection.run_sync(_run_sync)
        await connection.commit()
    # Each asyncio.run() has its own loop: pooled connections must not outlive it.
    await engine.dispose()


def run_migrations_offline() -> None:
    context.configure(
        url=_database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    # A caller (the tests, pytest-alembic) may hand over its own connection or engine.
    given = config.attributes.get("connection")
    if isinstance(given, Connection):
        _run_sync(given)
    elif isinstance(given, AsyncEngine):
        asyncio.run(_run_async(given))
    else:
        engine = create_async_engine(_database_url(), poolclass=pool.NullPool)
        asyncio.run(_run_async(engine))


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
