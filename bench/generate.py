"""Scale data for Waymark: ``python -m bench.generate --count 1000000``.

Makes a PostgreSQL database (default ``waymark_bench_scale``), migrates it with the app's own
Alembic migration (:func:`app.migrate.upgrade`) and loads ``--count`` current resources, each
with its first version, in a realistic mix and order:

* a directory first: ``--organizations`` Organizations (GP practices, trusts, prisons, third
  sector), ``--services`` HealthcareServices (drug and alcohol, psychology, CMHT, ...: the
  Waymark service kind in ``type``, as the app reads it, with a SNOMED CT type beside it) and
  one PractitionerRole per service (its referrers: ``healthcareService`` = the service);
* then, in blocks of 20 in time order: 2 Patients (valid NHS numbers, modulus 11), 3 referrals
  (ServiceRequest, category SNOMED 3457005, subject, requester = the PractitionerRole of a
  sending service, performer = a HealthcareService, along a route of the seeded
  ``referral-routes`` PlanDefinition, with the extensions the app adds: ``referral-task``,
  ``referring-service``, and ``liberation-date`` for throughcare from prison), each followed
  by its Task (the app's shape: focus, for, owner = the same service, code and requester of
  the referral; status by age: old referrals are mostly completed, recent ones mostly
  requested or in progress; businessStatus from CodeSystem ``referral-state``, a
  ``statusReason`` where the workflow needs one), and 12 Observations (AUDIT-C, units of
  alcohol, gate evidence: ``gate-evidence|last-use-date`` and ``|use-days-past-28`` with the
  substance in a component, and readiness reviews ``pathway-codes|readiness-review``).

So 10% Patients, 15% ServiceRequests, 15% Tasks and 60% Observations; busy services (drug and
alcohol) get more referrals than quiet ones (Zipf weights), as in life; services of a kind no
route leads into (third sector, social work) receive none. The Waymark codes and URLs are the
app's (``app.canonical``, ``app.pathway``) and the displays those of ``seed/terminology``, so a
code the app does not know fails at import. No pathway projection rows are written (no write
hook runs), and the definitions are not loaded: run ``waymark seed`` on the database before
serving it (``bench.search_scale`` does).

The rows are the app's own: each document goes through ``FhirStore._write`` (the code a create
runs after validation: ``meta``, the stored bytes, :func:`app.fhir.search.index.index_rows`) with a
repository that captures what would be written, and the values are those of
:func:`app.fhir.repository._pg_parameters`, the parameters of the app's one-statement create.
Validation (fhir.resources, ~0.4 ms a resource) runs on a sample (the first 20 of each type and
one in ``--validate-every``); ``--validate-every 1`` validates all. The rows are loaded with
asyncpg ``copy_records_to_table`` in batches. The migration's secondary indexes are dropped for
the load and recreated after it from their own definitions (``pg_indexes.indexdef``), as a
bulk load would; ``--keep-indexes`` loads into the indexed tables instead. VACUUM (ANALYZE) ends
the load (autovacuum may be off on a shared server, and index-only scans need the visibility map).

It prints the load time and the size of every table and index, and writes them to
``bench/results/scale-load-<count>-<time>.json``. ``--sizes`` only prints the sizes of an
existing database; ``--drop`` drops it.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from sqlalchemy.engine import make_url

from app.fhir.hooks import WriteHooks
from app.fhir.identifiers import NHS_NUMBER_SYSTEM, ODS_ORGANIZATION_SYSTEM
from app.fhir.repository import ResourceRepository, StoredVersion, _pg_parameters
from app.fhir.search.index import IndexRows
from app.fhir.store import FhirStore
from app.fhir.validation import validate_resource
from app.pathway.codes import (
    HOLD_REASON,
    LIBERATION_DATE,
    PATIENT_REFERRAL,
    REFERRAL_STATE,
    REFERRAL_TASK,
    REFERRING_SERVICE,
    SERVICE_KIND,
)
from app.pathway.directory import Routes, _routes_of
from app.pathway.gates import GATE_EVIDENCE, GATE_SUBSTANCES, SERVICE_ID
from app.pathway.phases import PATHWAY_CODES, READINESS_REVIEW, REVIEW_ANSWERS
from app.pathway.seed import seed_dir

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
DEFAULT_POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
DEFAULT_DATABASE = "waymark_bench_scale"
BASE_URL = "http://127.0.0.1:8000"  # what the served app calls itself; absolute refs use it
CHI_SYSTEM = "https://fhir.nhs.scot/Id/chi-number"

SNOMED = "http://snomed.info/sct"  # == app.pathway.codes.SNOMED
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
UK_CORE = "https://fhir.hl7.org.uk/StructureDefinition"
UK_CODES = "https://fhir.hl7.org.uk/CodeSystem"
UBRN_SYSTEM = "https://fhir.nhs.uk/Id/UBRN"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"

#: The tables the app writes, and the columns of each, in the order rows are built below.
TABLES: dict[str, tuple[str, ...]] = {
    "resource": ("resource_type", "id", "version_id", "last_updated", "deleted", "content"),
    "resource_version": (
        "resource_type",
        "id",
        "version_id",
        "last_updated",
        "deleted",
        "method",
        "content",
    ),
    "search_token": ("resource_type", "param", "system", "code", "code_key", "resource_id"),
    "search_string": ("resource_type", "param", "value", "exact", "value_key", "resource_id"),
    "search_reference": ("resource_type", "param", "target_type", "target_id", "resource_id"),
    "search_date": ("resource_type", "param", "low", "high", "resource_id"),
    "search_quantity": ("resource_type", "param", "value", "system", "code", "resource_id"),
}


# -- Waymark's terminology and routes, as the app serves them ----------------------------------


def _seed_file(name: str) -> dict[str, Any]:
    document: dict[str, Any] = orjson.loads((seed_dir() / name).read_bytes())
    return document


def _code_system(url: str) -> dict[str, str]:
    """Code -> display of a Waymark CodeSystem (``seed/terminology``)."""
    document = _seed_file(f"terminology/CodeSystem-{url.rsplit('/', 1)[-1]}.json")
    assert document["url"] == url, (document["url"], url)
    found: dict[str, str] = {}
    concepts = list(document.get("concept", []))
    while concepts:
        concept = concepts.pop(0)
        found[concept["code"]] = concept.get("display", concept["code"])
        concepts += concept.get("concept", [])
    return found


def _value_set(url: str) -> list[tuple[str, str, str]]:
    """(system, code, display) of the concepts a Waymark ValueSet lists."""
    document = _seed_file(f"terminology/ValueSet-{url.rsplit('/', 1)[-1]}.json")
    assert document["url"] == url, (document["url"], url)
    return [
        (include["system"], concept["code"], concept.get("display", concept["code"]))
        for include in document["compose"]["include"]
        for concept in include.get("concept", [])
    ]


DISPLAYS = {
    system: _code_system(system)
    for system in (SERVICE_KIND, REFERRAL_STATE, HOLD_REASON, PATHWAY_CODES, GATE_EVIDENCE)
}
#: The substances an abstinence gate may name (SNOMED CT), for gate evidence.
EVIDENCE_SUBSTANCES = _value_set(GATE_SUBSTANCES)
#: Which service kinds may refer into which: the seeded referral-routes PlanDefinition.
ROUTES: Routes = _routes_of([_seed_file("pathway/PlanDefinition-referral-routes.json")])


def waymark_coding(system: str, code: str) -> dict[str, str]:
    """A coding of a Waymark CodeSystem with its display (KeyError: not a code it has)."""
    return {"system": system, "code": code, "display": DISPLAYS[system][code]}


#: One block of the time-ordered stream (after the directory): P(atient), R(eferral, then its
#: Task), O(bservation). 20 resources: 2 P, 3 R + 3 T, 12 O.
BLOCK = "POOROOOROOPOOOROO"
BLOCK_SIZE = sum(2 if kind == "R" else 1 for kind in BLOCK)
assert BLOCK_SIZE == 20

SPAN_DAYS = 3 * 365  # the data covers three years, ending at --end


# -- identifiers ---------------------------------------------------------------------------------


def resource_id(seed: int, kind: str, number: int) -> str:
    """A UUID (version 4 layout, as the app gives out) that any process can recompute."""
    digest = hashlib.blake2b(f"{seed}:{kind}:{number}".encode(), digest_size=16).digest()
    return str(uuid.UUID(bytes=digest, version=4))


def nhs_number(number: int, base: int = 900_000_000) -> str:
    """A valid NHS number (modulus 11), different for every ``number``.

    Nine digits ``base + 2 * number``; when that has no valid check digit (remainder 1), the odd
    neighbour has one (its weighted sum is 2 larger) and no other number uses odd bases.
    """
    weights = (10, 9, 8, 7, 6, 5, 4, 3, 2)
    for nine in (base + 2 * number, base + 2 * number + 1):
        digits = f"{nine:09d}"
        check = (11 - sum(int(d) * w for d, w in zip(digits, weights, strict=True)) % 11) % 11
        if check != 10:
            return digits + str(check)
    raise AssertionError("unreachable")


# -- the mix -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mix:
    """How many of each resource type a load of ``count`` resources holds."""

    count: int
    organizations: int
    services: int

    @property
    def roles(self) -> int:
        """PractitionerRoles: one per service."""
        return self.services

    @property
    def directory(self) -> int:
        return self.organizations + self.services + self.roles

    @property
    def stream(self) -> int:
        return max(0, self.count - self.directory)

    def of(self, letter: str) -> int:
        """Resources of one kind (P, R, T, O) in the stream."""
        full, rest = divmod(self.stream, BLOCK_SIZE)
        per_block = {"P": 2, "R": 3, "T": 3, "O": 12}[letter]
        return full * per_block + sum(1 for kind in _block_sequence()[:rest] if kind == letter)


def _block_sequence() -> list[str]:
    sequence = []
    for kind in BLOCK:
        sequence += ["R", "T"] if kind == "R" else [kind]
    return sequence


DRUG_ALCOHOL_REFERRAL = "Referral to community drug and alcohol team"
SERVICE_KINDS = (
    # kind, share of services, referral code, display, name
    ("drug-alcohol", 0.30, "417096006", DRUG_ALCOHOL_REFERRAL, "Drug and Alcohol Team"),
    ("psychology", 0.15, "309625004", "Referral to psychology service", "Psychology Service"),
    ("cmht", 0.15, "390866009", "Referral to mental health team", "Community Mental Health Team"),
    ("gp", 0.10, "183561008", "Referral to general practitioner", "Shared Care GP Service"),
    ("pharmacy", 0.10, "306179008", "Referral to pharmacy service", "Community Pharmacy"),
    ("prison", 0.05, "417096006", DRUG_ALCOHOL_REFERRAL, "Prison Healthcare"),
    ("third-sector", 0.10, "431719007", "Referral to domestic violence advocate", "Recovery Hub"),
    ("social-work", 0.05, "710911006", "Referral to housing service", "Social Work Team"),
)  # fmt: skip

ORG_KINDS = (
    ("gp", 0.70, "prov", "Healthcare Provider", "Medical Practice"),
    ("trust", 0.15, "prov", "Healthcare Provider", "NHS Trust"),
    ("prison", 0.05, "govt", "Government", "HMP"),
    ("third-sector", 0.10, "cg", "Community Group", "Recovery Community"),
)

_FAMILY = (
    "Smith Jones Taylor Brown Williams Wilson Johnson Davies Robinson Wright Thompson Evans "
    "Walker White Roberts Green Hall Wood Jackson Clarke Patel Khan Lewis James Phillips Mason "
    "Mitchell Rose Davis Rodriguez Cox Alexander Morgan Kowalski Murphy Campbell Stewart "
    "MacDonald Scott Reid Murray Ross Watson Fraser Hughes O'Brien Nowak Ahmed Begum Singh"
)
FAMILY = _FAMILY.split()
_GIVEN_F = "Olivia Amelia Isla Ava Mia Grace Sophia Emily Jane Anne Fatima Aisha Chloe Ruby"
_GIVEN_M = "Oliver George Noah Arthur Harry Leo Jack Thomas James Mohammed David Callum Euan"
GIVEN_F, GIVEN_M = _GIVEN_F.split(), _GIVEN_M.split()
REASONS = (
    ("75544000", "Opioid dependence"),
    ("66590003", "Alcohol dependence"),
    ("47505003", "Post-traumatic stress disorder"),
)
ORG_TYPE = "http://terminology.hl7.org/CodeSystem/organization-type"
ETHNIC_CS = f"{UK_CODES}/UKCore-EthnicCategoryEngland"
CITIES = (
    ("Leeds", "West Yorkshire", "LS"),
    ("Glasgow", "Lanarkshire", "G"),
    ("Dumfries", "Dumfries and Galloway", "DG"),
    ("Kirkwall", "Orkney", "KW"),
    ("Manchester", "Greater Manchester", "M"),
    ("Bristol", "Bristol", "BS"),
    ("Newcastle upon Tyne", "Tyne and Wear", "NE"),
    ("Cardiff", "South Glamorgan", "CF"),
)
STREETS = "High Street|Station Road|Church Lane|Victoria Road|Mill Lane|Boar Lane|King Street"
ETHNIC = (("A", "White - British"), ("B", "White - Irish"), ("H", "Asian - Indian"),
          ("J", "Asian - Pakistani"), ("N", "Black - African"), ("Z", "Not stated"))  # fmt: skip

TASK_STATES = {
    # status: the businessStatus codes (CodeSystem referral-state) a Task in it may have
    "requested": ("awaiting-triage",),
    "received": ("triaged",),
    "accepted": ("waiting-list", "waiting-list", "appointment-booked"),
    "in-progress": ("in-treatment",),
    "on-hold": ("on-hold",),
    "completed": ("discharged",),
    "rejected": ("declined",),
    "cancelled": ("withdrawn",),
    "failed": ("discharged",),
}
# Why, for the statuses the workflow wants a statusReason for (app.pathway.workflow.NEEDS_REASON):
# holds are coded from hold-reason (not gate-not-met: no gate held these), the rest are text.
HOLD_REASONS = ("patient-unavailable", "patient-in-hospital", "awaiting-information",
                "service-capacity")  # fmt: skip
STATUS_REASONS = {
    "rejected": ("Does not meet the service's criteria; advice sent to the referrer",
                 "Already known to another team in the area"),
    "cancelled": ("Withdrawn at the person's request", "Moved out of the area"),
    "failed": ("Did not attend after three offers of an appointment",
               "No contact after repeated attempts"),
}  # fmt: skip
# Task status by the referral's age: (days younger than, [(status, weight), ...]).
TASK_STATUS_BY_AGE = (
    (21, (("requested", 55), ("received", 15), ("accepted", 15), ("on-hold", 10),
          ("rejected", 5))),
    (120, (("requested", 5), ("accepted", 25), ("in-progress", 40), ("on-hold", 15),
           ("rejected", 10), ("cancelled", 5))),
    (10**6, (("completed", 70), ("in-progress", 8), ("rejected", 8), ("cancelled", 8),
             ("failed", 4), ("on-hold", 2))),
)  # fmt: skip
SR_STATUS_FOR_TASK = {
    "completed": "completed",
    "rejected": "revoked",
    "cancelled": "revoked",
    "failed": "revoked",
}


# -- documents -----------------------------------------------------------------------------------


def _coding(system: str, code: str, display: str) -> dict[str, str]:
    return {"system": system, "code": code, "display": display}


def _concept(system: str, code: str, display: str) -> dict[str, Any]:
    return {"coding": [_coding(system, code, display)], "text": display}


NHS_VERIFIED = _coding(
    f"{UK_CODES}/UKCore-NHSNumberVerificationStatusEngland", "01", "Number present and verified"
)


def _day(moment: datetime) -> str:
    return moment.date().isoformat()


def _instant(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S+00:00")


def _postcode(rng: random.Random, area: str) -> str:
    letters = "ABDEFGHJLNPQRSTUWXYZ"
    return (
        f"{area}{rng.randint(1, 29)} {rng.randint(1, 9)}{rng.choice(letters)}{rng.choice(letters)}"
    )


def _address(rng: random.Random) -> dict[str, Any]:
    city, district, area = rng.choice(CITIES)
    return {
        "use": "home",
        "line": [f"{rng.randint(1, 220)} {rng.choice(STREETS.split('|'))}"],
        "city": city,
        "district": district,
        "postalCode": _postcode(rng, area),
        "country": "GB",
    }


class Directory:
    """Organizations, HealthcareServices and their PractitionerRoles: ids, kinds, names, and
    how busy each service is."""

    def __init__(self, seed: int, organizations: int, services: int) -> None:
        rng = random.Random(seed * 7 + 1)
        self.seed = seed
        self.org_ids = [resource_id(seed, "Organization", n) for n in range(organizations)]
        self.org_kinds = [_weighted(rng, [(k, w) for k, w, *_ in ORG_KINDS]) for _ in self.org_ids]
        self.gp_orgs = [
            i for i, kind in zip(self.org_ids, self.org_kinds, strict=True) if kind == "gp"
        ]
        self.gp_orgs = self.gp_orgs or self.org_ids
        self.service_ids = [resource_id(seed, "HealthcareService", n) for n in range(services)]
        self.service_kinds = [
            _weighted(rng, [(k[0], k[1]) for k in SERVICE_KINDS]) for _ in self.service_ids
        ]
        self.service_org = [rng.choice(self.org_ids) for _ in self.service_ids]
        # Zipf-like weights: a few services take many referrals, most take a few.
        order = list(range(services))
        rng.shuffle(order)
        self.service_weights = [1.0 / (1 + order[n]) ** 0.8 for n in range(services)]
        self.service_names = [
            f"{rng.choice(CITIES)[0]} {_service_kind(kind)[4]}" for kind in self.service_kinds
        ]
        self.role_ids = [resource_id(seed, "PractitionerRole", n) for n in range(services)]
        self.by_kind: dict[str, list[int]] = {}
        for n, kind in enumerate(self.service_kinds):
            self.by_kind.setdefault(kind, []).append(n)
        # Referrals go only along the routes: into a kind some kind present may refer into.
        receiving = [
            weight if self.senders_into(kind) else 0.0
            for kind, weight in zip(self.service_kinds, self.service_weights, strict=True)
        ]
        self._cumulative = list(_accumulate(receiving if any(receiving) else self.service_weights))

    def senders_into(self, kind: str) -> list[str]:
        """The kinds present in the directory that may refer into ``kind``."""
        return sorted(k for k in ROUTES.into.get(kind, ()) if self.by_kind.get(k))

    def pick_sender(self, rng: random.Random, service: int) -> int | None:
        """A service that may refer into ``service`` (None when no route leads into it)."""
        kinds = self.senders_into(self.service_kinds[service])
        return rng.choice(self.by_kind[rng.choice(kinds)]) if kinds else None

    @classmethod
    def from_ids(
        cls, seed: int, org_ids: list[str], gp_orgs: list[str], service_ids: list[str]
    ) -> Directory:
        """A directory of resources already stored (kinds and weights drawn afresh)."""
        directory = cls(seed, len(org_ids), len(service_ids))
        directory.org_ids, directory.gp_orgs = org_ids, gp_orgs or org_ids
        directory.service_ids = service_ids
        return directory

    def pick_service(self, rng: random.Random) -> int:
        return _bisect(self._cumulative, rng.random() * self._cumulative[-1])


def _accumulate(values: Sequence[float]) -> Iterator[float]:
    total = 0.0
    for value in values:
        total += value
        yield total


def _bisect(cumulative: Sequence[float], x: float) -> int:
    low, high = 0, len(cumulative) - 1
    while low < high:
        mid = (low + high) // 2
        if cumulative[mid] < x:
            low = mid + 1
        else:
            high = mid
    return low


def _weighted(rng: random.Random, choices: Sequence[tuple[str, float]]) -> str:
    x = rng.random() * sum(w for _, w in choices)
    for value, weight in choices:
        x -= weight
        if x < 0:
            return value
    return choices[-1][0]


def organization(d: Directory, n: int, rng: random.Random) -> dict[str, Any]:
    kind = d.org_kinds[n]
    _, _, type_code, type_display, suffix = next(k for k in ORG_KINDS if k[0] == kind)
    name = (
        f"{rng.choice(FAMILY)} {suffix}" if kind != "prison" else f"{suffix} {rng.choice(FAMILY)}"
    )
    document: dict[str, Any] = {
        "resourceType": "Organization",
        "identifier": [
            {"system": ODS_ORGANIZATION_SYSTEM, "value": f"{'ABCDEFGHJKLM'[n % 12]}{81000 + n}"}
        ],
        "active": True,
        "type": [_concept(ORG_TYPE, type_code, type_display)],
        "name": name,
        "telecom": [{"system": "phone", "value": f"0113 496 {n % 10000:04d}", "use": "work"}],
        "address": [_address(rng) | {"use": "work"}],
    }
    if kind == "gp" and n > 0:
        document["partOf"] = {"reference": f"Organization/{d.org_ids[0]}"}
    return document


def _service_kind(kind: str) -> tuple[str, float, str, str, str]:
    return next(k for k in SERVICE_KINDS if k[0] == kind)


def healthcare_service(d: Directory, n: int, rng: random.Random) -> dict[str, Any]:
    """A service as the app reads one (app.pathway.directory.service_from): active, one
    Waymark service kind in ``type``; a SNOMED CT type beside it."""
    kind = d.service_kinds[n]
    entry = _service_kind(kind)
    kind_coding = waymark_coding(SERVICE_KIND, kind)
    return {
        "resourceType": "HealthcareService",
        "identifier": [{"system": SERVICE_ID, "value": f"svc-{n:04d}"}],
        "active": True,
        "providedBy": {"reference": f"Organization/{d.service_org[n]}"},
        "type": [
            {"coding": [kind_coding], "text": kind_coding["display"]},
            _concept(SNOMED, entry[2], entry[3]),
        ],
        "name": d.service_names[n],
        "telecom": [{"system": "email", "value": f"svc{n}@example.nhs.uk", "use": "work"}],
    }


def practitioner_role(d: Directory, n: int) -> dict[str, Any]:
    """The referrers of service ``n``: how UK Core names a referral's sending service."""
    return {
        "resourceType": "PractitionerRole",
        "active": True,
        "organization": {"reference": f"Organization/{d.service_org[n]}"},
        "healthcareService": [
            {"reference": f"HealthcareService/{d.service_ids[n]}", "display": d.service_names[n]}
        ],
        "telecom": [{"system": "email", "value": f"referrals{n}@example.nhs.uk", "use": "work"}],
    }


def patient(d: Directory, n: int, rng: random.Random, when: datetime) -> dict[str, Any]:
    female = rng.random() < 0.45
    given = rng.sample(GIVEN_F if female else GIVEN_M, 2)
    family = rng.choice(FAMILY)
    born = date(1950, 1, 1) + timedelta(days=rng.randint(0, 50 * 365))
    ethnic = rng.choice(ETHNIC)
    document: dict[str, Any] = {
        "resourceType": "Patient",
        "meta": {"profile": [f"{UK_CORE}/UKCore-Patient"]},
        "extension": [
            {
                "url": f"{UK_CORE}/Extension-UKCore-EthnicCategory",
                "valueCodeableConcept": {"coding": [_coding(ETHNIC_CS, *ethnic)]},
            }
        ],
        "identifier": [
            {
                "extension": [
                    {
                        "url": f"{UK_CORE}/Extension-UKCore-NHSNumberVerificationStatus",
                        "valueCodeableConcept": {"coding": [NHS_VERIFIED]},
                    }
                ],
                "system": NHS_NUMBER_SYSTEM,
                "value": nhs_number(n),
            }
        ],
        "active": True,
        "name": [
            {"use": "official", "family": family, "given": given, "period": {"start": _day(when)}}
        ],
        "telecom": [{"system": "phone", "value": f"07700 9{n % 100000:05d}", "use": "mobile"}],
        "gender": "female" if female else ("male" if rng.random() < 0.98 else "other"),
        "birthDate": born.isoformat(),
        "address": [_address(rng)],
        "generalPractitioner": [{"reference": f"Organization/{rng.choice(d.gp_orgs)}"}],
    }
    if rng.random() < 0.3:
        document["name"].append({"use": "usual", "given": [given[0][:3]]})
    return document


def referral(
    n: int,
    rng: random.Random,
    when: datetime,
    *,
    kind: str,
    subject: str,
    requester: str,
    performer: str,
    status: str = "active",
) -> dict[str, Any]:
    """A referral into a service of ``kind`` as a sending system makes one (references as
    given: ``Patient/<id>`` or a ``urn:uuid:``, ``PractitionerRole/<id>``, ...)."""
    entry = _service_kind(kind)
    return {
        "resourceType": "ServiceRequest",
        "identifier": [{"system": UBRN_SYSTEM, "value": f"{n:012d}"}],
        "status": status,
        "intent": "order",
        "category": [_concept(SNOMED, PATIENT_REFERRAL, "Patient referral")],
        "priority": "urgent" if rng.random() < 0.1 else "routine",
        "code": _concept(SNOMED, entry[2], entry[3]),
        "subject": {"reference": subject},
        "authoredOn": _instant(when),
        "requester": {"reference": requester},
        "performer": [{"reference": performer}],
        "reasonCode": [_concept(SNOMED, *rng.choice(REASONS))],
        "note": [{"text": "Referred after review; consent to share recorded."}],
    }


def service_request(
    d: Directory,
    n: int,
    rng: random.Random,
    when: datetime,
    patient_id: str,
    service: int,
    status: str,
    *,
    task_id: str,
    sender: int | None,
) -> dict[str, Any]:
    """A referral as the app stores it: the sender's PractitionerRole as requester, and the
    extensions the server keeps (its Task, the referring service; the liberation date of
    throughcare from prison, which the sender gives)."""
    requester = (
        f"PractitionerRole/{d.role_ids[sender]}"
        if sender is not None
        else f"Organization/{rng.choice(d.gp_orgs)}"
    )
    document = referral(
        n,
        rng,
        when,
        kind=d.service_kinds[service],
        subject=f"Patient/{patient_id}",
        requester=requester,
        performer=f"HealthcareService/{d.service_ids[service]}",
        status=status,
    )
    extensions: list[dict[str, Any]] = []
    if sender is not None:
        route = (d.service_kinds[sender], d.service_kinds[service])
        if route in ROUTES.needs_liberation_date:
            liberation = when.date() + timedelta(days=rng.randint(7, 120))
            extensions.append({"url": LIBERATION_DATE, "valueDate": liberation.isoformat()})
    extensions.append({"url": REFERRAL_TASK, "valueReference": {"reference": f"Task/{task_id}"}})
    if sender is not None:
        extensions.append(
            {
                "url": REFERRING_SERVICE,
                "valueReference": {
                    "reference": f"HealthcareService/{d.service_ids[sender]}",
                    "display": d.service_names[sender],
                },
            }
        )
    return {"resourceType": "ServiceRequest", "extension": extensions} | document


def task(
    d: Directory,
    rng: random.Random,
    when: datetime,
    service_request: dict[str, Any],
    sr_id: str,
    patient_id: str,
    service: int,
    status: str,
) -> dict[str, Any]:
    """The referral's Task as the app makes it (app.pathway.referrals), then moved along the
    workflow to ``status`` with the business state and reason such a move carries."""
    document: dict[str, Any] = {
        "resourceType": "Task",
        "status": status,
        "businessStatus": {
            "coding": [waymark_coding(REFERRAL_STATE, rng.choice(TASK_STATES[status]))]
        },
        "intent": "order",
        "focus": {"reference": f"ServiceRequest/{sr_id}"},
        "for": {"reference": f"Patient/{patient_id}"},
        "authoredOn": service_request["authoredOn"],
        "lastModified": _instant(when + timedelta(hours=rng.randint(0, 24 * 30))),
        "owner": {
            "reference": f"HealthcareService/{d.service_ids[service]}",
            "display": d.service_names[service],
        },
        "requester": service_request["requester"],
        "code": service_request["code"],
    }
    if status == "on-hold":
        reason = waymark_coding(HOLD_REASON, rng.choice(HOLD_REASONS))
        document["statusReason"] = {"coding": [reason], "text": reason["display"]}
    elif status in STATUS_REASONS:
        document["statusReason"] = {"text": rng.choice(STATUS_REASONS[status])}
    if status not in ("requested", "received"):
        document["executionPeriod"] = {"start": _instant(when + timedelta(days=rng.randint(1, 21)))}
    return document


def observation(
    d: Directory, rng: random.Random, when: datetime, patient_id: str, sr_id: str | None
) -> dict[str, Any]:
    document: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": _instant(when),
        "performer": [{"reference": f"Organization/{rng.choice(d.org_ids)}"}],
    }
    roll = rng.random()
    if roll < 0.35:
        document["category"] = [_concept(OBS_CATEGORY, "survey", "Survey")]
        document["code"] = _concept(LOINC, "75626-2", "Total score [AUDIT-C]")
        document["valueQuantity"] = {
            "value": rng.randint(0, 12),
            "system": UCUM,
            "code": "{score}",
            "unit": "score",
        }
    elif roll < 0.60:
        document["category"] = [_concept(OBS_CATEGORY, "social-history", "Social History")]
        document["code"] = _concept(SNOMED, "1082641000000106", "Alcohol units consumed per week")
        document["valueQuantity"] = {
            "value": rng.randint(0, 140),
            "system": UCUM,
            "code": "/wk",
            "unit": "units/week",
        }
    elif roll < 0.95:
        # Gate evidence (docs/gates.md, "Evidence"): the date of last use, or days used in the
        # past 28, of a substance the gates may name, in a component.
        system, code, display = rng.choice(EVIDENCE_SUBSTANCES)
        document["category"] = [_concept(OBS_CATEGORY, "social-history", "Social History")]
        if roll < 0.85:
            document["code"] = {"coding": [waymark_coding(GATE_EVIDENCE, "last-use-date")]}
            document["valueDateTime"] = _day(when - timedelta(days=rng.randint(0, 400)))
        else:
            document["code"] = {"coding": [waymark_coding(GATE_EVIDENCE, "use-days-past-28")]}
            document["valueInteger"] = rng.choice((0, 0, 0, 1, 2, 4, 8, 12, 20, 28))
        document["component"] = [
            {
                "code": {"coding": [waymark_coding(GATE_EVIDENCE, "substance")]},
                "valueCodeableConcept": _concept(system, code, display),
            }
        ]
    else:
        # A readiness review (docs/phases.md): ready, not-ready or deferred, with performer,
        # date and note.
        document["category"] = [_concept(OBS_CATEGORY, "survey", "Survey")]
        document["code"] = {"coding": [waymark_coding(PATHWAY_CODES, READINESS_REVIEW)]}
        answer = waymark_coding(PATHWAY_CODES, rng.choice(REVIEW_ANSWERS))
        document["valueCodeableConcept"] = {"coding": [answer], "text": answer["display"]}
        document["note"] = [{"text": "Grounding skills in use; safety plan reviewed."}]
    if sr_id is not None:
        document["basedOn"] = [{"reference": f"ServiceRequest/{sr_id}"}]
    return document


# -- the stream ----------------------------------------------------------------------------------


@dataclass
class Planned:
    resource_type: str
    id: str
    when: datetime
    document: dict[str, Any]


@dataclass
class Counters:
    patients: int = 0
    referrals: int = 0
    tasks: int = 0
    observations: int = 0
    by_type: dict[str, int] = field(default_factory=dict)


def stream(mix: Mix, seed: int, end: datetime) -> Iterator[Planned]:
    """Every resource of the load, in time order, directory first."""
    d = Directory(seed, mix.organizations, mix.services)
    rng = random.Random(seed)
    start = end - timedelta(days=SPAN_DAYS)
    directory_time = start - timedelta(days=30)
    for n, org_id in enumerate(d.org_ids):
        yield Planned("Organization", org_id, directory_time, organization(d, n, rng))
    for n, svc_id in enumerate(d.service_ids):
        yield Planned("HealthcareService", svc_id, directory_time, healthcare_service(d, n, rng))
    for n, role_id in enumerate(d.role_ids):
        yield Planned("PractitionerRole", role_id, directory_time, practitioner_role(d, n))
    total = mix.stream
    sequence = _block_sequence()
    patients = referrals = 0
    # The referral whose Task comes next: SR id, its document, patient id, service, Task status.
    last_referral: tuple[str, dict[str, Any], str, int, str] | None = None
    recent_referrals: list[tuple[str, str]] = []  # (SR id, patient id), for Observations
    step = SPAN_DAYS * 86400 / max(1, total)
    for position in range(total):
        when = start + timedelta(seconds=position * step + rng.random() * step)
        kind = sequence[position % BLOCK_SIZE]
        if kind == "P" or patients == 0:
            pid = resource_id(seed, "Patient", patients)
            yield Planned("Patient", pid, when, patient(d, patients, rng, when))
            patients += 1
            continue
        if kind == "R":
            # Most referrals are of people already known; a quarter of the recent ones.
            if rng.random() < 0.25:
                who = max(0, patients - 1 - int(rng.random() * min(patients, 2000)))
            else:
                who = rng.randrange(patients)
            patient_id = resource_id(seed, "Patient", who)
            service = d.pick_service(rng)
            age_days = (end - when).total_seconds() / 86400
            weights = next(w for limit, w in TASK_STATUS_BY_AGE if age_days < limit)
            task_status = _weighted(rng, weights)
            sr_status = SR_STATUS_FOR_TASK.get(task_status, "active")
            sr_id = resource_id(seed, "ServiceRequest", referrals)
            document = service_request(
                d,
                referrals,
                rng,
                when,
                patient_id,
                service,
                sr_status,
                task_id=resource_id(seed, "Task", referrals),
                sender=d.pick_sender(rng, service),
            )
            yield Planned("ServiceRequest", sr_id, when, document)
            referrals += 1
            last_referral = (sr_id, document, patient_id, service, task_status)
            recent_referrals.append((sr_id, patient_id))
            del recent_referrals[:-500]
            continue
        if kind == "T" and last_referral is not None:
            sr_id, referred, patient_id, service, task_status = last_referral
            task_id = resource_id(seed, "Task", referrals - 1)
            yield Planned(
                "Task",
                task_id,
                when,
                task(d, rng, when, referred, sr_id, patient_id, service, task_status),
            )
            last_referral = None
            continue
        # An Observation: half about someone recently referred (based on the referral).
        if recent_referrals and rng.random() < 0.5:
            sr_id, patient_id = rng.choice(recent_referrals)
            based_on: str | None = sr_id if rng.random() < 0.5 else None
        else:
            patient_id = resource_id(seed, "Patient", rng.randrange(patients))
            based_on = None
        obs_id = resource_id(seed, "Observation", position)
        yield Planned("Observation", obs_id, when, observation(d, rng, when, patient_id, based_on))


# -- rows, exactly as the app writes them --------------------------------------------------------


class _Capture(ResourceRepository):
    """A repository that keeps what a create would write instead of writing it."""

    def __init__(self) -> None:  # no connection: nothing is read or written here
        self.is_postgres = True
        self.written: list[tuple[StoredVersion, IndexRows]] = []

    async def insert_new(self, stored: StoredVersion, index: IndexRows) -> None:
        self.written.append((stored, index))


class RowMaker:
    """Turns planned documents into the rows of every table, through the app's write path.

    It runs in a thread of its own (with its own event loop for the store's coroutines), so
    that the next batch is built while the server copies the last one.
    """

    def __init__(self, planned: Iterator[Planned], validate_every: int) -> None:
        self.planned = planned
        self.now = datetime(2000, 1, 1, tzinfo=UTC)
        self.capture = _Capture()
        self.store = FhirStore(
            self.capture,
            clock=lambda: self.now,
            hooks=WriteHooks(),
            chi_system=CHI_SYSTEM,
            base_url=BASE_URL,
        )
        self.validate_every = validate_every
        self.validated = 0
        self.seen: dict[str, int] = {}
        self.loop: asyncio.AbstractEventLoop | None = None

    def batch(self, size: int) -> tuple[int, dict[str, list[tuple[Any, ...]]]]:
        """The rows of the next ``size`` resources (fewer at the end), and how many there were."""
        if self.loop is None:
            self.loop = asyncio.new_event_loop()
        return self.loop.run_until_complete(self._batch(size))

    def close(self) -> None:
        if self.loop is not None:
            self.loop.close()

    async def _batch(self, size: int) -> tuple[int, dict[str, list[tuple[Any, ...]]]]:
        tables: dict[str, list[tuple[Any, ...]]] = {name: [] for name in TABLES}
        made = 0
        for planned in self.planned:
            await self._rows(planned, tables)
            made += 1
            if made >= size:
                break
        return made, tables

    async def _rows(self, planned: Planned, tables: dict[str, list[tuple[Any, ...]]]) -> None:
        seen = self.seen.get(planned.resource_type, 0)
        self.seen[planned.resource_type] = seen + 1
        if seen < 20 or (self.validate_every and seen % self.validate_every == 0):
            validate_resource(
                planned.document, expected_type=planned.resource_type, chi_system=CHI_SYSTEM
            )
            self.validated += 1
        # Milliseconds, as the app's clock gives them.
        self.now = planned.when.replace(microsecond=planned.when.microsecond // 1000 * 1000)
        await self.store._write(planned.resource_type, planned.id, planned.document, None, "create")
        stored, index = self.capture.written.pop()
        p = _pg_parameters(stored, index, None)
        rt, rid = p["rt"], p["rid"]
        tables["resource"].append((rt, rid, p["vid"], p["updated"], p["deleted"], p["content"]))
        tables["resource_version"].append(
            (rt, rid, p["vid"], p["updated"], p["deleted"], p["method"], p["content"])
        )
        for table, prefix, names in (
            ("search_token", "tok", ("p", "s", "c", "k")),
            ("search_string", "str", ("p", "v", "e", "k")),
            ("search_reference", "ref", ("p", "t", "i")),
            ("search_date", "dat", ("p", "l", "h")),
            ("search_quantity", "qty", ("p", "v", "s", "c")),
        ):
            columns: list[Any] = [p[f"{prefix}_{name}"] for name in names]
            tables[table].extend((rt, *values, rid) for values in zip(*columns, strict=True))


# -- the database --------------------------------------------------------------------------------


def _dsn(url: str, database: str | None = None) -> str:
    parsed = make_url(url).set(drivername="postgresql")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


def sqlalchemy_url(admin_url: str, database: str) -> str:
    return make_url(admin_url).set(database=database).render_as_string(hide_password=False)


async def database_exists(admin_url: str, database: str) -> bool:
    conn = await asyncpg.connect(_dsn(admin_url), timeout=10)
    try:
        return bool(await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database))
    finally:
        await conn.close()


async def drop_database(admin_url: str, database: str) -> None:
    conn = await asyncpg.connect(_dsn(admin_url), timeout=10)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    finally:
        await conn.close()


async def create_database(admin_url: str, database: str) -> None:
    conn = await asyncpg.connect(_dsn(admin_url), timeout=10)
    try:
        await conn.execute(f'CREATE DATABASE "{database}"')
    finally:
        await conn.close()


SECONDARY_INDEXES = """
SELECT i.indexname, i.indexdef
FROM pg_indexes i
JOIN pg_class c ON c.relname = i.indexname
JOIN pg_index x ON x.indexrelid = c.oid
WHERE i.schemaname = 'public' AND i.tablename = ANY($1::text[]) AND NOT x.indisprimary
ORDER BY i.tablename, i.indexname
"""


async def table_sizes(dsn: str) -> dict[str, Any]:
    """Rows, heap (with TOAST) and index bytes of every table the app writes, and each index."""
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        tables = {}
        for name in TABLES:
            row = await conn.fetchrow(
                "SELECT pg_table_size(c.oid) AS heap, pg_indexes_size(c.oid) AS indexes "
                "FROM pg_class c WHERE c.relname = $1 AND c.relkind = 'r'",
                name,
            )
            assert row is not None
            rows = await conn.fetchval(f"SELECT count(*) FROM {name}")  # exact, not reltuples
            tables[name] = {"rows": rows, **dict(row)}
        indexes = {
            r["name"]: {"table": r["table"], "bytes": r["bytes"]}
            for r in await conn.fetch(
                "SELECT c.relname AS name, t.relname AS table, pg_relation_size(c.oid) AS bytes "
                "FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid "
                "JOIN pg_class t ON t.oid = x.indrelid "
                "WHERE t.relname = ANY($1::text[]) ORDER BY t.relname, c.relname",
                list(TABLES),
            )
        }
        total = await conn.fetchval("SELECT pg_database_size(current_database())")
        return {"tables": tables, "indexes": indexes, "database_bytes": total}
    finally:
        await conn.close()


def _mb(value: float) -> str:
    return f"{value / 1024 / 1024:,.1f}"


def print_sizes(sizes: dict[str, Any]) -> None:
    print(f"\n{'table':<18} {'rows':>12} {'heap MB':>10} {'indexes MB':>11}  bytes/row heap+idx")
    for name, t in sizes["tables"].items():
        per_row = (t["heap"] + t["indexes"]) / t["rows"] if t["rows"] > 0 else 0
        print(
            f"{name:<18} {t['rows']:>12,} {_mb(t['heap']):>10} {_mb(t['indexes']):>11}  "
            f"{per_row:,.0f}"
        )
    print(f"\n{'index':<64} {'MB':>9}")
    for name, i in sizes["indexes"].items():
        print(f"{name:<64} {_mb(i['bytes']):>9}")
    print(f"database: {_mb(sizes['database_bytes'])} MB")


async def _copy(conn: asyncpg.Connection, tables: dict[str, list[tuple[Any, ...]]]) -> int:
    rows = 0
    async with conn.transaction():
        for name, records in tables.items():
            if records:
                await conn.copy_records_to_table(name, records=records, columns=TABLES[name])
                rows += len(records)
    return rows


async def load(options: argparse.Namespace) -> dict[str, Any]:
    admin_url, database = options.postgres_url, options.database
    if await database_exists(admin_url, database):
        if not options.replace:
            raise SystemExit(
                f"database {database} exists: --replace to drop and reload it, --sizes to show it"
            )
        await drop_database(admin_url, database)
    await create_database(admin_url, database)
    url = sqlalchemy_url(admin_url, database)
    dsn = _dsn(admin_url, database)
    timings: dict[str, float] = {}
    started = time.monotonic()

    from app.migrate import upgrade

    await asyncio.to_thread(upgrade, url)
    timings["migrate_s"] = time.monotonic() - started

    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        indexes = [tuple(r) for r in await conn.fetch(SECONDARY_INDEXES, list(TABLES))]
        if not options.keep_indexes:
            for name, _ in indexes:
                await conn.execute(f'DROP INDEX "{name}"')
        mix = Mix(options.count, options.organizations, options.services)
        end = datetime.fromisoformat(options.end).replace(tzinfo=UTC)
        maker = RowMaker(stream(mix, options.seed, end), options.validate_every)
        resources = rows = 0
        copy_wait = 0.0
        t0 = last_report = time.monotonic()
        try:
            # Pipelined: a thread builds batch n + 1 while the server copies batch n.
            next_batch = asyncio.ensure_future(asyncio.to_thread(maker.batch, options.batch))
            while True:
                made, tables = await next_batch
                if not made:
                    break
                next_batch = asyncio.ensure_future(asyncio.to_thread(maker.batch, options.batch))
                t = time.monotonic()
                rows += await _copy(conn, tables)
                copy_wait += time.monotonic() - t
                resources += made
                now = time.monotonic()
                if now - last_report > 20:
                    rate = resources / (now - t0)
                    print(
                        f"   {resources:,} / {options.count:,} resources, {rate:,.0f}/s, "
                        f"eta {(options.count - resources) / rate:,.0f} s",
                        flush=True,
                    )
                    last_report = now
        finally:
            maker.close()
        timings["generate_and_copy_s"] = time.monotonic() - t0
        timings["copy_s"] = copy_wait
        if not options.keep_indexes:
            t = time.monotonic()
            await conn.execute(f"SET maintenance_work_mem = '{options.maintenance_work_mem}'")
            for _, definition in indexes:
                await conn.execute(definition)
            timings["create_indexes_s"] = time.monotonic() - t
        t = time.monotonic()
        for name in TABLES:
            await conn.execute(f"VACUUM (ANALYZE) {name}")
        timings["vacuum_analyze_s"] = time.monotonic() - t
        counts = {
            r["resource_type"]: r["n"]
            for r in await conn.fetch(
                "SELECT resource_type, count(*) AS n FROM resource GROUP BY 1 ORDER BY 1"
            )
        }
    finally:
        await conn.close()
    timings["total_s"] = time.monotonic() - started
    return {
        "database": database,
        "count": options.count,
        "seed": options.seed,
        "end": options.end,
        "resources_by_type": counts,
        "rows_copied": rows,
        "validated_sample": maker.validated,
        "keep_indexes": options.keep_indexes,
        "timings": timings,
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.generate",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("--count", type=int, default=1_000_000, help="resources (default 1M)")
    parser.add_argument("--database", default=DEFAULT_DATABASE, help="default %(default)s")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("WAYMARK_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL),
        help="admin URL whose user may create databases (env WAYMARK_BENCH_POSTGRES_URL)",
    )
    parser.add_argument("--replace", action="store_true", help="drop the database if it exists")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--end", default="2026-11-01", help="date the data ends (default %(default)s)"
    )
    parser.add_argument("--organizations", type=int, default=150)
    parser.add_argument("--services", type=int, default=300)
    parser.add_argument("--batch", type=int, default=5000, help="resources per COPY batch")
    parser.add_argument(
        "--validate-every", type=int, default=2000, help="validate 1 in N (0: first 20 only)"
    )
    parser.add_argument("--keep-indexes", action="store_true", help="load into indexed tables")
    parser.add_argument("--maintenance-work-mem", default="256MB", help="for CREATE INDEX")
    parser.add_argument("--sizes", action="store_true", help="only print the sizes of the database")
    parser.add_argument("--drop", action="store_true", help="only drop the database")
    options = parser.parse_args(argv)
    if options.count < Mix(0, options.organizations, options.services).directory + BLOCK_SIZE:
        parser.error("--count is smaller than the directory plus one block")
    return options


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    if options.drop:
        asyncio.run(drop_database(options.postgres_url, options.database))
        print(f"dropped {options.database}")
        return 0
    dsn = _dsn(options.postgres_url, options.database)
    if options.sizes:
        print_sizes(asyncio.run(table_sizes(dsn)))
        return 0
    mix = Mix(options.count, options.organizations, options.services)
    print(
        f"Loading {options.count:,} resources into {options.database}: "
        f"{options.organizations} Organizations, {options.services} HealthcareServices, "
        f"{mix.roles} PractitionerRoles, "
        f"{mix.of('P'):,} Patients, {mix.of('R'):,} ServiceRequests, {mix.of('T'):,} Tasks, "
        f"{mix.of('O'):,} Observations; load average "
        f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}",
        flush=True,
    )
    result = asyncio.run(load(options))
    sizes = asyncio.run(table_sizes(dsn))
    result["sizes"] = sizes
    t = result["timings"]
    print(
        f"\nloaded {sum(result['resources_by_type'].values()):,} resources "
        f"({result['rows_copied']:,} rows) in {t['total_s']:,.0f} s: migrate "
        f"{t['migrate_s']:.1f} s, generate + COPY {t['generate_and_copy_s']:,.0f} s "
        f"({result['count'] / t['generate_and_copy_s']:,.0f} resources/s; "
        f"{t['copy_s']:,.0f} s in COPY, overlapped with generation), "
        + (f"CREATE INDEX {t['create_indexes_s']:,.0f} s, " if "create_indexes_s" in t else "")
        + f"VACUUM ANALYZE {t['vacuum_analyze_s']:,.0f} s; "
        f"{result['validated_sample']:,} documents validated"
    )
    print(f"by type: {result['resources_by_type']}")
    print_sizes(sizes)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS_DIR / f"scale-load-{options.count}-{stamp}.json"
    path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print(f"\nwritten to {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
