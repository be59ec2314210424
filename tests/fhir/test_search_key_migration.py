"""Migration 0008 keys the search index rows it finds and folds their strings again."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from app.fhir.search.index import index_key, reference_key
from app.migrate import alembic_config, upgrade
from tests.conftest import fresh_database


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


def test_rows_are_keyed_and_folded_again_and_back(database: str, database_kind: str) -> None:
    upgrade(database, "0007")
    strings = [("łukasiewicz", "Łukasiewicz"), ("søren", "Søren"), ("example", "Example")]
    tokens = ["9434765919", "x" * 200]
    references = ["p1"]
    if database_kind == "sqlite":  # PostgreSQL could not index them before 0008
        strings.append(("é" * 3000, "É" * 3000))
        references.append("https://elsewhere.example/" + "r" * 3000)
    for value, exact in strings:
        asyncio.run(
            _run(
                database,
                "INSERT INTO search_string (resource_type, param, value, exact, resource_id)"
                " VALUES ('Patient', 'family', :value, :exact, 'p1')",
                value=value,
                exact=exact,
            )
        )
    for code in tokens:
        asyncio.run(
            _run(
                database,
                "INSERT INTO search_token (resource_type, param, system, code, resource_id)"
                " VALUES ('Patient', 'identifier', 's', :code, 'p1')",
                code=code,
            )
        )
    for target in references:
        asyncio.run(
            _run(
                database,
                "INSERT INTO search_reference"
                " (resource_type, param, target_type, target_id, resource_id)"
                " VALUES ('Task', 'focus', '', :target, 't1')",
                target=target,
            )
        )
    upgrade(database)
    folded = asyncio.run(_run(database, "SELECT exact, value, value_key FROM search_string"))
    expected_values = {"Łukasiewicz": "lukasiewicz", "Søren": "soren", "Example": "example"}
    if database_kind == "sqlite":
        expected_values["É" * 3000] = "e" * 3000
    assert {exact: value for exact, value, _ in folded} == expected_values
    assert all(key == index_key(str(value)) for _, value, key in folded)
    keyed = asyncio.run(_run(database, "SELECT code, code_key FROM search_token"))
    assert sorted(keyed) == sorted((code, index_key(code)) for code in tokens)
    targets = asyncio.run(_run(database, "SELECT target_id FROM search_reference"))
    assert sorted(t for (t,) in targets) == sorted(reference_key(t) for t in references)
    command.downgrade(alembic_config(database), "0007")
    back = asyncio.run(_run(database, "SELECT exact, value FROM search_string"))
    assert dict(back) == expected_values  # the values stay folded by the newer rule
