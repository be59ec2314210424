"""Whole numbers read from text a client sent (URL segments, query values, headers)."""

from __future__ import annotations

# Version ids and counts are stored as 32-bit integers on PostgreSQL.
MAX_WHOLE_NUMBER = 2**31 - 1


def whole_number(text: str, *, maximum: int = MAX_WHOLE_NUMBER) -> int | None:
    """``text`` as a non-negative integer, or None when it is not one that fits.

    ``str.isdigit`` alone is not enough: it accepts digits such as '²' that ``int`` refuses.
    """
    if not text or len(text) > len(str(maximum)) or not text.isascii() or not text.isdigit():
        return None
    number = int(text)
    return number if number <= maximum else None
