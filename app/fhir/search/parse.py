"""Parsing a FHIR search request into criteria, against the registry.

Strict handling (the default) refuses what it does not understand with 400; lenient handling
(``Prefer: handling=lenient``) drops it and reports it, as FHIR R4 says.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from app.fhir.errors import InvalidRequest, TooCostly
from app.fhir.numbers import whole_number
from app.fhir.resources import SERVED
from app.fhir.search.index import normalise
from app.fhir.search.registry import SearchParameter, parameters_for
from app.fhir.text import require_fhir_text

MODIFIERS = {
    "token": frozenset({"missing", "not", "text"}),
    "string": frozenset({"missing", "exact", "contains"}),
    "date": frozenset({"missing"}),
    # plus a resource type, e.g. subject:Patient
    "reference": frozenset({"missing", "identifier"}),
    "quantity": frozenset({"missing"}),
    "uri": frozenset({"missing", "below", "above"}),
}
#: _id and _lastUpdated are columns of the resource row, not index entries: no :text on
#: _id (there is no display to search), no :not on _lastUpdated (ne says that).
RESOURCE_ROW_MODIFIERS = {
    "_id": frozenset({"missing", "not"}),
    "_lastUpdated": frozenset({"missing"}),
}
RESULT_PARAMETERS = frozenset(
    {"_count", "_total", "_summary", "_cursor", "_sort", "_include", "_revinclude", "_elements"}
)
#: Parameters FHIR defines for the whole interaction, answered elsewhere or not applicable.
IGNORED_ALWAYS = frozenset({"_format", "_pretty"})

# What one search may ask for (docs/api.md, "Search"). Each value, criterion and key is a part of
# one SQL statement; past these the statement outgrows what the databases parse (SQLite's
# expression depth of 1,000, PostgreSQL's stack and 32,767 parameters) long before any real
# search needs it.
MAX_VALUES = 100  #: comma-separated values (ORs) of one parameter
MAX_CRITERIA = 30  #: search parameters (ANDs), chains and _has included
MAX_SORT_KEYS = 5
MAX_INCLUDES = 20  #: _include and _revinclude parameters together


@dataclass(frozen=True, slots=True)
class Criterion:
    """One search parameter occurrence; its values are OR-ed, occurrences AND-ed."""

    param: SearchParameter
    modifier: str
    values: tuple[str, ...]
    #: Chained search: the referenced types and the criterion on them.
    chain: tuple[tuple[str, ...], Criterion] | None = None
    #: Reverse chaining (_has): the referring type, its reference parameter, the criterion on it.
    has: tuple[str, str, Criterion] | None = None


@dataclass(frozen=True, slots=True)
class Include:
    source_type: str
    param: str  # a reference parameter of source_type, or "*"
    target_type: str | None
    iterate: bool
    reverse: bool
    #: The types a forward include may bring in, when the caller's scopes narrowed them
    #: (app/fhir/search/scoped.py); None: whatever its references point at.
    targets: tuple[str, ...] | None = None


@dataclass
class SearchRequest:
    resource_type: str
    criteria: list[Criterion] = field(default_factory=list)
    count: int = 50
    total: bool = False
    summary_count: bool = False
    cursor: str | None = None
    sort: list[tuple[SearchParameter, bool]] = field(default_factory=list)  # (param, descending)
    includes: list[Include] = field(default_factory=list)
    elements: list[str] | None = None
    #: The parameters as understood, for the self link.
    canonical: list[tuple[str, str]] = field(default_factory=list)
    #: Parameters dropped under lenient handling, with why.
    ignored: list[tuple[str, str]] = field(default_factory=list)


def split_or(value: str) -> tuple[str, ...]:
    """Split on commas; a backslash escapes a comma (FHIR search, 'Escaping')."""
    parts, current, escaped = [], "", False
    for char in value:
        if escaped:
            current += char
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ",":
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return tuple(parts)


def _param(resource_type: str, code: str, name: str) -> SearchParameter:
    param = parameters_for(resource_type).get(code)
    if param is None:
        raise InvalidRequest(
            f"Unknown search parameter '{code}' for {resource_type}", expression=(name,)
        )
    return param


def _simple(resource_type: str, name: str, value: str, *, written: str | None = None) -> Criterion:
    """One criterion on ``resource_type``; ``written`` is the parameter as the client wrote it
    when ``name`` is the inner part of a chain or a _has."""
    code, _, modifier = name.partition(":")
    param = _param(resource_type, code, name)
    type_modifier = param.type == "reference" and modifier in SERVED
    allowed = RESOURCE_ROW_MODIFIERS.get(code) or MODIFIERS.get(param.type, frozenset())
    if modifier and modifier not in allowed and not type_modifier:
        raise InvalidRequest(
            f"The modifier ':{modifier}' is not supported on '{code}' ({param.type})",
            expression=(name,),
        )
    if modifier == "missing" and value not in ("true", "false"):
        raise InvalidRequest(f"'{name}' takes true or false", expression=(name,))
    values = split_or(value)
    for position, alternative in enumerate(values, start=1):
        if _selects_nothing_in_particular(param, modifier, alternative):
            raise InvalidRequest(
                f"Value {position} of {len(values)} of '{written or name}' is empty (or names "
                "nothing to match): each comma-separated value must say what to match",
                expression=(written or name,),
            )
    return Criterion(param, modifier, values)


def _selects_nothing_in_particular(param: SearchParameter, modifier: str, value: str) -> bool:
    """An alternative that names nothing to match: blank (``family=a,``), a string that folds
    to nothing (a string search is a prefix match, so it would match everything), a token of
    neither system nor code (``|``), a reference to no id (``Patient/``). Every criterion, a
    chain's and a _has's included, is made by ``_simple``, so this holds for all of them."""
    if not value.strip():
        return True
    if (param.type == "string" and modifier != "exact") or modifier == "text":
        return not normalise(value)
    if param.type == "token" or modifier == "identifier":
        return value.strip() == "|"
    if param.type == "reference":
        return value.endswith("/")
    return False


def _chained(resource_type: str, name: str, value: str) -> Criterion:
    head, _, tail = name.partition(".")
    if "." in tail:
        raise InvalidRequest("Chains are supported one level deep", expression=(name,))
    code, _, type_modifier = head.partition(":")
    param = _param(resource_type, code, name)
    if param.type != "reference":
        raise InvalidRequest(
            f"'{code}' is not a reference: it cannot be chained", expression=(name,)
        )
    chained_code = tail.partition(":")[0]
    if type_modifier:
        candidates: Sequence[str] = [type_modifier]
    elif param.targets:
        candidates = sorted(param.targets)
    else:
        candidates = [t for t in SERVED if chained_code in parameters_for(t)]
    targets = tuple(t for t in candidates if t in SERVED and chained_code in parameters_for(t))
    if not targets:
        raise InvalidRequest(
            f"No type that '{code}' can refer to has the parameter '{chained_code}'",
            expression=(name,),
        )
    inner = _simple(targets[0], tail, value, written=name)
    return Criterion(param, "", (), chain=(targets, inner))


def _reverse_chained(resource_type: str, name: str, value: str) -> Criterion:
    parts = name.split(":", 3)
    if len(parts) != 4 or parts[3].startswith("_has"):
        raise InvalidRequest(
            "_has takes the form _has:Type:reference:parameter (one level)", expression=(name,)
        )
    _, referring_type, reference_code, rest = parts
    if referring_type not in SERVED:
        raise InvalidRequest(f"'{referring_type}' is not a resource type", expression=(name,))
    reference = _param(referring_type, reference_code, name)
    if reference.type != "reference":
        raise InvalidRequest(f"'{reference_code}' is not a reference", expression=(name,))
    inner = _simple(referring_type, rest, value, written=name)
    anchor = _param(resource_type, "_id", name)
    return Criterion(anchor, "", (), has=(referring_type, reference_code, inner))


def _include(resource_type: str, name: str, value: str, *, reverse: bool) -> Include:
    iterate = name.endswith(":iterate") or name.endswith(":recurse")
    parts = value.split(":")
    if len(parts) not in (2, 3) or parts[0] not in SERVED:
        raise InvalidRequest(f"{name} takes Type:parameter[:targetType]", expression=(name,))
    source, code = parts[0], parts[1]
    target = parts[2] if len(parts) == 3 else None
    if not reverse and not iterate and source != resource_type:
        raise InvalidRequest(
            f"_include must start with the searched type {resource_type} (or use :iterate)",
            expression=(name,),
        )
    if code != "*" and _param(source, code, name).type != "reference":
        raise InvalidRequest(f"'{code}' is not a reference parameter", expression=(name,))
    return Include(source, code, target, iterate, reverse)


def _result(request: SearchRequest, name: str, value: str, max_count: int) -> None:
    base = name.split(":")[0]
    if base == "_count":
        count = whole_number(value)
        if count is None:
            raise InvalidRequest("_count must be a whole number", expression=("_count",))
        request.count = min(count, max_count)
    elif base == "_total":
        if value not in ("none", "estimate", "accurate"):
            raise InvalidRequest("_total is none, estimate or accurate", expression=("_total",))
        request.total = value != "none"
    elif base == "_summary":
        if value != "count":
            raise InvalidRequest("Only _summary=count is supported", expression=("_summary",))
        request.summary_count = True
    elif base == "_cursor":
        request.cursor = value
        return
    elif base == "_sort":
        for key in value.split(","):
            descending = key.startswith("-")
            param = _param(request.resource_type, key.lstrip("-"), "_sort")
            if param.type not in ("string", "date", "token", "uri"):
                raise InvalidRequest(f"Cannot sort by '{param.code}'", expression=("_sort",))
            request.sort.append((param, descending))
    elif base in ("_include", "_revinclude"):
        request.includes.append(
            _include(request.resource_type, name, value, reverse=base == "_revinclude")
        )
    elif base == "_elements":
        request.elements = [e.strip() for e in value.split(",") if e.strip()]
    request.canonical.append((name, value))


def parse_search(
    resource_type: str,
    params: Sequence[tuple[str, str]],
    *,
    default_count: int,
    max_count: int,
    lenient: bool = False,
) -> SearchRequest:
    request = SearchRequest(resource_type, count=default_count)
    for name, value in params:
        # Refused under lenient handling too: such text is not FHIR, not merely not understood.
        require_fhir_text(name, where=name)
        require_fhir_text(value, where=name)
        if name in IGNORED_ALWAYS:
            continue
        try:
            _parse_one(request, name, value, max_count)
        except InvalidRequest as error:
            if not lenient:
                raise
            request.ignored.append((name, error.diagnostics))
    return request


def _parse_one(request: SearchRequest, name: str, value: str, max_count: int) -> None:
    if name.split(":")[0] in RESULT_PARAMETERS:
        _result(request, name, value, max_count)
        _within_limits(request)
        return
    if value == "":
        raise InvalidRequest(f"The search parameter '{name}' has no value", expression=(name,))
    if name.startswith("_has:"):
        criterion = _reverse_chained(request.resource_type, name, value)
    elif "." in name:
        criterion = _chained(request.resource_type, name, value)
    else:
        criterion = _simple(request.resource_type, name, value)
    if len(split_or(value)) > MAX_VALUES:
        raise TooCostly(
            f"'{name}' has more than {MAX_VALUES} values; search in several requests",
            expression=(name,),
        )
    request.criteria.append(criterion)
    request.canonical.append((name, value))
    _within_limits(request)


def _within_limits(request: SearchRequest) -> None:
    for count, limit, what in (
        (len(request.criteria), MAX_CRITERIA, "search parameters"),
        (len(request.sort), MAX_SORT_KEYS, "_sort keys"),
        (len(request.includes), MAX_INCLUDES, "_include and _revinclude parameters"),
    ):
        if count > limit:
            raise TooCostly(f"A search takes at most {limit} {what}")


def conditional_criteria(
    resource_type: str, query: str, *, where: str, expression: tuple[str, ...] | None = None
) -> list[tuple[str, str]]:
    """The parameters of a conditional create, update or reference, checked: at least one
    criterion, and no result parameters. Those select nothing: made only of them (_count=1)
    the condition would match every resource; beside criteria they change the outcome
    (_summary=count finds no rows, so a duplicate would be created). ``where`` names the
    condition's place (a header, a Bundle element) for the 400, and is its ``expression``
    unless one is given."""
    located = (where,) if expression is None else expression
    params = parse_qsl(query.lstrip("?"), keep_blank_values=True)
    shaping = sorted({name for name, _ in params if name.split(":")[0] in RESULT_PARAMETERS})
    if shaping:
        raise InvalidRequest(
            f"{where} is a condition: it takes search criteria, not result parameters "
            f"({', '.join(shaping)})",
            expression=located,
        )
    request = parse_search(resource_type, params, default_count=2, max_count=2)
    if not request.criteria:
        raise InvalidRequest(f"{where} holds no search criteria", expression=located)
    return params
