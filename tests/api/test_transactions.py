"""Transaction and batch Bundles at the base URL, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI

from app.fhir.errors import BusinessRuleViolation
from app.fhir.hooks import WriteEvent
from app.main import create_app
from app.runtime import Runtime
from tests.api.bundle_builders import (
    BAD_NHS,
    bundle,
    entry,
    nhs_number,
    observation,
    referral,
    referral_bundle,
    urn,
)
from tests.api.helpers import FHIR_JSON, NHS, issues, patient
from tests.fhir_parse import assert_parses_as_r4


async def send(client: httpx.AsyncClient, body: dict[str, Any], **headers: str) -> httpx.Response:
    return await client.post("/", json=body, headers={**FHIR_JSON, **headers})


async def stored(client: httpx.AsyncClient, resource_type: str) -> list[dict[str, Any]]:
    response = await client.get(f"/{resource_type}")
    assert response.status_code == 200, response.text
    return [e["resource"] for e in response.json().get("entry", [])]


async def create(client: httpx.AsyncClient, resource: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(f"/{resource['resourceType']}", json=resource, headers=FHIR_JSON)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def statuses(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [e["response"]["status"] for e in response.json()["entry"]]


def first_expression(response: httpx.Response) -> str:
    expression: str = response.json()["issue"][0]["expression"][0]
    return expression


# -- transactions: all or nothing -------------------------------------------------------------


async def test_transaction_with_an_invalid_entry_stores_nothing(
    client: httpx.AsyncClient,
) -> None:
    patient_url = urn()
    response = await send(
        client,
        bundle(
            entry("POST", "Patient", patient(), full_url=patient_url),
            entry("POST", "ServiceRequest", referral(patient_url)),
            entry("POST", "Patient", patient(BAD_NHS)),
            entry("POST", "Observation", observation(patient_url, patient_url, "Alcohol use")),
        ),
    )
    assert response.status_code == 400
    assert issues(response.json()) == [("value", ["Bundle.entry[2].resource.identifier[0].value"])]
    assert response.json()["issue"][0]["diagnostics"].startswith("Bundle.entry[2] (POST Patient)")
    # The two entries before it were written, then rolled back with it.
    assert await stored(client, "Patient") == []
    assert await stored(client, "ServiceRequest") == []
    assert await stored(client, "Observation") == []


async def test_urn_uuid_references_are_rewritten_wherever_they_are(
    client: httpx.AsyncClient,
) -> None:
    patient_url, referral_url, service_url = urn(), urn(), urn()
    service = {"resourceType": "Organization", "id": "cdat-north", "name": "CDAT North"}
    flag = {
        "resourceType": "Flag",
        "id": "flag-1",
        "status": "active",
        "code": {"text": "Shared care"},
        "subject": {"reference": patient_url},
    }
    response = await send(
        client,
        bundle(
            # Observations first: references resolve whatever the entries' order.
            entry("POST", "Observation", observation(patient_url, referral_url, "Alcohol use")),
            entry("POST", "Observation", observation(patient_url, referral_url, "Drug use")),
            entry(
                "POST",
                "ServiceRequest",
                referral(patient_url, performer=service_url),
                full_url=referral_url,
            ),
            entry("PUT", "Flag/flag-1", flag),
            entry("PUT", "Organization/cdat-north", service, full_url=service_url),
            entry("POST", "Patient", patient(), full_url=patient_url),
        ),
    )
    assert statuses(response) == ["201 Created"] * 6
    answered = response.json()["entry"]
    patient_id = answered[5]["resource"]["id"]
    referral_id = answered[2]["resource"]["id"]
    assert answered[5]["response"]["location"] == (
        f"http://testserver/Patient/{patient_id}/_history/1"
    )
    assert answered[5]["fullUrl"] == f"http://testserver/Patient/{patient_id}"
    (sent_referral,) = await stored(client, "ServiceRequest")
    assert sent_referral["id"] == referral_id
    assert sent_referral["subject"] == {"reference": f"Patient/{patient_id}"}
    assert sent_referral["performer"] == [{"reference": "Organization/cdat-north"}]
    observations = await stored(client, "Observation")
    assert len(observations) == 2
    for stored_observation in observations:
        assert stored_observation["subject"] == {"reference": f"Patient/{patient_id}"}
        assert stored_observation["basedOn"] == [{"reference": f"ServiceRequest/{referral_id}"}]
    (stored_flag,) = await stored(client, "Flag")
    assert stored_flag["subject"] == {"reference": f"Patient/{patient_id}"}
    assert "urn:uuid" not in response.text


async def test_a_reference_to_no_entry_fails_the_transaction(client: httpx.AsyncClient) -> None:
    response = await send(
        client,
        bundle(
            entry("POST", "Patient", patient()),
            entry("POST", "ServiceRequest", referral(urn())),
        ),
    )
    assert response.status_code == 400
    assert first_expression(response) == "Bundle.entry[1].resource.subject.reference"
    assert await stored(client, "Patient") == []


async def test_deletes_run_before_creates_and_answers_keep_the_request_order(
    client: httpx.AsyncClient,
) -> None:
    old = await create(client, patient())
    response = await send(
        client,
        bundle(
            entry("POST", "Patient", patient(), ifNoneExist=f"identifier={NHS}|9434765919"),
            entry("DELETE", f"Patient/{old['id']}"),
        ),
    )
    # Had the POST run first, its condition would have matched the Patient being deleted.
    assert statuses(response) == ["201 Created", "204 No Content"]
    new_id = response.json()["entry"][0]["resource"]["id"]
    assert new_id != old["id"]
    assert response.json()["entry"][1]["response"]["etag"] == 'W/"2"'
    assert (await client.get(f"/Patient/{old['id']}")).status_code == 410
    assert [p["id"] for p in await stored(client, "Patient")] == [new_id]


async def test_one_resource_changed_twice_fails_the_transaction(
    client: httpx.AsyncClient,
) -> None:
    existing = await create(client, patient())
    response = await send(
        client,
        bundle(
            entry("PUT", f"Patient/{existing['id']}", existing),
            entry("DELETE", f"Patient/{existing['id']}"),
        ),
    )
    assert response.status_code == 400
    assert first_expression(response) == "Bundle.entry[1]"
    assert (await client.get(f"/Patient/{existing['id']}")).status_code == 200


# -- conditional references, creates and updates ----------------------------------------------


async def test_conditional_reference_is_resolved_by_search(client: httpx.AsyncClient) -> None:
    known = await create(client, patient())
    await create(client, patient(nhs_number(123456780)))
    response = await send(
        client,
        bundle(entry("POST", "ServiceRequest", referral(f"Patient?identifier={NHS}|9434765919"))),
    )
    assert statuses(response) == ["201 Created"]
    (sent_referral,) = await stored(client, "ServiceRequest")
    assert sent_referral["subject"] == {"reference": f"Patient/{known['id']}"}


@pytest.mark.parametrize(("patients", "code"), [(0, "not-found"), (2, "multiple-matches")])
async def test_conditional_reference_must_match_exactly_one(
    client: httpx.AsyncClient, patients: int, code: str
) -> None:
    for _ in range(patients):
        await create(client, patient())
    response = await send(
        client,
        bundle(
            entry("POST", "Patient", patient(nhs_number(223456780))),
            entry("POST", "ServiceRequest", referral(f"Patient?identifier={NHS}|9434765919")),
        ),
    )
    assert response.status_code == 412
    assert issues(response.json())[0] == (
        code,
        ["Bundle.entry[1].resource.subject.reference"],
    )
    assert "9434765919" not in response.text  # the criteria are not echoed back
    assert len(await stored(client, "Patient")) == patients
    assert await stored(client, "ServiceRequest") == []


async def test_conditional_create_returns_the_existing_resource_when_sent_again(
    client: httpx.AsyncClient,
) -> None:
    first = await send(client, referral_bundle("9434765919"))
    assert statuses(first) == ["201 Created"] * 4
    again = await send(client, referral_bundle("9434765919"))
    assert statuses(again) == ["200 OK", "201 Created", "201 Created", "201 Created"]
    patient_id = first.json()["entry"][0]["resource"]["id"]
    assert again.json()["entry"][0]["resource"]["id"] == patient_id
    assert again.json()["entry"][0]["response"]["location"].endswith(
        f"/Patient/{patient_id}/_history/1"
    )
    assert len(await stored(client, "Patient")) == 1
    # The second referral links to the Patient the condition found.
    referrals = await stored(client, "ServiceRequest")
    assert [r["subject"]["reference"] for r in referrals] == [f"Patient/{patient_id}"] * 2


@pytest.mark.parametrize("existing", [0, 1])
async def test_two_entries_with_the_same_condition_fail_the_transaction(
    client: httpx.AsyncClient, existing: int
) -> None:
    """Both would name one Patient (or, settled before either is written, each create one):
    FHIR fails a transaction whose entries' identities overlap (http.html#trules)."""
    for _ in range(existing):
        await create(client, patient())
    condition = f"identifier={NHS}|9434765919"
    response = await send(
        client,
        bundle(
            entry("POST", "Patient", patient(), ifNoneExist=condition),
            entry("POST", "Observation", observation("Patient/x", "Patient/x", "Mood")),
            entry("POST", "Patient", patient(gender="female"), ifNoneExist=condition),
        ),
    )
    assert response.status_code == 400, response.text
    issue = response.json()["issue"][0]
    assert issue["expression"] == ["Bundle.entry[2].request"]
    assert "Bundle.entry[0]" in issue["diagnostics"]
    assert "9434765919" not in response.text
    assert len(await stored(client, "Patient")) == existing
    assert await stored(client, "Observation") == []
    # The same criteria as a conditional update, in another order: the same resource.
    reordered = f"Patient?gender=unknown&{condition}"
    mixed = await send(
        client,
        bundle(
            entry("POST", "Patient", patient(), ifNoneExist=f"{condition}&gender=unknown"),
            entry("PUT", reordered, patient()),
        ),
    )
    assert mixed.status_code == 400
    # Different criteria are different resources.
    other = f"identifier={NHS}|{nhs_number(323456780)}"
    apart = await send(
        client,
        bundle(
            entry("POST", "Patient", patient(), ifNoneExist=condition),
            entry("POST", "Patient", patient(nhs_number(323456780)), ifNoneExist=other),
        ),
    )
    assert statuses(apart) == ["201 Created" if existing == 0 else "200 OK", "201 Created"]


@pytest.mark.parametrize(
    "condition", ["_count=1", "_sort=family", "_summary=count&identifier=x", "_format=json", ""]
)
async def test_conditions_made_of_result_parameters_are_refused(
    client: httpx.AsyncClient, condition: str
) -> None:
    await create(client, patient())
    rest = await client.post(
        "/Patient", json=patient(), headers={**FHIR_JSON, "If-None-Exist": condition}
    )
    assert rest.status_code == 400, rest.text
    assert issues(rest.json()) == [("invalid", ["If-None-Exist"])]
    for sent, where in (
        (entry("POST", "Patient", patient(), ifNoneExist=condition), "request.ifNoneExist"),
        (entry("PUT", f"Patient?{condition}", patient()), "request.url"),
        (
            entry("POST", "ServiceRequest", referral(f"Patient?{condition}")),
            "resource.subject.reference",
        ),
    ):
        if not condition and where != "request.url":
            continue  # empty, these are no conditions: refused as empty, or a plain reference
        response = await send(client, bundle(sent))
        assert response.status_code == 400, (where, response.text)
        assert issues(response.json())[0][1][-1] == f"Bundle.entry[0].{where}", where
    assert len(await stored(client, "Patient")) == 1
    assert await stored(client, "ServiceRequest") == []


async def test_conditional_update_creates_then_updates_then_refuses_ambiguity(
    client: httpx.AsyncClient,
) -> None:
    url = f"Patient?identifier={NHS}|9434765919"
    created = await send(client, bundle(entry("PUT", url, patient())))
    assert statuses(created) == ["201 Created"]
    patient_id = created.json()["entry"][0]["resource"]["id"]
    updated = await send(client, bundle(entry("PUT", url, patient(gender="female"))))
    assert statuses(updated) == ["200 OK"]
    answer = updated.json()["entry"][0]
    assert answer["resource"]["id"] == patient_id
    assert answer["resource"]["gender"] == "female"
    assert answer["response"]["etag"] == 'W/"2"'
    await create(client, patient())
    ambiguous = await send(client, bundle(entry("PUT", url, patient(gender="male"))))
    assert ambiguous.status_code == 412
    assert issues(ambiguous.json())[0] == ("multiple-matches", ["Bundle.entry[0]"])
    assert (await client.get(f"/Patient/{patient_id}")).json()["gender"] == "female"


async def test_conditional_update_referenced_by_urn_uuid(client: httpx.AsyncClient) -> None:
    existing = await create(client, patient())
    patient_url = urn()
    response = await send(
        client,
        bundle(
            entry("POST", "ServiceRequest", referral(patient_url)),
            entry(
                "PUT",
                f"Patient?identifier={NHS}|9434765919",
                patient(gender="male"),
                full_url=patient_url,
            ),
        ),
    )
    assert statuses(response) == ["201 Created", "200 OK"]
    (sent_referral,) = await stored(client, "ServiceRequest")
    assert sent_referral["subject"] == {"reference": f"Patient/{existing['id']}"}


async def test_stale_if_match_fails_the_transaction(client: httpx.AsyncClient) -> None:
    current = await create(client, patient())
    current["gender"] = "female"
    assert (
        await client.put(f"/Patient/{current['id']}", json=current, headers=FHIR_JSON)
    ).status_code == 200
    response = await send(
        client,
        bundle(
            entry("POST", "ServiceRequest", referral(f"Patient/{current['id']}")),
            entry("PUT", f"Patient/{current['id']}", patient(id=current["id"]), ifMatch='W/"1"'),
        ),
    )
    assert response.status_code == 412
    assert issues(response.json()) == [("conflict", ["Bundle.entry[1]"])]
    assert "etag" not in response.headers  # the entry's ETag is not the Bundle's
    assert await stored(client, "ServiceRequest") == []
    latest = (await client.get(f"/Patient/{current['id']}")).json()
    assert latest["meta"]["versionId"] == "2"
    assert latest["gender"] == "female"


async def test_if_match_on_patch_and_delete_entries(client: httpx.AsyncClient) -> None:
    target = await create(client, patient())
    operations = [{"op": "replace", "path": "/gender", "value": "female"}]
    patch = {
        "resourceType": "Binary",
        "contentType": "application/json-patch+json",
        "data": base64.b64encode(orjson.dumps(operations)).decode(),
    }
    url = f"Patient/{target['id']}"
    patched = await send(client, bundle(entry("PATCH", url, patch, ifMatch='W/"1"')))
    assert statuses(patched) == ["200 OK"]
    assert patched.json()["entry"][0]["resource"]["gender"] == "female"
    stale = await send(client, bundle(entry("DELETE", url, ifMatch='W/"1"')))
    assert stale.status_code == 412
    deleted = await send(client, bundle(entry("DELETE", url, ifMatch='W/"2"')))
    assert statuses(deleted) == ["204 No Content"]
    assert (await client.get(f"/{url}")).status_code == 410


# -- reads and searches inside a Bundle, Prefer -----------------------------------------------


async def test_get_entries_read_and_search(client: httpx.AsyncClient) -> None:
    known = await create(client, patient())
    response = await send(
        client,
        bundle(
            entry("GET", f"Patient/{known['id']}"),
            entry("GET", f"Patient?identifier={NHS}|9434765919"),
            entry("GET", f"Patient/{known['id']}/_history/1"),
            entry("HEAD", f"Patient/{known['id']}"),
        ),
    )
    assert statuses(response) == ["200 OK"] * 4
    read, search, vread, head = response.json()["entry"]
    assert read["resource"] == known
    assert read["response"]["etag"] == 'W/"1"'
    assert search["resource"]["type"] == "searchset"
    assert [e["resource"]["id"] for e in search["resource"]["entry"]] == [known["id"]]
    assert vread["resource"]["meta"]["versionId"] == "1"
    assert "resource" not in head
    missing = await send(client, bundle(entry("GET", "Patient/not-there")))
    assert missing.status_code == 404
    assert first_expression(missing) == "Bundle.entry[0]"


@pytest.mark.parametrize(
    ("prefer", "has_resource", "has_outcome"),
    [
        ("return=minimal", False, False),
        ("return=representation", True, False),
        ("return=OperationOutcome", False, True),
    ],
)
async def test_prefer_return_shapes_the_write_entries(
    client: httpx.AsyncClient, prefer: str, has_resource: bool, has_outcome: bool
) -> None:
    response = await send(client, referral_bundle("9434765919"), Prefer=prefer)
    assert statuses(response) == ["201 Created"] * 4
    for answer in response.json()["entry"]:
        assert ("resource" in answer) is has_resource
        assert ("outcome" in answer["response"]) is has_outcome
        assert "/_history/1" in answer["response"]["location"]
        assert answer["response"]["etag"] == 'W/"1"'
        assert answer["response"]["lastModified"]


# -- batches: each entry on its own -----------------------------------------------------------


async def test_batch_entries_succeed_or_fail_on_their_own(client: httpx.AsyncClient) -> None:
    response = await send(
        client,
        bundle(
            entry("POST", "Patient", patient()),
            entry("POST", "Patient", patient(BAD_NHS)),
            entry("GET", "Patient/not-there"),
            entry("POST", "Patient", {"resourceType": "Observation"}),
            entry("PUT", "Patient/chosen-id", patient(id="chosen-id")),
            bundle_type="batch",
        ),
    )
    assert response.json()["type"] == "batch-response"
    assert statuses(response) == [
        "201 Created",
        "400 Bad Request",
        "404 Not Found",
        "400 Bad Request",
        "201 Created",
    ]
    answers = response.json()["entry"]
    assert "outcome" not in answers[0]["response"]
    assert issues(answers[1]["response"]["outcome"]) == [
        ("value", ["Bundle.entry[1].resource.identifier[0].value"])
    ]
    assert issues(answers[2]["response"]["outcome"]) == [("not-found", ["Bundle.entry[2]"])]
    assert issues(answers[3]["response"]["outcome"]) == [
        ("invalid", ["Bundle.entry[3].resource.resourceType"])
    ]
    kept = sorted(p["id"] for p in await stored(client, "Patient"))
    assert kept == sorted([answers[0]["resource"]["id"], "chosen-id"])


@pytest.fixture
def refusing_hook(runtime: Runtime) -> None:
    """A domain rule that refuses an Observation after the store has written it."""

    async def refuse(event: WriteEvent) -> None:
        assert event.after is not None
        if event.after.get("valueString") == "refuse me":
            raise BusinessRuleViolation("This Observation breaks a pathway rule")

    runtime.hooks.after("Observation", refuse)


@pytest.mark.usefixtures("refusing_hook")
async def test_a_failed_batch_entry_rolls_back_only_its_own_writes(
    client: httpx.AsyncClient,
) -> None:
    known = await create(client, patient())
    subject = f"Patient/{known['id']}"
    refused = {**observation(subject, subject, "Alcohol use"), "valueString": "refuse me"}
    response = await send(
        client,
        bundle(
            entry("POST", "Observation", observation(subject, subject, "Alcohol use")),
            entry("POST", "Observation", refused),
            entry("POST", "Observation", observation(subject, subject, "Drug use")),
            bundle_type="batch",
        ),
    )
    assert statuses(response) == ["201 Created", "422 Unprocessable Entity", "201 Created"]
    kept = await stored(client, "Observation")
    assert sorted(o["code"]["text"] for o in kept) == ["Alcohol use", "Drug use"]
    history = (await client.get("/Observation/_history")).json()
    assert history["total"] == 2  # the refused write left no version behind


@pytest.fixture
def crashing_hook(runtime: Runtime) -> None:
    """A domain rule with a bug: an unexpected exception whose message holds patient data."""

    async def crash(event: WriteEvent) -> None:
        assert event.after is not None
        if event.after.get("valueString") == "crash":
            raise RuntimeError("secret patient detail 9434765919")

    runtime.hooks.after("Observation", crash)


@pytest.mark.usefixtures("crashing_hook")
async def test_an_unexpected_error_fails_only_its_batch_entry(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    known = await create(client, patient())
    subject = f"Patient/{known['id']}"
    crashing = {**observation(subject, subject, "Alcohol use"), "valueString": "crash"}
    response = await send(
        client,
        bundle(
            entry("POST", "Observation", observation(subject, subject, "Alcohol use")),
            entry("POST", "Observation", crashing),
            entry("POST", "Observation", observation(subject, subject, "Drug use")),
            bundle_type="batch",
        ),
    )
    assert statuses(response) == ["201 Created", "500 Internal Server Error", "201 Created"]
    outcome = response.json()["entry"][1]["response"]["outcome"]
    assert issues(outcome) == [("exception", ["Bundle.entry[1]"])]
    assert "secret" not in response.text
    assert "Bundle.entry[1]" in caplog.text
    assert "RuntimeError" in caplog.text
    assert "9434765919" not in caplog.text
    kept = await stored(client, "Observation")
    assert sorted(o["code"]["text"] for o in kept) == ["Alcohol use", "Drug use"]

    # In a transaction the same failure keeps nothing at all.
    failed = await send(
        client,
        bundle(
            entry("POST", "Observation", observation(subject, subject, "Mood")),
            entry("POST", "Observation", crashing),
        ),
    )
    assert failed.status_code == 500
    assert issues(failed.json()) == [("exception", [])]
    assert len(await stored(client, "Observation")) == 2


async def test_batch_entries_cannot_refer_to_each_other_by_urn_uuid(
    client: httpx.AsyncClient,
) -> None:
    patient_url = urn()
    response = await send(
        client,
        bundle(
            entry("POST", "Patient", patient(), full_url=patient_url),
            entry("POST", "ServiceRequest", referral(patient_url)),
            bundle_type="batch",
        ),
    )
    assert statuses(response) == ["201 Created", "400 Bad Request"]
    outcome = response.json()["entry"][1]["response"]["outcome"]
    assert issues(outcome) == [("invalid", ["Bundle.entry[1].resource.subject.reference"])]
    assert "transaction" in outcome["issue"][0]["diagnostics"]
    assert await stored(client, "ServiceRequest") == []


# -- the envelope -----------------------------------------------------------------------------


@pytest.fixture
async def three_entry_client(
    runtime: Runtime, client: httpx.AsyncClient
) -> AsyncIterator[httpx.AsyncClient]:
    """A client on an app whose Bundles may hold at most three entries (with the token of
    ``client``: both apps share the signing key)."""
    limited = runtime.settings.model_copy(update={"max_bundle_entries": 3})
    app: FastAPI = create_app(limited, runtime=Runtime(settings=limited, engine=runtime.engine))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://testserver",
            headers={"Authorization": client.headers["authorization"]},
        ) as http:
            yield http


async def test_a_bundle_over_the_entry_limit_is_413(
    three_entry_client: httpx.AsyncClient,
) -> None:
    four = bundle(*(entry("POST", "Patient", patient()) for _ in range(4)))
    response = await send(three_entry_client, four)
    assert response.status_code == 413
    assert_parses_as_r4(response.json())
    assert issues(response.json()) == [("too-costly", ["Bundle.entry"])]
    assert await stored(three_entry_client, "Patient") == []
    three = bundle(*(entry("POST", "Patient", patient()) for _ in range(3)))
    assert statuses(await send(three_entry_client, three)) == ["201 Created"] * 3
    statement = (await three_entry_client.get("/metadata")).json()
    documented = {i["code"]: i["documentation"] for i in statement["rest"][0]["interaction"]}
    assert "At most 3 entries" in documented["transaction"]


@pytest.mark.parametrize("bundle_type", ["collection", "document", "message", "searchset", None])
async def test_only_transaction_and_batch_bundles_are_processed(
    client: httpx.AsyncClient, bundle_type: str | None
) -> None:
    body: dict[str, Any] = {"resourceType": "Bundle", "entry": [entry("POST", "Patient")]}
    if bundle_type is not None:
        body["type"] = bundle_type
    response = await send(client, body)
    assert response.status_code == 400
    assert issues(response.json()) == [("invalid", ["Bundle.type"])]


async def test_the_body_must_be_a_bundle(client: httpx.AsyncClient) -> None:
    response = await send(client, patient())
    assert response.status_code == 400
    assert issues(response.json()) == [("invalid", ["resourceType"])]
    wrong_media = await client.post("/", content=b"{}", headers={"Content-Type": "application/xml"})
    assert wrong_media.status_code == 415


@pytest.mark.parametrize(
    ("bad_entry", "status", "expression"),
    [
        ({"request": {"url": "Patient"}}, 400, "Bundle.entry[1].request.method"),
        ({"request": {"method": "POST"}}, 400, "Bundle.entry[1].request.url"),
        ({"request": {"method": "TRACE", "url": "Patient"}}, 400, "Bundle.entry[1].request.method"),
        ({"resource": {"resourceType": "Patient"}}, 400, "Bundle.entry[1].request"),
        (entry("POST", "Patient"), 400, "Bundle.entry[1].resource"),
        (entry("PUT", "Patient/a"), 400, "Bundle.entry[1].resource"),
        (
            entry("POST", "Patient", {"resourceType": "Observation", "status": "final"}),
            400,
            "Bundle.entry[1].resource.resourceType",
        ),
        (entry("PUT", "Patient/a", patient(id="b")), 400, "Bundle.entry[1].resource.id"),
        (entry("PUT", "Patient/a", patient()), 400, "Bundle.entry[1].resource.id"),
        (entry("POST", "Patient/a", patient()), 400, "Bundle.entry[1].request.url"),
        (entry("DELETE", "Patient?identifier=x"), 400, "Bundle.entry[1].request.url"),
        (entry("GET", "http://elsewhere.example/Patient/1"), 400, "Bundle.entry[1].request.url"),
        (entry("GET", "Patient/1/$everything"), 400, "Bundle.entry[1].request.url"),
        (entry("GET", "Shoe/1"), 404, "Bundle.entry[1]"),
        (entry("POST", "AuditEvent", {"resourceType": "AuditEvent"}), 405, "Bundle.entry[1]"),
        (entry("GET", "Patient/1", ifMatch='W/"1"'), 400, "Bundle.entry[1].request.ifMatch"),
        (
            entry("PUT", "Patient/a", patient(id="a"), ifMatch="soon"),
            400,
            "Bundle.entry[1].request.ifMatch",
        ),
        (entry("DELETE", "Patient/a", ifMatch="banana"), 400, "Bundle.entry[1].request.ifMatch"),
        (entry("DELETE", "Patient/a", ifMatch="1"), 400, "Bundle.entry[1].request.ifMatch"),
        (entry("PATCH", "Patient/a", patient(id="a")), 400, "Bundle.entry[1].resource"),
    ],
)
async def test_a_malformed_entry_fails_the_transaction_before_anything_runs(
    client: httpx.AsyncClient, bad_entry: dict[str, Any], status: int, expression: str
) -> None:
    response = await send(client, bundle(entry("POST", "Patient", patient()), bad_entry))
    assert response.status_code == status, response.text
    assert first_expression(response) == expression
    assert await stored(client, "Patient") == []
    batch = await send(
        client, bundle(entry("POST", "Patient", patient()), bad_entry, bundle_type="batch")
    )
    assert statuses(batch)[1].startswith(str(status))
    assert len(await stored(client, "Patient")) == 1


async def test_duplicate_full_urls_are_refused(client: httpx.AsyncClient) -> None:
    same = urn()
    response = await send(
        client,
        bundle(
            entry("POST", "Patient", patient(), full_url=same),
            entry("POST", "Patient", patient(), full_url=same),
            bundle_type="batch",
        ),
    )
    assert response.status_code == 400
    assert issues(response.json()) == [("invalid", ["Bundle.entry[1].fullUrl"])]
    assert await stored(client, "Patient") == []


async def test_an_empty_transaction_answers_an_empty_response(client: httpx.AsyncClient) -> None:
    response = await send(client, {"resourceType": "Bundle", "type": "transaction"})
    assert response.status_code == 200
    assert response.json()["type"] == "transaction-response"
    assert "entry" not in response.json()


async def test_capability_statement_lists_transaction_and_batch(
    client: httpx.AsyncClient,
) -> None:
    statement = (await client.get("/metadata")).json()
    assert [i["code"] for i in statement["rest"][0]["interaction"]] == ["transaction", "batch"]
