"""Index rows extracted from a resource on write, as the registry says.

Each search parameter type has one table; :func:`index_rows` turns a document into the rows
of all of them. Values that cannot be indexed (a contained reference, an unparseable date the
validator let through) are left out rather than guessed.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from app.fhir.errors import FhirError
from app.fhir.resources import SERVED
from app.fhir.search.dates import EARLIEST, LATEST, parse_date
from app.fhir.search.registry import SearchParameter, indexed_parameters

_NAME_PARTS = ("text", "family", "given", "prefix", "suffix")
_ADDRESS_PARTS = ("text", "line", "city", "district", "state", "postalCode", "country")


def normalise(text: str) -> str:
    """Case- and accent-insensitive form used by string search (FHIR: 'Eve' finds 'ève')."""
    if text.isascii():  # nothing to decompose, and casefold() is lower() (the common case)
        return text.lower().strip()
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c)).strip()


@dataclass
class IndexRows:
    tokens: list[tuple[str, str, str]] = field(default_factory=list)  # param, system, code
    strings: list[tuple[str, str, str]] = field(default_factory=list)  # param, value, exact
    references: list[tuple[str, str, str]] = field(default_factory=list)  # param, type, id
    dates: list[tuple[str, datetime, datetime]] = field(default_factory=list)  # param, low, high
    quantities: list[tuple[str, Decimal, str, str]] = field(default_factory=list)

    def deduplicated(self) -> IndexRows:
        return IndexRows(
            sorted(set(self.tokens)),
            sorted(set(self.strings)),
            sorted(set(self.references)),
            sorted(set(self.dates)),
            sorted(set(self.quantities)),
        )


def elements(node: Any, path: tuple[str, ...]) -> Iterator[Any]:
    """Every value at ``path``, arrays flattened at each step."""
    if isinstance(node, list):
        for item in node:
            yield from elements(item, path)
        return
    if not path:
        yield node
        return
    if isinstance(node, dict) and path[0] in node:
        yield from elements(node[path[0]], path[1:])


def token_values(value: Any) -> Iterator[tuple[str, str]]:
    """(system, code) pairs of an Identifier, CodeableConcept, Coding, ContactPoint or code."""
    if isinstance(value, bool):
        yield "", "true" if value else "false"
    elif isinstance(value, str):
        yield "", value
    elif isinstance(value, dict):
        for coding in value.get("coding", ()):
            yield from token_values(coding)
        if isinstance(value.get("value"), str):  # Identifier, ContactPoint
            yield value.get("system", ""), value["value"]
        if isinstance(value.get("code"), str):  # Coding
            yield value.get("system", ""), value["code"]


def _token_texts(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        if isinstance(value.get("text"), str):
            yield value["text"]
        for coding in value.get("coding", ()):
            if isinstance(coding, dict) and isinstance(coding.get("display"), str):
                yield coding["display"]
        if isinstance(value.get("display"), str):
            yield value["display"]


def string_values(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        parts = _NAME_PARTS if ("family" in value or "given" in value) else _ADDRESS_PARTS
        for part in parts:
            yield from (v for v in elements(value, (part,)) if isinstance(v, str))


def _range(value: Any) -> tuple[datetime, datetime] | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = parse_date(value, param="index", prefixed=False)
    except FhirError:
        return None
    return parsed.start, parsed.end


def date_ranges(value: Any) -> Iterator[tuple[datetime, datetime]]:
    if isinstance(value, str):
        whole = _range(value)
        if whole is not None:
            yield whole
    elif isinstance(value, dict) and ("start" in value or "end" in value):  # Period
        start = _range(value["start"]) if "start" in value else (EARLIEST, EARLIEST)
        end = _range(value["end"]) if "end" in value else (LATEST, LATEST)
        if start is not None and end is not None:
            yield start[0], end[1]


def reference_targets(value: Any, base_url: str) -> Iterator[tuple[str, str]]:
    """(type, id) of a Reference or canonical; ('', url) for one elsewhere."""
    reference = value.get("reference") if isinstance(value, dict) else value
    if not isinstance(reference, str) or reference.startswith(("#", "urn:")):
        return
    if reference.startswith(f"{base_url}/"):
        reference = reference[len(base_url) + 1 :]
    elif "://" in reference:
        yield "", reference.split("|")[0]
        return
    parts = reference.split("/")
    if len(parts) in (2, 4) and parts[0] in SERVED and parts[1]:
        yield parts[0], parts[1]


def _quantities(value: Any) -> Iterator[tuple[Decimal, str, str]]:
    if isinstance(value, dict) and isinstance(value.get("value"), int | float | str):
        try:
            number = Decimal(str(value["value"]))
        except InvalidOperation:
            return
        yield number, str(value.get("system", "")), str(value.get("code", value.get("unit", "")))


def _add(rows: IndexRows, param: SearchParameter, value: Any, base_url: str) -> None:
    code = param.code
    if param.type in ("token", "uri"):
        rows.tokens.extend((code, s, c) for s, c in token_values(value))
        if param.type == "token":
            rows.strings.extend((f"{code}:text", normalise(t), t) for t in _token_texts(value))
    elif param.type == "string":
        rows.strings.extend((code, normalise(v), v) for v in string_values(value))
    elif param.type == "date":
        rows.dates.extend((code, low, high) for low, high in date_ranges(value))
    elif param.type == "reference":
        for target_type, target_id in reference_targets(value, base_url):
            if not param.targets or target_type in param.targets:
                rows.references.append((code, target_type, target_id))
        # A reference by business identifier (ODS code, client id) answers :identifier.
        if isinstance(value, dict) and isinstance(value.get("identifier"), dict):
            identifiers = token_values(value["identifier"])
            rows.tokens.extend((f"{code}:identifier", s, c) for s, c in identifiers)
    elif param.type == "quantity":
        rows.quantities.extend((code, *q) for q in _quantities(value))


def index_rows(resource_type: str, document: dict[str, Any], base_url: str) -> IndexRows:
    rows = IndexRows()
    for param in indexed_parameters(resource_type):
        for path in param.paths:
            for value in elements(document, path):
                _add(rows, param, value, base_url)
    return rows.deduplicated()
