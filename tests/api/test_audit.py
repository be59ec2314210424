"""The audit trail: an AuditEvent for every interaction, successful or refused, searchable by
clients allowed to, and never changed through the API."""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from tests.api.helpers import FHIR_JSON, NHS, patient

ScopedClient = Callable[[str], Awaitable[httpx.AsyncClient]]
CLIENT_SYSTEM = "https://fhir.waymark.org.uk/Id/client"


async def _events(client: httpx.AsyncClient, query: str = "") -> list[dict[str, Any]]:
    response = await client.get(f"/AuditEvent?_count=500&_sort=date&{query}")
    assert response.status_code == 200, response.text
    return [e["resource"] for e in response.json().get("entry", [])]


def _subtype(event: dict[str, Any]) -> str:
    return str(event["subtype"][0]["code"])


def _entities(event: dict[str, Any]) -> list[str]:
    return [e["what"]["reference"] for e in event["entity"] if "reference" in e.get("what", {})]


def _request_id(event: dict[str, Any]) -> str:
    return next(
        e["what"]["identifier"]["value"]
        for e in event["entity"]
        if e.get("type", {}).get("code") == "XrequestId"
    )


async def test_each_interaction_is_recorded_with_client_patient_and_request_id(
    client: httpx.AsyncClient, test_client_id: str
) -> None:
    created = await client.post(
        "/Patient", json=patient(), headers={**FHIR_JSON, "X-Request-ID": "req-create-1"}
    )
    assert created.status_code == 201
    assert created.headers["x-request-id"] == "req-create-1"
    pid = created.json()["id"]
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "Date of last use"},
        "subject": {"reference": f"Patient/{pid}"},
    }
    obs = (await client.post("/Observation", json=observation, headers=FHIR_JSON)).json()
    await client.get(f"/Observation/{obs['id']}", headers={"X-Request-ID": "req-read-1"})
    await client.get(f"/Observation?subject=Patient/{pid}")
    await client.delete(f"/Observation/{obs['id']}")

    events = await _events(client, f"patient=Patient/{pid}")
    by_subtype = {_subtype(e): e for e in events}
    assert set(by_subtype) == {"create", "read", "search-type", "delete"}
    assert {e["action"] for e in events} == {"C", "R", "E", "D"}
    read = by_subtype["read"]
    assert read["outcome"] == "0"
    assert _request_id(read) == "req-read-1"
    assert f"Observation/{obs['id']}/_history/1" in _entities(read)
    assert f"Patient/{pid}" in _entities(read)
    requestor = next(a for a in read["agent"] if a["requestor"])
    assert requestor["who"]["identifier"] == {"system": CLIENT_SYSTEM, "value": test_client_id}
    creates = [e for e in events if _subtype(e) == "create"]
    assert "req-create-1" in {_request_id(e) for e in creates}
    search = by_subtype["search-type"]
    query = next(e["query"] for e in search["entity"] if "query" in e)
    assert base64.b64decode(query).decode() == f"Observation?subject=Patient%2F{pid}"


async def test_a_search_touching_several_patients_records_each(
    client: httpx.AsyncClient,
) -> None:
    ids = []
    for nhs in ("9434765919", "9912003888"):
        created = await client.post("/Patient", json=patient(nhs), headers=FHIR_JSON)
        ids.append(created.json()["id"])
    await client.get("/Patient", headers={"X-Request-ID": "two-patients"})
    searches = await _events(client, "subtype=search-type")
    events = [e for e in searches if _request_id(e) == "two-patients"]
    assert sorted(p for e in events for p in _entities(e)) == sorted(f"Patient/{i}" for i in ids)


async def test_refused_and_failed_interactions_are_recorded(
    client: httpx.AsyncClient,
    scoped_client: ScopedClient,
    anonymous: httpx.AsyncClient,
) -> None:
    missing = await client.get("/Patient/not-there", headers={"X-Request-ID": "r-404"})
    assert missing.status_code == 404
    refused = await anonymous.get("/Patient/p1", headers={"X-Request-ID": "r-401"})
    assert refused.status_code == 401
    reader = await scoped_client("system/Patient.r")
    forbidden = await reader.post(
        "/Patient", json=patient(), headers={**FHIR_JSON, "X-Request-ID": "r-403"}
    )
    assert forbidden.status_code == 403
    failures = {_request_id(e): e for e in await _events(client, "outcome=4")}
    assert {"r-404", "r-401", "r-403"} <= set(failures)
    assert _subtype(failures["r-404"]) == "read"
    assert "Patient/not-there" in _entities(failures["r-404"])
    assert failures["r-401"]["outcomeDesc"].startswith("401")
    assert _subtype(failures["r-403"]) == "create"
    who = next(a for a in failures["r-401"]["agent"] if a["requestor"])["who"]
    assert "identifier" not in who  # nobody was identified


async def test_a_refused_search_records_its_query_and_a_refused_batch_is_a_batch(
    client: httpx.AsyncClient, scoped_client: ScopedClient
) -> None:
    reader = await scoped_client("system/Patient.r")
    query = f"identifier={NHS}|9434765919"
    refused = await reader.get(f"/Patient?{query}", headers={"X-Request-ID": "s-403"})
    assert refused.status_code == 403
    oversized = {"resourceType": "Bundle", "type": "batch", "entry": [{}] * 5000}
    too_big = await reader.post("/", json=oversized, headers={**FHIR_JSON, "X-Request-ID": "b-413"})
    assert too_big.status_code == 413
    failures = {_request_id(e): e for e in await _events(client, "outcome=4")}
    search = failures["s-403"]
    assert _subtype(search) == "search-type"
    recorded = next(e["query"] for e in search["entity"] if "query" in e)
    expected = f"Patient?{urlencode({'identifier': f'{NHS}|9434765919'})}"
    assert base64.b64decode(recorded).decode() == expected  # as a successful search records it
    assert _subtype(failures["b-413"]) == "batch"


async def test_every_rest_interaction_has_its_subtype_and_action(
    client: httpx.AsyncClient,
) -> None:
    created = (await client.post("/Patient", json=patient(), headers=FHIR_JSON)).json()
    url = f"/Patient/{created['id']}"
    patch = [{"op": "add", "path": "/active", "value": True}]
    calls: dict[str, Callable[[], Awaitable[httpx.Response]]] = {
        "vread": lambda: client.get(f"{url}/_history/1"),
        "update": lambda: client.put(
            url, json={**patient(), "id": created["id"]}, headers=FHIR_JSON
        ),
        "patch": lambda: client.patch(
            url, json=patch, headers={"Content-Type": "application/json-patch+json"}
        ),
        "history-instance": lambda: client.get(f"{url}/_history"),
        "history-type": lambda: client.get("/Patient/_history"),
    }
    actions = {"vread": "R", "update": "U", "patch": "U", "history-instance": "R"}
    for subtype, call in calls.items():
        response = await call()
        assert response.status_code < 300, (subtype, response.text)
        events = await _events(client, f"subtype={subtype}")
        mine = [e for e in events if _request_id(e) == response.headers["x-request-id"]]
        assert mine, subtype  # history: one event per version returned
        assert {e["action"] for e in mine} == {actions.get(subtype, "E")}
        assert f"Patient/{created['id']}" in _entities(mine[0])


async def test_an_operation_is_one_event_naming_it(
    client: httpx.AsyncClient, scoped_client: ScopedClient
) -> None:
    pid = (await client.post("/Patient", json=patient(), headers=FHIR_JSON)).json()["id"]
    done = await client.get(f"/Patient/{pid}/$pathway", headers={"X-Request-ID": "op-1"})
    assert done.status_code == 200, done.text
    nobody = await scoped_client("system/Task.rs")
    refused = await nobody.get(f"/Patient/{pid}/$pathway", headers={"X-Request-ID": "op-2"})
    assert refused.status_code == 403
    events = {_request_id(e): e for e in await _events(client, "subtype=operation")}
    operation = {"system": "https://fhir.waymark.org.uk/OperationDefinition", "code": "pathway"}
    for request_id, outcome in (("op-1", "0"), ("op-2", "4")):
        event = events[request_id]
        assert event["subtype"][1] == operation
        assert event["action"] == "E"
        assert event["outcome"] == outcome
    assert f"Patient/{pid}" in _entities(events["op-1"])
    assert len([e for e in await _events(client) if _request_id(e) == "op-1"]) == 1


async def test_a_failed_transaction_leaves_only_its_failure_recorded(
    client: httpx.AsyncClient,
) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": patient(), "request": {"method": "POST", "url": "Patient"}},
            {"request": {"method": "GET", "url": "Patient/absent"}},
        ],
    }
    response = await client.post("/", json=bundle, headers={**FHIR_JSON, "X-Request-ID": "tx-fail"})
    assert response.status_code == 404
    events = [e for e in await _events(client) if _request_id(e) == "tx-fail"]
    assert [(_subtype(e), e["outcome"]) for e in events] == [("read", "4")]


async def test_batch_entries_are_recorded_one_by_one(client: httpx.AsyncClient) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"resource": patient(), "request": {"method": "POST", "url": "Patient"}},
            {"request": {"method": "GET", "url": "Patient/absent"}},
        ],
    }
    response = await client.post("/", json=bundle, headers={**FHIR_JSON, "X-Request-ID": "b-1"})
    assert response.status_code == 200
    events = [e for e in await _events(client) if _request_id(e) == "b-1"]
    assert sorted((_subtype(e), e["outcome"]) for e in events) == [("create", "0"), ("read", "4")]


async def test_audit_events_are_searchable_by_agent_date_entity_and_subtype(
    client: httpx.AsyncClient, test_client_id: str
) -> None:
    pid = (await client.post("/Patient", json=patient(), headers=FHIR_JSON)).json()["id"]
    await client.get(f"/Patient/{pid}")
    agent = f"agent:identifier={CLIENT_SYSTEM}|{test_client_id}"
    assert len(await _events(client, f"{agent}&subtype=read")) == 1
    assert len(await _events(client, f"agent:identifier={CLIENT_SYSTEM}|someone-else")) == 0
    assert len(await _events(client, f"entity=Patient/{pid}&subtype=create")) == 1
    assert len(await _events(client, "date=gt2000-01-01&action=C")) == 1
    assert len(await _events(client, "date=lt2000-01-01")) == 0


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
async def test_audit_events_cannot_be_written_through_the_api(
    client: httpx.AsyncClient, method: str
) -> None:
    await client.get("/Patient")
    event = (await _events(client))[0]
    url = "/AuditEvent" if method == "POST" else f"/AuditEvent/{event['id']}"
    body: Any = [] if method == "PATCH" else event
    headers = {"Content-Type": "application/json-patch+json"} if method == "PATCH" else FHIR_JSON
    response = await client.request(method, url, json=body, headers=headers)
    assert response.status_code == 405
    kept = await client.get(f"/AuditEvent/{event['id']}")
    assert kept.status_code == 200
    assert kept.json()["meta"]["versionId"] == "1"


async def test_reading_the_audit_trail_needs_its_scope(
    client: httpx.AsyncClient, scoped_client: ScopedClient
) -> None:
    await client.get("/Patient")
    other = await scoped_client("system/Patient.rs")
    assert (await other.get("/AuditEvent")).status_code == 403
    auditor = await scoped_client("system/AuditEvent.rs")
    assert (await auditor.get("/AuditEvent")).status_code == 200


async def test_nhs_numbers_never_reach_the_logs(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    await client.post("/Patient", json=patient("9434765919"), headers=FHIR_JSON)
    await client.get(f"/Patient?identifier={NHS}|9434765919")
    await client.get("/Patient/9434765919")  # an id that looks like one, 404
    lines = [r for r in caplog.records if r.name.startswith("waymark")]
    assert any(getattr(r, "route", None) == "/{resource_type}" for r in lines)
    for record in lines:
        text = record.getMessage() + " " + " ".join(str(v) for v in vars(record).values())
        assert "9434765919" not in text
        assert "943476" not in text
