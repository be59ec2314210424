"""Indexed strings of any length, and letters of any Latin alphabet, on SQLite and PostgreSQL.

PostgreSQL refuses a B-tree entry over ~2,700 bytes: a name or identifier of 3,000 characters
is stored and found all the same (the index holds a bounded key; the whole value confirms
each match). String search folds letters that do not decompose (Ł, Đ, Ø, ß, Æ, Œ, Þ) to
their base letters, the same on both databases.
"""

from __future__ import annotations

import random
from typing import Any

import httpx
import pytest

from tests.api.helpers import FHIR_JSON, patient

SYSTEM = "https://example.org/Id/long"
#: Letters of several scripts, many of them 2-4 bytes in UTF-8, so 3,000 of them are well
#: over PostgreSQL's limit for one index entry.
_ALPHABET = (
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    "éüñçøłđßæœþÉÜÑÇØŁĐÆŒÞ"
    "αβγδεζηθλμπσωДЖЗИЛПФЦЧШЩЯ"
    "漢字仮名한국어😀🩺"
)


def _long_text(seed: int) -> str:
    chosen = random.Random(seed)
    return "".join(chosen.choice(_ALPHABET) for _ in range(3000))


async def _ids(client: httpx.AsyncClient, path: str, **params: str) -> list[str]:
    response = await client.get(path, params=params)
    assert response.status_code == 200, response.text
    return sorted(e["resource"]["id"] for e in response.json().get("entry", []))


async def _create(client: httpx.AsyncClient, resource: dict[str, Any]) -> str:
    response = await client.post(f"/{resource['resourceType']}", json=resource, headers=FHIR_JSON)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def test_a_3000_character_family_and_given_name(client: httpx.AsyncClient) -> None:
    family, given = _long_text(1), _long_text(2)
    assert len(family.encode()) > 2704
    pid = await _create(client, patient(name=[{"family": family, "given": [given]}]))
    other = await _create(client, patient(name=[{"family": family[:-1] + "!", "given": ["A"]}]))
    for where, text in (("family", family), ("given", given)):
        assert await _ids(client, "/Patient", **{f"{where}:exact": text}) == [pid]
        assert await _ids(client, "/Patient", **{f"{where}:exact": text[:-1]}) == []
    assert await _ids(client, "/Patient", family=family) == [pid]
    assert await _ids(client, "/Patient", family=family[:10]) == sorted([pid, other])
    assert await _ids(client, "/Patient", family=family[:500]) == sorted([pid, other])
    assert await _ids(client, "/Patient", family=family[:-1] + "!") == [other]
    assert await _ids(client, "/Patient", family=family[:-1] + "?") == []
    assert await _ids(client, "/Patient", given=given[:2000].upper()) == [pid]
    assert await _ids(client, "/Patient", **{"family:contains": family[1500:1600]}) == sorted(
        [pid, other]
    )
    response = await client.get("/Patient", params={"_sort": "family", "family": family[:3]})
    assert response.status_code == 200, response.text


async def test_a_3000_character_identifier_value(client: httpx.AsyncClient) -> None:
    value = _long_text(3)
    pid = await _create(client, patient(identifier=[{"system": SYSTEM, "value": value}]))
    await _create(client, patient(identifier=[{"system": SYSTEM, "value": value[:-1] + "!"}]))
    assert await _ids(client, "/Patient", identifier=f"{SYSTEM}|{value}") == [pid]
    assert await _ids(client, "/Patient", identifier=value) == [pid]
    # Same indexed key, different value: the whole value decides.
    assert await _ids(client, "/Patient", identifier=f"{SYSTEM}|{value[:-1]}?") == []
    assert await _ids(client, "/Patient", identifier=f"{SYSTEM}|{value[:200]}") == []
    # Exactly the indexed key's length (128): equal to the stored key, not to the value.
    assert await _ids(client, "/Patient", identifier=f"{SYSTEM}|{value[:128]}") == []
    assert await _ids(client, "/Patient", identifier=value[:127]) == []


async def test_a_3000_character_code_text(client: httpx.AsyncClient) -> None:
    text = _long_text(4)
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": text},
    }
    oid = await _create(client, observation)
    assert await _ids(client, "/Observation", **{"code:text": text[:300]}) == [oid]
    assert await _ids(client, "/Observation", **{"code:text": text}) == [oid]
    assert await _ids(client, "/Observation", **{"code:text": text[:-1] + "!"}) == []


async def test_a_3000_character_organization_name_and_reference(client: httpx.AsyncClient) -> None:
    name = _long_text(5)
    oid = await _create(client, {"resourceType": "Organization", "name": name})
    assert await _ids(client, "/Organization", **{"name:exact": name}) == [oid]
    assert await _ids(client, "/Organization", name=name[:129]) == [oid]
    assert await _ids(client, "/Organization", name=name[:128] + "!") == []
    elsewhere = "https://elsewhere.example/Organization/" + "o" * 3000
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "x"},
        "performer": [{"reference": elsewhere}],
    }
    found = await _create(client, observation)
    assert await _ids(client, "/Observation", performer=elsewhere) == [found]
    assert await _ids(client, "/Observation", performer=elsewhere[:-1]) == []


@pytest.mark.parametrize(
    ("family", "searched"),
    [
        ("Łukasiewicz", "lukas"),
        ("Łukasiewicz", "ŁUKAS"),
        ("Đorđević", "dordevic"),
        ("Østergaard", "oster"),
        ("Strauß", "strauss"),
        ("Ærø", "aero"),
        ("Œhlenschläger", "oehlen"),
        ("Þórðarson", "thordarson"),
        ("Y\u0131ld\u0131z", "yildiz"),  # dotless i
        ("lukasiewicz", "Łukasiewicz"),
    ],
)
async def test_letters_that_do_not_decompose_are_folded(
    client: httpx.AsyncClient, family: str, searched: str
) -> None:
    pid = await _create(client, patient(name=[{"family": family}]))
    await _create(client, patient(name=[{"family": "Other"}]))
    assert await _ids(client, "/Patient", family=searched) == [pid]
    assert await _ids(client, "/Patient", **{"family:contains": searched[1:]}) == [pid]
    assert await _ids(client, "/Patient", **{"family:exact": family}) == [pid]
