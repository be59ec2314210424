"""Index rows extracted from a resource on write, as the registry says."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from app.fhir.repository import TokenRow
from app.fhir.search.registry import indexed_parameters


def _elements(node: Any, parts: list[str]) -> Iterator[Any]:
    if not parts:
        if isinstance(node, list):
            yield from node
        else:
            yield node
        return
    if isinstance(node, list):
        for item in node:
            yield from _elements(item, parts)
        return
    if isinstance(node, dict) and parts[0] in node:
        yield from _elements(node[parts[0]], parts[1:])


def _tokens(value: Any) -> Iterator[tuple[str, str]]:
    """(system, code) pairs of a token-typed element: Identifier, CodeableConcept, Coding, code."""
    if isinstance(value, str):
        yield "", value
    elif isinstance(value, bool):
        yield "", "true" if value else "false"
    elif isinstance(value, dict):
        if "coding" in value:
            for coding in value["coding"]:
                yield from _tokens(coding)
        elif isinstance(value.get("value"), str):  # Identifier
            yield value.get("system", ""), value["value"]
        elif isinstance(value.get("code"), str):  # Coding
            yield value.get("system", ""), value["code"]


def token_rows(resource_type: str, document: dict[str, Any]) -> list[TokenRow]:
    rows: set[TokenRow] = set()
    for param in indexed_parameters(resource_type):
        if param.type != "token":
            continue
        for element in _elements(document, param.path.split(".")):
            for system, code in _tokens(element):
                rows.add(TokenRow(param.code, system, code))
    return sorted(rows, key=lambda r: (r.param, r.system, r.code))
