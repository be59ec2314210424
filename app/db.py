"""Engine and the transaction scope.

The request edge (a router or a CLI command) opens one transaction with :func:`transaction`
and everything below it works on the connection it is given; nothing below commits.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from app.config import Settings

#: Execution option asking SQLite to take the write lock when the transaction begins.
_SQLITE_WRITE = "waymark_sqlite_write"


def make_engine(settings: Settings) -> AsyncEngine:
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            from pathlib import Path

            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30})
        _configure_sqlite(engine)
        return engine
    kwargs: dict[str, Any] = {
        "pool_size": settings.db_pool_size,
        "max_overflow": settings.db_max_overflow,
        "pool_pre_ping": False,
    }
    return create_async_engine(url, **kwargs)


def _configure_sqlite(engine: AsyncEngine) -> None:
    """WAL for concurrent readers, and explicit BEGIN so writers lock up front.

    pysqlite's own transaction handling begins lazily, so two writers that both read first
    would deadlock on the lock upgrade; ``BEGIN IMMEDIATE`` makes the second one wait instead.
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        write = conn.get_execution_options().get(_SQLITE_WRITE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


@asynccontextmanager
async def transaction(engine: AsyncEngine, *, write: bool) -> AsyncIterator[AsyncConnection]:
    """One database transaction: committed when the block ends, rolled back if it raises."""
    if engine.dialect.name == "sqlite":
        if write:
            engine = engine.execution_options(**{_SQLITE_WRITE: True})
    elif not write:
        # A read is one or two statements: autocommit saves the BEGIN/ROLLBACK round trips.
        async with engine.connect() as conn:
            yield await conn.execution_options(isolation_level="AUTOCOMMIT")
        return
    async with engine.begin() as conn:
        yield conn
