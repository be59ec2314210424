"""FHIR search over the index, on SQLite and PostgreSQL: each parameter type and modifier,
chains, _has, _include/_revinclude, _sort, paging under writes, strict and lenient handling."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from app.fhir.search import query
from tests.api.helpers import FHIR_JSON, NHS, issues, patient

SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"


async def put(client: httpx.AsyncClient, resource: dict[str, Any]) -> dict[str, Any]:
    url = f"/{resource['resourceType']}/{resource['id']}"
    response = await client.put(url, json=resource, headers=FHIR_JSON)
    assert response.status_code in (200, 201), response.text
    result: dict[str, Any] = response.json()
    return result


async def ids(client: httpx.AsyncClient, path: str, /, **params: Any) -> list[str]:
    response = await client.get(path, params=params)
    assert response.status_code == 200, response.text
    return sorted(
        e["resource"]["id"]
        for e in response.json().get("entry", [])
        if e["search"]["mode"] == "match"
    )


@pytest.fixture
async def world(client: httpx.AsyncClient) -> None:
    """Two patients, a GP practice, a psychology service, referrals, a task, observations."""
    await put(
        client,
        {
            "resourceType": "Organization",
            "id": "gp",
            "name": "Harbour Surgery",
            "identifier": [
                {"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "S10001"}
            ],
        },
    )
    await put(
        client,
        {
            "resourceType": "HealthcareService",
            "id": "psy",
            "active": True,
            "name": "Island Psychology",
            "providedBy": {"reference": "Organization/gp"},
            "type": [
                {
                    "coding": [
                        {
                            "system": "https://waymark.nhs.uk/fhir/CodeSystem/service-kind",
                            "code": "psychology",
                        }
                    ]
                }
            ],
        },
    )
    await put(
        client,
        patient(
            id="ann",
            name=[{"family": "Ólafsdóttir", "given": ["Ann"]}],
            birthDate="1980-05-17",
            gender="female",
            generalPractitioner=[{"reference": "Organization/gp"}],
        ),
    )
    await put(
        client,
        patient(
            "9912003888",
            id="bob",
            name=[{"family": "Olsen", "given": ["Bob"]}],
            birthDate="1992-11-02",
            gender="male",
        ),
    )
    for rid, subject, status, authored in (
        ("r1", "ann", "active", "2026-01-10"),
        ("r2", "ann", "completed", "2025-06-01"),
        ("r3", "bob", "active", "2026-02-20"),
    ):
        await put(
            client,
            {
                "resourceType": "ServiceRequest",
                "id": rid,
                "status": status,
                "intent": "order",
                "subject": {"reference": f"Patient/{subject}"},
                "category": [
                    {
                        "coding": [
                            {"system": SNOMED, "code": "3457005", "display": "Patient referral"}
                        ]
                    }
                ],
                "code": {
                    "coding": [{"system": SNOMED, "code": "309625004"}],
                    "text": "Referral to psychology service",
                },
                "performer": [{"reference": "HealthcareService/psy"}],
                "authoredOn": authored,
            },
        )
    await put(
        client,
        {
            "resourceType": "Task",
            "id": "t1",
            "status": "requested",
            "intent": "order",
            "focus": {"reference": "ServiceRequest/r1"},
            "for": {"reference": "Patient/ann"},
            "owner": {"reference": "HealthcareService/psy"},
            "businessStatus": {
                "coding": [
                    {
                        "system": "https://waymark.nhs.uk/fhir/CodeSystem/referral-state",
                        "code": "awaiting-triage",
                    }
                ]
            },
            "lastModified": "2026-01-10T09:30:00Z",
        },
    )
    for oid, subject, value, when in (
        ("o1", "ann", 3, "2026-01-05T10:00:00Z"),
        ("o2", "bob", 7.5, "2026-01-06"),
    ):
        await put(
            client,
            {
                "resourceType": "Observation",
                "id": oid,
                "status": "final",
                "code": {"coding": [{"system": LOINC, "code": "75626-2"}]},
                "subject": {"reference": f"Patient/{subject}"},
                "effectiveDateTime": when,
                "valueQuantity": {
                    "value": value,
                    "system": "http://unitsofmeasure.org",
                    "code": "{score}",
                },
            },
        )


pytestmark = pytest.mark.usefixtures("world")


async def test_token_forms(client: httpx.AsyncClient) -> None:
    assert await ids(client, "/Patient", identifier=f"{NHS}|9434765919") == ["ann"]
    assert await ids(client, "/Patient", identifier="9912003888") == ["bob"]
    assert await ids(client, "/Patient", identifier=f"{NHS}|") == ["ann", "bob"]
    assert await ids(client, "/Patient", identifier="|9912003888") == []  # it has a system
    assert await ids(client, "/ServiceRequest", status="active") == ["r1", "r3"]
    assert await ids(client, "/ServiceRequest", **{"status:not": "active"}) == ["r2"]
    assert await ids(client, "/ServiceRequest", **{"code:text": "psychology"}) == ["r1", "r2", "r3"]
    assert await ids(
        client, "/ServiceRequest", category=f"{SNOMED}|3457005", status="completed"
    ) == ["r2"]
    assert await ids(client, "/HealthcareService", active="true") == ["psy"]


async def test_id_modifiers(client: httpx.AsyncClient) -> None:
    assert await ids(client, "/ServiceRequest", **{"_id:not": "r1"}) == ["r2", "r3"]
    assert await ids(client, "/ServiceRequest", **{"_id:not": "r1,r3"}) == ["r2"]
    assert await ids(client, "/ServiceRequest", **{"_id:not": "r1", "status": "active"}) == ["r3"]
    assert await ids(client, "/Task", **{"focus:ServiceRequest._id:not": "r1"}) == []
    assert await ids(client, "/Task", **{"focus:ServiceRequest._id:not": "r2"}) == ["t1"]
    assert await ids(client, "/ServiceRequest", **{"_has:Task:focus:_id:not": "t1"}) == []
    assert await ids(client, "/ServiceRequest", **{"_id:missing": "false"}) == ["r1", "r2", "r3"]
    assert await ids(client, "/ServiceRequest", **{"_lastUpdated:missing": "true"}) == []
    for name in ("_id:text", "_id:exact", "_id:below", "_lastUpdated:not", "_lastUpdated:exact"):
        refused = await client.get("/ServiceRequest", params={name: "r1"})
        assert refused.status_code == 400, name
        assert issues(refused.json()) == [("invalid", [name])]


async def test_or_and_and(client: httpx.AsyncClient) -> None:
    assert await ids(client, "/ServiceRequest", status="completed,active") == ["r1", "r2", "r3"]
    response = await client.get("/ServiceRequest?status=active&patient=Patient/ann")
    assert [e["resource"]["id"] for e in response.json()["entry"]] == ["r1"]


async def test_string_modifiers(client: httpx.AsyncClient) -> None:
    assert await ids(client, "/Patient", family="olafs") == ["ann"]  # accents and case folded
    assert await ids(client, "/Patient", family="ol") == ["ann", "bob"]
    assert await ids(client, "/Patient", **{"family:exact": "Olsen"}) == ["bob"]
    assert await ids(client, "/Patient", **{"family:exact": "olsen"}) == []
    assert await ids(client, "/Patient", **{"family:contains": "sen"}) == ["bob"]
    assert await ids(client, "/Patient", given="ann") == ["ann"]
    assert await ids(client, "/Patient", name="bob") == ["bob"]


async def test_date_prefixes_and_precision(client: httpx.AsyncClient) -> None:
    assert await ids(client, "/Patient", birthdate="1980") == ["ann"]
    assert await ids(client, "/Patient", birthdate="1980-05") == ["ann"]
    assert await ids(client, "/Patient", birthdate="1980-05-17") == ["ann"]
    assert await ids(client, "/Patient", birthdate="1980-05-18") == []
    assert await ids(client, "/Patient", birthdate="lt1990") == ["ann"]
    assert await ids(client, "/Patient", birthdate="ge1992-11-02") == ["bob"]
    assert await ids(client, "/Patient", birthdate="ne1980") == ["bob"]
    assert await ids(client, "/ServiceRequest", authored="sa2025-12-31") == ["r1", "r3"]
    assert await ids(client, "/ServiceRequest", authored="eb2026") == ["r2"]
    assert await ids(client, "/Observation", date="2026-01-05") == ["o1"]
    assert await ids(client, "/Task", modified="gt2026-01-10T09:00:00Z") == ["t1"]
    assert await ids(client, "/Task", modified="gt2026-01-10T10:00:00+00:30") == []
    assert await ids(client, "/Task", modified="gt2026-01-10T09:59:59+00:30") == ["t1"]


async def test_missing(client: httpx.AsyncClient) -> None:
    assert await ids(client, "/Patient", **{"general-practitioner:missing": "true"}) == ["bob"]
    assert await ids(client, "/Patient", **{"general-practitioner:missing": "false"}) == ["ann"]


async def test_reference_forms(client: httpx.AsyncClient) -> None:
    assert await ids(client, "/ServiceRequest", patient="ann") == ["r1", "r2"]
    assert await ids(client, "/ServiceRequest", subject="Patient/bob") == ["r3"]
    assert await ids(client, "/ServiceRequest", patient="http://testserver/Patient/bob") == ["r3"]
    assert await ids(client, "/ServiceRequest", **{"subject:Patient": "bob"}) == ["r3"]
    assert await ids(client, "/Task", owner="HealthcareService/psy", status="requested") == ["t1"]
    assert await ids(client, "/HealthcareService", organization="gp") == ["psy"]


async def test_quantity(client: httpx.AsyncClient) -> None:
    assert await ids(client, "/Observation", **{"value-quantity": "3"}) == ["o1"]
    assert await ids(client, "/Observation", **{"value-quantity": "7.5"}) == ["o2"]
    assert await ids(client, "/Observation", **{"value-quantity": "gt5"}) == ["o2"]
    assert await ids(
        client, "/Observation", **{"value-quantity": "le7.5|http://unitsofmeasure.org|{score}"}
    ) == ["o1", "o2"]


async def test_chained_search(client: httpx.AsyncClient) -> None:
    found = await ids(client, "/ServiceRequest", **{"patient.identifier": f"{NHS}|9912003888"})
    assert found == ["r3"]
    assert await ids(client, "/ServiceRequest", **{"subject:Patient.family": "olafs"}) == [
        "r1",
        "r2",
    ]
    assert await ids(client, "/Task", **{"focus:ServiceRequest.status": "active"}) == ["t1"]
    assert await ids(client, "/Patient", **{"general-practitioner.name": "harbour"}) == ["ann"]


async def test_reverse_chaining(client: httpx.AsyncClient) -> None:
    assert await ids(client, "/ServiceRequest", **{"_has:Task:focus:status": "requested"}) == ["r1"]
    assert await ids(client, "/Patient", **{"_has:Observation:patient:value-quantity": "gt5"}) == [
        "bob"
    ]


async def test_include_and_revinclude(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "/ServiceRequest",
        params=[
            ("_id", "r1"),
            ("_include", "ServiceRequest:patient"),
            ("_revinclude", "Task:focus"),
        ],
    )
    entries = response.json()["entry"]
    modes = sorted(
        (e["search"]["mode"], e["resource"]["resourceType"], e["resource"]["id"]) for e in entries
    )
    assert modes == [
        ("include", "Patient", "ann"),
        ("include", "Task", "t1"),
        ("match", "ServiceRequest", "r1"),
    ]
    iterate = await client.get(
        "/Task",
        params=[
            ("_id", "t1"),
            ("_include", "Task:focus"),
            ("_include:iterate", "ServiceRequest:performer"),
        ],
    )
    included = sorted(
        e["resource"]["id"] for e in iterate.json()["entry"] if e["search"]["mode"] == "include"
    )
    assert included == ["psy", "r1"]


async def test_sort(client: httpx.AsyncClient) -> None:
    async def order(sort: str) -> list[str]:
        body = (await client.get("/ServiceRequest", params={"_sort": sort})).json()
        return [e["resource"]["id"] for e in body["entry"]]

    assert await order("authored") == ["r2", "r1", "r3"]
    assert await order("-authored") == ["r3", "r1", "r2"]
    assert await order("status,-authored") == ["r3", "r1", "r2"]
    assert await order("-_id") == ["r3", "r2", "r1"]


async def test_paging_forward_and_back_is_stable_under_writes(client: httpx.AsyncClient) -> None:
    for n in range(7):
        await put(client, patient(id=f"p{n}", birthDate=f"200{n}-01-01"))
    first = (await client.get("/Patient", params={"_sort": "-birthdate", "_count": 3})).json()
    assert "previous" not in {link["relation"] for link in first["link"]}
    pages = [[e["resource"]["id"] for e in first["entry"]]]
    links = {link["relation"]: link["url"] for link in first["link"]}
    await put(client, patient(id="p9", birthDate="2009-01-01"))  # sorts before the cursor
    await put(client, patient(id="p0b", birthDate="1950-01-01"))  # sorts after it
    while "next" in links:
        page = (await client.get(links["next"])).json()
        pages.append([e["resource"]["id"] for e in page.get("entry", [])])
        links = {link["relation"]: link["url"] for link in page["link"]}
        again = (await client.get(links["self"])).json()  # the self link is this page
        assert [e["resource"]["id"] for e in again.get("entry", [])] == pages[-1]
    seen = [i for page in pages for i in page]
    assert seen[:3] == ["p6", "p5", "p4"]
    assert len(seen) == len(set(seen))
    assert "p9" not in seen
    assert seen[-1] == "p0b"
    back = (await client.get(links["previous"])).json()
    assert [e["resource"]["id"] for e in back["entry"]] == pages[-2]


async def test_count_total_summary_and_elements(client: httpx.AsyncClient) -> None:
    counted = (await client.get("/ServiceRequest", params={"_summary": "count"})).json()
    assert counted["total"] == 3
    assert "entry" not in counted
    page = (await client.get("/ServiceRequest", params={"_count": 1, "_total": "accurate"})).json()
    assert page["total"] == 3
    assert len(page["entry"]) == 1
    subset = (await client.get("/Patient", params={"_id": "ann", "_elements": "birthDate"})).json()
    resource = subset["entry"][0]["resource"]
    assert set(resource) == {"resourceType", "id", "meta", "birthDate"}
    assert resource["meta"]["tag"][-1]["code"] == "SUBSETTED"


async def test_elements_keeps_the_mandatory_elements(client: httpx.AsyncClient) -> None:
    """FHIR returns the mandatory elements whatever _elements names (the client fixture
    checks that every resource received parses with fhirclient's strict R4 models)."""
    found = await client.get("/Observation", params={"_id": "o1", "_elements": "valueQuantity"})
    observation = found.json()["entry"][0]["resource"]
    assert set(observation) == {"resourceType", "id", "meta", "status", "code", "valueQuantity"}
    referrals = await client.get("/ServiceRequest", params={"_elements": "authoredOn"})
    for entry in referrals.json()["entry"]:
        assert set(entry["resource"]) == {
            "resourceType",
            "id",
            "meta",
            "status",
            "intent",
            "subject",
            "authoredOn",
        }
    tasks = await client.get("/Task", params={"_elements": "id"})
    assert set(tasks.json()["entry"][0]["resource"]) == {
        "resourceType",
        "id",
        "meta",
        "status",
        "intent",
    }


async def test_strict_and_lenient_handling(client: httpx.AsyncClient) -> None:
    strict = await client.get("/Patient", params={"family": "olsen", "shoe-size": "9"})
    assert strict.status_code == 400
    assert issues(strict.json()) == [("invalid", ["shoe-size"])]
    lenient = await client.get(
        "/Patient",
        params={"family": "olsen", "shoe-size": "9"},
        headers={"Prefer": "handling=lenient"},
    )
    assert lenient.status_code == 200
    body = lenient.json()
    assert [e["resource"]["id"] for e in body["entry"] if e["search"]["mode"] == "match"] == ["bob"]
    self_link = next(link["url"] for link in body["link"] if link["relation"] == "self")
    assert "shoe-size" not in self_link
    assert "family=olsen" in self_link
    [outcome] = [e["resource"] for e in body["entry"] if e["search"]["mode"] == "outcome"]
    assert outcome["issue"][0]["severity"] == "warning"
    assert "shoe-size" in outcome["issue"][0]["diagnostics"]
    bad_modifier = await client.get("/Patient", params={"birthdate:exact": "1980"})
    assert bad_modifier.status_code == 400


async def test_post_search_behaves_as_get(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/ServiceRequest/_search",
        data={"status": "active", "patient": "ann"},
    )
    assert response.status_code == 200
    assert [e["resource"]["id"] for e in response.json()["entry"]] == ["r1"]
    wrong = await client.post("/ServiceRequest/_search", json={"status": "active"})
    assert wrong.status_code == 415


async def test_post_search_bodies_past_the_limit_are_413(client: httpx.AsyncClient) -> None:
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    big = b"status=active&name=" + b"x" * (10 * 1024 * 1024)
    response = await client.post("/Patient/_search", content=big, headers=form)
    assert response.status_code == 413
    assert issues(response.json())[0][0] == "too-costly"

    async def streamed() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
        for _ in range(100):
            yield b"x" * 1024

    chunked = await client.post("/Patient/_search", content=streamed(), headers=form)
    assert chunked.status_code == 413


async def test_deleted_resources_leave_the_index(client: httpx.AsyncClient) -> None:
    await client.delete("/ServiceRequest/r3")
    assert await ids(client, "/ServiceRequest", status="active") == ["r1"]
    assert await ids(client, "/ServiceRequest", **{"patient.identifier": "9912003888"}) == []


async def test_includes_past_the_limit_are_cut_and_the_page_says_so(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    params = [
        ("_include", "ServiceRequest:patient"),
        ("_include", "ServiceRequest:performer"),
        ("_revinclude", "Task:focus"),
    ]

    async def included() -> tuple[list[tuple[str, str]], list[dict[str, Any]]]:
        response = await client.get("/ServiceRequest", params=params)
        assert response.status_code == 200, response.text
        entries = response.json()["entry"]
        brought = [
            (e["resource"]["resourceType"], e["resource"]["id"])
            for e in entries
            if e["search"]["mode"] == "include"
        ]
        outcomes = [e["resource"] for e in entries if e["search"]["mode"] == "outcome"]
        return brought, outcomes

    everything = [("HealthcareService", "psy"), ("Patient", "ann"), ("Patient", "bob")]
    assert await included() == ([*everything, ("Task", "t1")], [])

    # One key per statement: chunked lists must find what one list found.
    monkeypatch.setattr(query, "KEYS_PER_STATEMENT", 1)
    assert (await included())[0] == [*everything, ("Task", "t1")]

    monkeypatch.setattr(query, "MAX_INCLUDED", 3)
    brought, [outcome] = await included()
    assert brought == everything
    [issue] = outcome["issue"]
    assert (issue["severity"], issue["code"]) == ("warning", "too-costly")
    assert issue["expression"] == ["_include", "_revinclude"]
    assert "first 3" in issue["diagnostics"]

    monkeypatch.setattr(query, "MAX_INCLUDED", 2)
    assert (await included())[0] == everything[:2]


async def test_date_prefixes_spelled_out(client: httpx.AsyncClient) -> None:
    assert await ids(client, "/Patient", birthdate="eq1980-05-17") == ["ann"]
    assert await ids(client, "/Patient", birthdate="eq1980-05-18") == []
    assert await ids(client, "/Patient", birthdate="le1980-05-17") == ["ann"]
    assert await ids(client, "/Patient", birthdate="le1980-05-16") == []
    assert await ids(client, "/Patient", birthdate="ne1980-05-17") == ["bob"]
    assert await ids(client, "/Patient", birthdate="sa1980") == ["bob"]
    assert await ids(client, "/Patient", birthdate="sa1992-11-02") == []
    assert await ids(client, "/Patient", birthdate="eb1992-11-02") == ["ann"]
    assert await ids(client, "/Patient", birthdate="eb1992-11-03") == ["ann", "bob"]
    assert await ids(client, "/ServiceRequest", authored="eq2026") == ["r1", "r3"]
    assert await ids(client, "/ServiceRequest", authored="ne2026-01") == ["r2", "r3"]
    # A dateTime searched at the second, and a day against a dateTime.
    assert await ids(client, "/Observation", date="eq2026-01-05T10:00:00Z") == ["o1"]
    assert await ids(client, "/Observation", date="le2026-01-05T09:59:59Z") == []
    assert await ids(client, "/Observation", date="le2026-01-05T10:00:00Z") == ["o1"]
    assert await ids(client, "/Observation", date="ne2026-01-05") == ["o2"]
    assert await ids(client, "/Observation", date="sa2026-01-05T10:00:00Z") == ["o2"]
    assert await ids(client, "/Observation", date="eb2026-01-06") == ["o1"]
    assert await ids(client, "/Observation", date="eq2026-01-05T11:00:00+01:00") == ["o1"]


async def test_missing_on_token_date_and_string(client: httpx.AsyncClient) -> None:
    await put(
        client,
        {
            "resourceType": "ServiceRequest",
            "id": "r4",
            "status": "draft",
            "intent": "proposal",
            "subject": {"reference": "Patient/bob"},
        },
    )
    await put(client, patient("9990000018", id="cy", name=[{"given": ["Cy"]}]))
    assert await ids(client, "/ServiceRequest", **{"category:missing": "true"}) == ["r4"]
    assert await ids(client, "/ServiceRequest", **{"category:missing": "false"}) == [
        "r1",
        "r2",
        "r3",
    ]
    assert await ids(client, "/ServiceRequest", **{"authored:missing": "true"}) == ["r4"]
    assert await ids(client, "/ServiceRequest", **{"authored:missing": "false"}) == [
        "r1",
        "r2",
        "r3",
    ]
    assert await ids(client, "/Patient", **{"family:missing": "true"}) == ["cy"]
    assert await ids(client, "/Patient", **{"family:missing": "false"}) == ["ann", "bob"]
    # :missing ANDs with other criteria like any parameter.
    assert await ids(
        client, "/ServiceRequest", **{"authored:missing": "true", "patient": "bob"}
    ) == ["r4"]
    refused = await client.get("/Patient", params={"family:missing": "maybe"})
    assert refused.status_code == 400


async def test_uri_below_and_above(client: httpx.AsyncClient) -> None:
    base = "https://fhir.waymark.org.uk/CodeSystem"
    for cid, url in (
        ("kind", f"{base}/service-kind"),
        ("state", f"{base}/referral-state"),
        ("sct", "http://snomed.info/sct"),
    ):
        await put(
            client,
            {
                "resourceType": "CodeSystem",
                "id": cid,
                "url": url,
                "status": "active",
                "content": "complete",
            },
        )
    assert await ids(client, "/CodeSystem", url=f"{base}/service-kind") == ["kind"]
    assert await ids(client, "/CodeSystem", url=base) == []  # plain: the whole URI
    assert await ids(client, "/CodeSystem", **{"url:below": base}) == ["kind", "state"]
    assert await ids(client, "/CodeSystem", **{"url:below": f"{base}/service-kind"}) == ["kind"]
    assert await ids(client, "/CodeSystem", **{"url:below": "http://snomed.info/"}) == ["sct"]
    # LIKE's wildcards in a value are the characters themselves.
    assert await ids(client, "/CodeSystem", **{"url:below": f"{base}/service_kind"}) == []
    assert await ids(client, "/CodeSystem", **{"url:below": "%"}) == []
    above = f"{base}/service-kind/v2"
    assert await ids(client, "/CodeSystem", **{"url:above": above}) == ["kind"]
    assert await ids(client, "/CodeSystem", **{"url:above": base}) == []
    assert await ids(client, "/CodeSystem", **{"url:missing": "false"}) == ["kind", "sct", "state"]
    assert await ids(client, "/CodeSystem", **{"system:below": "http://snomed"}) == ["sct"]


async def test_revinclude_iterate_follows_one_more_hop(client: httpx.AsyncClient) -> None:
    async def included(*extra: tuple[str, str]) -> list[tuple[str, str]]:
        params = [("_id", "ann"), ("_revinclude", "ServiceRequest:patient"), *extra]
        body = (await client.get("/Patient", params=params)).json()
        return sorted(
            (e["resource"]["resourceType"], e["resource"]["id"])
            for e in body["entry"]
            if e["search"]["mode"] == "include"
        )

    referrals = [("ServiceRequest", "r1"), ("ServiceRequest", "r2")]
    assert await included() == referrals
    # Without :iterate, Task:focus is tried on the Patient only (no Task has it as focus).
    assert await included(("_revinclude", "Task:focus")) == referrals
    assert await included(("_revinclude:iterate", "Task:focus")) == [*referrals, ("Task", "t1")]
