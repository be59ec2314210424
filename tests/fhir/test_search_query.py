"""The search query builder against both databases, where the HTTP API cannot reach easily."""

from __future__ import annotations

from app.fhir.search import query
from app.fhir.search.parse import parse_search
from app.runtime import Runtime


async def test_includes_of_many_resources_stay_within_bind_parameter_limits(
    runtime: Runtime,
) -> None:
    """40,000 matches name more keys than one statement may bind (asyncpg takes 32,767
    parameters, SQLite 32,766): the statements are split, never refused by the driver."""
    request = parse_search(
        "ServiceRequest",
        [("_revinclude", "Task:focus"), ("_include", "ServiceRequest:patient")],
        default_count=50,
        max_count=50,
    )
    ids = [f"referral-{n}" for n in range(40_000)]
    async with runtime.engine.connect() as conn:
        included = await query._included(conn, request, ids)
    assert included.resources == []
    assert included.truncated is False
