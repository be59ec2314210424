from __future__ import annotations

import pytest

from app.fhir.resources import SERVED, model_class
from app.fhir.search.index import index_rows, normalise
from app.fhir.search.registry import TYPES, parameters_for


@pytest.mark.parametrize("resource_type", sorted(SERVED))
def test_every_registered_path_names_a_real_element(resource_type: str) -> None:
    fields = {f.alias or name for name, f in model_class(resource_type).model_fields.items()}
    for param in parameters_for(resource_type).values():
        assert param.type in TYPES, param
        for path in param.paths:
            assert path[0] in fields, (resource_type, param.code, path)


def test_issue_parameters_are_registered() -> None:
    wanted = {
        "ServiceRequest": {"requester", "performer", "based-on", "patient", "status", "code"},
        "Task": {"focus", "owner", "requester", "business-status", "modified", "patient"},
        "Patient": {"identifier", "family", "given", "birthdate", "general-practitioner"},
        "HealthcareService": {"type", "organization", "active"},
        "Observation": {"code", "date", "patient", "category"},
        "Communication": {"recipient", "sender", "received"},
        "CarePlan": {"status", "category"},
    }
    for resource_type, codes in wanted.items():
        assert codes <= set(parameters_for(resource_type)), resource_type


def test_index_rows_of_a_referral() -> None:
    referral = {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "subject": {"reference": "Patient/p1"},
        "requester": {"reference": "http://base/PractitionerRole/r1"},
        "performer": [{"reference": "https://elsewhere.example/HealthcareService/9"}],
        "category": [
            {
                "coding": [
                    {
                        "system": "http://snomed.info/sct",
                        "code": "3457005",
                        "display": "Patient referral",
                    }
                ]
            }
        ],
        "authoredOn": "2026-03-04",
    }
    rows = index_rows("ServiceRequest", referral, "http://base")
    assert ("patient", "Patient", "p1") in rows.references
    assert ("subject", "Patient", "p1") in rows.references
    assert ("requester", "PractitionerRole", "r1") in rows.references
    assert ("performer", "", "https://elsewhere.example/HealthcareService/9") in rows.references
    assert ("category", "http://snomed.info/sct", "3457005") in rows.tokens
    assert ("status", "", "active") in rows.tokens
    assert ("category:text", "patient referral", "Patient referral") in rows.strings
    [(param, low, high)] = rows.dates
    assert param == "authored"
    assert (low.isoformat(), high.isoformat()) == (
        "2026-03-04T00:00:00+00:00",
        "2026-03-05T00:00:00+00:00",
    )


def test_normalise_folds_case_and_accents() -> None:
    assert normalise("Ève  ") == "eve"
    assert normalise("MÜLLER") == "muller"
