"""Bundles of stored resources, assembled from the stored bytes (never re-serialised)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime

import orjson

from app.fhir.repository import StoredVersion
from app.fhir.store import instant


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


def searchset(
    *,
    base_url: str,
    resource_type: str,
    rows: Iterable[tuple[str, bytes]],
    total: int | None,
    links: Sequence[tuple[str, str]],
    now: datetime,
) -> bytes:
    entries = [
        b'{"fullUrl":"'
        + f"{base_url}/{resource_type}/{resource_id}".encode()
        + b'","resource":'
        + content
        + b',"search":{"mode":"match"}}'
        for resource_id, content in rows
    ]
    body = _open("searchset", now, total, links)
    if entries:
        body += b',"entry":[' + b",".join(entries) + b"]"
    return body + b"}"


def history(
    *,
    base_url: str,
    versions: Sequence[StoredVersion],
    links: Sequence[tuple[str, str]],
    now: datetime,
) -> bytes:
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
    body = _open("history", now, len(versions), links)
    if entries:
        body += b',"entry":[' + b",".join(entries) + b"]"
    return body + b"}"
