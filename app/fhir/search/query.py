"""Running a parsed search over the index tables (the search repository: all its SQL).

No JSON is read at query time: every criterion is an EXISTS over an index table, correlated
with the resource id it constrains, so chains and _has nest naturally. Paging is keyset
paging on the sort keys and the id, so pages stay stable while resources are written.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

import orjson
from sqlalchemy import (
    Column,
    ColumnElement,
    and_,
    exists,
    false,
    func,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.base import ReadOnlyColumnCollection

from app.fhir.budget import RequestBudget, planned_search
from app.fhir.errors import InvalidRequest
from app.fhir.models import (
    search_date,
    search_quantity,
    search_reference,
    search_string,
    search_token,
)
from app.fhir.repository import resource_table
from app.fhir.search.dates import EARLIEST, PREFIXES, parse_date
from app.fhir.search.index import INDEX_KEY_LENGTH, index_key, normalise, reference_key
from app.fhir.search.parse import Criterion, Include, SearchRequest
from app.fhir.search.registry import SearchParameter, parameters_for

r = resource_table.c
T = TypeVar("T")


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


#: The columns of one index table (or of an alias of it).
Columns = ReadOnlyColumnCollection[str, Column[Any]]


# -- one criterion ------------------------------------------------------------------------


# Index tables keep each value whole and index only its start (INDEX_KEY_LENGTH characters,
# app/fhir/search/index.py): a match names the key, which the index finds, and the whole value,
# which confirms it.


def _equal(key: Any, whole: Any, value: str) -> ColumnElement[bool]:
    if len(value) < INDEX_KEY_LENGTH:
        # A key shorter than the limit is the whole value: the index alone answers (an
        # index-only scan where the index ends with resource_id, as search_token's does).
        on_key: ColumnElement[bool] = key == value
        return on_key
    return and_(key == index_key(value), whole == value)


def _starts_with(key: Any, whole: Any, start: str) -> ColumnElement[bool]:
    pattern = f"{_like_escape(start)}%"
    if len(start) <= INDEX_KEY_LENGTH:  # the key starts with it exactly when the value does
        on_key: ColumnElement[bool] = key.like(pattern, escape="\\")
        return on_key
    return and_(key == index_key(start), whole.like(pattern, escape="\\"))


def _token_match(value: str, t: Columns) -> ColumnElement[bool]:
    if "|" not in value:
        return _equal(t.code_key, t.code, value)
    system, _, code = value.partition("|")
    if not code:
        return t.system == system
    return and_(t.system == system, _equal(t.code_key, t.code, code))


def _string_match(criterion: Criterion, value: str, s: Columns) -> ColumnElement[bool]:
    folded = normalise(value)
    if criterion.modifier == "exact":
        return and_(s.value_key == index_key(folded), s.exact == value)
    if criterion.modifier in ("contains", "text"):
        return s.value.like(f"%{_like_escape(folded)}%", escape="\\")
    return _starts_with(s.value_key, s.value, folded)


def _date_match(
    low: ColumnElement[datetime], high: ColumnElement[datetime], raw: str, code: str
) -> ColumnElement[bool]:
    wanted = parse_date(raw, param=code)
    start, end = wanted.start, wanted.end
    match wanted.prefix:
        case "eq":
            return and_(low >= start, high <= end)
        case "ne":
            return or_(low < start, high > end)
        case "lt":
            return low < start
        case "le":
            return low < end
        case "gt":
            return high > end
        case "ge":
            return high > start
        case "sa":
            return low >= end
        case _:  # eb
            return high <= start


#: FHIR's decimal, and no other spelling Decimal() takes (NaN, Infinity, 1_000, Unicode digits).
_DECIMAL = re.compile(r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$", re.ASCII)
#: Beyond this order of magnitude no quantity is real, and the index columns (PostgreSQL
#: numeric, SQLite's doubles) cannot compare with it.
_MAX_MAGNITUDE = 300


def _search_decimal(number: str, code: str) -> Decimal:
    value = Decimal(number) if _DECIMAL.match(number) else None
    if value is None or abs(value.adjusted()) > _MAX_MAGNITUDE:
        raise InvalidRequest(
            f"'{number}' is not a number this server can search {code} by (a decimal "
            f"within 1e{_MAX_MAGNITUDE} either way)",
            expression=(code,),
        )
    return value


def _quantity_match(raw: str, code: str, q: Any) -> ColumnElement[bool]:
    prefix = raw[:2] if raw[:2] in PREFIXES else "eq"
    number, _, rest = raw.removeprefix(prefix if raw[:2] in PREFIXES else "").partition("|")
    value = _search_decimal(number, code)
    # A value stands for the range its precision implies: 5.4 means [5.35, 5.45).
    exponent = value.as_tuple().exponent
    half = Decimal(5).scaleb((exponent if isinstance(exponent, int) else 0) - 1)
    conditions: list[ColumnElement[bool]] = {
        "eq": [q.value >= value - half, q.value < value + half],
        "ne": [or_(q.value < value - half, q.value >= value + half)],
        "lt": [q.value < value],
        "le": [q.value <= value],
        "gt": [q.value > value],
        "ge": [q.value >= value],
        "sa": [q.value > value],
        "eb": [q.value < value],
    }[prefix]  # fmt: skip
    system, _, unit = rest.partition("|")
    if system:
        conditions.append(q.system == system)
    if unit:
        conditions.append(q.code == unit)
    return and_(*conditions)


def _reference_match(
    criterion: Criterion, value: str, base_url: str, ref: Columns
) -> ColumnElement[bool]:
    if value.startswith(f"{base_url}/"):
        value = value[len(base_url) + 1 :]
    elif "://" in value:
        return and_(ref.target_type == "", ref.target_id == reference_key(value))
    parts = value.split("/")
    if len(parts) >= 2:
        return and_(ref.target_type == parts[0], ref.target_id == reference_key(parts[1]))
    if criterion.modifier:  # subject:Patient=123
        return and_(ref.target_type == criterion.modifier, ref.target_id == reference_key(value))
    return ref.target_id == reference_key(value)


def _index_table(criterion: Criterion) -> tuple[Any, str]:
    """The index table holding ``criterion``'s values, and the ``param`` they are kept under."""
    param = criterion.param
    table = {
        "token": search_token,
        "uri": search_token,
        "string": search_string,
        "date": search_date,
        "reference": search_reference,
        "quantity": search_quantity,
    }[param.type]
    code = param.code
    if param.type == "token" and criterion.modifier == "text":
        table, code = search_string, f"{code}:text"
    elif param.type == "reference" and criterion.modifier == "identifier":
        table, code = search_token, f"{code}:identifier"
    return table, code


def _indexed(
    resource_type: str, criterion: Criterion, id_col: Any, base_url: str
) -> ColumnElement[bool]:
    table, code = _index_table(criterion)
    c = table.c
    scope = [c.resource_type == resource_type, c.param == code, c.resource_id == id_col]
    if criterion.modifier == "missing":
        present = exists().where(*scope)
        return not_(present) if criterion.values == ("true",) else present
    alternatives = [_value_match(criterion, v, c, base_url) for v in criterion.values]
    matched = exists().where(*scope, or_(*alternatives))
    return not_(matched) if criterion.modifier == "not" else matched


def _value_match(criterion: Criterion, value: str, c: Any, base_url: str) -> ColumnElement[bool]:
    param = criterion.param
    if param.type == "token":
        if criterion.modifier == "text":
            return _string_match(criterion, value, c)
        return _token_match(value, c)
    if param.type == "uri":
        code: ColumnElement[str] = c.code
        if criterion.modifier == "below":
            return _starts_with(c.code_key, code, value)
        if criterion.modifier == "above":
            return func.substr(value, 1, func.length(code)) == code
        return _equal(c.code_key, code, value)
    if param.type == "string":
        return _string_match(criterion, value, c)
    if param.type == "date":
        return _date_match(c.low, c.high, value, param.code)
    if param.type == "reference":
        if criterion.modifier == "identifier":
            return _token_match(value, c)
        return _reference_match(criterion, value, base_url, c)
    return _quantity_match(value, param.code, c)


def _resource_row(resource_type: str, criterion: Criterion, id_col: Any) -> ColumnElement[bool]:
    """_id and _lastUpdated live on the resource table itself."""
    if criterion.modifier == "missing":
        return false() if criterion.values == ("true",) else true()
    own = id_col is r.id
    row = resource_table.alias() if not own else resource_table
    matches: ColumnElement[bool]
    if criterion.param.code == "_id":
        matches = row.c.id.in_(criterion.values)
        if criterion.modifier == "not":
            matches = not_(matches)
    else:
        matches = or_(
            *(
                _date_match(row.c.last_updated, row.c.last_updated, v, "_lastUpdated")
                for v in criterion.values
            )
        )
    if own:
        return matches
    return exists().where(
        row.c.resource_type == resource_type,
        row.c.id == id_col,
        row.c.deleted.is_(False),
        matches,
    )


def condition(
    resource_type: str, criterion: Criterion, id_col: Any, base_url: str
) -> ColumnElement[bool]:
    """The criterion as a boolean SQL expression about the resource whose id is ``id_col``."""
    if criterion.has is not None:
        referring_type, reference_code, inner = criterion.has
        ref = search_reference.alias()
        return exists().where(
            ref.c.resource_type == referring_type,
            ref.c.param == reference_code,
            ref.c.target_type == resource_type,
            ref.c.target_id == id_col,
            condition(referring_type, inner, ref.c.resource_id, base_url),
        )
    if criterion.chain is not None:
        targets, inner = criterion.chain
        ref = search_reference.alias()
        return exists().where(
            ref.c.resource_type == resource_type,
            ref.c.param == criterion.param.code,
            ref.c.resource_id == id_col,
            or_(
                *(
                    and_(
                        ref.c.target_type == target,
                        condition(target, inner, ref.c.target_id, base_url),
                    )
                    for target in targets
                )
            ),
        )
    if not criterion.param.indexed:
        return _resource_row(resource_type, criterion, id_col)
    return _indexed(resource_type, criterion, id_col, base_url)


def _on_index(criterion: Criterion) -> bool:
    """Tested on the index tables (everything but _id and _lastUpdated, resource columns)."""
    return criterion.has is not None or criterion.chain is not None or criterion.param.indexed


def _drives(criterion: Criterion) -> bool:
    """A plain criterion whose matches are rows of one index table."""
    return (
        criterion.has is None
        and criterion.chain is None
        and criterion.param.indexed
        and criterion.modifier not in ("missing", "not")
    )


def conditions(
    resource_type: str, criteria: Sequence[Criterion], id_col: Any, base_url: str
) -> list[ColumnElement[bool]]:
    """Every criterion of a search, as SQL about the resource whose id is ``id_col``.

    With two or more criteria on the index tables, the first plain one drives: ``id_col IN
    (SELECT resource_id FROM <its table> WHERE <its match> AND <the others, about that
    resource_id>)``. Correlated with ``id_col`` one by one, a second criterion is tested only
    after the resource row is read (PostgreSQL joins a semi-join after the relation its
    condition names), so ``Task?owner=X&status=requested`` read every Task the owner ever had;
    this way the index tables are intersected first and only the matches' rows are read.
    """
    indexed = [c for c in criteria if _on_index(c)]
    driver = next((c for c in indexed if _drives(c)), None)
    if driver is None or len(indexed) < 2:
        return [condition(resource_type, c, id_col, base_url) for c in criteria]
    table, code = _index_table(driver)
    rows = table.alias()  # so that the others' subqueries on the same table are their own
    ids = select(rows.c.resource_id).where(
        rows.c.resource_type == resource_type,
        rows.c.param == code,
        or_(*(_value_match(driver, value, rows.c, base_url) for value in driver.values)),
        *(
            condition(resource_type, c, rows.c.resource_id, base_url)
            for c in indexed
            if c is not driver
        ),
    )
    own_columns = [c for c in criteria if not _on_index(c)]
    return [*(condition(resource_type, c, id_col, base_url) for c in own_columns), id_col.in_(ids)]


# -- sorting and paging ---------------------------------------------------------------------


def _sort_key(resource_type: str, param: SearchParameter, descending: bool) -> Any:
    if param.code == "_id":
        return r.id
    if param.code == "_lastUpdated":
        return r.last_updated
    column: Any
    table: Any
    sentinel: Any
    if param.type == "date":
        column = search_date.c.high if descending else search_date.c.low
        table, sentinel = search_date, EARLIEST
    elif param.type == "string":
        column, table, sentinel = search_string.c.exact, search_string, ""
    else:
        column, table, sentinel = search_token.c.code, search_token, ""
    aggregate = func.max(column) if descending else func.min(column)
    key = (
        select(aggregate)
        .where(
            table.c.resource_type == resource_type,
            table.c.param == param.code,
            table.c.resource_id == r.id,
        )
        .scalar_subquery()
    )
    return func.coalesce(key, sentinel)


def _encode_cursor(direction: str, values: Sequence[Any]) -> str:
    raw = orjson.dumps([direction, *values], default=str)
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str, request: SearchRequest) -> tuple[str, list[Any]]:
    """The direction and sort-key values a cursor holds. A cursor comes back from the client,
    so every value is checked to be of its key's type before it reaches SQL."""
    not_ours = InvalidRequest("_cursor is not one this server gave out", expression=("_cursor",))
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        decoded = orjson.loads(raw)
    except ValueError as error:
        raise not_ours from error
    if not isinstance(decoded, list) or not decoded:
        raise not_ours
    direction, *values = decoded
    if direction not in ("next", "prev") or len(values) != len(request.sort) + 1:
        raise InvalidRequest("_cursor does not fit this search", expression=("_cursor",))
    if not all(isinstance(value, str) for value in values):
        raise not_ours
    keys = []
    for (param, _), value in zip(request.sort, values, strict=False):
        is_date = param.type == "date" or param.code == "_lastUpdated"
        keys.append(_cursor_moment(value, not_ours) if is_date else value)
    return direction, [*keys, values[-1]]


def _cursor_moment(value: str, not_ours: InvalidRequest) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
        # SQLite hands moments back without their zone: they are UTC, as everything stored.
        return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    except (ValueError, OverflowError) as error:
        raise not_ours from error


def _after(keys: Sequence[Any], directions: Sequence[bool], values: Sequence[Any]) -> Any:
    """Rows strictly after ``values`` in the order given by keys/directions (True = desc)."""
    alternatives = []
    for i, (key, descending) in enumerate(zip(keys, directions, strict=True)):
        equal_before = [k == v for k, v in zip(keys[:i], values[:i], strict=True)]
        step = key < values[i] if descending else key > values[i]
        alternatives.append(and_(*equal_before, step))
    return or_(*alternatives)


@dataclass(frozen=True, slots=True)
class SearchPage:
    rows: Sequence[tuple[str, bytes]]
    total: int | None
    next_cursor: str | None
    previous_cursor: str | None
    included: Sequence[tuple[str, str, bytes]]  # (type, id, content)
    #: _include/_revinclude reached more than MAX_INCLUDED: only the first are in.
    included_truncated: bool = False


async def run_search(
    conn: AsyncConnection,
    request: SearchRequest,
    base_url: str,
    *,
    budget: RequestBudget | None = None,
) -> SearchPage:
    """One page of ``request``. With a ``budget`` (a client's search), the page's most
    resources are planned against it before any is read, and their bytes charged as read."""
    if budget is not None:
        budget.plan(planned_search_resources(request), what="This search")
    where = [r.resource_type == request.resource_type, r.deleted.is_(False)]
    where += conditions(request.resource_type, request.criteria, r.id, base_url)
    total = None
    if request.summary_count or request.total:
        count = select(func.count()).select_from(resource_table).where(*where)
        total = (await conn.execute(count)).scalar_one()
    if request.summary_count:
        return SearchPage((), total, None, None, ())

    keys = [_sort_key(request.resource_type, p, d) for p, d in request.sort] + [r.id]
    directions = [d for _, d in request.sort] + [False]
    direction = "next"
    if request.cursor:
        direction, values = _decode_cursor(request.cursor, request)
        directions_used = [not d for d in directions] if direction == "prev" else directions
        where.append(_after(keys, directions_used, values))
    reverse = direction == "prev"
    order = [
        (k.desc() if (d != reverse) else k.asc()) for k, d in zip(keys, directions, strict=True)
    ]
    columns = [r.id, r.content, *(k.label(f"k{i}") for i, k in enumerate(keys[:-1]))]
    stmt = select(*columns).where(*where).order_by(*order).limit(request.count + 1)
    fetched = (await conn.execute(stmt)).all()
    more = len(fetched) > request.count
    fetched = fetched[: request.count]
    if reverse:
        fetched = list(reversed(fetched))
    rows = [(row[0], row[1]) for row in fetched]
    if budget is not None:
        for _, content in rows:
            budget.charge(len(content))

    def cursor_at(row: Any, kind: str) -> str:
        return _encode_cursor(kind, [*row[2:], row[0]])

    next_cursor = prev_cursor = None
    if fetched:
        if more or reverse:
            next_cursor = cursor_at(fetched[-1], "next")
        if request.cursor and (not reverse or more):
            prev_cursor = cursor_at(fetched[0], "prev")
    if total is None and not request.cursor and not more:
        total = len(rows)  # the whole result is on this page
    included = await _included(conn, request, [row[0] for row in rows], budget)
    return SearchPage(rows, total, next_cursor, prev_cursor, included.resources, included.truncated)


# -- _include and _revinclude -----------------------------------------------------------------

#: The most resources _include and _revinclude add to one page (docs/api.md, "Search"): a Patient's
#: _revinclude can reach thousands of Observations, and every one is read and sent. Past it
#: the page says so in an OperationOutcome entry; fewer matches per page (_count) bring in
#: fewer.
MAX_INCLUDED = 1000
#: Keys per IN list, so no statement nears a driver's bind-parameter limit (asyncpg 32,767,
#: SQLite 32,766) however many resources a page and its includes name.
KEYS_PER_STATEMENT = 500


@dataclass(frozen=True, slots=True)
class _Included:
    resources: list[tuple[str, str, bytes]]
    truncated: bool


def _reference_params(source_type: str, code: str) -> list[str]:
    if code != "*":
        return [code]
    return [p.code for p in parameters_for(source_type).values() if p.type == "reference"]


def _chunks(items: Sequence[T]) -> list[Sequence[T]]:
    step = KEYS_PER_STATEMENT
    return [items[i : i + step] for i in range(0, len(items), step)]


def _by_type(keys: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for resource_type, resource_id in keys:
        grouped.setdefault(resource_type, []).append(resource_id)
    return grouped


def planned_search_resources(request: SearchRequest) -> int:
    """The most resources one page of ``request`` may read: its matches, and what its
    includes may add (at most MAX_INCLUDED, whatever the includes)."""
    return planned_search(
        request.count,
        includes=bool(request.includes),
        summary_count=request.summary_count,
        max_included=MAX_INCLUDED,
    )


async def _included(
    conn: AsyncConnection,
    request: SearchRequest,
    ids: list[str],
    budget: RequestBudget | None = None,
) -> _Included:
    """The matches' includes, then one :iterate hop over those, at most MAX_INCLUDED in all
    (the first ones by type and id, so a page always brings in the same ones)."""
    if not request.includes or not ids:
        return _Included([], truncated=False)
    seen = {(request.resource_type, i) for i in ids}
    frontier = sorted(seen)
    found: list[tuple[str, str, bytes]] = []
    for hop in (0, 1):
        wanted = [inc for inc in request.includes if hop == 0 or inc.iterate]
        room = MAX_INCLUDED - len(found)
        # Of any limit + 1 distinct keys, at most len(seen) are already in: the rest are new.
        keys = await _linked_keys(conn, wanted, frontier, limit=room + len(seen) + 1)
        new = [k for k in sorted(keys) if k not in seen]
        seen.update(new[:room])
        resources = await _fetch(conn, new[:room], budget)
        found += resources
        if len(new) > room:
            return _Included(found, truncated=True)
        frontier = [(t, i) for t, i, _ in resources]
        if not frontier:
            break
    return _Included(found, truncated=False)


async def _linked_keys(
    conn: AsyncConnection,
    includes: Sequence[Include],
    frontier: list[tuple[str, str]],
    *,
    limit: int,
) -> set[tuple[str, str]]:
    """The (type, id) keys the includes link ``frontier`` to: of each statement the first
    ``limit`` by type and id, which is all a caller keeping ``limit`` of them needs."""
    keys: set[tuple[str, str]] = set()
    for include in includes:
        for stmt in _include_statements(include, frontier):
            ordered = stmt.distinct().order_by(*stmt.selected_columns).limit(limit)
            keys.update((row[0], row[1]) for row in await conn.execute(ordered))
    return keys


def _include_statements(include: Include, frontier: list[tuple[str, str]]) -> list[Any]:
    ref = search_reference.c
    scope = [
        ref.resource_type == include.source_type,
        ref.param.in_(_reference_params(include.source_type, include.param)),
    ]
    if include.target_type:
        scope.append(ref.target_type == include.target_type)
    if include.targets is not None and not include.reverse:
        scope.append(ref.target_type.in_(include.targets))
    if include.reverse:
        return [
            select(ref.resource_type, ref.resource_id).where(
                *scope, ref.target_type == target_type, ref.target_id.in_(chunk)
            )
            for target_type, target_ids in _by_type(frontier).items()
            for chunk in _chunks(target_ids)
        ]
    source_ids = _by_type(frontier).get(include.source_type, [])
    return [
        select(ref.target_type, ref.target_id).where(
            *scope, ref.resource_id.in_(chunk), ref.target_type != ""
        )
        for chunk in _chunks(source_ids)
    ]


async def _fetch(
    conn: AsyncConnection, keys: list[tuple[str, str]], budget: RequestBudget | None
) -> list[tuple[str, str, bytes]]:
    found: list[tuple[str, str, bytes]] = []
    for resource_type, resource_ids in sorted(_by_type(keys).items()):
        for chunk in _chunks(resource_ids):
            stmt = (
                select(r.resource_type, r.id, r.content)
                .where(r.resource_type == resource_type, r.id.in_(chunk), r.deleted.is_(False))
                .order_by(r.id)
            )
            for row in await conn.execute(stmt):
                if budget is not None:
                    budget.charge(len(row[2]))
                found.append((row[0], row[1], row[2]))
    return found
