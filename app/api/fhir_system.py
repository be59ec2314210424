"""The FHIR system interactions at the base URL: transaction and batch Bundles.

A thin edge like app/api/fhir_rest.py: it reads the Bundle, opens the one transaction and hands
both to app/fhir/transactions.py. The route is named "transaction"; the CapabilityStatement
lists the transaction and batch interactions when it is routed.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.api import edge
from app.api.access import audited_store, note_interaction
from app.fhir import transactions
from app.fhir.bundle_entries import BUNDLE_TYPES, METHODS, parse_bundle
from app.fhir.http import parse_prefer

router = APIRouter(tags=["FHIR REST"])

_ENTRY_SCHEMA = {
    "type": "object",
    "required": ["request"],
    "properties": {
        "fullUrl": {"type": "string"},
        "resource": {
            "type": "object",
            "required": ["resourceType"],
            "properties": {"resourceType": {"type": "string"}},
            "additionalProperties": True,
        },
        "request": {
            "type": "object",
            "required": ["method", "url"],
            "properties": {
                "method": {"type": "string", "enum": list(METHODS)},
                "url": {"type": "string"},
                "ifNoneExist": {"type": "string"},
                "ifMatch": {"type": "string"},
            },
        },
    },
}
_BUNDLE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["resourceType", "type"],
    "properties": {
        "resourceType": {"const": "Bundle"},
        "type": {"type": "string", "enum": list(BUNDLE_TYPES)},
        "entry": {"type": "array", "items": _ENTRY_SCHEMA},
    },
}
_RESPONSE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["resourceType", "type"],
    "properties": {
        "resourceType": {"const": "Bundle"},
        "type": {"type": "string", "enum": [f"{t}-response" for t in BUNDLE_TYPES]},
    },
}


@router.post(
    "/",
    name="transaction",
    summary="Process a transaction Bundle (all entries or none) or a batch Bundle "
    "(each entry on its own)",
    description=(
        "A transaction runs its entries in FHIR's order (DELETE, POST, PUT/PATCH, GET/HEAD) "
        "in one database transaction; urn:uuid fullUrls and conditional references "
        "(`Patient?identifier=...`) are resolved to `Type/id`. If any entry fails, nothing is "
        "kept and the answer is that entry's OperationOutcome, with that entry's status and "
        "`Bundle.entry[n]` in `issue.expression`. A batch answers every entry with its own "
        "status (and OperationOutcome when it failed). The most entries one Bundle may hold is "
        "a setting (WAYMARK_MAX_BUNDLE_ENTRIES), named in the CapabilityStatement; beyond it "
        "the answer is 413. What one Bundle may read is bounded as a whole: the resources its "
        "entries may ask for (each search's _count, plus 1,000 with _include/_revinclude) by "
        "WAYMARK_MAX_REQUEST_RESOURCES, checked before any entry runs (413), and the bytes of "
        "the resources its answer carries by WAYMARK_MAX_RESPONSE_BYTES, counted as they are "
        "read (past it the whole Bundle, batch or transaction, is refused with 400 too-costly)."
    ),
    responses=edge.responses(
        {200: "A transaction-response or batch-response Bundle, entries in request order"},
        _RESPONSE_SCHEMA,
        405,
        409,
        410,
        412,
        413,
        415,
        422,
    ),
    openapi_extra={
        **edge.request_body(_BUNDLE_SCHEMA),
        "parameters": [edge.PREFER, edge.FORMAT],
    },
)
async def transaction_or_batch(request: Request) -> Response:
    media = edge.media(request)
    document = await edge.json_body(request)
    runtime = edge.runtime(request)
    settings = runtime.settings
    if isinstance(document, dict) and document.get("type") == "batch":
        note_interaction(request, "batch")  # the route's own name is "transaction"
    bundle = parse_bundle(
        document, max_entries=settings.max_bundle_entries, base_url=settings.base_url
    )
    prefer = parse_prefer(request.headers.get("prefer"))
    async with audited_store(request, write=True) as store:
        body = await transactions.process(
            bundle,
            store=store,
            conn=store.repo.conn,
            base_url=settings.base_url,
            return_preference=prefer.return_,
        )
    return Response(body, media_type=media)
