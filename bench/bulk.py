"""Bulk rows for the pathway benchmarks: Patients (and their evidence) made fast, the app's way.

The referral benchmarks need many people (a second open referral for the same patient to the
same service is refused, so every create needs someone new). Creating them through the API
would take longer than the measurements, so they are loaded as :mod:`bench.generate` loads its
scale data: each document goes through the app's own write path (``FhirStore._write`` with a
repository that captures the rows, :func:`app.fhir.repository._pg_parameters`) and the rows are
copied in with asyncpg. No write hook runs; for Patients none would (nothing in app/pathway
watches them), and for evidence Observations the one hook re-evaluates the person's held
referrals, of which a person loaded here has none yet.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg

from bench import generate
from bench.generate import Planned

GATE_EVIDENCE = "https://fhir.waymark.org.uk/CodeSystem/gate-evidence"
ALCOHOL = "53041004"
ILLICIT_DRUG = "410942007"
SUBSTANCES = ((ALCOHOL, "Alcohol"), (ILLICIT_DRUG, "Drug or medicament (any illicit drug)"))


async def load(dsn: str, planned: Iterable[Planned], *, batch: int = 5000) -> int:
    """Write ``planned`` (in order) with the app's row builders; the resources written."""
    maker = generate.RowMaker(iter(planned), validate_every=500)
    conn = await asyncpg.connect(dsn, timeout=10)
    written = 0
    try:
        while True:
            made, tables = await asyncio.to_thread(maker.batch, batch)
            if not made:
                break
            await generate._copy(conn, tables)
            written += made
        for table in ("resource", "search_token", "search_reference"):
            await conn.execute(f"ANALYZE {table}")
    finally:
        maker.close()
        await conn.close()
    return written


def patient(n: int, *, nhs_base: int, gp_org: str | None, when: datetime) -> Planned:
    """Person ``n``: UK Core-shaped, a valid NHS number from ``nhs_base`` (even bases only)."""
    rng = random.Random(nhs_base + n)
    directory = _directory(gp_org)
    document = generate.patient(directory, n, rng, when)
    document["identifier"][0]["value"] = generate.nhs_number(n, base=nhs_base)
    if gp_org is None:
        document.pop("generalPractitioner", None)
    return Planned("Patient", str(uuid.uuid4()), when, document)


def last_use(patient_id: str, substance: str, used_on: date, when: datetime) -> Planned:
    """The evidence an abstinence gate reads: an Observation of the date a substance was last
    used (docs/gates.md, "Evidence": code gate-evidence|last-use-date, the substance in a
    component)."""
    display = dict(SUBSTANCES).get(substance, substance)
    document: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": generate.OBS_CATEGORY,
                        "code": "social-history",
                        "display": "Social History",
                    }
                ]
            }
        ],
        "code": {
            "coding": [
                {"system": GATE_EVIDENCE, "code": "last-use-date", "display": "Date of last use"}
            ]
        },
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": generate._instant(when),
        "valueDateTime": used_on.isoformat(),
        "component": [
            {
                "code": {"coding": [{"system": GATE_EVIDENCE, "code": "substance"}]},
                "valueCodeableConcept": {
                    "coding": [
                        {"system": "http://snomed.info/sct", "code": substance, "display": display}
                    ]
                },
            }
        ],
    }
    return Planned("Observation", str(uuid.uuid4()), when, document)


#: The evidence a person may have for a three-month abstinence gate: met (both substances last
#: used long ago), not met (one used recently), unknown (no record of one or both).
EVIDENCE_KINDS = ("met", "not-met", "unknown")


def evidence(patient_id: str, kind: str, rng: random.Random, today: date) -> list[Planned]:
    """A person's last-use Observations of alcohol and illicit drugs, so that a three-month
    abstinence gate is ``kind`` (met, not-met or unknown) for them today."""
    when = datetime.now(UTC) - timedelta(days=rng.randint(1, 20))
    if kind == "met":
        return [
            last_use(patient_id, code, today - timedelta(days=rng.randint(120, 900)), when)
            for code, _ in SUBSTANCES
        ]
    if kind == "not-met":
        recent = rng.randrange(len(SUBSTANCES))
        return [
            last_use(
                patient_id,
                code,
                today - timedelta(days=rng.randint(1, 60) if i == recent else rng.randint(0, 900)),
                when,
            )
            for i, (code, _) in enumerate(SUBSTANCES)
        ]
    # unknown: one substance recorded (long ago) or none
    if rng.random() < 0.5:
        return []
    code = rng.choice(SUBSTANCES)[0]
    return [last_use(patient_id, code, today - timedelta(days=rng.randint(120, 900)), when)]


class People:
    """Bulk-loaded Patients, handed out once each (optionally with gate evidence)."""

    def __init__(
        self,
        dsn: str,
        *,
        gp_org: str | None,
        nhs_base: int,
        mix: dict[str, float] | None = None,
        seed: int = 1,
    ) -> None:
        self.dsn = dsn
        self.gp_org = gp_org
        self.nhs_base = nhs_base
        self.mix = mix  # evidence kind -> share; None: no evidence
        self.rng = random.Random(seed)
        self.made = 0
        self.free: list[str] = []
        self.kinds: dict[str, str] = {}
        self.load_seconds = 0.0

    def take(self, count: int) -> list[str]:
        """``count`` people no one has used, loading more when needed."""
        if len(self.free) < count:
            asyncio.run(self._grow(count - len(self.free)))
        taken, self.free = self.free[:count], self.free[count:]
        return taken

    async def _grow(self, count: int) -> None:
        import time

        started = time.monotonic()
        ids: list[str] = []
        await load(self.dsn, self._planned(count, ids))
        self.free += ids
        self.load_seconds += time.monotonic() - started

    def _planned(self, count: int, ids: list[str]) -> Iterator[Planned]:
        now = datetime.now(UTC).replace(microsecond=0)
        today = now.date()
        kinds = list(self.mix or {})
        weights = [self.mix[k] for k in kinds] if self.mix else []
        for _ in range(count):
            person = patient(self.made, nhs_base=self.nhs_base, gp_org=self.gp_org, when=now)
            self.made += 1
            ids.append(person.id)
            yield person
            if self.mix:
                kind = self.rng.choices(kinds, weights)[0]
                self.kinds[person.id] = kind
                yield from evidence(person.id, kind, self.rng, today)


def _directory(gp_org: str | None) -> generate.Directory:
    orgs = [gp_org] if gp_org else ["none"]
    return generate.Directory.from_ids(1, orgs, orgs, ["none"])


def write_lists(ids: list[str], path_prefix: str, threads: int) -> None:
    """Split ``ids`` into one file per wrk thread (``<prefix>.1`` ...), as the Lua scripts
    that use each id once read them."""
    from pathlib import Path

    for thread in range(threads):
        mine = ids[thread::threads] or ids[:1]
        Path(f"{path_prefix}.{thread + 1}").write_text("\n".join(mine) + "\n")
