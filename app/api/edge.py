"""What every FHIR router does at the HTTP edge: read the body within the size limit, choose
the response format, find the runtime, and describe all that in the OpenAPI document.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request

from app.fhir.errors import InvalidResource, PayloadTooLarge
from app.fhir.http import negotiate, require_json_body
from app.fhir.text import require_fhir_text
from app.fhir.validation import require_reasonable_depth
from app.runtime import Runtime

OUTCOME_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["resourceType", "issue"],
    "properties": {"resourceType": {"const": "OperationOutcome"}, "issue": {"type": "array"}},
}


def runtime(request: Request) -> Runtime:
    found: Runtime = request.app.state.runtime
    return found


def media(request: Request) -> str:
    """The media type to answer with (406 before any work when none can be produced)."""
    return negotiate(request.headers.get("accept"), request.query_params.get("_format"))


#: How the path's parameters are named in a 400 (as the rest of the API names them).
_PATH_NAMES = {"resource_type": "type", "resource_id": "id", "version_id": "vid"}


def require_plain_url(request: Request) -> None:
    """400 for a control character in the path's parameters or in the query's names and
    values (app/fhir/text.py), before anything reaches the database."""
    for name, value in request.path_params.items():
        if isinstance(value, str):
            require_fhir_text(value, where=_PATH_NAMES.get(name, name))
    for name, value in request.query_params.multi_items():
        require_fhir_text(name, where=name)
        require_fhir_text(value, where=name)


async def read_body(request: Request) -> bytes:
    """The body, 413 past the configured limit (WAYMARK_MAX_BODY_BYTES).

    The body is read in chunks so an over-size body is refused without being held whole.
    """
    limit = runtime(request).settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"The body is larger than this server's limit of {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"The body is larger than this server's limit of {limit} bytes")
    return bytes(body)


async def json_body(request: Request, *, patch: bool = False) -> Any:
    """The parsed JSON body; 415 for another media type, 413 past the configured limit."""
    require_json_body(request.headers.get("content-type"), patch=patch)
    body = await read_body(request)
    if not body:
        raise InvalidResource("The request has no body")
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise InvalidResource(f"The body is not valid JSON: {error}") from error
    require_reasonable_depth(document)
    return document


def fhir_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/fhir+json": {"schema": schema}, "application/json": {"schema": schema}}


def responses(
    success: dict[int, str], success_schema: dict[str, Any], *errors: int
) -> dict[int | str, Any]:
    """OpenAPI responses: the successes, and 400/401/403/404/406 plus ``errors`` as
    OperationOutcomes."""
    described: dict[int | str, Any] = {
        code: {"description": text, "content": fhir_content(success_schema)}
        for code, text in success.items()
    }
    for code in (400, 401, 403, 404, 406, *errors):
        described[code] = {
            "description": "OperationOutcome explaining the failure",
            "content": fhir_content(OUTCOME_SCHEMA),
        }
    return described


def request_body(
    schema: dict[str, Any], media_type: str = "application/fhir+json"
) -> dict[str, Any]:
    content = {media_type: {"schema": schema}}
    if media_type == "application/fhir+json":
        content["application/json"] = {"schema": schema}
    return {"requestBody": {"required": True, "content": content}}


# -- the query and header parameters the FHIR routes read from the request ------------------
# Handlers read them from the request itself (their meaning depends on the resource type),
# so they are declared here for the OpenAPI document only: declaring them changes nothing
# the server accepts, and lets clients and fuzzers see (and send) what it really reads.


def _parameter(
    where: str, name: str, description: str, *, example: object = None, **schema: Any
) -> dict[str, Any]:
    declared: dict[str, Any] = {
        "name": name,
        "in": where,
        "required": False,
        "description": description,
        "schema": schema or {"type": "string"},
    }
    if example is not None:  # fuzzers start from it: values at the edges of what is valid
        declared["example"] = example
    return declared


FORMAT = _parameter("query", "_format", "json or application/fhir+json (XML gives 406)")
PREFER = _parameter(
    "header",
    "Prefer",
    "return=minimal|representation|OperationOutcome on writes; handling=strict|lenient on searches",
    example="return=OperationOutcome, handling=lenient",
)
IF_MATCH = _parameter(
    "header",
    "If-Match",
    'Version-aware write: the ETag read, W/"n" (412 when stale, 400 when not an ETag)',
    example='W/"1"',
)
IF_NONE_EXIST = _parameter(
    "header",
    "If-None-Exist",
    "Conditional create: search criteria, e.g. identifier=system|value",
    example="identifier=https://fhir.nhs.uk/Id/nhs-number|9434765919",
)
_COUNT = _parameter(
    "query", "_count", "Page size (at most WAYMARK_MAX_PAGE_SIZE)", type="integer", minimum=0
)
_CURSOR = _parameter("query", "_cursor", "A page's position, from a next or previous link")
HISTORY_PARAMETERS = [
    _COUNT,
    _parameter("query", "_since", "Only versions since this instant", example="9999-12-31"),
    _CURSOR,
    FORMAT,
]
#: Parameters most types have, with values at the edges of what they take; each type's
#: full list is in /metadata.
_COMMON_SEARCH = {
    "_id": "a.b-c",
    "_lastUpdated": "le9999",
    "_tag": "http://example.org|x",
    "identifier": "https://fhir.nhs.uk/Id/nhs-number|9434765919",
    "patient": "Patient/x",
    "subject": "http://testserver/Patient/x",
    "status": "active,completed",
    "code": "http://snomed.info/sct|",
    "category": "|3457005",
    "date": "sa0001-01-01T00:00:00+01:00",
    "value-quantity": "ge5.40|http://unitsofmeasure.org|{score}",
    "family": "Ólafs",
    "birthdate": "ge9999-12-31",
    "url": "https://fhir.waymark.org.uk/",
}
SEARCH_PARAMETERS = [
    _COUNT,
    _CURSOR,
    _parameter(
        "query", "_sort", "Sort keys, comma-separated, '-' for descending", example="-_lastUpdated"
    ),
    _parameter("query", "_include", "Type:parameter[:targetType]", example="ServiceRequest:*"),
    _parameter("query", "_revinclude", "Type:parameter[:targetType]", example="Task:focus"),
    _parameter("query", "_elements", "Elements to return, comma-separated", example="id"),
    _parameter("query", "_summary", "count: only the total", enum=["count"]),
    _parameter(
        "query", "_total", "Whether to count all matches", enum=["none", "estimate", "accurate"]
    ),
    FORMAT,
    *(
        _parameter("query", name, f"Search parameter {name} (see /metadata)", example=example)
        for name, example in _COMMON_SEARCH.items()
    ),
    PREFER,
]
