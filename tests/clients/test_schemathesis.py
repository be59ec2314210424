"""Schemathesis fuzzes every operation of the OpenAPI document against the real server, on
SQLite and on PostgreSQL (the live server runs on each database of the run).

Whatever it sends, the server must answer without a 500, and every error must be an
OperationOutcome (FastAPI's own error bodies never reach a client). The document declares
the query and header parameters the routes read (_count, _since, _cursor, search parameters,
If-Match, If-None-Exist, Prefer), with examples at the edges of what each takes, so those
are sent too.

A run cannot pass or fail by chance: generation is derandomized (the same examples on every
run, whatever ran before), with a fixed number of examples per operation and no example
database carried between runs. The inputs that once found 500s on PostgreSQL are explicit
cases, sent on every run through the same checks. Examples are few per operation: this runs
in every `make test`.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from tests.conftest import LiveServer

OPENAPI = json.loads((Path(__file__).resolve().parents[2] / "openapi" / "openapi.json").read_text())
schema = schemathesis.openapi.from_dict(OPENAPI)

#: Examples generated per operation (beyond the document's own and the coverage phase's).
EXAMPLES = 15


def _check(case: schemathesis.Case, response: Any) -> None:
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


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_server_errors_and_every_error_is_an_operation_outcome(
    case: schemathesis.Case, live_server: LiveServer
) -> None:
    response = case.call(base_url=live_server.base_url, headers=live_server.headers)
    _check(case, response)


def _long_family() -> str:
    """3,000 letters of several scripts (a fixed seed), far over PostgreSQL's ~2,700 bytes
    for one index entry."""
    letters = "abcdefghijklmnopqrstuvwxyzéüñçøłđßæœþαβγδεζηθДЖЗИЛПФ漢字仮名한국어😀"  # noqa: RUF001
    chosen = random.Random(11)
    return "".join(chosen.choice(letters) for _ in range(3000))


_SEARCH = ("/{resource_type}", "GET")
_CREATE = ("/{resource_type}", "POST")
_READ = ("/{resource_type}/{resource_id}", "GET")
#: The inputs that found 500s on PostgreSQL (issue 18), as (operation, case arguments).
FOUND: dict[str, tuple[tuple[str, str], dict[str, Any]]] = {
    "NUL in a search value": (
        _SEARCH,
        {"path_parameters": {"resource_type": "Patient"}, "query": {"name": "a\x00b"}},
    ),
    "NUL in a search parameter name": (
        _SEARCH,
        {"path_parameters": {"resource_type": "Patient"}, "query": {"na\x00me": "a"}},
    ),
    "NUL in an id": (
        _READ,
        {"path_parameters": {"resource_type": "Patient", "resource_id": "a\x00b"}},
    ),
    "NUL in a resource": (
        _CREATE,
        {
            "path_parameters": {"resource_type": "Patient"},
            "body": {"resourceType": "Patient", "name": [{"family": "a\x00b"}]},
            "media_type": "application/fhir+json",
        },
    ),
    "NUL in If-None-Exist": (
        _CREATE,
        {
            "path_parameters": {"resource_type": "Patient"},
            "headers": {"If-None-Exist": "family=a%00b"},
            "body": {"resourceType": "Patient", "name": [{"family": "Example"}]},
            "media_type": "application/fhir+json",
        },
    ),
    "a 3,000-character family written": (
        _CREATE,
        {
            "path_parameters": {"resource_type": "Patient"},
            "body": {"resourceType": "Patient", "name": [{"family": _long_family()}]},
            "media_type": "application/fhir+json",
        },
    ),
    "a 3,000-character family searched": (
        _SEARCH,
        {
            "path_parameters": {"resource_type": "Patient"},
            "query": {"family": "".join(random.Random(12).choices("abcdefghij", k=3000))},
        },
    ),
    "an empty alternative": (
        _SEARCH,
        {"path_parameters": {"resource_type": "Patient"}, "query": {"family": "a,"}},
    ),
}


@pytest.mark.parametrize("found", FOUND)
def test_the_inputs_that_found_server_errors(found: str, live_server: LiveServer) -> None:
    (path, method), arguments = FOUND[found]
    case = schema[path][method].Case(**arguments)
    response = case.call(base_url=live_server.base_url, headers=live_server.headers)
    _check(case, response)
    if "NUL" in found:
        assert response.status_code == 400, response.text
    if found == "a 3,000-character family written":
        assert response.status_code == 201, response.text
