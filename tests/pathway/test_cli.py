"""The pathway's CLI commands as a scheduler or an operator runs them: real `waymark` processes
on the test database. `waymark gates reevaluate` is idempotent, and two runs at once on
PostgreSQL release each referral once; `waymark rebuild-projections` gives identical rows."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from app.db import transaction
from app.pathway.models import gate_decision, phase_event, referral, referral_event
from app.runtime import Runtime
from tests.api.helpers import FHIR_JSON
from tests.pathway.phase_helpers import complete_phase_one, set_phase, start_pathway
from tests.pathway.referrals import (
    ALCOHOL,
    ANY_DRUG,
    GATE_EVIDENCE,
    SNOMED,
    business,
    new_patient,
    reason,
    role_in,
    service,
    task_of,
)
from tests.pathway.referrals import (
    referral as referral_body,
)

WAYMARK = str(Path(sys.executable).with_name("waymark"))


async def _waymark(runtime: Runtime, *arguments: str) -> str:
    environment = {
        **os.environ,
        "WAYMARK_DATABASE_URL": runtime.settings.database_url,
        "WAYMARK_BASE_URL": runtime.settings.base_url,
        "WAYMARK_TOKEN_KEY_FILE": str(runtime.settings.token_key_file),
    }
    process = await asyncio.create_subprocess_exec(
        WAYMARK,
        *arguments,
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return out.decode()


def _released(output: str) -> int:
    found = re.search(r"Looked at (\d+) held referrals; released (\d+)", output)
    assert found is not None, output
    return int(found[2])


async def _held_referrals(http: httpx.AsyncClient, runtime: Runtime, count: int) -> list[str]:
    """``count`` referrals held by Solway's abstinence gate whose evidence, written without
    the pathway's rules (as if it arrived while nothing re-evaluated), now meets it: only a
    scheduled re-evaluation releases them."""
    requester = await role_in(http, await service(http, "solway-dat"))
    psychology = await service(http, "solway-psy")
    quiet = Runtime(settings=runtime.settings, engine=runtime.engine)  # no write hooks
    tasks = []
    for number in range(count):
        patient_id = await new_patient(http, _nhs(number), meets_gates=False)
        body = referral_body(patient_id, requester, psychology, "psychology")
        created = (await http.post("/ServiceRequest", json=body, headers=FHIR_JSON)).json()
        tasks.append(task_of(created))
        async with transaction(runtime.engine, write=True) as conn:
            for substance in (ALCOHOL, ANY_DRUG):
                await quiet.store(conn).create(
                    _last_use(patient_id, substance), resource_type="Observation"
                )
    return tasks


def _nhs(number: int) -> str:
    """A valid NHS number per test patient (modulus 11)."""
    stem = f"94347{number:04d}"
    total = sum(int(d) * w for d, w in zip(stem, range(10, 1, -1), strict=True))
    check = 11 - total % 11
    check = 0 if check == 11 else check
    return stem + str(check) if check != 10 else _nhs(number + 5000)


def _last_use(patient_id: str, substance: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": GATE_EVIDENCE, "code": "last-use-date"}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": "2025-06-01",
        "valueDateTime": "2025-01-01",
        "component": [
            {
                "code": {"coding": [{"system": GATE_EVIDENCE, "code": "substance"}]},
                "valueCodeableConcept": {"coding": [{"system": SNOMED, "code": substance}]},
            }
        ],
    }


async def _versions(http: httpx.AsyncClient, tasks: list[str]) -> list[tuple[str, str]]:
    found = []
    for task_id in tasks:
        task = (await http.get(f"/Task/{task_id}")).json()
        found.append((task["status"], task["meta"]["versionId"]))
    return found


async def test_gates_reevaluate_releases_and_is_idempotent(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tasks = await _held_referrals(client, runtime, 3)
    assert await _versions(client, tasks) == [("on-hold", "1")] * 3
    assert _released(await _waymark(runtime, "gates", "reevaluate", "--batch", "2")) == 3
    assert await _versions(client, tasks) == [("requested", "2")] * 3
    again = await _waymark(runtime, "gates", "reevaluate")
    assert "Looked at 0 held referrals; released 0" in again
    assert await _versions(client, tasks) == [("requested", "2")] * 3


async def test_two_runs_at_once_release_each_referral_once(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    if runtime.engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL only: replicas share a PostgreSQL primary")
    tasks = await _held_referrals(client, runtime, 12)
    outputs = await asyncio.gather(
        _waymark(runtime, "gates", "reevaluate", "--batch", "3"),
        _waymark(runtime, "gates", "reevaluate", "--batch", "3"),
    )
    assert sum(_released(output) for output in outputs) == 12
    assert await _versions(client, tasks) == [("requested", "2")] * 12  # one release each
    async with transaction(runtime.engine, write=False) as conn:
        released = (
            await conn.execute(
                select(gate_decision.c.service_request_id).where(
                    gate_decision.c.action == "released"
                )
            )
        ).all()
    assert len(released) == 12


async def _projections(runtime: Runtime) -> dict[str, list[Any]]:
    async with transaction(runtime.engine, write=False) as conn:
        return {
            table.name: list(
                (await conn.execute(select(table).order_by(*table.primary_key.columns))).all()
            )
            for table in (referral, referral_event, gate_decision, phase_event)
        }


async def test_rebuild_projections_gives_identical_rows(
    client: httpx.AsyncClient, runtime: Runtime, scoped_client: Any
) -> None:
    await _held_referrals(client, runtime, 1)
    await _waymark(runtime, "gates", "reevaluate")
    patient_id = await new_patient(client, "9912003888")
    await start_pathway(client, patient_id)
    await complete_phase_one(client, patient_id, "2026-01-10")
    await set_phase(client, patient_id, "phase-2", "in-progress")
    requester = await role_in(client, await service(client, "solway-dat"))
    cmht = referral_body(patient_id, requester, await service(client, "solway-cmht"), "cmht")
    made = (await client.post("/ServiceRequest", json=cmht, headers=FHIR_JSON)).json()
    task = (await client.get(f"/Task/{task_of(made)}")).json()
    task.update(status="on-hold", statusReason=reason("patient-unavailable"))
    assert (await client.put(f"/Task/{task['id']}", json=task)).status_code == 200
    task = (await client.get(f"/Task/{task['id']}")).json()
    task.update(status="requested", businessStatus=business("awaiting-triage"))
    assert (await client.put(f"/Task/{task['id']}", json=task)).status_code == 200

    live = await _projections(runtime)
    assert {name: len(rows) > 0 for name, rows in live.items()} == dict.fromkeys(live, True)
    output = await _waymark(runtime, "rebuild-projections")
    assert "Rebuilt the projections of" in output
    assert await _projections(runtime) == live
