"""Authentication can be turned off only for a server bound to loopback, and says so."""

from __future__ import annotations

import uuid

import httpx
import pytest
from pydantic import ValidationError

from app.config import Settings
from app.main import create_app
from app.runtime import Runtime


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "waymark.example.nhs.uk", "::"])
def test_auth_off_is_refused_off_loopback(host: str) -> None:
    with pytest.raises(ValidationError, match="WAYMARK_AUTH=off is refused"):
        Settings(auth="off", host=host)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.0.0.2"])
def test_auth_off_is_accepted_on_loopback(host: str) -> None:
    assert Settings(auth="off", host=host).auth == "off"


async def test_auth_off_warns_and_lets_the_local_operator_in(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    settings = runtime.settings.model_copy(update={"auth": "off"})
    app = create_app(settings, runtime=Runtime(settings=settings, engine=runtime.engine))
    async with app.router.lifespan_context(app):
        assert any("authentication is OFF" in r.getMessage() for r in caplog.records)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            response = await http.get("/Patient")
            assert response.status_code == 200
            statement = (await http.get("/metadata")).json()
            assert "security" not in statement["rest"][0]
        # Started another way on a public address (uvicorn --host 0.0.0.0), it serves nothing.
        async with httpx.AsyncClient(transport=transport, base_url="http://10.1.2.3") as http:
            refused = await http.get("/Patient")
            assert refused.status_code == 403
            assert "loopback" in refused.json()["issue"][0]["diagnostics"]


async def test_request_ids_are_echoed_or_made(anonymous: httpx.AsyncClient) -> None:
    given = await anonymous.get("/metadata", headers={"X-Request-ID": "ehr-42.a:b"})
    assert given.headers["x-request-id"] == "ehr-42.a:b"
    made = await anonymous.get("/metadata")
    assert uuid.UUID(made.headers["x-request-id"])
    # Something that could smuggle text into logs is replaced, not echoed.
    odd = await anonymous.get("/metadata", headers={"X-Request-ID": "a b\\u0000" + "x" * 200})
    assert uuid.UUID(odd.headers["x-request-id"])
    refused = await anonymous.get("/Patient", headers={"X-Request-ID": "no-token"})
    assert refused.status_code == 401
    assert refused.headers["x-request-id"] == "no-token"


async def test_metadata_advertises_smart_security(anonymous: httpx.AsyncClient) -> None:
    security = (await anonymous.get("/metadata")).json()["rest"][0]["security"]
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    uris = security["extension"][0]["extension"]
    assert uris == [{"url": "token", "valueUri": "http://testserver/auth/token"}]
