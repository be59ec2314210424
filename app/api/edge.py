"""What every FHIR router does at the HTTP edge: read the body within the size limit, choose
the response format, find the runtime, and describe all that in the OpenAPI document.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request

from app.fhir.errors import InvalidResource, PayloadTooLarge
from app.fhir.http import negotiate, require_json_body
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
