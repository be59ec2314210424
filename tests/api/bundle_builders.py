"""Builders for transaction and batch Bundles, shared by the API and live-client tests."""

from __future__ import annotations

import uuid
from typing import Any

from tests.api.helpers import NHS, patient

BAD_NHS = "9434765918"  # the check digit is wrong
SNOMED = "http://snomed.info/sct"
PATIENT_REFERRAL = {"system": SNOMED, "code": "3457005", "display": "Patient referral"}
DRUG_ALCOHOL_REFERRAL = {
    "system": SNOMED,
    "code": "417096006",
    "display": "Referral to community drug and alcohol team",
}


def nhs_number(seed: int) -> str:
    """A valid NHS number (modulus 11) derived from ``seed``, for tests that need many."""
    for candidate in range(seed, seed + 20):
        digits = f"{candidate % 1_000_000_000:09d}"
        remainder = sum(int(d) * w for d, w in zip(digits, range(10, 1, -1), strict=True)) % 11
        check = (11 - remainder) % 11
        if check != 10:
            return digits + str(check)
    raise AssertionError("unreachable: one in eleven candidates lacks a check digit")


def fresh_nhs_number() -> str:
    """A valid NHS number no other test uses (for servers whose data outlives one test)."""
    return nhs_number(uuid.uuid4().int % 900_000_000 + 100_000_000)


def urn() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def entry(
    method: str,
    url: str,
    resource: dict[str, Any] | None = None,
    *,
    full_url: str | None = None,
    **request: str,
) -> dict[str, Any]:
    built: dict[str, Any] = {"request": {"method": method, "url": url, **request}}
    if full_url is not None:
        built["fullUrl"] = full_url
    if resource is not None:
        built["resource"] = resource
    return built


def bundle(*entries: dict[str, Any], bundle_type: str = "transaction") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": bundle_type, "entry": list(entries)}


def referral(subject: str, *, performer: str | None = None) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "category": [{"coding": [PATIENT_REFERRAL]}],
        "code": {"coding": [DRUG_ALCOHOL_REFERRAL]},
        "subject": {"reference": subject},
    }
    if performer is not None:
        resource["performer"] = [{"reference": performer}]
    return resource


def observation(subject: str, based_on: str, text: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": text},
        "subject": {"reference": subject},
        "basedOn": [{"reference": based_on}],
        "valueString": "recorded at referral",
    }


def referral_bundle(nhs: str) -> dict[str, Any]:
    """A referral as an EHR sends it: the Patient by conditional create, the ServiceRequest
    (category SNOMED 3457005) and two Observations, linked by urn:uuid fullUrls."""
    patient_url, referral_url = urn(), urn()
    return bundle(
        entry(
            "POST",
            "Patient",
            patient(nhs),
            full_url=patient_url,
            ifNoneExist=f"identifier={NHS}|{nhs}",
        ),
        entry("POST", "ServiceRequest", referral(patient_url), full_url=referral_url),
        entry("POST", "Observation", observation(patient_url, referral_url, "Alcohol use")),
        entry("POST", "Observation", observation(patient_url, referral_url, "Drug use")),
    )


def conditional_referral_bundle(nhs: str) -> dict[str, Any]:
    """A referral for a Patient the receiver already holds, found by NHS number: the
    ServiceRequest and two Observations name the Patient by a conditional reference
    (``Patient?identifier=...``) and the Observations the ServiceRequest by its urn:uuid."""
    patient_search = f"Patient?identifier={NHS}|{nhs}"
    referral_url = urn()
    return bundle(
        entry("POST", "ServiceRequest", referral(patient_search), full_url=referral_url),
        entry("POST", "Observation", observation(patient_search, referral_url, "Alcohol use")),
        entry("POST", "Observation", observation(patient_search, referral_url, "Drug use")),
    )
