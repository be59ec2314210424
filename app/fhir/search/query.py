"""Parsing a search request and running it over the index (the search repository).

Paging is keyset paging on the resource id, so pages stay stable while resources are written:
a resource is never seen twice nor skipped because others were added before it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import ColumnElement, and_, exists, false, func, not_, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from app.fhir.errors import InvalidRequest
from app.fhir.repository import resource_table, token_table
from app.fhir.search.dates import DateRange, parse_date
from app.fhir.search.registry import SearchParameter, parameters_for

#: Result parameters understood here (everything else must be a search parameter).
RESULT_PARAMETERS = frozenset({"_count", "_total", "_summary", "_cursor", "_format"})


@dataclass(frozen=True, slots=True)
class Criterion:
    param: SearchParameter
    modifier: str
    values: tuple[str, ...]  # OR-ed


@dataclass
class SearchRequest:
    resource_type: str
    criteria: list[Criterion] = field(default_factory=list)
    count: int = 50
    total: str = "none"  # none | accurate (| estimate, treated as accurate)
    summary_count: bool = False
    cursor: str | None = None
    #: The parameters as understood, for the self link.
    canonical: list[tuple[str, str]] = field(default_factory=list)


def _split_or(value: str) -> tuple[str, ...]:
    # A backslash escapes a comma inside a value (FHIR search, "Escaping search parameters").
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


def parse_search(
    resource_type: str,
    params: Sequence[tuple[str, str]],
    *,
    default_count: int,
    max_count: int,
) -> SearchRequest:
    known = parameters_for(resource_type)
    request = SearchRequest(resource_type, count=default_count)
    for name, value in params:
        if name in RESULT_PARAMETERS:
            _apply_result_parameter(request, name, value, max_count)
            continue
        code, _, modifier = name.partition(":")
        param = known.get(code)
        if param is None:
            raise InvalidRequest(
                f"Unknown search parameter '{code}' for {resource_type}; supported: "
                + ", ".join(sorted(known)),
                expression=(name,),
            )
        if modifier and modifier != "missing":
            raise InvalidRequest(
                f"The modifier ':{modifier}' is not supported on '{code}'", expression=(name,)
            )
        if value == "":
            raise InvalidRequest(f"The search parameter '{name}' has no value", expression=(name,))
        if modifier == "missing" and value not in ("true", "false"):
            raise InvalidRequest(f"'{name}' takes true or false", expression=(name,))
        request.criteria.append(Criterion(param, modifier, _split_or(value)))
        request.canonical.append((name, value))
    return request


def _apply_result_parameter(request: SearchRequest, name: str, value: str, max_count: int) -> None:
    if name == "_count":
        if not value.isdigit():
            raise InvalidRequest("_count must be a whole number", expression=("_count",))
        request.count = min(int(value), max_count)
    elif name == "_total":
        if value not in ("none", "estimate", "accurate"):
            raise InvalidRequest("_total is none, estimate or accurate", expression=("_total",))
        request.total = "none" if value == "none" else "accurate"
    elif name == "_summary":
        if value != "count":
            raise InvalidRequest("Only _summary=count is supported", expression=("_summary",))
        request.summary_count = True
    elif name == "_cursor":
        request.cursor = value
    else:
        return  # _format is content negotiation, handled at the edge
    if name != "_cursor":
        request.canonical.append((name, value))


def _token_condition(resource_type: str, criterion: Criterion) -> ColumnElement[bool]:
    r = resource_table.c
    if criterion.param.code == "_id":
        return r.id.in_(criterion.values)
    alternatives = []
    t = token_table.c
    for value in criterion.values:
        if "|" in value:
            system, _, code = value.partition("|")
            if code:
                alternatives.append(and_(t.system == system, t.code == code))
            else:
                alternatives.append(t.system == system)
        else:
            alternatives.append(t.code == value)
    return exists().where(
        t.resource_type == resource_type,
        t.param == criterion.param.code,
        t.resource_id == r.id,
        or_(*alternatives),
    )


def _date_condition(column: ColumnElement[datetime], value: DateRange) -> ColumnElement[bool]:
    start, end = value.start, value.end
    match value.prefix:
        case "eq":
            return and_(column >= start, column < end)
        case "ne":
            return or_(column < start, column >= end)
        case "lt" | "eb":
            return column < start
        case "le":
            return column < end
        case "gt" | "sa":
            return column >= end
        case _:  # ge
            return column >= start


def _condition(resource_type: str, criterion: Criterion) -> ColumnElement[bool]:
    param = criterion.param
    if criterion.modifier == "missing":
        if param.code in ("_id", "_lastUpdated"):
            return false() if criterion.values == ("true",) else not_(false())
        present = exists().where(
            token_table.c.resource_type == resource_type,
            token_table.c.param == param.code,
            token_table.c.resource_id == resource_table.c.id,
        )
        return not_(present) if criterion.values == ("true",) else present
    if param.type == "token":
        return _token_condition(resource_type, criterion)
    if param.code == "_lastUpdated":
        return or_(
            *(
                _date_condition(resource_table.c.last_updated, parse_date(v, param=param.code))
                for v in criterion.values
            )
        )
    raise InvalidRequest(f"Searching by '{param.code}' is not supported", expression=(param.code,))


@dataclass(frozen=True, slots=True)
class SearchPage:
    rows: Sequence[tuple[str, bytes]]
    total: int | None
    next_cursor: str | None


async def run_search(conn: AsyncConnection, request: SearchRequest) -> SearchPage:
    r = resource_table.c
    conditions = [r.resource_type == request.resource_type, r.deleted.is_(False)]
    conditions += [_condition(request.resource_type, c) for c in request.criteria]
    total: int | None = None
    if request.summary_count or request.total == "accurate":
        total = (
            await conn.execute(select(func.count()).select_from(resource_table).where(*conditions))
        ).scalar_one()
    if request.summary_count:
        return SearchPage((), total, None)
    page_conditions = list(conditions)
    if request.cursor:
        page_conditions.append(r.id > request.cursor)
    stmt = select(r.id, r.content).where(*page_conditions).order_by(r.id).limit(request.count + 1)
    rows = [(row[0], row[1]) for row in (await conn.execute(stmt)).all()]
    next_cursor = None
    if len(rows) > request.count:
        rows = rows[: request.count]
        next_cursor = rows[-1][0] if rows else None
    if total is None and next_cursor is None and request.cursor is None:
        total = len(rows)  # the whole result is on this page
    return SearchPage(rows, total, next_cursor)
