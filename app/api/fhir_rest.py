"""The FHIR REST interactions: thin handlers that parse, open the transaction and delegate.

Each route is named after the FHIR interaction it implements; the CapabilityStatement is built
from those names, so it lists exactly what is served.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response

from app.api import edge
from app.api.access import audited_store
from app.api.edge import json_body as _json_body
from app.api.edge import media as _media
from app.api.edge import read_body as _read_body
from app.api.edge import request_body as _body
from app.api.edge import responses as _edge_responses
from app.api.edge import runtime as _runtime
from app.fhir import bundles
from app.fhir.errors import (
    Issue,
    MethodNotAllowed,
    UnsupportedMediaType,
    operation_outcome_bytes,
)
from app.fhir.history import encode_cursor, parse_history
from app.fhir.http import (
    etag,
    http_date,
    parse_if_match,
    parse_prefer,
)
from app.fhir.repository import StoredVersion
from app.fhir.resources import SERVED
from app.fhir.search.parse import conditional_criteria
from app.fhir.store import require_valid_id
from app.fhir.validation import require_interaction

router = APIRouter(tags=["FHIR REST"])

ResourceType = Annotated[
    str,
    Path(
        description="A FHIR resource type served here (see /metadata)",
        json_schema_extra={"enum": list(SERVED)},
    ),
]
ResourceId = Annotated[
    str, Path(description="Logical id", json_schema_extra={"pattern": r"^[A-Za-z0-9\-.]{1,64}$"})
]

_RESOURCE_SCHEMA = {
    "type": "object",
    "required": ["resourceType"],
    "properties": {"resourceType": {"type": "string", "enum": list(SERVED)}},
    "additionalProperties": True,
}


def _responses(success: dict[int, str], *errors: int) -> dict[int | str, Any]:
    return _edge_responses(success, _RESOURCE_SCHEMA, *errors)


def _check_interaction(resource_type: str, interaction: str) -> None:
    if resource_type == "metadata":  # POST /metadata etc. reach the type routes
        raise MethodNotAllowed("/metadata answers GET only")
    require_interaction(resource_type, interaction)


def _resource_response(
    request: Request,
    stored: StoredVersion,
    media: str,
    *,
    status: int = 200,
    location: bool = False,
    message: str = "",
    warnings: list[Issue] | None = None,
) -> Response:
    """The response to a read or write, shaped by ``Prefer: return=...``; ``warnings`` (an
    advisory gate not met) come back as issues of the OperationOutcome when it is asked for."""
    headers = {"ETag": etag(stored.version_id), "Last-Modified": http_date(stored.last_updated)}
    if location:
        base = _runtime(request).settings.base_url
        headers["Location"] = (
            f"{base}/{stored.resource_type}/{stored.id}/_history/{stored.version_id}"
        )
    prefer = parse_prefer(request.headers.get("prefer"))
    if prefer.return_ == "minimal":
        return Response(status_code=status, headers=headers)
    if prefer.return_ == "OperationOutcome":
        text = message or f"{stored.resource_type}/{stored.id} version {stored.version_id}"
        notes = [Issue("informational", text, severity="information"), *(warnings or [])]
        body = operation_outcome_bytes(notes)
        return Response(body, status_code=status, headers=headers, media_type=media)
    return Response(stored.content, status_code=status, headers=headers, media_type=media)


@router.get(
    "/{resource_type}/_history",
    name="history-type",
    summary="History of every resource of a type",
    responses=_responses({200: "A history Bundle"}),
    openapi_extra={"parameters": edge.HISTORY_PARAMETERS},
)
async def history_type(request: Request, resource_type: ResourceType) -> Response:
    return await _history(request, resource_type, None)


@router.get(
    "/{resource_type}/{resource_id}/_history",
    name="history-instance",
    summary="History of one resource",
    responses=_responses({200: "A history Bundle"}),
    openapi_extra={"parameters": edge.HISTORY_PARAMETERS},
)
async def history_instance(
    request: Request, resource_type: ResourceType, resource_id: ResourceId
) -> Response:
    return await _history(request, resource_type, resource_id)


async def _history(request: Request, resource_type: str, resource_id: str | None) -> Response:
    media = _media(request)
    _check_interaction(resource_type, "history-type" if resource_id is None else "history-instance")
    runtime = _runtime(request)
    base = runtime.settings.base_url
    params = [(k, v) for k, v in request.query_params.multi_items() if k != "_format"]
    wanted = parse_history(params, default_count=runtime.settings.default_page_size)
    async with audited_store(request, write=False) as store:
        page = await store.history(resource_type, resource_id, wanted)
    path = (
        f"{resource_type}/_history"
        if resource_id is None
        else f"{resource_type}/{resource_id}/_history"
    )
    links = [("self", f"{base}/{path}" + (f"?{urlencode(params)}" if params else ""))]
    if page.more and page.versions:
        following = [(k, v) for k, v in params if k != "_cursor"]
        following.append(("_cursor", encode_cursor(page.versions[-1])))
        links.append(("next", f"{base}/{path}?{urlencode(following)}"))
    # The whole history is counted only when all of it is on this one page.
    whole = wanted.after is None and not page.more
    body = bundles.history(
        base_url=base,
        versions=page.versions,
        links=links,
        now=runtime.clock(),
        total=len(page.versions) if whole else None,
    )
    return Response(body, media_type=media)


@router.get(
    "/{resource_type}/{resource_id}/_history/{version_id}",
    name="vread",
    summary="Read one version of a resource",
    responses=_responses({200: "The resource as it was at that version"}, 410),
    openapi_extra={"parameters": [edge.FORMAT]},
)
async def vread(
    request: Request, resource_type: ResourceType, resource_id: ResourceId, version_id: str
) -> Response:
    media = _media(request)
    _check_interaction(resource_type, "vread")
    async with audited_store(request, write=False) as store:
        stored = await store.vread(resource_type, resource_id, version_id)
    return _resource_response(request, stored, media)


@router.get(
    "/{resource_type}/{resource_id}",
    name="read",
    summary="Read the current version of a resource",
    responses=_responses({200: "The resource"}, 410),
    openapi_extra={"parameters": [edge.FORMAT]},
)
async def read(request: Request, resource_type: ResourceType, resource_id: ResourceId) -> Response:
    media = _media(request)
    _check_interaction(resource_type, "read")
    async with audited_store(request, write=False) as store:
        stored = await store.read(resource_type, resource_id)
    return _resource_response(request, stored, media)


@router.get(
    "/{resource_type}",
    name="search-type",
    summary="Search resources of a type",
    responses=_responses({200: "A searchset Bundle"}),
    openapi_extra={"parameters": edge.SEARCH_PARAMETERS},
)
async def search(request: Request, resource_type: ResourceType) -> Response:
    return await _search(request, resource_type, list(request.query_params.multi_items()))


@router.post(
    "/{resource_type}/_search",
    name="search-type-post",
    summary="Search resources of a type, parameters form-encoded in the body",
    responses=_responses({200: "A searchset Bundle"}, 415),
    openapi_extra={
        "parameters": edge.SEARCH_PARAMETERS,
        "requestBody": {
            "content": {
                "application/x-www-form-urlencoded": {
                    "schema": {"type": "object", "additionalProperties": {"type": "string"}}
                }
            }
        },
    },
)
async def search_post(request: Request, resource_type: ResourceType) -> Response:
    media_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if media_type != "application/x-www-form-urlencoded":
        raise UnsupportedMediaType(
            "POST _search takes application/x-www-form-urlencoded parameters"
        )
    body = (await _read_body(request)).decode("utf-8", errors="replace")
    params = list(request.query_params.multi_items()) + parse_qsl(body, keep_blank_values=True)
    return await _search(request, resource_type, params)


async def _search(request: Request, resource_type: str, params: list[tuple[str, str]]) -> Response:
    media = _media(request)
    _check_interaction(resource_type, "search-type")
    lenient = parse_prefer(request.headers.get("prefer")).handling == "lenient"
    async with audited_store(request, write=False) as store:
        body = await store.search(resource_type, params, lenient=lenient)
    return Response(body, media_type=media)


@router.post(
    "/{resource_type}",
    name="create",
    summary="Create a resource (conditionally, with If-None-Exist)",
    responses=_responses(
        {201: "Created", 200: "An existing resource matched If-None-Exist"}, 412, 413, 415
    ),
    openapi_extra={
        **_body(_RESOURCE_SCHEMA),
        "parameters": [edge.IF_NONE_EXIST, edge.PREFER, edge.FORMAT],
    },
    status_code=201,
)
async def create(request: Request, resource_type: ResourceType) -> Response:
    media = _media(request)
    _check_interaction(resource_type, "create")
    if_none_exist = request.headers.get("if-none-exist")
    if if_none_exist is not None:
        conditional_criteria(resource_type, if_none_exist, where="If-None-Exist")
    document = await _json_body(request)
    async with audited_store(request, write=True) as store:
        result = await store.create(
            document, resource_type=resource_type, if_none_exist=if_none_exist
        )
    return _resource_response(
        request,
        result.stored,
        media,
        status=201 if result.created else 200,
        location=True,
        message="Created" if result.created else "An existing resource matched If-None-Exist",
        warnings=store.warnings,
    )


@router.put(
    "/{resource_type}/{resource_id}",
    name="update",
    summary="Update a resource (or create it with this id), If-Match for versioned update",
    responses=_responses({200: "Updated", 201: "Created with the given id"}, 412, 413, 415),
    openapi_extra={
        **_body(_RESOURCE_SCHEMA),
        "parameters": [edge.IF_MATCH, edge.PREFER, edge.FORMAT],
    },
)
async def update(
    request: Request, resource_type: ResourceType, resource_id: ResourceId
) -> Response:
    media = _media(request)
    _check_interaction(resource_type, "update")
    if_match = parse_if_match(request.headers.get("if-match"))
    document = await _json_body(request)
    async with audited_store(request, write=True) as store:
        result = await store.update(resource_type, resource_id, document, if_match=if_match)
    return _resource_response(
        request,
        result.stored,
        media,
        status=201 if result.created else 200,
        location=result.created,
        warnings=store.warnings,
    )


@router.patch(
    "/{resource_type}/{resource_id}",
    name="patch",
    summary="Change a resource with a JSON Patch, If-Match for versioned patch",
    responses=_responses({200: "Patched"}, 410, 412, 413, 415, 422),
    openapi_extra={
        **_body({"type": "array", "items": {"type": "object"}}, "application/json-patch+json"),
        "parameters": [edge.IF_MATCH, edge.PREFER, edge.FORMAT],
    },
)
async def patch(request: Request, resource_type: ResourceType, resource_id: ResourceId) -> Response:
    media = _media(request)
    _check_interaction(resource_type, "patch")
    require_valid_id(resource_id)
    if_match = parse_if_match(request.headers.get("if-match"))
    operations = await _json_body(request, patch=True)
    async with audited_store(request, write=True) as store:
        result = await store.patch(resource_type, resource_id, operations, if_match=if_match)
    return _resource_response(request, result.stored, media)


@router.delete(
    "/{resource_type}/{resource_id}",
    name="delete",
    summary="Delete a resource (a tombstone version; history is kept), If-Match for versioned "
    "delete",
    responses={204: {"description": "Deleted (or already deleted)"}, **_responses({}, 405, 412)},
    openapi_extra={"parameters": [edge.IF_MATCH, edge.FORMAT]},
    status_code=204,
)
async def delete(
    request: Request, resource_type: ResourceType, resource_id: ResourceId
) -> Response:
    _media(request)
    _check_interaction(resource_type, "delete")
    if_match = parse_if_match(request.headers.get("if-match"))
    async with audited_store(request, write=True) as store:
        stored = await store.delete(resource_type, resource_id, if_match=if_match)
    headers = {"ETag": etag(stored.version_id)} if stored is not None else {}
    return Response(status_code=204, headers=headers)
