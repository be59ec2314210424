"""One error hierarchy for the FHIR surface, and its one renderer (OperationOutcome).

Each error declares its HTTP status and FHIR issue code where it is defined; the application's
exception handlers only call :func:`operation_outcome`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import orjson


@dataclass(frozen=True, slots=True)
class Issue:
    """One OperationOutcome.issue: what is wrong, and where (a FHIRPath-like expression)."""

    code: str
    diagnostics: str
    severity: str = "error"
    expression: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        issue: dict[str, Any] = {"severity": self.severity, "code": self.code}
        if self.diagnostics:
            issue["diagnostics"] = self.diagnostics
        if self.expression:
            issue["expression"] = list(self.expression)
        return issue


@dataclass
class FhirError(Exception):
    """Base of every error Waymark answers with an OperationOutcome."""

    status: ClassVar[int] = 400
    code: ClassVar[str] = "processing"

    diagnostics: str
    expression: tuple[str, ...] = ()
    issues: list[Issue] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.diagnostics)
        if not self.issues:
            self.issues = [Issue(self.code, self.diagnostics, expression=self.expression)]

    def __str__(self) -> str:
        return self.diagnostics


class InvalidRequest(FhirError):
    """The request itself is malformed (bad header, bad parameter)."""

    status = 400
    code = "invalid"


class InvalidResource(FhirError):
    """The resource content is not valid FHIR (or breaks a required binding)."""

    status = 400
    code = "invalid"


class Unauthenticated(FhirError):
    """No valid access token; the response carries a ``WWW-Authenticate`` challenge."""

    status = 401
    code = "login"


class Forbidden(FhirError):
    """The access token does not grant what the request needs."""

    status = 403
    code = "forbidden"


class NotFound(FhirError):
    status = 404
    code = "not-found"


class UnknownResourceType(FhirError):
    status = 404
    code = "not-supported"


class MethodNotAllowed(FhirError):
    status = 405
    code = "not-supported"


class NotAcceptable(FhirError):
    status = 406
    code = "not-supported"


class Conflict(FhirError):
    status = 409
    code = "conflict"


class Gone(FhirError):
    status = 410
    code = "deleted"


class PreconditionFailed(FhirError):
    status = 412
    code = "conflict"


class MultipleMatches(FhirError):
    status = 412
    code = "multiple-matches"


class PayloadTooLarge(FhirError):
    status = 413
    code = "too-costly"


class TooCostly(FhirError):
    """A request asking more work of one query than the server does (a search's limits)."""

    status = 400
    code = "too-costly"


class UnsupportedMediaType(FhirError):
    status = 415
    code = "not-supported"


class BusinessRuleViolation(FhirError):
    """A domain rule refused the change (workflow transitions, gates, phases)."""

    status = 422
    code = "business-rule"


class InternalError(FhirError):
    status = 500
    code = "exception"


def operation_outcome(issues: list[Issue]) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": [issue.as_json() for issue in issues]}


def operation_outcome_bytes(issues: list[Issue]) -> bytes:
    return orjson.dumps(operation_outcome(issues))
