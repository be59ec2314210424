"""Schemathesis fuzzes every operation of the OpenAPI document against the real server.

Whatever it sends, the server must answer without a 500, and every error must be an
OperationOutcome (FastAPI's own error bodies never reach a client). The document declares
the query and header parameters the routes read (_count, _since, _cursor, search parameters,
If-Match, If-None-Exist, Prefer), with examples at the edges of what each takes, so those
are sent too. Examples are few per operation: this runs in every `make test`.
"""

from __future__ import annotations

import json
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings

from tests.conftest import LiveServer

OPENAPI = json.loads((Path(__file__).resolve().parents[2] / "openapi" / "openapi.json").read_text())
schema = schemathesis.openapi.from_dict(OPENAPI)


@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors_and_every_error_is_an_operation_outcome(
    case: schemathesis.Case, live_server: LiveServer
) -> None:
    response = case.call(base_url=live_server.base_url, headers=live_server.headers)
    assert response.status_code < 500, (case.method, case.formatted_path, response.text)
    content_type = response.headers.get("content-type", [""])[0]  # header values are lists
    if case.path == "/auth/token" and content_type.startswith("application/json"):
        # The OAuth 2.0 token endpoint answers with OAuth's errors (RFC 6749, section 5.2).
        if response.status_code >= 400:
            assert "error" in response.json(), (response.status_code, response.text)
        return
    if response.status_code >= 400:
        assert content_type.startswith("application/fhir+json"), content_type
        body = response.json()
        assert body["resourceType"] == "OperationOutcome", body
        assert body["issue"], body
