"""The search-parameter registry: which parameters each resource type has, as data.

The definitions live in ``parameters.json`` beside this module. The index is maintained from
this registry on every write, and ``/metadata`` lists it, so the two can never disagree.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib.resources import files

from app.fhir.resources import SERVED

SEARCH_PARAMETER_BASE = "http://hl7.org/fhir/SearchParameter"
WAYMARK_SEARCH_PARAMETER_BASE = "https://waymark.nhs.uk/fhir/SearchParameter"

TYPES = frozenset({"token", "string", "date", "reference", "quantity", "uri", "number"})


@dataclass(frozen=True, slots=True)
class SearchParameter:
    code: str
    type: str  # token | string | date | reference | quantity | uri
    paths: tuple[tuple[str, ...], ...]  # element paths under the resource; () for _id/_lastUpdated
    documentation: str
    definition: str
    targets: frozenset[str] = frozenset()  # reference types indexed (empty: any)

    @property
    def indexed(self) -> bool:
        return bool(self.paths)


def _common(resource_type: str) -> list[SearchParameter]:
    def meta(code: str, type_: str, path: str, text: str, name: str) -> SearchParameter:
        return SearchParameter(
            code, type_, ((("meta", path),)), text, f"{SEARCH_PARAMETER_BASE}/Resource-{name}"
        )

    return [
        SearchParameter("_id", "token", (), "Logical id", f"{SEARCH_PARAMETER_BASE}/Resource-id"),
        SearchParameter(
            "_lastUpdated",
            "date",
            (),
            "When the resource version last changed",
            f"{SEARCH_PARAMETER_BASE}/Resource-lastUpdated",
        ),
        meta("_tag", "token", "tag", "Tags on the resource", "tag"),
        meta("_profile", "uri", "profile", "Profiles the resource claims", "profile"),
        meta("_security", "token", "security", "Security labels on the resource", "security"),
    ]


@cache
def _definitions() -> dict[str, list[dict[str, object]]]:
    data = json.loads(files("app.fhir.search").joinpath("parameters.json").read_text("utf-8"))
    resources: dict[str, list[dict[str, object]]] = data["resources"]
    return resources


@cache
def parameters_for(resource_type: str) -> dict[str, SearchParameter]:
    """All search parameters of one resource type, by code."""
    params = {p.code: p for p in _common(resource_type)}
    for entry in _definitions().get(resource_type, []):
        code = str(entry["code"])
        documentation = str(entry.get("documentation", ""))
        waymark_own = documentation.startswith("Waymark")
        base = WAYMARK_SEARCH_PARAMETER_BASE if waymark_own else SEARCH_PARAMETER_BASE
        paths = entry["paths"]
        assert isinstance(paths, list)
        targets = entry.get("target", [])
        assert isinstance(targets, list)
        params[code] = SearchParameter(
            code=code,
            type=str(entry["type"]),
            paths=tuple(tuple(str(p).split(".")) for p in paths),
            documentation=documentation or f"{resource_type} {code}",
            definition=f"{base}/{resource_type}-{code}",
            targets=frozenset(str(t) for t in targets),
        )
    return params


def indexed_parameters(resource_type: str) -> list[SearchParameter]:
    """The parameters kept in index tables (_id and _lastUpdated read the resource table)."""
    return [p for p in parameters_for(resource_type).values() if p.indexed]


def all_served() -> dict[str, dict[str, SearchParameter]]:
    return {resource_type: parameters_for(resource_type) for resource_type in SERVED}
