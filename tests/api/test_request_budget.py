"""The budget of one request (issue 18, item 5), with small limits so that a few resources
reach them: what a request may ask for is refused before anything is read; the bytes its answer
would carry are counted as they are read, shared by every entry of a Bundle and by a search's
includes, and past the budget the whole request is refused. (tests/clients/
test_request_budget_live.py proves the memory bound with the default limits.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from app.config import Settings
from tests.api.bundle_builders import bundle, entry
from tests.api.helpers import FHIR_JSON, issues, patient
from tests.conftest import BASE_URL

MAX_RESOURCES = 1200
MAX_BYTES = 64 * 1024
OBSERVATIONS = 40  # of about 2 KB each: 80 KB together, past MAX_BYTES


@pytest.fixture
def settings(database_url: str, token_key_file: Path) -> Settings:
    return Settings(
        database_url=database_url,
        base_url=BASE_URL,
        token_key_file=token_key_file,
        max_request_resources=MAX_RESOURCES,
        max_response_bytes=MAX_BYTES,
    )


def observation(subject: str, n: int) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "Units per week"},
        "subject": {"reference": subject},
        "note": [{"text": f"{n:03d} " + "x" * 2000}],
    }


@pytest.fixture
async def seeded(client: httpx.AsyncClient) -> list[str]:
    """A Patient with OBSERVATIONS Observations; their ids."""
    made = await client.post("/Patient", json=patient(), headers=FHIR_JSON)
    subject = f"Patient/{made.json()['id']}"
    sent = bundle(*(entry("POST", "Observation", observation(subject, n)) for n in range(40)))
    response = await client.post("/", json=sent, headers=FHIR_JSON)
    assert response.status_code == 200, response.text[:300]
    return [e["resource"]["id"] for e in response.json()["entry"]]


def too_costly(response: httpx.Response, status: int, *figures: str) -> str:
    assert response.status_code == status, response.text[:300]
    assert [code for code, _ in issues(response.json())] == ["too-costly"]
    diagnostics: str = response.json()["issue"][0]["diagnostics"]
    for figure in figures:
        assert figure in diagnostics, diagnostics
    return diagnostics


async def test_a_bundle_asking_for_more_than_the_plan_is_413_before_reading(
    client: httpx.AsyncClient,
) -> None:
    searches = [entry("GET", "Observation?_count=100&_include=Observation:subject")] * 2
    for kind in ("batch", "transaction"):
        sent = bundle(entry("POST", "Patient", patient()), *searches, bundle_type=kind)
        response = await client.post("/", json=sent, headers=FHIR_JSON)
        # 2 x (100 matches + 1,000 includes) + 1 for the POST.
        too_costly(response, 413, "up to 2201 resources", f"at most {MAX_RESOURCES}")
        assert "WAYMARK_MAX_REQUEST_RESOURCES" in response.json()["issue"][0]["diagnostics"]
    assert (await client.get("/Patient")).json()["total"] == 0  # nothing ran


async def test_a_search_asking_for_more_than_the_plan_is_400(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "/Observation", params={"_count": "500", "_revinclude": "Provenance:target"}
    )
    too_costly(response, 400, "up to 1500 resources", f"at most {MAX_RESOURCES}")
    within = await client.get("/Observation", params={"_count": "500"})
    assert within.status_code == 200


@pytest.mark.usefixtures("seeded")
async def test_a_search_whose_includes_pass_the_byte_budget_is_refused(
    client: httpx.AsyncClient,
) -> None:
    matches = await client.get("/Observation", params={"_count": "20"})
    assert matches.status_code == 200
    assert len(matches.json()["entry"]) == 20
    # One Patient, and 40 Observations of 2 KB brought in by _revinclude: past 64 KB.
    params = {"_count": "1", "_revinclude": "Observation:subject"}
    response = await client.get("/Patient", params=params)
    too_costly(response, 400, f"more than {MAX_BYTES} bytes", "WAYMARK_MAX_RESPONSE_BYTES")


async def test_a_batch_shares_one_byte_budget_and_stops_whole(
    client: httpx.AsyncClient, seeded: list[str]
) -> None:
    """Each read is small; together they pass the budget, and the batch ends there: its
    earlier write is not kept, though a batch entry's other failures are its own."""
    reads = [entry("GET", f"Observation/{i}") for i in seeded]
    sent = bundle(entry("POST", "Patient", patient()), *reads, bundle_type="batch")
    response = await client.post("/", json=sent, headers=FHIR_JSON)
    too_costly(response, 400, f"more than {MAX_BYTES} bytes")
    assert (await client.get("/Patient")).json()["total"] == 1  # the seeded one only
    searches = [entry("GET", "Observation?_count=25")] * 2  # 50 resources, ~100 KB
    response = await client.post(
        "/", json=bundle(*searches, bundle_type="batch"), headers=FHIR_JSON
    )
    too_costly(response, 400, f"more than {MAX_BYTES} bytes")
    half = bundle(*reads[:20], bundle_type="batch")
    answered = await client.post("/", json=half, headers=FHIR_JSON)
    assert answered.status_code == 200
    assert [e["response"]["status"] for e in answered.json()["entry"]] == ["200 OK"] * 20
