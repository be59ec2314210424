"""Dates at the edges of what FHIR allows (year 1, year 9999, any time zone), on SQLite and
PostgreSQL: stored, indexed and found, and impossible ones refused with a 400 naming the
parameter. They reach past what a datetime holds, so the index clamps their ranges."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api.helpers import FHIR_JSON, issues, patient


def observation(**changes: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "Alcohol use"},
        **changes,
    }


def match_ids(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return sorted(
        e["resource"]["id"]
        for e in response.json().get("entry", [])
        if e["search"]["mode"] == "match"
    )


async def test_the_last_day_of_year_9999_is_stored_and_found(client: httpx.AsyncClient) -> None:
    created = await client.post("/Patient", json=patient(birthDate="9999-12-31"), headers=FHIR_JSON)
    assert created.status_code == 201, created.text
    pid = created.json()["id"]
    for query in ("9999", "9999-12", "9999-12-31", "ge9999-12-31", "gt9000", "sa9998"):
        found = await client.get("/Patient", params={"birthdate": query})
        assert match_ids(found) == [pid], query
    assert match_ids(await client.get("/Patient", params={"birthdate": "lt9999"})) == []


async def test_a_period_ending_in_9999_can_be_created_updated_and_patched(
    client: httpx.AsyncClient,
) -> None:
    period = {"start": "2026-01-01", "end": "9999-12-31"}
    created = await client.post("/Observation", json=observation(effectivePeriod=period))
    assert created.status_code == 201, created.text
    oid = created.json()["id"]
    updated = await client.put(
        f"/Observation/{oid}",
        json=observation(id=oid, effectiveDateTime="9999-12-31T23:59:59-01:00"),
        headers=FHIR_JSON,
    )
    assert updated.status_code == 200, updated.text
    found = await client.get("/Observation", params={"date": "ge9999-12-31T23:59:59Z"})
    assert match_ids(found) == [oid]
    exactly = await client.get("/Observation", params={"date": "9999-12-31T23:59:59-01:00"})
    assert match_ids(exactly) == [oid]
    earliest_moment = "0001-01-01T00:00:00+01:00"
    patched = await client.patch(
        f"/Observation/{oid}",
        json=[{"op": "replace", "path": "/effectiveDateTime", "value": earliest_moment}],
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert patched.status_code == 200, patched.text
    earliest = await client.get("/Observation", params={"date": earliest_moment})
    assert match_ids(earliest) == [oid]
    assert match_ids(await client.get("/Observation", params={"date": "le0001"})) == [oid]


@pytest.mark.parametrize(
    ("path", "param", "value"),
    [
        ("/Patient", "birthdate", "9999"),
        ("/Patient", "birthdate", "0001-01-01T00:00:00+01:00"),
        ("/Observation", "date", "ge9999-12-31T23:59:59Z"),
        ("/Observation", "date", "eb9999-12-31T23:59:59.999Z"),
        ("/Patient", "_lastUpdated", "9999"),
        ("/Patient", "_lastUpdated", "lt0001-01-01T00:00:00+14:00"),
        ("/Patient/_history", "_since", "9999"),
        ("/Patient/_history", "_since", "0001-01-01T00:00:00+01:00"),
    ],
)
async def test_searches_at_the_limits_answer(
    client: httpx.AsyncClient, path: str, param: str, value: str
) -> None:
    await client.post("/Patient", json=patient(), headers=FHIR_JSON)
    response = await client.get(path, params={param: value})
    assert response.status_code == 200, response.text
    assert response.json()["resourceType"] == "Bundle"


@pytest.mark.parametrize(
    ("path", "param", "value"),
    [
        ("/Patient", "birthdate", "2025-02-30"),
        ("/Patient", "birthdate", "0000"),
        ("/Patient", "birthdate", "2025-01-01T24:00:00Z"),
        ("/Observation", "date", "2025-01-01T10:00:00+25:00"),
        ("/Patient", "_lastUpdated", "ge2025-13"),
        ("/Patient/_history", "_since", "2025-02-30"),
        ("/Patient/_history", "_since", "ge2025-01-01"),
        ("/Patient", "birthdate", "١٩٨٠"),  # digits, but not ASCII ones
    ],
)
async def test_impossible_dates_are_400_naming_the_parameter(
    client: httpx.AsyncClient, path: str, param: str, value: str
) -> None:
    response = await client.get(path, params={param: value})
    assert response.status_code == 400, response.text
    assert issues(response.json()) == [("invalid", [param])]
