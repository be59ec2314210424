"""Control characters (below U+0020, other than tab, CR and LF) are not FHIR: wherever a
client sends them (a resource, a search parameter, an id, If-None-Exist) they are refused with a
400 naming where, the same on SQLite and PostgreSQL (whose text cannot hold U+0000), and the
refusal is audited. An AuditEvent that cannot be written is logged and counted, never silent."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.runtime import Runtime
from tests.api.helpers import FHIR_JSON, issues, patient


async def _failures(client: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    response = await client.get("/AuditEvent?_count=500&outcome=4")
    assert response.status_code == 200, response.text
    found = {}
    for entry in response.json().get("entry", []):
        event = entry["resource"]
        for entity in event["entity"]:
            if entity.get("type", {}).get("code") == "XrequestId":
                found[entity["what"]["identifier"]["value"]] = event
    return found


@pytest.mark.parametrize("character", ["\x00", "\x01", "\x1b", "\x1f", "\x0b"])
async def test_a_control_character_in_a_resource_is_refused_naming_the_element(
    client: httpx.AsyncClient, character: str
) -> None:
    resource = patient(name=[{"family": "Ex", "given": ["Alex"]}, {"family": f"a{character}b"}])
    response = await client.post("/Patient", json=resource, headers=FHIR_JSON)
    assert response.status_code == 400, response.text
    assert issues(response.json()) == [("value", ["Patient.name[1].family"])]
    code = f"U+{ord(character):04X}"
    assert code in response.json()["issue"][0]["diagnostics"]


async def test_tab_cr_and_lf_are_allowed(client: httpx.AsyncClient) -> None:
    text = {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">a</div>'}
    resource = patient(name=[{"family": "Ex", "text": "line\tone\r\nline two"}], text=text)
    response = await client.post("/Patient", json=resource, headers=FHIR_JSON)
    assert response.status_code == 201, response.text


async def test_control_characters_anywhere_in_a_resource(client: httpx.AsyncClient) -> None:
    """Every string (an extension's value, a nested code) and every element name."""
    resource = patient(
        extension=[{"url": "https://example.org/x", "valueString": "a\x00"}],
        maritalStatus={"coding": [{"system": "http://example.org", "code": "a\x02b"}]},
    )
    resource["bad\x00name"] = "x"
    response = await client.post("/Patient", json=resource, headers=FHIR_JSON)
    assert response.status_code == 400, response.text
    found = {expression for _, expressions in issues(response.json()) for expression in expressions}
    assert {
        "Patient.extension[0].valueString",
        "Patient.maritalStatus.coding[0].code",
        "Patient.bad\\u0000name",
    } <= found


async def test_in_an_update_a_patch_and_a_transaction(client: httpx.AsyncClient) -> None:
    created = await client.post("/Patient", json=patient(), headers=FHIR_JSON)
    assert created.status_code == 201, created.text
    pid = created.json()["id"]
    update = await client.put(
        f"/Patient/{pid}", json=patient(id=pid, gender="a\x00"), headers=FHIR_JSON
    )
    assert update.status_code == 400, update.text
    assert ("value", ["Patient.gender"]) in issues(update.json())
    operations = [{"op": "replace", "path": "/name/0/family", "value": "x\x00y"}]
    patched = await client.patch(
        f"/Patient/{pid}",
        json=operations,
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert patched.status_code == 400, patched.text
    assert ("value", ["Patient.name[0].family"]) in issues(patched.json())
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": patient(name=[{"family": "\x00"}]),
                "request": {"method": "POST", "url": "Patient"},
            }
        ],
    }
    transaction = await client.post("/", json=bundle, headers=FHIR_JSON)
    assert transaction.status_code == 400, transaction.text


@pytest.mark.parametrize(
    ("query", "where"),
    [
        ("name=a%00b", "name"),
        ("family:exact=%01", "family:exact"),
        ("identifier=x%7C%00", "identifier"),
        ("_sort=family%00", "_sort"),
        ("_format=json%00", "_format"),
        ("na%00me=x", "na\\u0000me"),
        ("general-practitioner.name=a%00", "general-practitioner.name"),
    ],
)
async def test_a_control_character_in_a_search_is_refused_naming_the_parameter(
    client: httpx.AsyncClient, query: str, where: str
) -> None:
    for lenient in (False, True):
        prefer = {"Prefer": "handling=lenient"} if lenient else {}
        response = await client.get(f"/Patient?{query}", headers=prefer)
        assert response.status_code == 400, response.text
        assert issues(response.json()) == [("invalid", [where])]
    posted = await client.post(
        "/Patient/_search",
        content=query,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert posted.status_code == 400, posted.text
    assert issues(posted.json()) == [("invalid", [where])]


async def test_in_if_none_exist_and_in_a_batch_entry(client: httpx.AsyncClient) -> None:
    conditional = await client.post(
        "/Patient", json=patient(), headers={**FHIR_JSON, "If-None-Exist": "family=a%00"}
    )
    assert conditional.status_code == 400, conditional.text
    assert issues(conditional.json()) == [("invalid", ["family"])]
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [{"request": {"method": "GET", "url": "Patient?name=a%00b"}}],
    }
    batch = await client.post("/", json=bundle, headers=FHIR_JSON)
    assert batch.status_code == 200, batch.text
    assert batch.json()["entry"][0]["response"]["status"].startswith("400")


@pytest.mark.parametrize(
    ("path", "where"),
    [
        ("/Patient/a%00b", "id"),
        ("/Patient/a%00b/_history", "id"),
        ("/Patient/a%00b/_history/1", "id"),
        ("/Patient/x/_history/1%00", "vid"),
        ("/Patient/a%00b/$pathway", "id"),
        ("/Patient/_history?_since=2020%00", "_since"),
    ],
)
async def test_a_control_character_in_the_url_is_refused(
    client: httpx.AsyncClient, path: str, where: str
) -> None:
    response = await client.get(path)
    assert response.status_code == 400, response.text
    assert issues(response.json()) == [("invalid", [where])]


async def test_writes_to_an_id_with_a_control_character_are_refused(
    client: httpx.AsyncClient,
) -> None:
    put = await client.put("/Patient/a%00b", json=patient(id="a"), headers=FHIR_JSON)
    assert put.status_code == 400, put.text
    deleted = await client.delete("/Patient/a%00b")
    assert deleted.status_code == 400, deleted.text
    assert issues(deleted.json()) == [("invalid", ["id"])]


async def test_the_refusals_are_audited_without_the_raw_character(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    sent = {
        "nul-search": await client.get(
            "/Patient?name=a%00b", headers={"X-Request-ID": "nul-search"}
        ),
        "nul-id": await client.get("/Patient/a%00b", headers={"X-Request-ID": "nul-id"}),
        "nul-body": await client.post(
            "/Patient",
            json=patient(name=[{"family": "\x00"}]),
            headers={**FHIR_JSON, "X-Request-ID": "nul-body"},
        ),
    }
    assert {name: r.status_code for name, r in sent.items()} == dict.fromkeys(sent, 400)
    failures = await _failures(client)
    assert set(sent) <= set(failures)
    references = [e["what"].get("reference") for e in failures["nul-id"]["entity"]]
    assert "Patient/a\\u0000b" in references
    assert runtime.audit_trail.unrecorded == 0


async def test_an_audit_event_that_cannot_be_written_is_logged_and_counted(
    client: httpx.AsyncClient,
    app: FastAPI,
    runtime: Runtime,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def broken(_documents: list[dict[str, Any]]) -> None:
        raise ConnectionError("the audit database is away")

    monkeypatch.setattr(runtime.audit_trail, "write", broken)
    caplog.set_level(logging.ERROR, logger="waymark.access")
    response = await client.get("/Patient/not-there", headers={"X-Request-ID": "lost-1"})
    assert response.status_code == 404  # the caller still gets the original answer
    assert runtime.audit_trail.unrecorded == 1
    records = [r for r in caplog.records if r.name == "waymark.access"]
    assert [r.levelno for r in records] == [logging.ERROR]
    assert "ConnectionError" in records[0].getMessage()
    assert getattr(records[0], "request_id", None) == "lost-1"
    assert getattr(records[0], "audit_unrecorded_total", None) == 1
