"""Bundles of stored resources, assembled from the stored bytes (never re-serialised)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from urllib.parse import urlencode

import orjson

from app.fhir.errors import Issue, operation_outcome_bytes
from app.fhir.repository import StoredVersion
from app.fhir.resources import instant, mandatory_elements
from app.fhir.search.parse import SearchRequest
from app.fhir.search.query import SearchPage


def _open(
    bundle_type: str, now: datetime, total: int | None, links: Sequence[tuple[str, str]]
) -> bytes:
    head: dict[str, object] = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"lastUpdated": instant(now)},
        "type": bundle_type,
    }
    if total is not None:
        head["total"] = total
    if links:
        head["link"] = [{"relation": rel, "url": url} for rel, url in links]
    return orjson.dumps(head)[:-1]


SUBSETTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "SUBSETTED",
}


def subset(content: bytes, elements: Sequence[str]) -> bytes:
    """The resource with only the elements asked for (_elements), marked SUBSETTED.

    FHIR (search.html#elements) returns the mandatory elements whatever is asked for, so
    the result is still a valid resource; a primitive's ``_name`` (its extensions) goes with
    ``name``.
    """
    resource = orjson.loads(content)
    mandatory = mandatory_elements(str(resource["resourceType"]))
    wanted = {"resourceType", "id", "meta", *elements, *mandatory}
    wanted |= {f"_{name}" for name in wanted}
    kept = {k: v for k, v in resource.items() if k in wanted}
    meta = dict(kept.get("meta", {}))
    meta["tag"] = [*meta.get("tag", []), SUBSETTED]
    kept["meta"] = meta
    return orjson.dumps(kept)


def _entry(base_url: str, resource_type: str, resource_id: str, content: bytes, mode: str) -> bytes:
    return (
        b'{"fullUrl":"'
        + f"{base_url}/{resource_type}/{resource_id}".encode()
        + b'","resource":'
        + content
        + b',"search":{"mode":"'
        + mode.encode()
        + b'"}}'
    )


def searchset(
    *,
    base_url: str,
    resource_type: str,
    rows: Iterable[tuple[str, bytes]],
    included: Iterable[tuple[str, str, bytes]] = (),
    total: int | None,
    links: Sequence[tuple[str, str]],
    now: datetime,
    elements: Sequence[str] | None = None,
    outcome: bytes | None = None,
) -> bytes:
    entries = [
        _entry(
            base_url,
            resource_type,
            resource_id,
            subset(content, elements) if elements else content,
            "match",
        )
        for resource_id, content in rows
    ]
    entries += [_entry(base_url, t, i, content, "include") for t, i, content in included]
    if outcome is not None:
        entries.append(b'{"resource":' + outcome + b',"search":{"mode":"outcome"}}')
    body = _open("searchset", now, total, links)
    if entries:
        body += b',"entry":[' + b",".join(entries) + b"]"
    return body + b"}"


def search_result(
    *, base_url: str, resource_type: str, page: SearchPage, request: SearchRequest, now: datetime
) -> bytes:
    """The searchset Bundle of one page: self/next/previous links as understood, includes,
    and a warning outcome naming what lenient handling ignored."""
    base = f"{base_url}/{resource_type}"
    canonical = request.canonical  # what was understood, without the page's position
    shown = [*canonical, ("_cursor", request.cursor)] if request.cursor else canonical
    links = [("self", base + (f"?{urlencode(shown)}" if shown else ""))]
    for relation, cursor in (("next", page.next_cursor), ("previous", page.previous_cursor)):
        if cursor is not None:
            links.append((relation, f"{base}?{urlencode([*canonical, ('_cursor', cursor)])}"))
    notes = [
        Issue("not-supported", f"Ignored '{name}': {why}", severity="warning")
        for name, why in request.ignored
    ]
    if page.included_truncated:
        notes.append(
            Issue(
                "too-costly",
                "_include and _revinclude reach more resources than one page carries: only "
                f"the first {len(page.included)} (by type and id) are here. Ask for fewer "
                "matches per page (_count) to have all of each page's",
                severity="warning",
                expression=tuple(sorted({n for n, _ in request.canonical if _is_include(n)})),
            )
        )
    outcome = operation_outcome_bytes(notes) if notes else None
    return searchset(
        base_url=base_url,
        resource_type=resource_type,
        rows=page.rows,
        included=page.included,
        total=page.total,
        links=links,
        now=now,
        elements=request.elements,
        outcome=outcome,
    )


def _is_include(name: str) -> bool:
    return name.split(":")[0] in ("_include", "_revinclude")


def history(
    *,
    base_url: str,
    versions: Sequence[StoredVersion],
    links: Sequence[tuple[str, str]],
    now: datetime,
    total: int | None = None,
) -> bytes:
    """A history Bundle of one page; ``total`` only when it is the count of the whole
    history asked for (FHIR: total is the number of matches, not of this page's entries)."""
    entries = []
    for version in versions:
        url = f"{version.resource_type}/{version.id}"
        status = "201 Created" if version.method == "POST" else "200 OK"
        if version.deleted:
            status = "204 No Content"
        meta = {
            "fullUrl": f"{base_url}/{url}",
            "request": {
                "method": version.method or ("DELETE" if version.deleted else "PUT"),
                "url": url if version.method != "POST" else version.resource_type,
            },
            "response": {
                "status": status,
                "etag": f'W/"{version.version_id}"',
                "lastModified": instant(version.last_updated),
            },
        }
        encoded = orjson.dumps(meta)
        if version.content is not None:
            encoded = encoded[:-1] + b',"resource":' + version.content + b"}"
        entries.append(encoded)
    body = _open("history", now, total, links)
    if entries:
        body += b',"entry":[' + b",".join(entries) + b"]"
    return body + b"}"


def response(*, bundle_type: str, entries: Sequence[bytes], now: datetime) -> bytes:
    """A transaction-response or batch-response Bundle of entries already encoded (each
    holding its resource's stored bytes)."""
    body = _open(bundle_type, now, None, ())
    if entries:
        body += b',"entry":[' + b",".join(entries) + b"]"
    return body + b"}"
