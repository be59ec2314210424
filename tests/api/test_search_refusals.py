"""Search values the server cannot use are refused with a 400 naming the parameter, never
answered with a 500 (or silently ignored), on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
from urllib.parse import urlencode

import httpx
import orjson
import pytest

from tests.api.bundle_builders import bundle, entry
from tests.api.helpers import FHIR_JSON, NHS, issues, patient


@pytest.mark.parametrize(
    "value",
    ["sNaN", "NaN", "gtNaN", "Infinity", "-inf", "1e999999999", "le1e-999999999", "1_000", "٣"],
)
async def test_quantities_that_are_not_searchable_numbers(
    client: httpx.AsyncClient, value: str
) -> None:
    response = await client.get("/Observation", params={"value-quantity": value})
    assert response.status_code == 400, response.text
    assert issues(response.json()) == [("invalid", ["value-quantity"])]


def crafted(*values: object) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(values))).decode().rstrip("=")


@pytest.mark.parametrize(
    ("sort", "cursor"),
    [
        ("birthdate", crafted("next", "not a date", "x")),
        ("birthdate", crafted("next", 20260101, "x")),
        ("birthdate", crafted("next", {"$gt": 1}, "x")),
        ("birthdate", crafted("next", "0001-01-01T00:00:00+01:00", "x")),
        ("family", crafted("next", ["a"], "x")),
        ("family", crafted("next", "a", 7)),
        ("family", crafted("sideways", "a", "x")),
        ("family", crafted("next", "a")),
        ("family", crafted()),
        ("family", base64.urlsafe_b64encode(b'{"next": 1}').decode()),
        ("family", base64.urlsafe_b64encode(b"3").decode()),
        ("family", "!!!not base64"),
        ("family", base64.urlsafe_b64encode("\ud800".encode("utf-8", "surrogatepass")).decode()),
    ],
)
async def test_crafted_cursors_are_refused(
    client: httpx.AsyncClient, sort: str, cursor: str
) -> None:
    await client.post("/Patient", json=patient(), headers=FHIR_JSON)
    response = await client.get("/Patient", params={"_sort": sort, "_cursor": cursor})
    assert response.status_code == 400, response.text
    assert issues(response.json()) == [("invalid", ["_cursor"])]


async def test_a_cursor_this_server_gave_still_pages(client: httpx.AsyncClient) -> None:
    for year in (1990, 1991, 1992):
        await client.post("/Patient", json=patient(birthDate=f"{year}-01-01"), headers=FHIR_JSON)
    first = (await client.get("/Patient", params={"_sort": "birthdate", "_count": 2})).json()
    following = next(link["url"] for link in first["link"] if link["relation"] == "next")
    second = (await client.get(following)).json()
    assert [e["resource"]["birthDate"] for e in second["entry"]] == ["1992-01-01"]


async def test_quantities_at_the_edges_of_a_double_are_stored_and_found(
    client: httpx.AsyncClient,
) -> None:
    made = {}
    for value in (1e300, 5e-324, -1e300):
        observation = {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "Units per week"},
            "valueQuantity": {"value": value},
        }
        response = await client.post("/Observation", json=observation, headers=FHIR_JSON)
        assert response.status_code == 201, response.text
        made[value] = response.json()["id"]
    for query, expected in (("gt1e299", [1e300]), ("lt-1e299", [-1e300]), ("gt0", [1e300, 5e-324])):
        response = await client.get("/Observation", params={"value-quantity": query})
        assert response.status_code == 200, response.text
        found = sorted(e["resource"]["id"] for e in response.json().get("entry", []))
        assert found == sorted(made[v] for v in expected), query


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


async def test_the_largest_search_allowed_runs_on_both_databases(
    client: httpx.AsyncClient,
) -> None:
    """At the limits (docs/api.md, "Search"): 30 criteria of 100 values each, 5 sort keys and 20
    includes make one statement both databases still parse; a next page keysets on all 5."""
    for year in (1990, 1991, 1992):
        await client.post("/Patient", json=patient(birthDate=f"{year}-01-01"), headers=FHIR_JSON)
    many = ",".join(["9434765919", *(f"urn:x|{n}" for n in range(99))])
    criteria = [("identifier", many)] * 10 + [("gender", "unknown," * 99 + "x")] * 10
    criteria += [("birthdate", ",".join(["ge1900"] * 100))] * 10
    sort = [("_sort", "-birthdate,family,given,gender,-_lastUpdated")]
    includes = [("_include", "Patient:general-practitioner")] * 10
    includes += [("_revinclude", "ServiceRequest:patient")] * 10
    body = [*criteria, *sort, *includes, ("_count", "2")]
    posted = await client.post("/Patient/_search", content=urlencode(body), headers=FORM)
    assert posted.status_code == 200, posted.text
    first = await client.get("/Patient", params=body)
    assert first.status_code == 200, first.text
    page = first.json()
    assert [e["resource"]["birthDate"] for e in page["entry"]] == ["1992-01-01", "1991-01-01"]
    following = next(link["url"] for link in page["link"] if link["relation"] == "next")
    second = await client.get(following)
    assert second.status_code == 200, second.text
    assert [e["resource"]["birthDate"] for e in second.json()["entry"]] == ["1990-01-01"]


@pytest.mark.parametrize(
    ("params", "where"),
    [
        ([("identifier", ",".join(str(n) for n in range(101)))], ["identifier"]),
        ([("gender", "unknown")] * 31, []),
        ([("_sort", "family,given,gender,birthdate,_id,-_lastUpdated")], []),
        ([("_revinclude", "ServiceRequest:patient")] * 21, []),
    ],
)
async def test_searches_past_the_limits_are_too_costly(
    client: httpx.AsyncClient, params: list[tuple[str, str]], where: list[str]
) -> None:
    for prefer in ("handling=strict", "handling=lenient"):
        response = await client.get("/Patient", params=params, headers={"Prefer": prefer})
        assert response.status_code == 400, response.text
        assert issues(response.json()) == [("too-costly", where)]


async def test_thousands_of_values_are_refused_not_a_500(client: httpx.AsyncClient) -> None:
    """Nine thousand values once made a statement too deep for SQLite to parse."""
    values = ",".join(f"v{n}" for n in range(9000))
    posted = await client.post("/Patient/_search", content=f"family={values}", headers=FORM)
    assert posted.status_code == 400
    assert issues(posted.json()) == [("too-costly", ["family"])]


EMPTY_ALTERNATIVES = [
    ("family", "a,"),
    ("family", ","),
    ("family", ",Example"),
    ("family", "Example, "),
    ("family", "\u0301"),  # a lone combining accent folds to nothing
    ("family:contains", "a,"),
    ("name", "Example,,Other"),
    ("identifier", "|"),
    ("identifier", f"{NHS}|9434765919,|"),
    ("identifier", "a,"),
    ("identifier:text", "a,"),
    ("gender:not", "male,"),
    ("general-practitioner", "Practitioner/"),
    ("general-practitioner", "Practitioner/x,"),
    ("general-practitioner:identifier", "|"),
    ("birthdate", "1980,"),
    ("_id", "x,"),
    ("_lastUpdated", "gt2000-01-01,"),
    ("general-practitioner.name", "a,"),
    ("general-practitioner:Practitioner.family", ","),
    ("_has:Observation:subject:code", "http://loinc.org|1,"),
    ("_has:Observation:subject:code", "|"),
]


@pytest.mark.parametrize(("name", "value"), EMPTY_ALTERNATIVES)
async def test_an_empty_alternative_is_400_not_a_match_for_everything(
    client: httpx.AsyncClient, name: str, value: str
) -> None:
    """``family=a,`` once matched every Patient: the empty alternative was a prefix of all."""
    await client.post("/Patient", json=patient(), headers=FHIR_JSON)
    response = await client.get("/Patient", params={name: value})
    assert response.status_code == 400, response.text
    assert issues(response.json()) == [("invalid", [name])]
    assert "is empty" in response.json()["issue"][0]["diagnostics"]
    posted = await client.post("/Patient/_search", content=urlencode({name: value}), headers=FORM)
    assert posted.status_code == 400, posted.text


@pytest.mark.parametrize(("name", "value"), EMPTY_ALTERNATIVES[:4])
async def test_an_empty_alternative_in_a_condition_is_400(
    client: httpx.AsyncClient, name: str, value: str
) -> None:
    """Conditions parse their criteria as a search does: ``family=a,`` in If-None-Exist must
    not match (and so skip creating) whatever Patient exists."""
    await client.post("/Patient", json=patient(), headers=FHIR_JSON)
    condition = urlencode({name: value})
    created = await client.post(
        "/Patient", json=patient(), headers={**FHIR_JSON, "If-None-Exist": condition}
    )
    assert created.status_code == 400, created.text
    assert issues(created.json()) == [("invalid", [name])]
    # In a Bundle: a conditional create, and a conditional reference (which would otherwise
    # be "matches more than one" or resolve to whichever Patient exists).
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "Units per week"},
        "subject": {"reference": f"Patient?{condition}"},
    }
    for sent in (
        bundle(entry("POST", "Patient", patient(), ifNoneExist=condition)),
        bundle(entry("POST", "Observation", observation)),
    ):
        response = await client.post("/", json=sent, headers=FHIR_JSON)
        assert response.status_code == 400, response.text
        assert issues(response.json())[0][0] == "invalid"
    listed = (await client.get("/Patient")).json()
    assert listed["total"] == 1


@pytest.mark.parametrize(
    ("name", "value", "found"),
    [
        ("family", "Nobody,Exam", 1),
        ("family", "a\\,", 0),  # an escaped comma is part of the value, not an empty one
        ("identifier", f"{NHS}|", 1),  # any code in the system
        ("identifier", "|9434765919", 0),  # the code with no system
        ("general-practitioner:missing", "true", 1),
    ],
)
async def test_values_that_look_empty_but_are_not_still_search(
    client: httpx.AsyncClient, name: str, value: str, found: int
) -> None:
    await client.post("/Patient", json=patient(), headers=FHIR_JSON)
    response = await client.get("/Patient", params={name: value})
    assert response.status_code == 200, response.text
    assert response.json()["total"] == found
