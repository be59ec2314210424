"""SMART scopes: what a granted scope string permits.

Backend services act in the ``system`` context. SMART v2 scopes name permissions with the
letters c (create), r (read), u (update), d (delete) and s (search), in that order
(``system/Task.rs``); the v1 suffixes ``.read`` (r and s), ``.write`` (c, u and d) and ``.*``
(all five) are accepted too. ``*`` as the resource type means every type. A v2 scope narrowed
by search parameters (``system/Observation.rs?category=...``) is not honoured: Waymark cannot
yet enforce such a restriction on every interaction, so it grants nothing rather than too much.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

PERMISSION_ORDER = "cruds"
_V1 = {"read": frozenset("rs"), "write": frozenset("cud"), "*": frozenset(PERMISSION_ORDER)}
_SCOPE = re.compile(r"^system/(?P<type>\*|[A-Z][A-Za-z]+)\.(?P<perms>[a-z*]+)$")

#: Releasing a referral held by a gate, against the gate's criterion, is a clinical decision
#: of its own: it needs this scope as well as system/Task.u (POST /Task/{id}/$override-gate).
GATE_OVERRIDE_SCOPE = "waymark/gate.override"
#: Scopes that are not SMART resource scopes, granted only when asked for and allowed as such.
OPERATION_SCOPES = frozenset({GATE_OVERRIDE_SCOPE})

#: The permission each FHIR interaction needs (names as in the CapabilityStatement).
INTERACTION_PERMISSION = {
    "read": "r",
    "vread": "r",
    "history-instance": "r",
    "search-type": "s",
    "search-type-post": "s",
    "history-type": "s",
    "create": "c",
    "update": "u",
    "patch": "u",
    "delete": "d",
}


@dataclass(frozen=True, slots=True)
class Scope:
    resource_type: str  # a type, or "*"
    permissions: frozenset[str]

    def covers(self, other: Scope) -> bool:
        return (
            self.resource_type in ("*", other.resource_type)
            and other.permissions <= self.permissions
        )


def parse_scope(text: str) -> Scope | None:
    """The scope ``text`` grants, or None for a scope that grants no FHIR access here
    (another context, a malformed string, or a v2 scope narrowed by a query)."""
    match = _SCOPE.match(text)
    if match is None:
        return None
    letters = match["perms"]
    if letters in _V1:
        return Scope(match["type"], _V1[letters])
    if any(c not in PERMISSION_ORDER for c in letters) or _out_of_order(letters):
        return None
    return Scope(match["type"], frozenset(letters))


def _out_of_order(letters: str) -> bool:
    positions = [PERMISSION_ORDER.index(c) for c in letters]
    return positions != sorted(set(positions))


@lru_cache(maxsize=1024)
def grants(scopes: frozenset[str]) -> dict[str, frozenset[str]]:
    """Resource type (or ``*``) -> the permissions the scopes grant on it."""
    granted: dict[str, set[str]] = {}
    for text in scopes:
        scope = parse_scope(text)
        if scope is not None:
            granted.setdefault(scope.resource_type, set()).update(scope.permissions)
    return {resource_type: frozenset(p) for resource_type, p in granted.items()}


def permits(scopes: frozenset[str], resource_type: str, permission: str) -> bool:
    granted = grants(scopes)
    return permission in granted.get(resource_type, ()) or permission in granted.get("*", ())


def narrow(requested: Iterable[str], allowed: Iterable[str]) -> list[str]:
    """The intersection of the requested and the allowed scopes, in the order requested.

    A requested scope an allowed one covers is granted as written (v1 forms included); one
    that is only partly allowed is narrowed to what is (``system/*.rs`` asked for by a client
    allowed ``system/Patient.read`` gives ``system/Patient.rs``). A scope already covered by
    one granted before it is left out. Scopes outside FHIR resource access (``launch``,
    ``openid``) are never granted here.
    """
    allowed = list(allowed)
    allowed_scopes = [s for s in (parse_scope(a) for a in allowed) if s is not None]
    granted: list[str] = []
    granted_scopes: list[Scope] = []
    for text in requested:
        if text in OPERATION_SCOPES:
            if text in allowed and text not in granted:
                granted.append(text)
            continue
        scope = parse_scope(text)
        if scope is None:
            continue
        candidates: list[tuple[str, Scope] | None]
        if any(a.covers(scope) for a in allowed_scopes):
            candidates = [(text, scope)]
        else:
            candidates = [_intersection(scope, a) for a in allowed_scopes]
        for candidate in candidates:
            if candidate is None or any(g.covers(candidate[1]) for g in granted_scopes):
                continue
            granted.append(candidate[0])
            granted_scopes.append(candidate[1])
    return granted


def _intersection(requested: Scope, allowed: Scope) -> tuple[str, Scope] | None:
    if "*" not in (requested.resource_type, allowed.resource_type) and (
        requested.resource_type != allowed.resource_type
    ):
        return None
    resource_type = (
        allowed.resource_type if requested.resource_type == "*" else requested.resource_type
    )
    permissions = requested.permissions & allowed.permissions
    if not permissions:
        return None
    letters = "".join(p for p in PERMISSION_ORDER if p in permissions)
    return f"system/{resource_type}.{letters}", Scope(resource_type, permissions)
