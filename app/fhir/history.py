"""Paging through history: newest first, keyset paging on (lastUpdated, id, version).

A page ends at a version; the next page starts strictly after it in that order, so versions
written while a client pages (all newer than the first page's) never shift what follows, and
none is repeated or skipped. The position travels as an opaque ``_cursor``, like search's.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from app.fhir.errors import InvalidRequest
from app.fhir.numbers import MAX_WHOLE_NUMBER, whole_number
from app.fhir.repository import StoredVersion
from app.fhir.search.dates import parse_date


@dataclass(frozen=True, slots=True)
class HistoryKey:
    """A version's place in history order: (last_updated desc, id asc, version desc)."""

    last_updated: datetime
    resource_id: str
    version_id: int


@dataclass(frozen=True, slots=True)
class HistoryRequest:
    count: int
    since: datetime | None = None
    after: HistoryKey | None = None


def parse_history(params: list[tuple[str, str]], *, default_count: int) -> HistoryRequest:
    """_count, _since and _cursor; other parameters are left to the caller's self link."""
    given = dict(params)
    count = whole_number(given.get("_count", str(default_count)))
    if count is None:
        raise InvalidRequest("_count must be a whole number", expression=("_count",))
    since = None
    if "_since" in given:
        since = parse_date(given["_since"], param="_since", prefixed=False).start
    after = decode_cursor(given["_cursor"]) if "_cursor" in given else None
    return HistoryRequest(count, since, after)


def encode_cursor(version: StoredVersion) -> str:
    raw = orjson.dumps([version.last_updated.isoformat(), version.id, version.version_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> HistoryKey:
    """The position a cursor names; it comes back from the client, so it is checked whole."""
    not_ours = InvalidRequest("_cursor is not one this server gave out", expression=("_cursor",))
    try:
        moment, resource_id, version_id = orjson.loads(
            base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        )
        last_updated = datetime.fromisoformat(moment)
        aware = last_updated.tzinfo is not None
        last_updated = last_updated.astimezone(UTC)
    except (ValueError, TypeError, OverflowError) as error:
        raise not_ours from error
    fits = type(version_id) is int and 1 <= version_id <= MAX_WHOLE_NUMBER
    if not aware or not isinstance(resource_id, str) or not fits:
        raise not_ours
    return HistoryKey(last_updated, resource_id, version_id)
