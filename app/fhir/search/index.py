"""Index rows extracted from a resource on write, as the registry says.

Each search parameter type has one table; :func:`index_rows` turns a document into the rows
of all of them. Values that cannot be indexed (a contained reference, an unparseable date the
validator let through) are left out rather than guessed.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from app.fhir.errors import FhirError
from app.fhir.resources import SERVED
from app.fhir.search.dates import EARLIEST, LATEST, parse_date
from app.fhir.search.registry import SearchParameter, indexed_parameters

_NAME_PARTS = ("text", "family", "given", "prefix", "suffix")
_ADDRESS_PARTS = ("text", "line", "city", "district", "state", "postalCode", "country")


def _latin_letters_by_name() -> dict[int, str]:
    """Latin letters that do not decompose (Ł, Đ, Ø, Æ, Œ, the dotless i, ...), each mapped
    to the letters its Unicode name says it is made from: "LATIN SMALL LETTER L WITH STROKE"
    is an l, "LATIN CAPITAL LETTER AE" is ae. Derived from the Unicode database rather than
    typed in, so no letter of these blocks is forgotten."""
    table: dict[int, str] = {}
    for low, high in _LATIN_BLOCKS:
        for point in range(low, high):
            char = chr(point)
            if unicodedata.normalize("NFKD", char) != char:
                continue  # NFKD already takes it apart (é, ǿ, ĳ)
            named = _LATIN_LETTER.fullmatch(unicodedata.name(char, ""))
            if named:
                table[point] = named.group(1).lower()
    return table


#: Latin-1 Supplement to Latin Extended-B, Latin Extended Additional, -C, -D and -E.
_LATIN_BLOCKS = ((0x00C0, 0x0250), (0x1E00, 0x1F00), (0x2C60, 0x2C80), (0xA720, 0xA800),
                 (0xAB30, 0xAB70))  # fmt: skip
_LATIN_LETTER = re.compile(
    r"LATIN (?:SMALL|CAPITAL) (?:LETTER|LIGATURE) (?:DOTLESS )?([A-Z]{1,2})(?: WITH .+)?"
)
#: Letters whose names do not spell them, as they are usually written in English text
#: (ß needs nothing here: casefold() already makes it ss).
_SPELLED = {"ð": "d", "þ": "th", "ŋ": "ng", "ĸ": "q"}
_FOLD_LETTERS = {**_latin_letters_by_name(), **{ord(k): v for k, v in _SPELLED.items()}}


def normalise(text: str) -> str:
    """The case- and accent-insensitive form string search compares (FHIR: 'Eve' finds
    'ève'): casefolded, NFKD-decomposed with the combining marks dropped, and Latin letters
    that do not decompose written as their base letters ('lukas' finds 'Łukasiewicz', 'oe'
    finds 'Œ', 'ss' finds 'ß'). Done here, in Python, for the index and the query alike, so
    that SQLite and PostgreSQL compare the same text whatever their collations."""
    if text.isascii():  # nothing to decompose, and casefold() is lower() (the common case)
        return text.lower().strip()
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return bare.translate(_FOLD_LETTERS).strip()


#: How much of a value the search indexes hold (characters). PostgreSQL refuses a B-tree
#: entry over ~2,700 bytes, so a long name or identifier could not be stored whole in one;
#: the full value sits beside the key, unindexed, and every match on the key is confirmed on
#: it (app/fhir/search/query.py).
INDEX_KEY_LENGTH = 128


def index_key(value: str) -> str:
    """The indexed key of a string or token value: its first INDEX_KEY_LENGTH characters."""
    return value[:INDEX_KEY_LENGTH]


def reference_key(target: str) -> str:
    """What a reference's target (an id, or a URL elsewhere) is indexed and searched by: the
    target itself, or for one too long to index, its start and a SHA-256 of the whole (a
    reference is only ever compared whole, so this keeps its matches exact)."""
    if len(target) <= INDEX_KEY_LENGTH:
        return target
    digest = hashlib.sha256(target.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{target[: INDEX_KEY_LENGTH - 72]}#sha256:{digest}"


@dataclass
class IndexRows:
    #: param, system, code, index_key(code)
    tokens: list[tuple[str, str, str, str]] = field(default_factory=list)
    #: param, normalise(exact), exact, index_key(normalise(exact))
    strings: list[tuple[str, str, str, str]] = field(default_factory=list)
    references: list[tuple[str, str, str]] = field(default_factory=list)  # param, type, id
    dates: list[tuple[str, datetime, datetime]] = field(default_factory=list)  # param, low, high
    quantities: list[tuple[str, Decimal, str, str]] = field(default_factory=list)

    def deduplicated(self) -> IndexRows:
        return IndexRows(
            sorted(set(self.tokens)),
            sorted(set(self.strings)),
            sorted(set(self.references)),
            sorted(set(self.dates)),
            sorted(set(self.quantities)),
        )


def elements(node: Any, path: tuple[str, ...]) -> Iterator[Any]:
    """Every value at ``path``, arrays flattened at each step."""
    if isinstance(node, list):
        for item in node:
            yield from elements(item, path)
        return
    if not path:
        yield node
        return
    if isinstance(node, dict) and path[0] in node:
        yield from elements(node[path[0]], path[1:])


def token_values(value: Any) -> Iterator[tuple[str, str]]:
    """(system, code) pairs of an Identifier, CodeableConcept, Coding, ContactPoint or code."""
    if isinstance(value, bool):
        yield "", "true" if value else "false"
    elif isinstance(value, str):
        yield "", value
    elif isinstance(value, dict):
        for coding in value.get("coding", ()):
            yield from token_values(coding)
        if isinstance(value.get("value"), str):  # Identifier, ContactPoint
            yield value.get("system", ""), value["value"]
        if isinstance(value.get("code"), str):  # Coding
            yield value.get("system", ""), value["code"]


def _token_texts(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        if isinstance(value.get("text"), str):
            yield value["text"]
        for coding in value.get("coding", ()):
            if isinstance(coding, dict) and isinstance(coding.get("display"), str):
                yield coding["display"]
        if isinstance(value.get("display"), str):
            yield value["display"]


def string_values(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        parts = _NAME_PARTS if ("family" in value or "given" in value) else _ADDRESS_PARTS
        for part in parts:
            yield from (v for v in elements(value, (part,)) if isinstance(v, str))


def _range(value: Any) -> tuple[datetime, datetime] | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = parse_date(value, param="index", prefixed=False)
    except FhirError:
        return None
    return parsed.start, parsed.end


def date_ranges(value: Any) -> Iterator[tuple[datetime, datetime]]:
    if isinstance(value, str):
        whole = _range(value)
        if whole is not None:
            yield whole
    elif isinstance(value, dict) and ("start" in value or "end" in value):  # Period
        start = _range(value["start"]) if "start" in value else (EARLIEST, EARLIEST)
        end = _range(value["end"]) if "end" in value else (LATEST, LATEST)
        if start is not None and end is not None:
            yield start[0], end[1]


def reference_targets(value: Any, base_url: str) -> Iterator[tuple[str, str]]:
    """(type, id) of a Reference or canonical; ('', url) for one elsewhere."""
    reference = value.get("reference") if isinstance(value, dict) else value
    if not isinstance(reference, str) or reference.startswith(("#", "urn:")):
        return
    if reference.startswith(f"{base_url}/"):
        reference = reference[len(base_url) + 1 :]
    elif "://" in reference:
        yield "", reference.split("|")[0]
        return
    parts = reference.split("/")
    if len(parts) in (2, 4) and parts[0] in SERVED and parts[1]:
        yield parts[0], parts[1]


def _quantities(value: Any) -> Iterator[tuple[Decimal, str, str]]:
    if isinstance(value, dict) and isinstance(value.get("value"), int | float | str):
        try:
            number = Decimal(str(value["value"]))
        except InvalidOperation:
            return
        yield number, str(value.get("system", "")), str(value.get("code", value.get("unit", "")))


def _token_row(param: str, system: str, code: str) -> tuple[str, str, str, str]:
    return param, system, code, index_key(code)


def _string_row(param: str, exact: str) -> tuple[str, str, str, str]:
    folded = normalise(exact)
    return param, folded, exact, index_key(folded)


def _add(rows: IndexRows, param: SearchParameter, value: Any, base_url: str) -> None:
    code = param.code
    if param.type in ("token", "uri"):
        rows.tokens.extend(_token_row(code, s, c) for s, c in token_values(value))
        if param.type == "token":
            rows.strings.extend(_string_row(f"{code}:text", t) for t in _token_texts(value))
    elif param.type == "string":
        rows.strings.extend(_string_row(code, v) for v in string_values(value))
    elif param.type == "date":
        rows.dates.extend((code, low, high) for low, high in date_ranges(value))
    elif param.type == "reference":
        for target_type, target_id in reference_targets(value, base_url):
            if not param.targets or target_type in param.targets:
                rows.references.append((code, target_type, reference_key(target_id)))
        # A reference by business identifier (ODS code, client id) answers :identifier.
        if isinstance(value, dict) and isinstance(value.get("identifier"), dict):
            identifiers = token_values(value["identifier"])
            rows.tokens.extend(_token_row(f"{code}:identifier", s, c) for s, c in identifiers)
    elif param.type == "quantity":
        rows.quantities.extend((code, *q) for q in _quantities(value))


def index_rows(resource_type: str, document: dict[str, Any], base_url: str) -> IndexRows:
    rows = IndexRows()
    for param in indexed_parameters(resource_type):
        for path in param.paths:
            for value in elements(document, path):
                _add(rows, param, value, base_url)
    return rows.deduplicated()
