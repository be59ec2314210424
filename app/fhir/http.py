"""FHIR's HTTP conventions: formats, Prefer, ETag and If-Match, dates in headers."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from app.fhir.errors import InvalidRequest, NotAcceptable, UnsupportedMediaType
from app.fhir.numbers import whole_number

FHIR_JSON = "application/fhir+json"
PLAIN_JSON = "application/json"
JSON_PATCH = "application/json-patch+json"

_JSON_FORMATS = {
    "json": FHIR_JSON,
    FHIR_JSON: FHIR_JSON,
    PLAIN_JSON: PLAIN_JSON,
    "application/json+fhir": FHIR_JSON,  # the DSTU2 name, still sent by some clients
}
_XML_FORMATS = {
    "xml",
    "text/xml",
    "application/xml",
    "application/fhir+xml",
    "application/xml+fhir",
}
_ANY = {"*/*", "application/*"}


def _media_types(header: str) -> list[tuple[str, float]]:
    result = []
    for part in header.split(","):
        fields = [f.strip() for f in part.split(";")]
        media = fields[0].lower()
        if not media:
            continue
        quality = 1.0
        for param in fields[1:]:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        result.append((media, quality))
    return result


def negotiate(accept: str | None, format_param: str | None) -> str:
    """The media type to answer with, or 406 when only XML (or nothing JSON) is acceptable."""
    if format_param:
        wanted = format_param.strip().lower().replace(" ", "+")
        wanted = wanted.split(";")[0]
        if wanted in _JSON_FORMATS:
            return _JSON_FORMATS[wanted]
        if wanted in _XML_FORMATS:
            raise NotAcceptable("This server speaks FHIR JSON only; XML is not supported")
        raise NotAcceptable(f"_format '{format_param}' is not supported; use json")
    if not accept:
        return FHIR_JSON
    best: tuple[float, str] | None = None
    for media, quality in _media_types(accept):
        if quality <= 0:
            continue
        if media in _JSON_FORMATS or media in _ANY or media == "application/fhir+ndjson":
            chosen = PLAIN_JSON if media == PLAIN_JSON else FHIR_JSON
            if best is None or quality > best[0]:
                best = (quality, chosen)
    if best is None:
        raise NotAcceptable(
            "This server answers with application/fhir+json or application/json only"
        )
    return best[1]


def require_json_body(content_type: str | None, *, patch: bool = False) -> None:
    media = (content_type or "").split(";")[0].strip().lower()
    accepted = {JSON_PATCH} if patch else {FHIR_JSON, PLAIN_JSON, "application/json+fhir"}
    if media in accepted:
        return
    if patch:
        raise UnsupportedMediaType(
            f"PATCH takes a JSON Patch document ({JSON_PATCH}); got '{media or 'none'}'"
        )
    raise UnsupportedMediaType(
        f"The body must be {FHIR_JSON} or {PLAIN_JSON}; got '{media or 'no Content-Type'}'"
    )


@dataclass(frozen=True, slots=True)
class Preferences:
    return_: str = "representation"  # minimal | representation | OperationOutcome
    handling: str = "strict"  # strict | lenient


def parse_prefer(header: str | None) -> Preferences:
    if not header:
        return Preferences()
    return_, handling = "representation", "strict"
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        value = value.strip().strip('"')
        if name.strip() == "return" and value in ("minimal", "representation", "OperationOutcome"):
            return_ = value
        elif name.strip() == "handling" and value in ("strict", "lenient"):
            handling = value
    return Preferences(return_, handling)


# RFC 9110 section 8.8.3: an entity-tag is a quoted string, weak when prefixed with W/. FHIR's
# ETags are W/"n" (the version id); "n" is the same version in the strong form some clients
# send. A bare 3, "*", or a list of tags is malformed here: a version-aware write names the one
# version it read.
_ENTITY_TAG = re.compile(r'(?:W/)?"([^"]*)"')


def parse_if_match(header: str | None) -> int | None:
    """The version an If-Match header names (``W/"3"`` or ``"3"``), or None when absent.

    PUT, PATCH and DELETE, and Bundle entries' ``request.ifMatch``, all read it here."""
    if header is None:
        return None
    tag = _ENTITY_TAG.fullmatch(header.strip())
    version = whole_number(tag.group(1)) if tag else None
    if version is None:
        raise InvalidRequest(
            f"If-Match must name a version as W/\"n\" (an ETag this server sent); got '{header}'",
            expression=("If-Match",),
        )
    return version


def etag(version_id: int) -> str:
    return f'W/"{version_id}"'


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def http_date(value: datetime) -> str:
    """An HTTP date (RFC 9110 IMF-fixdate), as ``email.utils.format_datetime(usegmt=True)``
    writes it, without its cost on every response."""
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return (
        f"{_DAYS[value.weekday()]}, {value.day:02d} {_MONTHS[value.month - 1]} "
        f"{value.year:04d} {value.hour:02d}:{value.minute:02d}:{value.second:02d} GMT"
    )
