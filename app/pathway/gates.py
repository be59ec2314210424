"""Gates: entry criteria on routes into services, as data, and their evaluation.

A gate is a PlanDefinition whose ``type`` is a Waymark gate kind, with extensions for its mode
(enforced | advisory | suspended), the services or service kinds it guards, and, for an
abstinence gate, its parameters: the substances, the minimum abstinent period, or the most days
of use in the past 28 ("occasional use acceptable"), and whether prescribed opioid substitution
counts as use (by default it does not). Evaluation reads ordinary FHIR evidence: Observations of
the date of last use and of days used per substance, and active MedicationStatements or
MedicationRequests for opioid substitution.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any

from app.canonical import WAYMARK
from app.fhir.errors import BusinessRuleViolation
from app.pathway.codes import SERVICE_KIND, codes

GATE_KIND = f"{WAYMARK}/CodeSystem/gate-kind"
GATE_EVIDENCE = f"{WAYMARK}/CodeSystem/gate-evidence"
GATE_ID = f"{WAYMARK}/Id/gate"
GATE_MODE = f"{WAYMARK}/StructureDefinition/gate-mode"
GATE_GUARDS = f"{WAYMARK}/StructureDefinition/gate-guards"
GATE_ABSTINENCE = f"{WAYMARK}/StructureDefinition/gate-abstinence"
GATE_APPLIES_TO = f"{WAYMARK}/StructureDefinition/gate-applies-to"
GATE_SUBSTANCES = f"{WAYMARK}/ValueSet/gate-substance"
OPIOID_SUBSTITUTION = f"{WAYMARK}/ValueSet/opioid-substitution"
SERVICE_ID = f"{WAYMARK}/Id/service"
MODES = ("enforced", "advisory", "suspended")
#: The gate kinds Waymark has a rule for (CodeSystem gate-kind also has 'other', refused).
KINDS = ("abstinence", "phase")
_UNITS = {"d": "days", "wk": "weeks", "mo": "months", "a": "years"}


@dataclass(frozen=True, slots=True)
class Gate:
    id: str
    code: str
    title: str
    kind: str
    mode: str
    guards_services: frozenset[str]  # HealthcareService ids or "identifier system|value"
    guards_kinds: frozenset[str]
    substances: tuple[str, ...] = ()
    minimum: tuple[int, str] | None = None  # (value, UCUM unit)
    maximum_use_days: int | None = None
    ost_counts: bool = False
    #: A ValueSet of referral codes the gate acts on (the phase gate: trauma-focussed work);
    #: None: every referral into the services it guards.
    applies_to: str | None = None

    def guards(self, service: dict[str, Any]) -> bool:
        if self.guards_kinds & set(codes(service.get("type", []), SERVICE_KIND)):
            return True
        names = {str(service.get("id"))} | {
            f"{i.get('system', '')}|{i.get('value', '')}" for i in service.get("identifier", [])
        }
        return bool(self.guards_services & names)


@dataclass
class Evidence:
    """What is known about a person's use, from their records."""

    last_use: dict[str, tuple[date, str]] = field(default_factory=dict)  # substance -> (date, ref)
    use_days: dict[str, tuple[int, str]] = field(default_factory=dict)  # substance -> (days, ref)
    opioid_substitution: list[str] = field(default_factory=list)  # active OST record refs


@dataclass(frozen=True, slots=True)
class Outcome:
    gate: Gate
    outcome: str  # met | not-met | unknown
    evidence: tuple[str, ...]
    met_on: date | None  # when it would be met if nothing changes
    needed: str | None  # what evidence is missing (unknown)
    detail: str


# -- definitions -----------------------------------------------------------------------------


def is_gate(plan: dict[str, Any]) -> bool:
    return bool(codes(plan.get("type", {}), GATE_KIND))


def gate_from(plan: dict[str, Any], *, known_substances: frozenset[str] | None = None) -> Gate:
    """The gate a PlanDefinition defines; 422 naming the element when it is not a usable
    gate (unknown mode or substance, a period that is not positive)."""
    kind = _kind(plan)
    extensions = plan.get("extension", [])
    modes = [(i, e.get("valueCode")) for i, e in enumerate(extensions) if e.get("url") == GATE_MODE]
    if len(modes) != 1 or modes[0][1] not in MODES:
        where = (
            f"PlanDefinition.extension[{modes[0][0]}].valueCode"
            if modes
            else "PlanDefinition.extension"
        )
        raise BusinessRuleViolation(
            f"A gate needs one mode ({GATE_MODE}): enforced, advisory or suspended"
            + (f"; '{modes[0][1]}' is not one" if modes else ""),
            expression=(where,),
        )
    services, kinds = set(), set()
    applies_to = next(
        (str(e["valueCanonical"]) for e in extensions if e.get("url") == GATE_APPLIES_TO), None
    )
    for extension in extensions:
        if extension.get("url") != GATE_GUARDS:
            continue
        if "valueCoding" in extension:
            kinds.add(str(extension["valueCoding"].get("code")))
        reference = extension.get("valueReference", {})
        if isinstance(reference.get("reference"), str):
            services.add(reference["reference"].split("/")[-1])
        identifier = reference.get("identifier")
        if isinstance(identifier, dict):
            services.add(f"{identifier.get('system', '')}|{identifier.get('value', '')}")
    gate = Gate(
        id=str(plan.get("id", "")),
        code=_code(plan),
        title=str(plan.get("title") or plan.get("name") or plan.get("id")),
        kind=kind,
        mode=str(modes[0][1]),
        guards_services=frozenset(services),
        guards_kinds=frozenset(kinds),
        applies_to=applies_to,
    )
    for index, extension in enumerate(extensions):
        if extension.get("url") == GATE_ABSTINENCE:
            return _abstinence(gate, extension, index, known_substances)
    if kind == "abstinence":
        raise BusinessRuleViolation(
            f"An abstinence gate carries its criterion in the {GATE_ABSTINENCE} extension "
            "(substances and a period or the most days of use in 28)",
            expression=("PlanDefinition.extension",),
        )
    return gate


def _kind(plan: dict[str, Any]) -> str:
    """The gate's kind: one that Waymark evaluates, or 422 naming the coding."""
    coded = [
        (i, c.get("code"))
        for i, c in enumerate((plan.get("type") or {}).get("coding", []))
        if isinstance(c, dict) and c.get("system") == GATE_KIND
    ]
    if len(coded) != 1:
        raise BusinessRuleViolation(
            f"A gate has one kind ({GATE_KIND}) in PlanDefinition.type",
            expression=("PlanDefinition.type",),
        )
    index, kind = coded[0]
    where = (f"PlanDefinition.type.coding[{index}]",)
    if kind == "other":
        # A kind with no rule would be recorded and then never act: refuse it until one exists.
        raise BusinessRuleViolation(
            "Waymark has no rule to evaluate a gate of kind 'other' yet, so it would never act "
            "on a referral: state the criterion as an abstinence or a phase gate",
            expression=where,
        )
    if kind not in KINDS:
        raise BusinessRuleViolation(
            f"'{kind}' is not a gate kind Waymark evaluates ({GATE_KIND}: "
            + ", ".join(KINDS)
            + ")",
            expression=where,
        )
    return str(kind)


def _abstinence(
    gate: Gate, extension: dict[str, Any], index: int, known: frozenset[str] | None
) -> Gate:
    substances: list[str] = []
    minimum = None
    maximum_days = None
    ost = False
    for position, part in enumerate(extension.get("extension", [])):
        where = f"PlanDefinition.extension[{index}].extension[{position}]"
        name = part.get("url")
        if name == "substance":
            code = str(part.get("valueCoding", {}).get("code"))
            if known is not None and code not in known:
                raise BusinessRuleViolation(
                    f"'{code}' is not a substance a gate may name (ValueSet {GATE_SUBSTANCES})",
                    expression=(f"{where}.valueCoding",),
                )
            substances.append(code)
        elif name == "minimum-abstinence":
            duration = part.get("valueDuration", {})
            value, unit = duration.get("value"), duration.get("code")
            whole = isinstance(value, int | float) and not isinstance(value, bool)
            if not whole or value <= 0 or value != int(value) or unit not in _UNITS:
                # Months and years are counted by the calendar, so a fraction has no meaning
                # (0.5 months would have become 0); a clinician writes 2 wk or 14 d instead.
                raise BusinessRuleViolation(
                    "The minimum abstinent period must be a positive whole number of d, wk, mo "
                    f"or a (UCUM code); {value!r} {unit!r} is not",
                    expression=(f"{where}.valueDuration",),
                )
            minimum = (int(value), str(unit))
        elif name == "maximum-use-days-per-28":
            days = part.get("valueInteger")
            if not isinstance(days, int) or not 0 <= days <= 28:
                raise BusinessRuleViolation(
                    "The most days of use in 28 must be a whole number from 0 to 28",
                    expression=(f"{where}.valueInteger",),
                )
            maximum_days = days
        elif name == "opioid-substitution-counts-as-use":
            ost = part.get("valueBoolean") is True
    if not substances or (minimum is None and maximum_days is None):
        raise BusinessRuleViolation(
            "An abstinence gate names its substances and a minimum abstinent period or the most "
            "days of use in 28",
            expression=(f"PlanDefinition.extension[{index}]",),
        )
    return replace(
        gate,
        substances=tuple(substances),
        minimum=minimum,
        maximum_use_days=maximum_days,
        ost_counts=ost,
    )


def _code(plan: dict[str, Any]) -> str:
    for identifier in plan.get("identifier", []):
        if identifier.get("system") == GATE_ID and identifier.get("value"):
            return str(identifier["value"])
    return str(plan.get("id", ""))


# -- evaluation ------------------------------------------------------------------------------


def evaluate(gate: Gate, evidence: Evidence, today: date) -> Outcome:
    """The outcome of an abstinence gate for one person on ``today``."""
    if gate.ost_counts and evidence.opioid_substitution:
        return Outcome(
            gate,
            "not-met",
            tuple(evidence.opioid_substitution),
            None,
            None,
            "Prescribed opioid substitution is active, and this gate counts it as use.",
        )
    used: list[str] = []
    waits: list[date] = []
    missing: list[str] = []
    failing: list[str] = []
    for substance in gate.substances:
        if gate.maximum_use_days is not None:
            found = evidence.use_days.get(substance)
            if found is None:
                missing.append(substance)
                continue
            used.append(found[1])
            if found[0] > gate.maximum_use_days:
                failing.append(f"{found[0]} days of use of {substance} in the past 28")
            continue
        last = evidence.last_use.get(substance)
        if last is None:
            missing.append(substance)
            continue
        used.append(last[1])
        assert gate.minimum is not None
        met_on = add(last[0], *gate.minimum)
        if met_on > today:
            waits.append(met_on)
            failing.append(f"last use of {substance} on {last[0].isoformat()}")
    if failing:
        return Outcome(
            gate,
            "not-met",
            tuple(used),
            max(waits) if waits and not missing and gate.maximum_use_days is None else None,
            None,
            "Not met: " + "; ".join(failing) + ".",
        )
    if missing:
        code = "use-days-past-28" if gate.maximum_use_days is not None else "last-use-date"
        needed = f"an Observation ({GATE_EVIDENCE}|{code}) with component substance " + ", ".join(
            missing
        )
        return Outcome(gate, "unknown", tuple(used), None, needed, f"Unknown: needs {needed}.")
    return Outcome(gate, "met", tuple(used), today, None, "Met.")


def add(start: date, value: int, unit: str) -> date:
    """``start`` plus a UCUM duration (months and years by the calendar)."""
    if unit == "d":
        return start + timedelta(days=value)
    if unit == "wk":
        return start + timedelta(weeks=value)
    months = value * (12 if unit == "a" else 1)
    year, month = divmod(start.month - 1 + months, 12)
    year, month = start.year + year, month + 1
    return date(year, month, min(start.day, calendar.monthrange(year, month)[1]))


def evidence_from(
    observations: list[dict[str, Any]],
    medications: list[dict[str, Any]],
    ost_codes: frozenset[tuple[str | None, str]],
) -> Evidence:
    """The latest evidence per substance, and the active opioid substitution records."""
    found = Evidence()
    latest: dict[tuple[str, str], str] = {}
    for observation in observations:
        if observation.get("status") in ("entered-in-error", "cancelled"):
            continue
        kinds = codes(observation.get("code", {}), GATE_EVIDENCE)
        substance = _substance(observation)
        if not kinds or substance is None:
            continue
        recorded = str(observation.get("effectiveDateTime") or observation["meta"]["lastUpdated"])
        key = (kinds[0], substance)
        if latest.get(key, "") > recorded:
            continue
        latest[key] = recorded
        ref = f"Observation/{observation['id']}"
        if kinds[0] == "last-use-date" and isinstance(observation.get("valueDateTime"), str):
            found.last_use[substance] = (_date(observation["valueDateTime"]), ref)
        elif kinds[0] == "use-days-past-28" and isinstance(observation.get("valueInteger"), int):
            found.use_days[substance] = (observation["valueInteger"], ref)
    for record in medications:
        if set(medication_codings(record)) & ost_codes:
            found.opioid_substitution.append(f"{record['resourceType']}/{record['id']}")
    return found


def medication_codings(record: dict[str, Any]) -> list[tuple[str | None, str]]:
    """The (system, code) pairs naming a medication record's medicine: its
    medicationCodeableConcept, or the Medication its medicationReference names when that is
    contained in the record: the Medication's code and its ingredients' codes, so that a
    product coded by its dm+d code counts by its ingredient (buprenorphine in Buvidal).
    A reference to a Medication elsewhere is not followed: Waymark does not serve Medication."""
    concepts = [record.get("medicationCodeableConcept") or {}]
    reference = (record.get("medicationReference") or {}).get("reference")
    if isinstance(reference, str) and reference.startswith("#"):
        for medication in record.get("contained", []):
            if medication.get("resourceType") != "Medication":
                continue
            if medication.get("id") != reference[1:]:
                continue
            concepts.append(medication.get("code") or {})
            for ingredient in medication.get("ingredient", []):
                concepts.append(ingredient.get("itemCodeableConcept") or {})
    return [
        (c.get("system"), str(c["code"]))
        for concept in concepts
        for c in concept.get("coding", [])
        if isinstance(c, dict) and c.get("code")
    ]


def _substance(observation: dict[str, Any]) -> str | None:
    for component in observation.get("component", []):
        if "substance" in codes(component.get("code", {}), GATE_EVIDENCE):
            coded = component.get("valueCodeableConcept", {}).get("coding", [])
            if coded and coded[0].get("code"):
                return str(coded[0]["code"])
    return None


def _date(text: str) -> date:
    if len(text) == 10:
        return date.fromisoformat(text)
    if len(text) == 7:
        return date.fromisoformat(f"{text}-01")
    if len(text) == 4:
        return date(int(text), 1, 1)
    return datetime.fromisoformat(text.replace("Z", "+00:00")).date()
