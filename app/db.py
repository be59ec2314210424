"""Engine and the transaction scope.

The request edge (a router or a CLI command) opens one transaction with :func:`transaction`
and everything below it works on the connection it is given; nothing below commits.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from app.config import Settings

#: Execution option asking SQLite to take the write lock when the transaction begins.
_SQLITE_WRITE = "waymark_sqlite_write"


def make_engine(settings: Settings) -> AsyncEngine:
    url = make_url(settings.database_url)
    pool: dict[str, Any] = {
        "pool_size": settings.db_pool_size,
        "max_overflow": settings.db_max_overflow,
        "pool_pre_ping": False,
    }
    if url.get_backend_name() == "sqlite":
        if not url.database or url.database == ":memory:":
            engine = create_async_engine(url, connect_args={"timeout": 30})
        else:
            from pathlib import Path

            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
            engine = create_async_engine(url, connect_args={"timeout": 30}, **pool)
        _configure_sqlite(engine)
    else:
        connect_args: dict[str, Any] = {}
        if url.get_driver_name() == "asyncpg":
            # Search statements are short and selective: JIT compilation (triggered by
            # inflated cost estimates) turns 2 ms into hundreds, and a generic plan cached
            # for a prepared statement can choose a scan a custom plan would not.
            connect_args["server_settings"] = {
                "jit": "off",
                "plan_cache_mode": "force_custom_plan",
            }
        if url.get_driver_name() == "asyncpg" and _plain_loopback(url):
            # asyncpg's default (sslmode "prefer") asks for TLS on every new connection.
            connect_args["ssl"] = False
        engine = create_async_engine(url, connect_args=connect_args, **pool)
    _Scopes.attach(engine)
    return engine


def _plain_loopback(url: URL) -> bool:
    """A server on this machine, with no TLS setting in the URL or the environment."""
    if {"ssl", "sslmode"} & set(url.query) or os.environ.get("PGSSLMODE"):
        return False
    host = url.host or ""
    if not host or host.startswith("/") or host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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


class _Scopes:
    """What :func:`transaction` needs of an engine, made once rather than per request.

    * PostgreSQL reads run in autocommit (a read is one or two statements: that saves the
      BEGIN and ROLLBACK round trips); the autocommit variant of the engine shares its pool.
    * SQLite has one writer at a time. Writers of this process queue on an asyncio lock
      rather than in SQLite's busy handler, which sleeps and retries (seconds of p99 under
      load); the busy handler still arbitrates between processes.
    """

    __slots__ = ("autocommit", "loop", "sqlite_write", "write_lock")

    def __init__(self, engine: AsyncEngine) -> None:
        self.autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        self.sqlite_write = engine.execution_options(**{_SQLITE_WRITE: True})
        self.loop: asyncio.AbstractEventLoop | None = None
        self.write_lock = asyncio.Lock()

    @classmethod
    def attach(cls, engine: AsyncEngine) -> _Scopes:
        scopes = cls(engine)
        engine.sync_engine.__dict__["_waymark_scopes"] = scopes
        return scopes

    @classmethod
    def of(cls, engine: AsyncEngine) -> _Scopes:
        scopes: _Scopes | None = engine.sync_engine.__dict__.get("_waymark_scopes")
        return scopes if scopes is not None else cls.attach(engine)

    def lock(self) -> asyncio.Lock:
        """The write lock of the running event loop (a lock belongs to one loop)."""
        loop = asyncio.get_running_loop()
        if loop is not self.loop:
            self.loop, self.write_lock = loop, asyncio.Lock()
        return self.write_lock


@asynccontextmanager
async def transaction(engine: AsyncEngine, *, write: bool) -> AsyncIterator[AsyncConnection]:
    """One database transaction: committed when the block ends, rolled back if it raises."""
    scopes = _Scopes.of(engine)
    if engine.dialect.name == "sqlite":
        if write:
            async with scopes.lock(), scopes.sqlite_write.begin() as conn:
                yield conn
            return
    elif engine.dialect.driver == "asyncpg":
        async with _asyncpg_transaction(scopes.autocommit, write=write) as conn:
            yield conn
        return
    elif not write:
        async with scopes.autocommit.connect() as conn:
            yield conn
        return
    async with engine.begin() as conn:
        yield conn


@asynccontextmanager
async def _asyncpg_transaction(
    autocommit: AsyncEngine, *, write: bool
) -> AsyncIterator[AsyncConnection]:
    """A transaction on PostgreSQL over asyncpg.

    A read is one or two statements: it runs in autocommit, which saves the BEGIN and ROLLBACK
    round trips. A write transaction is begun and ended on the driver connection: SQLAlchemy
    sees an autocommit connection and its statements run inside the transaction all the same,
    and the repository can send its hot statements to the driver directly (SQLAlchemy would
    begin the transaction lazily, at its own first statement). Statements sent to the driver
    bypass SQLAlchemy's handling of lost connections, so a connection that failed is discarded
    here rather than returned to the pool.
    """
    async with autocommit.connect() as conn:
        sync = conn.sync_connection
        assert sync is not None
        driver: Any = sync.connection.driver_connection
        assert driver is not None
        if not write:
            try:
                yield conn
            except BaseException:
                await _discard_if_unusable(conn, driver)
                raise
            return
        try:
            xact = driver.transaction()
            await xact.start()
        except BaseException:
            await _discard_if_unusable(conn, driver)
            raise
        try:
            yield conn
        except BaseException:
            with suppress(BaseException):  # the error to report is the one that got here
                await xact.rollback()
            await _discard_if_unusable(conn, driver)
            raise
        try:
            await xact.commit()
        except BaseException:
            await _discard_if_unusable(conn, driver)
            raise


async def _discard_if_unusable(conn: AsyncConnection, driver: Any) -> None:
    """Invalidate a connection that is closed or still inside a transaction that could not be
    ended, so that the pool opens a new one instead of handing it out again."""
    if not conn.invalidated and (driver.is_closed() or driver.is_in_transaction()):
        await conn.invalidate()
