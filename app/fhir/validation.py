"""Validation of incoming resources: fhir.resources for structure, plus what it misses.

What fhir.resources does not check and Waymark does: required code bindings
(:mod:`app.fhir.bindings`), JSON's rule that no element is empty (``""``, ``[]``, ``{}``,
``null``), FHIR's rule that strings hold no control characters (:mod:`app.fhir.text`; an
element's name included), the resource type against the URL, and NHS/CHI number check digits.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from app.fhir.bindings import binding_issues
from app.fhir.errors import InvalidResource, Issue, MethodNotAllowed, UnknownResourceType
from app.fhir.identifiers import NHS_NUMBER_SYSTEM, chi_number_problem, nhs_number_problem
from app.fhir.resources import SERVED, is_resource_type, model_class
from app.fhir.text import printable
from app.fhir.text import problem as text_problem

_PYDANTIC_CODES = {
    "missing": "required",
    "model_field_validation.missing": "required",
    "extra_forbidden": "structure",
}


def _expression(resource_type: str, loc: tuple[int | str, ...]) -> str:
    path = resource_type
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _pydantic_issues(resource_type: str, error: ValidationError) -> list[Issue]:
    issues = []
    for detail in error.errors(include_input=False, include_url=False):
        loc = tuple(detail["loc"])
        message = detail["msg"].removeprefix("Value error, ")
        code = _PYDANTIC_CODES.get(detail["type"], "value" if loc else "invariant")
        if code == "structure":
            message = f"Unknown element '{loc[-1]}'"
        issues.append(Issue(code, message, expression=(_expression(resource_type, loc),)))
    return issues


class _Walker:
    """One pass over the document: empty values, control characters, UK identifier check
    digits, and the types of resources nested in it (contained ones)."""

    def __init__(self, chi_system: str, root: str) -> None:
        self.chi_system = chi_system
        self.root = root
        self.issues: list[Issue] = []
        #: A nested resource names no real type: fhir.resources cannot be asked about it
        #: (it looks the type up and fails with KeyError or TypeError, not a ValidationError).
        self.unreadable = False

    def walk(self, node: Any, path: str, in_list: bool = False) -> None:
        if isinstance(node, dict):
            if not node:
                self._empty(path)
                return
            if path != self.root and "resourceType" in node:
                self._nested_resource_type(node["resourceType"], path)
            system = node.get("system")
            if isinstance(system, str) and isinstance(node.get("value"), str):
                self._identifier(system, node["value"], path)
            for key, child in node.items():
                if not self._plain(key, f"{path}.{key}"):
                    continue
                if isinstance(child, list):
                    if not child:
                        self._empty(f"{path}.{key}")
                    for index, item in enumerate(child):
                        if key == "contained":
                            self._contained(item, f"{path}.{key}[{index}]")
                        self.walk(item, f"{path}.{key}[{index}]", in_list=True)
                else:
                    self.walk(child, f"{path}.{key}")
        elif node is None:
            # null is allowed only as a placeholder in arrays of primitive extensions (_given).
            if not in_list:
                self._empty(path)
        elif isinstance(node, str):
            if not node.strip():
                self._empty(path)
            else:
                self._plain(node, path)

    def _plain(self, text: str, path: str) -> bool:
        """Whether ``text`` (a value, or an element's name) is free of control characters."""
        found = text_problem(text)
        if found is None:
            return True
        self.issues.append(Issue("value", f"The text {found}", expression=(printable(path),)))
        return False

    def _nested_resource_type(self, resource_type: Any, path: str) -> None:
        if isinstance(resource_type, str) and is_resource_type(resource_type):
            return
        self.unreadable = True
        problem = (
            f"'{resource_type}' is not a FHIR resource type"
            if isinstance(resource_type, str)
            else "resourceType must be a string naming a FHIR resource type"
        )
        self.issues.append(Issue("value", problem, expression=(f"{path}.resourceType",)))

    def _contained(self, item: Any, path: str) -> None:
        if isinstance(item, dict) and item and "resourceType" not in item:
            self.issues.append(
                Issue(
                    "required",
                    "A contained resource needs its resourceType",
                    expression=(f"{path}.resourceType",),
                )
            )

    def _empty(self, path: str) -> None:
        self.issues.append(
            Issue(
                "value",
                "Empty values are not allowed in FHIR JSON: leave the element out instead",
                expression=(path,),
            )
        )

    def _identifier(self, system: str, value: str, path: str) -> None:
        if system == NHS_NUMBER_SYSTEM:
            problem = nhs_number_problem(value)
        elif system == self.chi_system:
            problem = chi_number_problem(value)
        else:
            return
        if problem:
            self.issues.append(Issue("value", problem, expression=(f"{path}.value",)))


#: Deeper than any real FHIR resource; the limit keeps recursive processing safe.
MAX_JSON_DEPTH = 64


def require_reasonable_depth(document: Any) -> None:
    """Refuse JSON nested deeper than :data:`MAX_JSON_DEPTH` (checked without recursion, one
    level at a time: every request body goes through this)."""
    level = [document]
    depth = 1
    while level:
        if depth > MAX_JSON_DEPTH:
            raise InvalidResource(f"The JSON is nested more than {MAX_JSON_DEPTH} levels deep")
        below: list[Any] = []
        for node in level:
            if isinstance(node, dict):
                below.extend(node.values())
            elif isinstance(node, list):
                below.extend(node)
        level = below
        depth += 1


def require_served_type(resource_type: str) -> None:
    if resource_type not in SERVED:
        raise UnknownResourceType(
            f"Resource type '{resource_type}' is not served by this server",
        )


def require_interaction(resource_type: str, interaction: str) -> None:
    """404 for a type not served, 405 for an interaction its policy does not allow."""
    require_served_type(resource_type)
    policy = SERVED[resource_type]
    if interaction not in policy.interactions:
        raise MethodNotAllowed(
            f"{resource_type} does not support the '{interaction}' interaction"
            + (f": {policy.documentation}" if policy.documentation else "")
        )


def validate_resource(
    document: Any, *, expected_type: str | None, chi_system: str
) -> tuple[str, dict[str, Any]]:
    """Check ``document``; return its resource type and the document, or raise InvalidResource."""
    if not isinstance(document, dict):
        raise InvalidResource("The body must be a JSON object holding one FHIR resource")
    resource_type = document.get("resourceType")
    if not isinstance(resource_type, str) or not resource_type:
        raise InvalidResource(
            "The resource has no resourceType", issues=[Issue("required", "No resourceType")]
        )
    if expected_type is not None and resource_type != expected_type:
        raise InvalidResource(
            f"The body is a {resource_type} but the URL names {expected_type}",
            expression=("resourceType",),
        )
    if resource_type not in SERVED:
        raise InvalidResource(
            f"Resource type '{resource_type}' is not served by this server",
            expression=("resourceType",),
        )
    walker = _Walker(chi_system, resource_type)
    walker.walk(document, resource_type)
    issues = walker.issues
    if not walker.unreadable:
        try:
            model_class(resource_type).model_validate(document)
        except ValidationError as error:
            # A control character fhir.resources also refuses is said once, by the walker.
            said = {issue.expression for issue in issues}
            issues.extend(
                i for i in _pydantic_issues(resource_type, error) if i.expression not in said
            )
    issues.extend(binding_issues(resource_type, document))
    if issues:
        summary = issues[0].diagnostics if len(issues) == 1 else f"{len(issues)} problems found"
        raise InvalidResource(f"Invalid {resource_type}: {summary}", issues=issues)
    return resource_type, document
