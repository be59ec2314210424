"""Migration 0007 carries the one-row-per-gate decisions over into the decision log, and back."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from app.migrate import alembic_config, upgrade
from tests.conftest import fresh_database

_HELD = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
_RELEASED = datetime(2026, 2, 5, 9, 0, tzinfo=UTC)


@pytest.fixture
def database(database_kind: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with fresh_database(database_kind, tmp_path_factory) as url:
        yield url


async def _run(url: str, statement: str, **values: object) -> list[tuple[object, ...]]:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as conn:
            result = await conn.execute(text(statement), values)
            return [tuple(row) for row in result] if result.returns_rows else []
    finally:
        await engine.dispose()


def test_decisions_are_carried_over_into_the_log_and_back(database: str) -> None:
    upgrade(database, "0006")
    insert = (
        "INSERT INTO gate_decision (service_request_id, gate_id, task_id, patient_id, gate_code,"
        " gate_kind, mode, outcome, evaluated_at, held, released_at, released_by,"
        " detected_issue_id) VALUES (:sr, :gate, 't', 'p', :gate, 'abstinence', :mode, :outcome,"
        " :at, :held, :released_at, :released_by, :issue)"
    )
    rows = [
        dict(sr="held", mode="enforced", outcome="unknown", held=True, released_at=None,
             released_by=None, issue="i1"),
        dict(sr="freed", mode="enforced", outcome="not-met", held=True, released_at=_RELEASED,
             released_by="override", issue="i2"),
        dict(sr="fine", mode="advisory", outcome="met", held=False, released_at=None,
             released_by=None, issue=None),
    ]  # fmt: skip
    for row in rows:
        asyncio.run(_run(database, insert, gate="g", at=_HELD, **row))
    upgrade(database)
    query = (
        "SELECT service_request_id, seq, action, held, released_by, current FROM gate_decision"
        " ORDER BY service_request_id, seq"
    )
    assert asyncio.run(_run(database, query)) == [
        ("fine", 0, "evaluated", False, None, True),
        ("freed", 0, "held", True, None, False),
        ("freed", 1, "overridden", False, "override", True),
        ("held", 0, "held", True, None, True),
    ]
    command.downgrade(alembic_config(database), "0006")
    back = asyncio.run(
        _run(
            database,
            "SELECT service_request_id, held, released_by FROM gate_decision"
            " ORDER BY service_request_id",
        )
    )
    assert back == [("fine", False, None), ("freed", True, "override"), ("held", True, None)]
