"""The search-parameter registry: which parameters each resource type has, as data.

The index is maintained from this registry on every write, and ``/metadata`` lists it, so the
two can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from app.fhir.resources import SERVED, model_class

SEARCH_PARAMETER_BASE = "http://hl7.org/fhir/SearchParameter"


@dataclass(frozen=True, slots=True)
class SearchParameter:
    code: str
    type: str  # token | date | reference | string | uri | quantity | number
    path: str  # dotted element path under the resource ('' for the special ones)
    documentation: str
    definition: str


#: Parameters every resource type has, answered from the resource table itself.
COMMON = (
    SearchParameter(
        "_id",
        "token",
        "",
        "Logical id of the resource",
        f"{SEARCH_PARAMETER_BASE}/Resource-id",
    ),
    SearchParameter(
        "_lastUpdated",
        "date",
        "",
        "When the resource version last changed",
        f"{SEARCH_PARAMETER_BASE}/Resource-lastUpdated",
    ),
)


def _has_element(resource_type: str, element: str) -> bool:
    return element in model_class(resource_type).model_fields


@cache
def parameters_for(resource_type: str) -> dict[str, SearchParameter]:
    """All search parameters of one resource type, by code."""
    params = {p.code: p for p in COMMON}
    if _has_element(resource_type, "identifier"):
        params["identifier"] = SearchParameter(
            "identifier",
            "token",
            "identifier",
            "A business identifier of the resource",
            f"{SEARCH_PARAMETER_BASE}/{resource_type}-identifier",
        )
    return params


def indexed_parameters(resource_type: str) -> list[SearchParameter]:
    """The parameters kept in index tables (the special ones read the resource table)."""
    return [p for p in parameters_for(resource_type).values() if p.path]


def all_served() -> dict[str, dict[str, SearchParameter]]:
    return {resource_type: parameters_for(resource_type) for resource_type in SERVED}
