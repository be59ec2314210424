"""Every resource the server emits must parse with fhirclient's R4 models in strict mode."""

from __future__ import annotations

from typing import Any

from fhirclient.models.fhirelementfactory import FHIRElementFactory


def assert_parses_as_r4(resource: dict[str, Any]) -> None:
    # strict=True (fhirclient's default) raises FHIRValidationError on any unknown or
    # mistyped element, and on a missing required one.
    parsed = FHIRElementFactory.instantiate(resource["resourceType"], resource)
    assert parsed.resource_type == resource["resourceType"]
