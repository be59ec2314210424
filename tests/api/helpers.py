"""Small builders shared by the API tests."""

from __future__ import annotations

from typing import Any

NHS = "https://fhir.nhs.uk/Id/nhs-number"
FHIR_JSON = {"Content-Type": "application/fhir+json"}


def patient(nhs_number: str = "9434765919", **changes: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "identifier": [{"system": NHS, "value": nhs_number}],
        "name": [{"family": "Example", "given": ["Alex"]}],
        "gender": "unknown",
        "birthDate": "1980-01-01",
        "extension": [
            {
                "url": "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-EthnicCategory",
                "valueCodeableConcept": {"text": "Not stated"},
            }
        ],
    }
    resource.update(changes)
    return resource


def issues(body: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """(code, expressions) of each issue of an OperationOutcome."""
    assert body["resourceType"] == "OperationOutcome"
    return [(i["code"], i.get("expression", [])) for i in body["issue"]]
