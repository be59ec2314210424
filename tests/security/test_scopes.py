"""SMART scopes: what each granted scope string permits."""

from __future__ import annotations

import pytest

from app.security.scopes import Scope, narrow, parse_scope, permits


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("system/Task.rs", Scope("Task", frozenset("rs"))),
        ("system/*.cruds", Scope("*", frozenset("cruds"))),
        ("system/Patient.r", Scope("Patient", frozenset("r"))),
        ("system/Patient.read", Scope("Patient", frozenset("rs"))),
        ("system/Patient.write", Scope("Patient", frozenset("cud"))),
        ("system/*.*", Scope("*", frozenset("cruds"))),
    ],
)
def test_scopes_v2_and_v1(text: str, expected: Scope) -> None:
    assert parse_scope(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "system/Task.sr",  # v2 letters must come in the order c, r, u, d, s
        "system/Task.rr",
        "system/Task.x",
        "patient/Task.rs",  # not a backend-services context
        "user/*.cruds",
        "system/Observation.rs?category=laboratory",  # narrowed: not enforceable, not granted
        "openid",
        "system/task.rs",
        "",
    ],
)
def test_scopes_that_grant_nothing(text: str) -> None:
    assert parse_scope(text) is None


def test_permits_by_type_and_wildcard() -> None:
    scopes = frozenset({"system/Task.rs", "system/Patient.read"})
    assert permits(scopes, "Task", "r")
    assert permits(scopes, "Task", "s")
    assert not permits(scopes, "Task", "u")
    assert permits(scopes, "Patient", "s")
    assert not permits(scopes, "Patient", "c")
    assert not permits(scopes, "ServiceRequest", "r")
    assert permits(frozenset({"system/*.c"}), "ServiceRequest", "c")
    assert not permits(frozenset({"system/*.c"}), "ServiceRequest", "r")
    assert not permits(frozenset(), "Task", "r")


def test_narrow_grants_only_what_is_allowed() -> None:
    allowed = ["system/Task.cruds", "system/Patient.read"]
    requested = ["system/Task.rs", "system/Patient.rs", "system/Patient.c", "system/*.r", "openid"]
    # system/Patient.c is not allowed at all; system/*.r is covered by what came before it
    assert narrow(requested, allowed) == ["system/Task.rs", "system/Patient.rs"]
    assert narrow(["system/Task.read"], ["system/*.cruds"]) == ["system/Task.read"]


def test_narrow_is_an_intersection() -> None:
    """What is asked for and only partly allowed is granted as far as it is allowed."""
    assert narrow(["system/*.cruds"], ["system/Task.cruds"]) == ["system/Task.cruds"]
    allowed = ["system/Patient.read", "system/Task.cruds"]
    assert narrow(["system/*.rs"], allowed) == ["system/Patient.rs", "system/Task.rs"]
    assert narrow(["system/Patient.cruds"], allowed) == ["system/Patient.rs"]
    assert narrow(["system/*.read"], ["system/Patient.rs"]) == ["system/Patient.rs"]
    assert narrow(["system/Patient.c"], allowed) == []
    assert narrow(["system/*.d", "system/Task.d"], allowed) == ["system/Task.d"]
