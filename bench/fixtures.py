"""The Patient the benchmark writes: UK Core-shaped, about 1.6 kB of JSON, valid for Waymark."""

from __future__ import annotations

from typing import Any

import orjson

#: Valid NHS numbers (modulus 11) from the NHS test ranges.
NHS_NUMBERS = ("9434765919", "9912003888")

ID_MARKER = "@@ID@@"

_UK_CORE = "https://fhir.hl7.org.uk/StructureDefinition"
_UK_CODES = "https://fhir.hl7.org.uk/CodeSystem"


def patient(nhs_number: str = NHS_NUMBERS[0], resource_id: str | None = None) -> dict[str, Any]:
    document: dict[str, Any] = {"resourceType": "Patient"}
    if resource_id is not None:
        document["id"] = resource_id
    document |= {
        "meta": {"profile": [f"{_UK_CORE}/UKCore-Patient"]},
        "extension": [
            {
                "url": f"{_UK_CORE}/Extension-UKCore-EthnicCategory",
                "valueCodeableConcept": {
                    "coding": [
                        {
                            "system": f"{_UK_CODES}/UKCore-EthnicCategoryEngland",
                            "code": "A",
                            "display": "White - British",
                        }
                    ]
                },
            }
        ],
        "identifier": [
            {
                "extension": [
                    {
                        "url": f"{_UK_CORE}/Extension-UKCore-NHSNumberVerificationStatus",
                        "valueCodeableConcept": {
                            "coding": [
                                {
                                    "system": (
                                        f"{_UK_CODES}/UKCore-NHSNumberVerificationStatusEngland"
                                    ),
                                    "code": "01",
                                    "display": "Number present and verified",
                                }
                            ]
                        },
                    }
                ],
                "system": "https://fhir.nhs.uk/Id/nhs-number",
                "value": nhs_number,
            }
        ],
        "active": True,
        "name": [
            {
                "use": "official",
                "family": "Kowalski",
                "given": ["Jane", "Anne"],
                "prefix": ["Ms"],
                "period": {"start": "2001-04-02"},
            },
            {"use": "usual", "given": ["Jay"]},
        ],
        "telecom": [
            {"system": "phone", "value": "01632 960587", "use": "home", "rank": 1},
            {"system": "phone", "value": "07700 900461", "use": "mobile", "rank": 2},
            {"system": "email", "value": "jane.kowalski@example.org", "use": "home"},
        ],
        "gender": "female",
        "birthDate": "1984-07-15",
        "address": [
            {
                "use": "home",
                "type": "both",
                "line": ["Flat 3", "21 Trevelyan Square", "Boar Lane"],
                "city": "Leeds",
                "district": "West Yorkshire",
                "postalCode": "LS1 6AE",
                "country": "GB",
                "period": {"start": "2019-09-01"},
            }
        ],
        "maritalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus",
                    "code": "S",
                    "display": "Never Married",
                }
            ]
        },
        "communication": [
            {
                "language": {
                    "coding": [
                        {
                            "system": f"{_UK_CODES}/UKCore-HumanLanguage",
                            "code": "en",
                            "display": "English",
                        }
                    ]
                },
                "preferred": True,
            }
        ],
        "generalPractitioner": [
            {
                "type": "Organization",
                "identifier": {
                    "system": "https://fhir.nhs.uk/Id/ods-organization-code",
                    "value": "B82005",
                },
                "display": "Trevelyan Square Medical Practice",
            }
        ],
    }
    return document


def patient_json(nhs_number: str = NHS_NUMBERS[0]) -> bytes:
    """The create body."""
    return orjson.dumps(patient(nhs_number))


def update_template(nhs_number: str = NHS_NUMBERS[1]) -> bytes:
    """The update body, with :data:`ID_MARKER` where the id goes (the Lua scripts fill it)."""
    return orjson.dumps(patient(nhs_number, resource_id=ID_MARKER))
