"""A real FHIR client (fhirpy) against the real app under uvicorn."""

from __future__ import annotations

import pytest
from fhirpy import AsyncFHIRClient
from fhirpy.base.exceptions import OperationOutcome, ResourceNotFound

from tests.api.helpers import NHS, patient
from tests.conftest import LiveServer
from tests.fhir_parse import assert_parses_as_r4


async def test_create_read_update_search_delete(live_server: LiveServer) -> None:
    client = AsyncFHIRClient(
        live_server.base_url,
        authorization=f"Bearer {live_server.token}",
        extra_headers={"Accept": "application/fhir+json"},
    )
    resource = client.resource("Patient", **patient("9912003888"))
    await resource.save()
    assert resource.id
    assert resource["meta"]["versionId"] == "1"

    fetched = await client.reference("Patient", resource.id).to_resource()
    assert fetched["identifier"][0] == {"system": NHS, "value": "9912003888"}
    assert_parses_as_r4(fetched.serialize())

    fetched["name"][0]["family"] = "Renamed"
    await fetched.save()
    assert fetched["meta"]["versionId"] == "2"

    found = await client.resources("Patient").search(_id=resource.id).fetch()
    assert [p.id for p in found] == [resource.id]
    assert found[0]["name"][0]["family"] == "Renamed"
    by_identifier = (
        await client.resources("Patient").search(identifier=f"{NHS}|9912003888").fetch_all()
    )
    assert resource.id in [p.id for p in by_identifier]

    await fetched.delete()
    with pytest.raises((ResourceNotFound, OperationOutcome)):
        await client.reference("Patient", resource.id).to_resource()


async def test_invalid_resource_is_reported_as_operation_outcome(live_server: LiveServer) -> None:
    client = AsyncFHIRClient(live_server.base_url, authorization=f"Bearer {live_server.token}")
    resource = client.resource("Patient", **patient("9434765918"))
    with pytest.raises(OperationOutcome) as raised:
        await resource.save()
    assert "check digit" in str(raised.value)
