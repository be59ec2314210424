"""An EHR refers a person the way it would in production: one transaction Bundle holding the
Patient (conditional create on the NHS number), the referral and supporting Observations,
sent through fhirpy to the real app under uvicorn, which creates the referral's Task."""

from __future__ import annotations

from typing import Any

import pytest
from fhirpy import AsyncFHIRClient
from fhirpy.base.exceptions import OperationOutcome

from app import pathway
from app.db import make_engine, transaction
from app.pathway.seed import load_demo
from app.runtime import Runtime
from tests.api.bundle_builders import fresh_nhs_number
from tests.api.helpers import NHS, patient
from tests.conftest import LiveServer
from tests.pathway.referrals import SERVICE_ID, referral, task_of


async def _seed(live_server: LiveServer) -> None:
    settings = live_server.settings
    engine = make_engine(settings)
    runtime = Runtime(settings=settings, engine=engine, hooks=pathway.hooks())
    try:
        async with transaction(engine, write=True) as conn:
            await load_demo(
                runtime.store(conn),
                conn,
                base_url=settings.base_url,
                max_entries=settings.max_bundle_entries,
            )
    finally:
        await engine.dispose()


def _bundle(nhs: str, requester: str, performer: str) -> dict[str, Any]:
    patient_url = "urn:uuid:0f1e2d3c-4b5a-4968-8776-655443322110"
    referral_url = "urn:uuid:1a2b3c4d-5e6f-4a8b-9c0d-1e2f3a4b5c6d"
    request = referral("x", requester, performer, "drug-alcohol")
    request["subject"] = {"reference": patient_url}
    observations = [
        {
            "resource": {
                "resourceType": "Observation",
                "status": "final",
                "code": {"text": text},
                "subject": {"reference": patient_url},
                "basedOn": [{"reference": referral_url}],
                "valueString": "recorded at referral",
            },
            "request": {"method": "POST", "url": "Observation"},
        }
        for text in ("Alcohol use", "Drug use")
    ]
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": patient_url,
                "resource": patient(nhs),
                "request": {
                    "method": "POST",
                    "url": "Patient",
                    "ifNoneExist": f"identifier={NHS}|{nhs}",
                },
            },
            {
                "fullUrl": referral_url,
                "resource": request,
                "request": {"method": "POST", "url": "ServiceRequest"},
            },
            *observations,
        ],
    }


async def test_an_ehr_refers_in_one_transaction_through_fhirpy(live_server: LiveServer) -> None:
    await _seed(live_server)
    client = AsyncFHIRClient(live_server.base_url, authorization=f"Bearer {live_server.token}")
    gp, dat = [
        await client.resources("HealthcareService").search(identifier=f"{SERVICE_ID}|{key}").get()
        for key in ("solway-gp1", "solway-dat")
    ]
    role = client.resource(
        "PractitionerRole",
        active=True,
        healthcareService=[{"reference": f"HealthcareService/{gp.id}"}],
    )
    await role.save()
    nhs = fresh_nhs_number()

    answer = await client.execute(
        "/", method="post", data=_bundle(nhs, f"PractitionerRole/{role.id}", dat.id)
    )
    statuses = [e["response"]["status"] for e in answer["entry"]]
    assert statuses == ["201 Created"] * 4
    request = answer["entry"][1]["resource"]
    task = await client.reference("Task", task_of(request)).to_resource()
    assert task["status"] == "requested"
    assert task["owner"]["reference"] == f"HealthcareService/{dat.id}"
    patient_id = answer["entry"][0]["resource"]["id"]
    assert task["for"]["reference"] == f"Patient/{patient_id}"

    # The EHR retries (it never saw the answer): the Patient is found, the referral refused
    # because one is open already, and nothing of the retry is kept.
    with pytest.raises(OperationOutcome) as refused:
        await client.execute(
            "/", method="post", data=_bundle(nhs, f"PractitionerRole/{role.id}", dat.id)
        )
    assert f"ServiceRequest/{request['id']}" in str(refused.value)
    open_tasks = await client.resources("Task").search(patient=f"Patient/{patient_id}").fetch_all()
    assert [t.id for t in open_tasks] == [task.id]
