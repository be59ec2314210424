"""FHIR date search values: prefixes and precision (a value is a range, not a point).

FHIR dates run from year 1 to year 9999 in any time zone, so a value's range can reach past
what a ``datetime`` (and the index columns) can hold: the end of 9999-12-31, or
0001-01-01T00:00:00+01:00 in UTC. Such ranges are clamped to :data:`EARLIEST` and
:data:`LATEST` rather than refused: the values are valid FHIR, they must be stored, and a
search for them must find them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

from app.fhir.errors import InvalidRequest

PREFIXES = ("eq", "ne", "lt", "le", "gt", "ge", "sa", "eb")

#: The representable limits: every range is clamped to [EARLIEST, LATEST].
EARLIEST = datetime.min.replace(tzinfo=UTC)
LATEST = datetime.max.replace(tzinfo=UTC)

# ASCII digits only: \d would accept other scripts' digits, which FHIR dates never hold.
_DATE = re.compile(
    r"^(?P<year>\d{4})(?:-(?P<month>\d{2})(?:-(?P<day>\d{2})"
    r"(?:T(?P<hour>\d{2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?P<fraction>\.\d{1,9})?)?"
    r"(?P<zone>Z|[+-]\d{2}:\d{2})?)?)?)?$",
    re.ASCII,
)


@dataclass(frozen=True, slots=True)
class DateRange:
    """The half-open range [start, end) a FHIR date value stands for, in UTC."""

    prefix: str
    start: datetime
    end: datetime


def parse_date(raw: str, *, param: str, prefixed: bool = True) -> DateRange:
    """``raw`` (with a prefix when ``prefixed``) as a range; 400 naming ``param`` when it
    is not a FHIR date or names no real moment (2025-02-30, a zone of +25:00)."""
    prefix = "eq"
    if prefixed and raw[:2] in PREFIXES:
        prefix, raw = raw[:2], raw[2:]
    match = _DATE.match(raw)
    if match is None:
        raise InvalidRequest(
            f"'{raw}' is not a FHIR date for {param} (YYYY, YYYY-MM, YYYY-MM-DD or a dateTime)",
            expression=(param,),
        )
    parts = match.groupdict()
    try:
        local = _local_start(parts)
    except ValueError as error:
        raise InvalidRequest(
            f"'{raw}' is not a real date for {param}", expression=(param,)
        ) from error
    return DateRange(prefix, _as_utc(local), _as_utc(_local_end(local, parts)))


def _local_start(parts: dict[str, str | None]) -> datetime:
    """The first moment of the value, in its own zone (UTC when it names none)."""
    zone: timezone = UTC
    if parts["zone"] and parts["zone"] != "Z":
        sign = 1 if parts["zone"][0] == "+" else -1
        hours, minutes = int(parts["zone"][1:3]), int(parts["zone"][4:6])
        zone = timezone(sign * timedelta(hours=hours, minutes=minutes))
    return datetime(
        int(parts["year"] or 1),
        int(parts["month"] or 1),
        int(parts["day"] or 1),
        int(parts["hour"] or 0),
        int(parts["minute"] or 0),
        int(parts["second"] or 0),
        int(float(parts["fraction"] or 0) * 1_000_000),
        tzinfo=zone,
    )


def _local_end(start: datetime, parts: dict[str, str | None]) -> datetime | None:
    """The moment after the value at its precision; None when that is past year 9999."""
    try:
        if parts["fraction"]:
            return start + timedelta(milliseconds=1)
        if parts["second"]:
            return start + timedelta(seconds=1)
        if parts["minute"]:
            return start + timedelta(minutes=1)
        if parts["day"]:
            return start + timedelta(days=1)
        if parts["month"]:
            month = start.month  # 1-12: the next month's index, counted from 0
            return start.replace(year=start.year + month // 12, month=month % 12 + 1)
        return start.replace(year=start.year + 1)
    except (OverflowError, ValueError):  # year 10000
        return None


def _as_utc(moment: datetime | None) -> datetime:
    if moment is None:
        return LATEST
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # a zone pushes it before year 1 or after year 9999
        return EARLIEST if moment.year == 1 else LATEST
