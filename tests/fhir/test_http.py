from __future__ import annotations

import pytest

from app.fhir.errors import InvalidRequest, NotAcceptable, UnsupportedMediaType
from app.fhir.http import negotiate, parse_if_match, parse_prefer, require_json_body


@pytest.mark.parametrize(
    ("accept", "fmt", "expected"),
    [
        (None, None, "application/fhir+json"),
        ("application/fhir+json", None, "application/fhir+json"),
        ("application/json", None, "application/json"),
        (
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
            None,
            "application/fhir+json",
        ),
        ("application/fhir+xml", "json", "application/fhir+json"),
        (None, "application/fhir+json", "application/fhir+json"),
        (None, "application/fhir json", "application/fhir+json"),  # '+' decoded as a space
    ],
)
def test_negotiation_picks_json(accept: str | None, fmt: str | None, expected: str) -> None:
    assert negotiate(accept, fmt) == expected


@pytest.mark.parametrize(
    ("accept", "fmt"),
    [
        ("application/fhir+xml", None),
        ("application/xml, text/xml", None),
        ("application/fhir+json;q=0", None),
        (None, "xml"),
        (None, "turtle"),
    ],
)
def test_negotiation_refuses_what_is_not_json(accept: str | None, fmt: str | None) -> None:
    with pytest.raises(NotAcceptable):
        negotiate(accept, fmt)


def test_body_media_types() -> None:
    require_json_body("application/fhir+json; fhirVersion=4.0; charset=utf-8")
    require_json_body("application/json")
    require_json_body("application/json-patch+json", patch=True)
    for bad in (None, "text/plain", "application/fhir+xml"):
        with pytest.raises(UnsupportedMediaType):
            require_json_body(bad)
    with pytest.raises(UnsupportedMediaType):
        require_json_body("application/fhir+json", patch=True)


def test_prefer() -> None:
    assert parse_prefer(None).return_ == "representation"
    assert parse_prefer("return=minimal").return_ == "minimal"
    assert parse_prefer("handling=lenient, return=OperationOutcome").return_ == "OperationOutcome"
    assert parse_prefer("handling=lenient").handling == "lenient"


def test_if_match() -> None:
    assert parse_if_match(None) is None
    assert parse_if_match('W/"3"') == 3
    assert parse_if_match('"12"') == 12
    assert parse_if_match(' W/"7" ') == 7
    for malformed in ('W/"abc"', "3", "W/3", '"3', "*", 'W/"1", W/"2"', 'w/"3"', 'W/""', ""):
        with pytest.raises(InvalidRequest):
            parse_if_match(malformed)
