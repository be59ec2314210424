"""The documented walk-through (docs/phases.md, "One person's pathway, step by step"), step by
step, through fhirpy against the real app under uvicorn: each documented command is made here
the same way (a JSON Patch where the document patches), and what the document shows as its
output must be what the server answers now, ids, instants and client names aside. A document
that drifts from the server fails here."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fhirpy import AsyncFHIRClient
from fhirpy.base.exceptions import OperationOutcome

from tests.api.bundle_builders import fresh_nhs_number
from tests.api.helpers import patient
from tests.clients.test_referral_live import _seed
from tests.conftest import LiveServer
from tests.pathway.referrals import ALCOHOL, ANY_DRUG, GATE_EVIDENCE, SERVICE_ID, SNOMED, referral

CODES = "https://fhir.waymark.org.uk/CodeSystem/pathway-codes"
WALK_THROUGH = Path(__file__).resolve().parents[2] / "docs" / "phases.md"
SECTION = "## One person's pathway, step by step"

Step = Callable[[], Awaitable[list[str]]]


def documented_steps() -> list[tuple[str, list[str]]]:
    """The walk-through's commands (after ``$ ``) and the lines it shows under each."""
    section = WALK_THROUGH.read_text().split(SECTION, 1)[1].split("\n## ", 1)[0]
    block = section.split("```text\n", 1)[1].split("```", 1)[0]
    steps: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        elif steps and line.strip():
            steps[-1][1].append(line)
    return steps


_IDS = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_INSTANTS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")
_CLIENTS = re.compile(r"/Id/client/[A-Za-z0-9._-]+")


def normal(line: str) -> str:
    """A line with what differs on each run (ids, instants, the client's name) replaced."""
    line = _IDS.sub("<id>", line)
    line = _INSTANTS.sub("<instant>", line)
    return _CLIENTS.sub("/Id/client/<client>", line)


def compact(value: Any) -> str:
    """What ``jq -c`` prints."""

    def whole(item: Any) -> Any:
        if isinstance(item, float) and item.is_integer():
            return int(item)
        if isinstance(item, dict):
            return {k: whole(v) for k, v in item.items()}
        if isinstance(item, list):
            return [whole(v) for v in item]
        return item

    return json.dumps(whole(value), separators=(",", ":"), ensure_ascii=False)


def _second(item: dict[str, Any]) -> Any:
    """jq's ``[.[]][1]``: a parameter's value (or its parts)."""
    return list(item.values())[1]


def _shown(value: Any) -> Any:
    return (value.get("reference") or value.get("code")) if isinstance(value, dict) else value


def pathway_lines(summary: dict[str, Any]) -> list[str]:
    """The walk-through's jq projection of $pathway, one line per parameter."""
    lines = []
    for parameter in summary["parameter"]:
        value = _second(parameter)
        if isinstance(value, list):
            shown: Any = [{part["name"]: _shown(_second(part))} for part in value]
        else:
            shown = _shown(value)
        lines.append(compact([parameter["name"], shown]))
    return lines


class Walk:
    """The walk-through's state, as its shell variables hold it."""

    def __init__(self, live_server: LiveServer) -> None:
        auth = f"Bearer {live_server.token}"
        self.fhir = AsyncFHIRClient(
            live_server.base_url,
            authorization=auth,
            extra_headers={"Accept": "application/fhir+json"},
        )
        self.patcher = AsyncFHIRClient(
            live_server.base_url,
            authorization=auth,
            extra_headers={"Content-Type": "application/json-patch+json"},
        )
        self.vars: dict[str, str] = {}
        self.requests: dict[str, str] = {}

    async def get(self, path: str, **params: str) -> Any:
        return await self.fhir.execute(path, method="get", params=params or None)

    async def patch(self, path: str, pointer: str, value: str) -> Any:
        operations: Any = [{"op": "replace", "path": pointer, "value": value}]
        try:
            return await self.patcher.execute(path, method="patch", data=operations)
        except OperationOutcome as refused:
            return refused.resource

    async def service(self, key: str) -> str:
        found = await self.get("HealthcareService", identifier=f"{SERVICE_ID}|{key}")
        return str(found["entry"][0]["resource"]["id"])

    async def role(self, service_id: str) -> str:
        role = {
            "resourceType": "PractitionerRole",
            "active": True,
            "healthcareService": [{"reference": f"HealthcareService/{service_id}"}],
        }
        return str((await self.fhir.execute("PractitionerRole", data=role))["id"])

    async def refer(self, role: str, to: str, name: str, coding: dict[str, str]) -> str:
        body = referral(self.vars["PATIENT"], f"PractitionerRole/{role}", to, "drug-alcohol")
        body["code"] = {"coding": [coding]}
        made = await self.fhir.execute("ServiceRequest", data=body)
        self.requests[name] = str(made["id"])
        link = next(e for e in made["extension"] if e["url"].endswith("referral-task"))
        return str(link["valueReference"]["reference"])

    async def move(self, task: str, status: str) -> str:
        answer = await self.patch(task, "/status", status)
        if answer.get("resourceType") == "OperationOutcome":
            return compact(answer["issue"][0]["diagnostics"])
        return compact({"status": answer["status"], "businessStatus": _business(answer)})

    async def observe(self, substance: str, last_used: str) -> str:
        evidence = {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": GATE_EVIDENCE, "code": "last-use-date"}]},
            "subject": {"reference": f"Patient/{self.vars['PATIENT']}"},
            "effectiveDateTime": "2026-11-30",
            "valueDateTime": last_used,
            "component": [
                {
                    "code": {"coding": [{"system": GATE_EVIDENCE, "code": "substance"}]},
                    "valueCodeableConcept": {"coding": [{"system": SNOMED, "code": substance}]},
                }
            ],
        }
        return str((await self.fhir.execute("Observation", data=evidence))["id"])


def _business(task: dict[str, Any]) -> Any:
    return task["businessStatus"]["coding"][0]["code"]


def _steps(walk: Walk) -> list[tuple[str, Step]]:
    """Each documented command (a fragment of it that names it) and how this test makes it."""
    v = walk.vars

    async def make_patient() -> list[str]:
        nhs = fresh_nhs_number()
        made = await walk.fhir.execute("Patient", data=patient(nhs))
        v["PATIENT"] = str(made["id"])
        return [v["PATIENT"]]

    async def services() -> list[str]:
        for name, key in (("GP", "solway-gp1"), ("DAT", "solway-dat"), ("PSY", "solway-psy")):
            v[name] = await walk.service(key)
        return []

    async def roles() -> list[str]:
        v["GP_ROLE"], v["DAT_ROLE"] = await walk.role(v["GP"]), await walk.role(v["DAT"])
        return []

    async def refer_to_dat() -> list[str]:
        coding = {"system": SNOMED, "code": "417096006"}
        v["TO_DAT_TASK"] = await walk.refer(v["GP_ROLE"], v["DAT"], "to-dat", coding)
        return [v["TO_DAT_TASK"]]

    async def dat_task() -> list[str]:
        task = await walk.get(v["TO_DAT_TASK"])
        shown = {"status": task["status"], "businessStatus": _business(task)}
        return [compact({**shown, "owner": task["owner"]["display"]})]

    async def accept_dat() -> list[str]:
        return [await walk.move(v["TO_DAT_TASK"], "accepted")]

    async def care_plan() -> list[str]:
        found = await walk.get("CarePlan", subject=f"Patient/{v['PATIENT']}")
        v["PLAN"] = str(found["entry"][0]["resource"]["id"])
        plan = await walk.get(f"CarePlan/{v['PLAN']}")
        phases = [
            {"phase": a["detail"]["code"]["coding"][0]["code"], "status": a["detail"]["status"]}
            for a in plan["activity"]
        ]
        return [compact(phases)]

    def set_phase(index: int, status: str) -> Step:
        async def run() -> list[str]:
            answer = await walk.patch(
                f"CarePlan/{v['PLAN']}", f"/activity/{index}/detail/status", status
            )
            if answer.get("resourceType") == "OperationOutcome":
                return [answer["issue"][0]["diagnostics"]]
            return [compact([a["detail"]["status"] for a in answer["activity"]])]

        return run

    async def refer_to_psy() -> list[str]:
        coding = {"system": SNOMED, "code": "309625004"}
        v["PSY_TASK"] = await walk.refer(v["DAT_ROLE"], v["PSY"], "to-psy", coding)
        task = await walk.get(v["PSY_TASK"])
        return [
            compact(
                {
                    "status": task["status"],
                    "businessStatus": _business(task),
                    "reason": task["statusReason"]["text"],
                }
            )
        ]

    async def detected_issue() -> list[str]:
        found = await walk.get("DetectedIssue", patient=f"Patient/{v['PATIENT']}")
        issue = found["entry"][0]["resource"]
        return [issue["severity"], issue["detail"]]

    async def try_accept_held() -> list[str]:
        return [await walk.move(v["PSY_TASK"], "accepted")]

    async def evidence() -> list[str]:
        alcohol = await walk.observe(ALCOHOL, "2026-07-01")
        return [alcohol, await walk.observe(ANY_DRUG, "2026-05-15")]

    def task_state(name: str) -> Step:
        async def run() -> list[str]:
            task = await walk.get(v[name])
            return [compact({"status": task["status"], "businessStatus": _business(task)})]

        return run

    async def mitigation() -> list[str]:
        found = await walk.get("DetectedIssue", patient=f"Patient/{v['PATIENT']}")
        return [found["entry"][0]["resource"]["mitigation"][0]["action"]["text"]]

    async def treat_psy() -> list[str]:
        return [await walk.move(v["PSY_TASK"], s) for s in ("accepted", "in-progress", "completed")]

    async def review() -> list[str]:
        body = {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": CODES, "code": "readiness-review"}]},
            "subject": {"reference": f"Patient/{v['PATIENT']}"},
            "effectiveDateTime": "2026-11-30",
            "performer": [{"display": "Community psychiatric nurse"}],
            "valueCodeableConcept": {"coding": [{"system": CODES, "code": "ready"}]},
            "note": [{"text": "Grounding skills in use; safety plan reviewed"}],
        }
        return [str((await walk.fhir.execute("Observation", data=body))["id"])]

    async def refer_emdr() -> list[str]:
        coding = {"system": CODES, "code": "emdr"}
        v["TF_TASK"] = await walk.refer(v["DAT_ROLE"], v["PSY"], "trauma", coding)
        task = await walk.get(v["TF_TASK"])
        return [compact({"status": task["status"], "reason": task["statusReason"]["text"]})]

    async def timeline() -> list[str]:
        answer = await walk.get(f"ServiceRequest/{walk.requests['to-psy']}/$timeline")
        clock = next(p for p in answer["parameter"] if p["name"] == "clock")
        parts = {p["name"]: _second(p) for p in clock["part"]}
        keys = ("endedBy", "waitedDays", "daysSinceReferral", "daysHeldByGates", "stillWaiting")
        return [compact({k: parts.get(k) for k in keys})]

    async def pathway() -> list[str]:
        return pathway_lines(await walk.get(f"Patient/{v['PATIENT']}/$pathway"))

    return [
        ("PATIENT=$(curl", make_patient),
        ("GP=$(svc solway-gp1)", services),
        ("GP_ROLE=$(role $GP)", roles),
        ("TO_DAT_TASK=$(refer", refer_to_dat),
        ('curl -s -H "$AUTH" $B/$TO_DAT_TASK', dat_task),
        ("move $TO_DAT_TASK accepted", accept_dat),
        ("PLAN=$(curl", care_plan),
        ('"/activity/0/detail/status","value":"in-progress"', set_phase(0, "in-progress")),
        ("PSY_TASK=$(refer", refer_to_psy),
        ("DetectedIssue?patient", detected_issue),
        ("move $PSY_TASK accepted", try_accept_held),
        ("obs 53041004", evidence),
        ('curl -s -H "$AUTH" $B/$PSY_TASK', task_state("PSY_TASK")),
        ("mitigation[0].action.text", mitigation),
        ("for s in accepted in-progress completed", treat_psy),
        ("readiness-review", review),
        ("TF_TASK=$(refer", refer_emdr),
        ('"/activity/1/detail/status","value":"in-progress"', set_phase(1, "in-progress")),
        ('"/activity/0/detail/status","value":"completed"', set_phase(0, "completed")),
        ('curl -s -H "$AUTH" $B/$TF_TASK', task_state("TF_TASK")),
        ("$timeline", timeline),
        ("$pathway", pathway),
    ]


async def test_the_walk_through_answers_as_documented(live_server: LiveServer) -> None:
    await _seed(live_server)
    documented = documented_steps()
    steps = _steps(Walk(live_server))
    assert len(steps) == len(documented), "the walk-through has other steps than this test"
    for (marker, step), (command, shown) in zip(steps, documented, strict=True):
        assert marker in command, f"documented step '{command}' is not the test's '{marker}'"
        answered = await step()
        assert [normal(line) for line in answered] == [normal(line) for line in shown], command
