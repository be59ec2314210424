"""Criteria evaluated for a client reach only what its scopes allow, wherever they come from
(a search, If-None-Exist, a conditional update, a conditional reference, a batch entry), and
whether an _include or _revinclude is allowed depends on the scopes alone: the answer is the
same whether or not anything would have matched (issue 18, items 1 and 3)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from tests.api.helpers import FHIR_JSON, patient

ScopedClient = Callable[[str], Awaitable[httpx.AsyncClient]]


async def _task_for(client: httpx.AsyncClient, patient_id: str | None, **more: Any) -> str:
    task: dict[str, Any] = {"resourceType": "Task", "status": "requested", "intent": "order"}
    if patient_id is not None:
        task["for"] = {"reference": f"Patient/{patient_id}"}
    task.update(more)
    created = await client.post("/Task", json=task, headers=FHIR_JSON)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


async def _person(client: httpx.AsyncClient) -> str:
    created = await client.post("/Patient", json=patient(), headers=FHIR_JSON)  # "Example"
    return str(created.json()["id"])


def _task_body() -> dict[str, Any]:
    return {"resourceType": "Task", "status": "requested", "intent": "order"}


@pytest.mark.parametrize(
    "criterion",
    ["patient.name=Exa", "patient.name=Zzz", "_has:AuditEvent:entity:action=C"],
)
async def test_if_none_exist_is_checked_as_a_search(
    client: httpx.AsyncClient, scoped_client: ScopedClient, criterion: str
) -> None:
    """A Task-only client cannot learn a patient's name (200 match / 201 no match) or probe
    the audit trail through If-None-Exist: the chain and _has are refused, match or not."""
    task_id = await _task_for(client, await _person(client))
    tasks_only = await scoped_client("system/Task.cruds")
    headers = {**FHIR_JSON, "If-None-Exist": f"_id={task_id}&{criterion}"}
    response = await tasks_only.post("/Task", json=_task_body(), headers=headers)
    assert response.status_code == 403, response.text
    assert response.json()["issue"][0]["code"] == "forbidden"
    # Nothing was created by the refused request.
    listed = (await client.get("/Task", params={"_summary": "count"})).json()
    assert listed["total"] == 1


async def test_if_none_exist_in_a_bundle_is_checked_as_a_search(
    client: httpx.AsyncClient, scoped_client: ScopedClient
) -> None:
    task_id = await _task_for(client, await _person(client))
    entry = {
        "resource": _task_body(),
        "request": {
            "method": "POST",
            "url": "Task",
            "ifNoneExist": f"_id={task_id}&patient.name=Exa",
        },
    }
    tasks_only = await scoped_client("system/Task.cruds")
    for kind in ("transaction", "batch"):
        bundle = {"resourceType": "Bundle", "type": kind, "entry": [entry]}
        response = await tasks_only.post("/", json=bundle, headers=FHIR_JSON)
        if kind == "transaction":
            assert response.status_code == 403, response.text
        else:
            assert response.json()["entry"][0]["response"]["status"] == "403 Forbidden"


@pytest.mark.parametrize("name", ["Exa", "Zzz"])
async def test_a_conditional_update_is_checked_as_a_search(
    client: httpx.AsyncClient, scoped_client: ScopedClient, name: str
) -> None:
    """Two Tasks for a patient named Example: the conditional update would be 412 ("matches
    more than one") for Exa and a create for Zzz; both are 403 now."""
    person = await _person(client)
    await _task_for(client, person)
    await _task_for(client, person)
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": _task_body(),
                "request": {"method": "PUT", "url": f"Task?patient.name={name}"},
            }
        ],
    }
    tasks_only = await scoped_client("system/Task.cruds")
    response = await tasks_only.post("/", json=bundle, headers=FHIR_JSON)
    assert response.status_code == 403, response.text
    assert "Patient" in response.json()["issue"][0]["diagnostics"]


@pytest.mark.parametrize("name", ["Exa", "Zzz"])
async def test_a_conditional_reference_is_checked_as_a_search(
    client: httpx.AsyncClient, scoped_client: ScopedClient, name: str
) -> None:
    """A conditional reference Task?patient.name=... would resolve (one match), or be 412
    (several, or none): all of which tell a Task-only client about the Patients."""
    person = await _person(client)
    await _task_for(client, person)
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "note"},
        "focus": [{"reference": f"Task?patient.name={name}"}],
    }
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": observation, "request": {"method": "POST", "url": "Observation"}}],
    }
    caller = await scoped_client("system/Task.rs system/Observation.c")
    response = await caller.post("/", json=bundle, headers=FHIR_JSON)
    assert response.status_code == 403, response.text
    assert response.json()["issue"][0]["expression"] == [
        "Bundle.entry[0].resource.focus[0].reference"
    ]
    allowed = await scoped_client("system/Task.rs system/Observation.c system/Patient.s")
    answered = await allowed.post("/", json=bundle, headers=FHIR_JSON)
    assert answered.status_code == (200 if name == "Exa" else 412), answered.text


async def test_post_search_and_batch_searches_are_checked_alike(
    client: httpx.AsyncClient, scoped_client: ScopedClient
) -> None:
    await _task_for(client, await _person(client))
    tasks_only = await scoped_client("system/Task.rs")
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    posted = await tasks_only.post("/Task/_search", content="patient.name=Exa", headers=form)
    assert posted.status_code == 403
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [{"request": {"method": "GET", "url": "Task?_has:AuditEvent:entity:action=C"}}],
    }
    batch = (await tasks_only.post("/", json=bundle, headers=FHIR_JSON)).json()
    assert batch["entry"][0]["response"]["status"] == "403 Forbidden"


# -- _include and _revinclude: decided from the scopes, before reading --------------------------


@pytest.mark.parametrize("with_referral", [False, True])
async def test_revinclude_answers_the_same_whether_or_not_data_matches(
    client: httpx.AsyncClient, scoped_client: ScopedClient, with_referral: bool
) -> None:
    """A Patient-only client asking for a named person's Tasks got 200 when there were none
    and 403 when there were some: it is 403 either way."""
    person = await _person(client)
    if with_referral:
        await _task_for(client, person)
    patients_only = await scoped_client("system/Patient.rs")
    query = {"name": "Example", "_revinclude": "Task:patient"}
    response = await patients_only.get("/Patient", params=query)
    assert response.status_code == 403, response.text
    assert "Task" in response.json()["issue"][0]["diagnostics"]
    iterate = {"name": "Example", "_revinclude:iterate": "Task:patient"}
    assert (await patients_only.get("/Patient", params=iterate)).status_code == 403
    # Reading Tasks is not enough: _revinclude finds them by what they refer to, a search.
    read_only = await scoped_client("system/Patient.rs system/Task.r")
    assert (await read_only.get("/Patient", params=query)).status_code == 403
    both = await scoped_client("system/Patient.rs system/Task.rs")
    found = await both.get("/Patient", params=query)
    assert found.status_code == 200
    types = [e["resource"]["resourceType"] for e in found.json()["entry"]]
    assert types == ["Patient", "Task"] if with_referral else ["Patient"]


@pytest.mark.parametrize("with_patient", [False, True])
@pytest.mark.parametrize("include", ["Task:patient", "Task:subject:Patient", "Task:*"])
async def test_include_answers_the_same_whether_or_not_data_matches(
    client: httpx.AsyncClient, scoped_client: ScopedClient, with_patient: bool, include: str
) -> None:
    """With Task scopes only, an include that can reach only Patients is refused; Task:* (its
    references may point at Tasks too) keeps the Tasks. Whether a Patient is there to be
    included changes neither."""
    await _task_for(client, await _person(client) if with_patient else None)
    tasks_only = await scoped_client("system/Task.rs")
    response = await tasks_only.get("/Task", params={"_include": include})
    if include != "Task:*":
        assert response.status_code == 403, response.text
        assert "none of them" in response.json()["issue"][0]["diagnostics"]
        return
    assert response.status_code == 200, response.text
    assert [e["resource"]["resourceType"] for e in response.json()["entry"]] == ["Task"]


async def test_an_include_to_several_types_keeps_those_the_caller_may_read(
    client: httpx.AsyncClient, scoped_client: ScopedClient
) -> None:
    """As a chain does: Task:* reaches a Patient (for) and an Observation (focus); a client
    that may read Patients gets the Patient, and the Observation is not read."""
    person = await _person(client)
    observation = await client.post(
        "/Observation",
        json={"resourceType": "Observation", "status": "final", "code": {"text": "note"}},
        headers=FHIR_JSON,
    )
    await _task_for(client, person, focus={"reference": f"Observation/{observation.json()['id']}"})
    caller = await scoped_client("system/Task.rs system/Patient.r")
    found = await caller.get("/Task", params={"_include": "Task:*"})
    assert found.status_code == 200, found.text
    types = sorted(e["resource"]["resourceType"] for e in found.json()["entry"])
    assert types == ["Patient", "Task"]
    everything = await scoped_client("system/Task.rs system/Patient.r system/Observation.r")
    all_found = (await everything.get("/Task", params={"_include": "Task:*"})).json()
    assert sorted(e["resource"]["resourceType"] for e in all_found["entry"]) == [
        "Observation",
        "Patient",
        "Task",
    ]
    narrowed = await caller.get("/Task", params={"_include": "Task:focus:Observation"})
    assert narrowed.status_code == 403
