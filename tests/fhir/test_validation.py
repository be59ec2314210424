from __future__ import annotations

from typing import Any

import pytest

from app.fhir.errors import InvalidResource
from app.fhir.validation import validate_resource

CHI = "https://fhir.nhs.scot/Id/chi-number"


def referral(**changes: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "subject": {"reference": "Patient/p1"},
    }
    resource.update(changes)
    return resource


def problems(document: Any, expected_type: str | None = None) -> list[tuple[str, str]]:
    with pytest.raises(InvalidResource) as raised:
        validate_resource(document, expected_type=expected_type, chi_system=CHI)
    return [(i.code, i.expression[0] if i.expression else "") for i in raised.value.issues]


def test_a_valid_resource_passes_unchanged() -> None:
    document = referral(extension=[{"url": "https://example.org/x", "valueString": "kept"}])
    assert validate_resource(document, expected_type="ServiceRequest", chi_system=CHI) == (
        "ServiceRequest",
        document,
    )


def test_bogus_status_breaks_the_required_binding() -> None:
    assert problems(referral(status="bogus")) == [("code-invalid", "ServiceRequest.status")]


def test_nested_required_binding() -> None:
    plan = {
        "resourceType": "CarePlan",
        "status": "active",
        "intent": "plan",
        "subject": {"reference": "Patient/p1"},
        "activity": [{"detail": {"status": "in-progress"}}, {"detail": {"status": "begun"}}],
    }
    assert problems(plan) == [("code-invalid", "CarePlan.activity[1].detail.status")]


def test_unknown_element_is_named() -> None:
    assert problems(referral(colour="blue")) == [("structure", "ServiceRequest.colour")]


def test_wrong_type_is_named_with_its_path() -> None:
    document = referral(category=[{"coding": [{"system": 3}]}])
    assert problems(document) == [("value", "ServiceRequest.category[0].coding[0].system")]


def test_missing_required_element() -> None:
    document = referral()
    del document["subject"]
    assert problems(document) == [("required", "ServiceRequest.subject")]


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"note": [{"text": ""}]}, "ServiceRequest.note[0].text"),
        ({"note": []}, "ServiceRequest.note"),
        ({"requester": {}}, "ServiceRequest.requester"),
        ({"priority": None}, "ServiceRequest.priority"),
    ],
)
def test_empty_values_are_refused(change: dict[str, Any], where: str) -> None:
    assert ("value", where) in problems(referral(**change))


def test_resource_type_must_match_the_url() -> None:
    with pytest.raises(InvalidResource, match="URL names Patient"):
        validate_resource(referral(), expected_type="Patient", chi_system=CHI)


@pytest.mark.parametrize("body", [[], "text", 3, {"status": "active"}])
def test_not_a_resource(body: Any) -> None:
    with pytest.raises(InvalidResource):
        validate_resource(body, expected_type=None, chi_system=CHI)


def test_unserved_resource_type() -> None:
    with pytest.raises(InvalidResource, match="not served"):
        validate_resource({"resourceType": "Claim"}, expected_type=None, chi_system=CHI)


def test_nhs_number_check_digit_is_checked_on_identifiers() -> None:
    patient = {
        "resourceType": "Patient",
        "identifier": [
            {"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9434765919"},
            {"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9434765918"},
        ],
    }
    assert problems(patient) == [("value", "Patient.identifier[1].value")]


def test_identifier_inside_a_reference_is_checked_too() -> None:
    document = referral(
        subject={"identifier": {"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "123"}}
    )
    assert problems(document) == [("value", "ServiceRequest.subject.identifier.value")]


def test_chi_number_uses_the_configured_system() -> None:
    patient = {"resourceType": "Patient", "identifier": [{"system": CHI, "value": "3202801230"}]}
    assert problems(patient) == [("value", "Patient.identifier[0].value")]
    other = {"resourceType": "Patient", "identifier": [{"system": "urn:x", "value": "3202801230"}]}
    assert validate_resource(other, expected_type="Patient", chi_system=CHI)[0] == "Patient"


def test_primitive_extension_arrays_may_hold_null() -> None:
    patient = {
        "resourceType": "Patient",
        "name": [{"given": ["Ann", "Marie"]}],
    }
    patient["name"][0]["_given"] = [None, {"extension": [{"url": "urn:x", "valueString": "y"}]}]
    assert validate_resource(patient, expected_type="Patient", chi_system=CHI)[0] == "Patient"


@pytest.mark.parametrize(
    ("contained", "where"),
    [
        ({"resourceType": "Bogus"}, "ServiceRequest.contained[0].resourceType"),
        ({"resourceType": 5}, "ServiceRequest.contained[0].resourceType"),
        ({"resourceType": None}, "ServiceRequest.contained[0].resourceType"),
        ({"resourceType": ["Patient"]}, "ServiceRequest.contained[0].resourceType"),
        ({"resourceType": "HumanName"}, "ServiceRequest.contained[0].resourceType"),
        ({"resourceType": "DomainResource"}, "ServiceRequest.contained[0].resourceType"),
        (
            {"resourceType": "Patient", "contained": [{"resourceType": "Nope"}]},
            "ServiceRequest.contained[0].contained[0].resourceType",
        ),
        (
            {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [{"resource": {"resourceType": 3}}],
            },
            "ServiceRequest.contained[0].entry[0].resource.resourceType",
        ),
    ],
)
def test_contained_resources_must_name_a_real_type(contained: Any, where: str) -> None:
    assert ("value", where) in problems(referral(contained=[contained]))


def test_a_contained_resource_needs_its_type() -> None:
    document = referral(contained=[{"id": "p1", "gender": "female"}])
    assert ("required", "ServiceRequest.contained[0].resourceType") in problems(document)


def test_contained_resources_of_types_not_served_are_still_valid() -> None:
    device = {"resourceType": "Device", "id": "d1", "status": "active"}
    document = referral(contained=[device])
    assert validate_resource(document, expected_type=None, chi_system=CHI)[0] == "ServiceRequest"
