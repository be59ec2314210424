"""What FHIR allows in a string, one rule for wherever a client's text comes in.

FHIR R4 (datatypes, "string"): a string holds no character below U+0020 other than tab, CR and
LF (its regex is ``[ \\r\\n\\t\\S]+``). Besides being invalid FHIR, such characters break storage:
PostgreSQL's text cannot hold U+0000 at all, where SQLite stores it, so one database would
answer 500 and the other succeed. Resource bodies (app/fhir/validation.py), search parameters
wherever they come from (app/fhir/search/parse.py) and the URL's path and query
(app/api/access.py) are all checked with :func:`require_fhir_text`.
"""

from __future__ import annotations

import re

from app.fhir.errors import InvalidRequest

_FORBIDDEN = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def forbidden_character(text: str) -> str | None:
    """The first character FHIR does not allow in ``text``, as U+XXXX, or None."""
    found = _FORBIDDEN.search(text)
    return None if found is None else f"U+{ord(found.group()):04X}"


def printable(text: str) -> str:
    """``text`` with each forbidden character written as a ``\\uXXXX`` escape: safe to put in
    an error's location or an audit record, and still saying what was sent."""
    return _FORBIDDEN.sub(lambda found: f"\\u{ord(found.group()):04x}", text)


def problem(text: str) -> str | None:
    """Why ``text`` is not a FHIR string, or None when it is one."""
    character = forbidden_character(text)
    if character is None:
        return None
    return (
        f"holds the control character {character}: FHIR strings take no character below "
        "U+0020 other than tab, CR and LF"
    )


def require_fhir_text(text: str, *, where: str) -> None:
    """400 naming ``where`` (a parameter, a header, an id) when ``text`` holds a character
    FHIR does not allow."""
    found = problem(text)
    if found is not None:
        location = printable(where)
        raise InvalidRequest(f"'{location}' {found}", expression=(location,))
