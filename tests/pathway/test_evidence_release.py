"""A client that may only write evidence can release a gate hold by writing it: the release is
right, and it names the evidence and the client that wrote it, in the DetectedIssue's
mitigation, the gate's log and the referral's timeline (issue 18, item 4)."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
from fastapi import FastAPI
from joserfc.jwk import ECKey

from app.db import transaction
from app.pathway.projections import rebuild
from app.pathway.repository import GateRepository
from app.runtime import Runtime
from app.security.clients import ClientRepository
from tests.api.helpers import FHIR_JSON
from tests.conftest import BASE_URL, obtain_token
from tests.pathway.referrals import (
    ALCOHOL,
    ANY_DRUG,
    SettableClock,
    new_patient,
    record_last_use,
    referral,
    role_in,
    service,
    task_of,
)

WRITER = "lab-results"
WRITER_URI = f"https://fhir.waymark.org.uk/Id/client/{WRITER}"
RELEASE_EVIDENCE = "https://fhir.waymark.org.uk/StructureDefinition/gate-release-evidence"
RELEASE_WRITER = "https://fhir.waymark.org.uk/StructureDefinition/gate-release-writer"


async def _evidence_writer(
    app: FastAPI, anonymous: httpx.AsyncClient, runtime: Runtime, key: ECKey
) -> httpx.AsyncClient:
    """A second client, registered for Observation.c only."""
    jwks = orjson.dumps({"keys": [key.as_dict(private=False)]}).decode()
    async with transaction(runtime.engine, write=True) as conn:
        await ClientRepository(conn).add(
            client_id=WRITER, scopes=["system/Observation.c"], jwks=jwks, now=runtime.clock()
        )
    token = await obtain_token(
        anonymous, client_id=WRITER, key=key, scopes="system/Observation.c", base_url=BASE_URL
    )
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url=BASE_URL,
        headers={"Authorization": f"Bearer {token}"},
    )


async def test_a_release_by_evidence_names_the_evidence_and_its_writer(
    app: FastAPI,
    client: httpx.AsyncClient,
    anonymous: httpx.AsyncClient,
    runtime: Runtime,
    client_key: ECKey,
    clock: SettableClock,
) -> None:
    patient_id = await new_patient(client, meets_gates=False)
    await record_last_use(client, patient_id, ANY_DRUG, "2025-01-01")
    requester = await role_in(client, await service(client, "solway-dat"))
    body = referral(patient_id, requester, await service(client, "solway-psy"), "psychology")
    request: dict[str, Any] = (
        await client.post("/ServiceRequest", json=body, headers=FHIR_JSON)
    ).json()
    task_id = task_of(request)
    assert (await client.get(f"/Task/{task_id}")).json()["status"] == "on-hold"

    async with await _evidence_writer(app, anonymous, runtime, client_key) as writer:
        observation = await record_last_use(writer, patient_id, ALCOHOL, "2025-01-01")
    evidence = f"Observation/{observation}"

    task = (await client.get(f"/Task/{task_id}")).json()
    assert task["status"] == "requested"
    assert evidence in task["statusReason"]["text"]
    assert WRITER_URI in task["statusReason"]["text"]

    found = await client.get(
        "/DetectedIssue", params={"implicated": f"ServiceRequest/{request['id']}"}
    )
    [issue] = [e["resource"] for e in found.json()["entry"]]
    [mitigation] = issue["mitigation"]
    extensions = {e["url"]: e for e in mitigation["extension"]}
    assert extensions[RELEASE_EVIDENCE]["valueReference"]["reference"] == evidence
    assert extensions[RELEASE_WRITER]["valueUri"] == WRITER_URI
    assert mitigation["action"]["text"] == "Released: the gate is now met"

    timeline = (await client.get(f"/ServiceRequest/{request['id']}/$timeline")).json()
    events = [
        {q["name"]: next(v for k, v in q.items() if k.startswith("value")) for q in p["part"]}
        for p in timeline["parameter"]
        if p["name"] == "event"
    ]
    release = events[-1]
    assert (release["from"], release["to"]) == ("on-hold", "requested")
    assert release["who"] == WRITER_URI
    assert evidence in release["reason"]

    async with transaction(runtime.engine, write=False) as conn:
        live = list(await GateRepository(conn).of_referral(request["id"]))
    assert (live[-1].action, live[-1].released_by, live[-1].who) == (
        "released",
        "evidence",
        WRITER_URI,
    )
    assert evidence in (live[-1].reason or "")
    async with transaction(runtime.engine, write=True) as conn:
        await rebuild(runtime.store(conn))
    async with transaction(runtime.engine, write=False) as conn:
        assert list(await GateRepository(conn).of_referral(request["id"])) == live
