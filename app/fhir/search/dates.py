"""FHIR date search values: prefixes and precision (a value is a range, not a point)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from app.fhir.errors import InvalidRequest

PREFIXES = ("eq", "ne", "lt", "le", "gt", "ge", "sa", "eb")

_DATE = re.compile(
    r"^(?P<year>\d{4})(?:-(?P<month>\d{2})(?:-(?P<day>\d{2})"
    r"(?:T(?P<hour>\d{2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?P<fraction>\.\d{1,9})?)?"
    r"(?P<zone>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


@dataclass(frozen=True, slots=True)
class DateRange:
    """The half-open range [start, end) a FHIR date value stands for."""

    prefix: str
    start: datetime
    end: datetime


def _add_months(value: datetime, months: int) -> datetime:
    month = value.month - 1 + months
    return value.replace(year=value.year + month // 12, month=month % 12 + 1)


def parse_date(raw: str, *, param: str) -> DateRange:
    prefix = "eq"
    if raw[:2] in PREFIXES:
        prefix, raw = raw[:2], raw[2:]
    match = _DATE.match(raw)
    if match is None:
        raise InvalidRequest(
            f"'{raw}' is not a FHIR date for {param} (YYYY, YYYY-MM, YYYY-MM-DD or a dateTime)",
            expression=(param,),
        )
    parts = match.groupdict()
    try:
        zone = UTC
        if parts["zone"] and parts["zone"] != "Z":
            sign = 1 if parts["zone"][0] == "+" else -1
            hours, minutes = int(parts["zone"][1:3]), int(parts["zone"][4:6])
            from datetime import timezone

            zone = timezone(sign * timedelta(hours=hours, minutes=minutes))
        start = datetime(
            int(parts["year"]),
            int(parts["month"] or 1),
            int(parts["day"] or 1),
            int(parts["hour"] or 0),
            int(parts["minute"] or 0),
            int(parts["second"] or 0),
            int(float(parts["fraction"] or 0) * 1_000_000),
            tzinfo=zone,
        )
    except ValueError as error:
        raise InvalidRequest(
            f"'{raw}' is not a real date for {param}", expression=(param,)
        ) from error
    if parts["fraction"]:
        end = start + timedelta(milliseconds=1)
    elif parts["second"]:
        end = start + timedelta(seconds=1)
    elif parts["minute"]:
        end = start + timedelta(minutes=1)
    elif parts["day"]:
        end = start + timedelta(days=1)
    elif parts["month"]:
        end = _add_months(start, 1)
    else:
        end = start.replace(year=start.year + 1)
    return DateRange(prefix, start.astimezone(UTC), end.astimezone(UTC))
