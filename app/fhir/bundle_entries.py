"""Reading a transaction or batch Bundle's envelope into entries, before anything is done.

Every entry is checked here (method, url, resource, conditions), so a transaction is refused
before it touches the database; a batch keeps each unreadable entry's error as that entry's
answer. Errors name the entry they concern in ``issue.expression`` (``Bundle.entry[3]...``).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

from app.fhir.errors import FhirError, InvalidRequest, InvalidResource, PayloadTooLarge
from app.fhir.http import JSON_PATCH, parse_if_match
from app.fhir.search.parse import conditional_criteria
from app.fhir.store import require_valid_id
from app.fhir.validation import require_interaction

BUNDLE_TYPES = ("transaction", "batch")
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")

# Type, Type/id or Type/id/_history/vid: the URLs an entry may name (operations are not served).
_URL_PATH = re.compile(r"^([A-Z][A-Za-z]*)(?:/([^/]+)(?:/_history/([^/]+))?)?$")
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
# Expressions that name an element of the entry itself rather than of its resource.
_ENTRY_ELEMENTS = frozenset({"request", "resource", "fullUrl"})
_HEADER_ELEMENTS = {"If-Match": "request.ifMatch", "If-None-Exist": "request.ifNoneExist"}
_UNSUPPORTED_CONDITIONS = ("ifNoneMatch", "ifModifiedSince")


@dataclass(slots=True)
class Entry:
    """One entry's request, as understood."""

    index: int
    method: str
    resource_type: str
    resource_id: str | None = None
    version_id: str | None = None
    query: str | None = None  # the url's search part: a search, or a conditional update
    full_url: str | None = None
    resource: dict[str, Any] | None = None
    if_none_exist: str | None = None
    if_match: int | None = None
    patch: list[Any] | None = None  # the JSON Patch a PATCH entry's Binary carries

    @property
    def writes(self) -> bool:
        return self.method not in ("GET", "HEAD")

    @property
    def interaction(self) -> str:
        """The FHIR interaction this entry asks for."""
        if self.method in ("GET", "HEAD"):
            if self.resource_id is None:
                return "search-type"
            return "read" if self.version_id is None else "vread"
        return {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(self.method, "delete")


@dataclass(frozen=True, slots=True)
class BundleRequest:
    type: str  # transaction | batch
    #: In request order; in a batch an entry that could not be read is its error.
    entries: list[Entry | FhirError]


def parse_bundle(document: Any, *, max_entries: int, base_url: str) -> BundleRequest:
    """The Bundle's entries; raises for a Bundle that cannot be processed at all, and for a
    transaction any of whose entries cannot be."""
    bundle_type, raw_entries = _envelope(document, max_entries)
    _refuse_duplicate_full_urls(raw_entries)
    entries: list[Entry | FhirError] = []
    for index, raw in enumerate(raw_entries):
        try:
            entries.append(_entry(index, raw, base_url))
        except FhirError as error:
            body = raw.get("resource") if isinstance(raw, dict) else None
            body_type = body.get("resourceType") if isinstance(body, dict) else None
            located = locate(error, index, str(body_type) if body_type else None)
            if bundle_type == "transaction":
                raise located from error
            entries.append(located)
    return BundleRequest(bundle_type, entries)


def locate(error: FhirError, index: int, resource_type: str | None, label: str = "") -> FhirError:
    """``error`` as the error of entry ``index``: the same class (so the same HTTP status),
    every issue's expression made absolute (``Bundle.entry[3].resource.subject``)."""
    where = f"Bundle.entry[{index}]"
    prefix = f"{where} ({label})" if label else where
    issues = [
        dataclasses.replace(
            issue,
            diagnostics=f"{prefix}: {issue.diagnostics}",
            expression=_located_expressions(where, resource_type, issue.expression),
        )
        for issue in error.issues
    ]
    # Headers such as an entry's ETag describe that entry, not the response to the Bundle.
    return dataclasses.replace(error, diagnostics=issues[0].diagnostics, issues=issues, headers={})


def _located_expressions(
    where: str, resource_type: str | None, expressions: tuple[str, ...]
) -> tuple[str, ...]:
    located = []
    for expression in expressions:
        head = re.split(r"[.\[]", expression, maxsplit=1)[0]
        if resource_type is not None and head == resource_type:
            located.append(f"{where}.resource{expression[len(head) :]}")
        elif head in _ENTRY_ELEMENTS:
            located.append(f"{where}.{expression}")
        elif expression in _HEADER_ELEMENTS:
            located.append(f"{where}.{_HEADER_ELEMENTS[expression]}")
        else:
            located.append(expression)  # a search parameter's name, say
    if not located or not located[0].startswith(where):
        located.insert(0, where)
    return tuple(located)


def _envelope(document: Any, max_entries: int) -> tuple[str, list[Any]]:
    if not isinstance(document, dict) or document.get("resourceType") != "Bundle":
        raise InvalidResource(
            "The body must be a Bundle of type transaction or batch", expression=("resourceType",)
        )
    bundle_type = document.get("type")
    if bundle_type not in BUNDLE_TYPES:
        raise InvalidRequest(
            f"A Bundle of type '{bundle_type}' is not processed here: the base URL takes "
            "transaction and batch Bundles",
            expression=("Bundle.type",),
        )
    raw_entries = document.get("entry", [])
    if not isinstance(raw_entries, list):
        raise InvalidResource("Bundle.entry must be an array", expression=("Bundle.entry",))
    if len(raw_entries) > max_entries:
        raise PayloadTooLarge(
            f"The Bundle has {len(raw_entries)} entries; this server processes at most "
            f"{max_entries} in one Bundle. Send the entries in several Bundles",
            expression=("Bundle.entry",),
        )
    return str(bundle_type), raw_entries


def _refuse_duplicate_full_urls(raw_entries: list[Any]) -> None:
    first_seen: dict[str, int] = {}
    for index, raw in enumerate(raw_entries):
        full_url = raw.get("fullUrl") if isinstance(raw, dict) else None
        if not isinstance(full_url, str):
            continue
        if full_url in first_seen:
            raise InvalidRequest(
                f"Bundle.entry[{index}] has the same fullUrl as "
                f"Bundle.entry[{first_seen[full_url]}]; each entry's fullUrl must be unique",
                expression=(f"Bundle.entry[{index}].fullUrl",),
            )
        first_seen[full_url] = index


def _entry(index: int, raw: Any, base_url: str) -> Entry:
    if not isinstance(raw, dict):
        raise InvalidRequest("A Bundle entry must be a JSON object")
    request = raw.get("request")
    if not isinstance(request, dict):
        raise InvalidRequest("The entry has no request (method and url)", expression=("request",))
    method = request.get("method")
    if method not in METHODS:
        raise InvalidRequest(
            "request.method must be one of " + ", ".join(METHODS), expression=("request.method",)
        )
    resource_type, resource_id, version_id, query = _target(request.get("url"), base_url)
    entry = Entry(index, str(method), resource_type, resource_id, version_id, query)
    entry.full_url = _optional_text(raw, "fullUrl", "fullUrl")
    entry.if_none_exist = _optional_text(request, "ifNoneExist", "request.ifNoneExist")
    if_match = _optional_text(request, "ifMatch", "request.ifMatch")
    entry.if_match = parse_if_match(if_match) if if_match is not None else None
    for condition in _UNSUPPORTED_CONDITIONS:
        if condition in request:
            raise InvalidRequest(
                f"request.{condition} is not supported", expression=(f"request.{condition}",)
            )
    resource = raw.get("resource")
    if resource is not None and not isinstance(resource, dict):
        raise InvalidResource("entry.resource must be a JSON object", expression=("resource",))
    entry.resource = resource
    _check_request(entry)
    return entry


def _optional_text(node: dict[str, Any], name: str, expression: str) -> str | None:
    value = node.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest(f"{expression} must be a non-empty string", expression=(expression,))
    if _CONTROL_CHARACTERS.search(value):
        raise InvalidRequest(f"{expression} holds control characters", expression=(expression,))
    return value


def _target(url: Any, base_url: str) -> tuple[str, str | None, str | None, str | None]:
    """(type, id, version, query) of an entry's request.url."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidRequest("The entry has no request.url", expression=("request.url",))
    if _CONTROL_CHARACTERS.search(url):
        raise InvalidRequest("request.url holds control characters", expression=("request.url",))
    if url.startswith(f"{base_url}/"):
        url = url[len(base_url) :]
    parts = urlsplit(url.lstrip("/"))
    if parts.scheme or parts.netloc:
        raise InvalidRequest(
            f"request.url must be relative to this server's base URL ({base_url})",
            expression=("request.url",),
        )
    match = _URL_PATH.match(parts.path)
    if match is None:
        raise InvalidRequest(
            "request.url must be Type, Type/id, Type/id/_history/version or Type?search",
            expression=("request.url",),
        )
    resource_type, resource_id, version_id = match.groups()
    if resource_id is not None:
        require_valid_id(resource_id)
    query = parts.query or None
    if query is not None and any(
        _CONTROL_CHARACTERS.search(name + value) for name, value in parse_qsl(query)
    ):
        raise InvalidRequest("request.url holds control characters", expression=("request.url",))
    return resource_type, resource_id, version_id, query


_INTERACTIONS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


def _check_request(entry: Entry) -> None:
    """What each method needs: the url's form, a resource of the url's type, its conditions."""
    if entry.method in ("GET", "HEAD"):
        interaction = "search-type" if entry.resource_id is None else "read"
        interaction = "vread" if entry.version_id is not None else interaction
    else:
        interaction = _INTERACTIONS[entry.method]
        if entry.version_id is not None:
            raise InvalidRequest(
                f"{entry.method} cannot name a version in request.url",
                expression=("request.url",),
            )
    require_interaction(entry.resource_type, interaction)
    if entry.if_none_exist is not None and entry.method != "POST":
        raise InvalidRequest(
            "request.ifNoneExist applies to POST only", expression=("request.ifNoneExist",)
        )
    if entry.if_match is not None and entry.method not in ("PUT", "PATCH", "DELETE"):
        raise InvalidRequest(
            "request.ifMatch applies to PUT, PATCH and DELETE only",
            expression=("request.ifMatch",),
        )
    if entry.method == "POST":
        _check_create(entry)
    elif entry.method == "PUT":
        _check_update(entry)
    elif entry.method in ("PATCH", "DELETE"):
        if entry.resource_id is None or entry.query is not None:
            raise InvalidRequest(
                f"{entry.method} takes request.url Type/id (conditional {entry.method.lower()} "
                "is not supported)",
                expression=("request.url",),
            )
        if entry.method == "PATCH":
            entry.patch = _json_patch(entry.resource)


def _require_resource(entry: Entry) -> dict[str, Any]:
    if entry.resource is None:
        raise InvalidResource(f"A {entry.method} entry needs a resource", expression=("resource",))
    body_type = entry.resource.get("resourceType")
    if body_type != entry.resource_type:
        raise InvalidResource(
            f"The entry's resource is a {body_type} but request.url names {entry.resource_type}",
            expression=("resource.resourceType",),
        )
    return entry.resource


def _check_create(entry: Entry) -> None:
    if entry.resource_id is not None or entry.query is not None:
        raise InvalidRequest(
            "POST takes request.url Type; for a conditional create use request.ifNoneExist",
            expression=("request.url",),
        )
    _require_resource(entry)
    if entry.if_none_exist is not None:
        conditional_criteria(entry.resource_type, entry.if_none_exist, where="request.ifNoneExist")


def _check_update(entry: Entry) -> None:
    resource = _require_resource(entry)
    if (entry.resource_id is None) == (entry.query is None):
        raise InvalidRequest(
            "PUT takes request.url Type/id, or Type?search for a conditional update",
            expression=("request.url",),
        )
    if entry.query is not None:  # a conditional update
        conditional_criteria(entry.resource_type, entry.query, where="request.url")
    body_id = resource.get("id")
    if entry.resource_id is not None and body_id != entry.resource_id:
        raise InvalidResource(
            f"The resource's id '{body_id}' does not match request.url's id '{entry.resource_id}'"
            if body_id is not None
            else "A PUT entry's resource must carry the id its request.url names",
            expression=("resource.id",),
        )


def _json_patch(resource: dict[str, Any] | None) -> list[Any]:
    """The JSON Patch in a PATCH entry: FHIR carries it as a Binary with base64 data."""
    if (
        resource is None
        or resource.get("resourceType") != "Binary"
        or resource.get("contentType") != JSON_PATCH
        or not isinstance(resource.get("data"), str)
    ):
        raise InvalidResource(
            f"A PATCH entry's resource must be a Binary whose contentType is {JSON_PATCH} and "
            "whose data is the JSON Patch, base64-encoded",
            expression=("resource",),
        )
    try:
        operations = orjson.loads(base64.b64decode(resource["data"], validate=True))
    except (binascii.Error, orjson.JSONDecodeError) as error:
        raise InvalidResource(
            "The Binary's data is not a base64-encoded JSON document",
            expression=("resource.data",),
        ) from error
    if not isinstance(operations, list):
        raise InvalidResource(
            "A JSON Patch document is an array of operations", expression=("resource.data",)
        )
    return operations
