"""The FHIR REST interactions, through the app, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import pytest

from tests.api.helpers import FHIR_JSON, NHS, issues, patient


async def create(client: httpx.AsyncClient, resource: dict[str, object]) -> httpx.Response:
    response = await client.post(f"/{resource['resourceType']}", json=resource, headers=FHIR_JSON)
    assert response.status_code == 201, response.text
    return response


async def test_create_returns_201_with_location_etag_and_last_modified(
    client: httpx.AsyncClient,
) -> None:
    sent = patient()
    sent["id"] = "client-chosen"  # FHIR: the server ignores an id on create
    response = await create(client, sent)
    body = response.json()
    assert body["id"] != "client-chosen"
    assert body["meta"]["versionId"] == "1"
    assert response.headers["location"] == f"http://testserver/Patient/{body['id']}/_history/1"
    assert response.headers["etag"] == 'W/"1"'
    assert response.headers["content-type"].startswith("application/fhir+json")
    modified = parsedate_to_datetime(response.headers["last-modified"])
    assert body["meta"]["lastUpdated"].startswith(modified.strftime("%Y-%m-%dT%H:%M:%S"))
    # Nothing the client sent is dropped, extensions included.
    assert body["extension"] == sent["extension"]
    assert body["identifier"] == sent["identifier"]


async def test_read_serves_exactly_what_was_stored(client: httpx.AsyncClient) -> None:
    created = await create(client, patient())
    resource_id = created.json()["id"]
    read = await client.get(f"/Patient/{resource_id}")
    assert read.status_code == 200
    assert read.content == created.content
    assert read.headers["etag"] == 'W/"1"'


async def test_read_of_unknown_resource_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/Patient/does-not-exist")
    assert response.status_code == 404
    assert issues(response.json()) == [("not-found", [])]


async def test_update_bumps_the_version_and_keeps_history(client: httpx.AsyncClient) -> None:
    resource = (await create(client, patient())).json()
    resource["name"][0]["family"] = "Changed"
    updated = await client.put(f"/Patient/{resource['id']}", json=resource, headers=FHIR_JSON)
    assert updated.status_code == 200
    assert updated.json()["meta"]["versionId"] == "2"
    assert updated.headers["etag"] == 'W/"2"'
    first = await client.get(f"/Patient/{resource['id']}/_history/1")
    assert first.json()["name"][0]["family"] == "Example"
    second = await client.get(f"/Patient/{resource['id']}/_history/2")
    assert second.json()["name"][0]["family"] == "Changed"
    missing = await client.get(f"/Patient/{resource['id']}/_history/3")
    assert missing.status_code == 404


async def test_update_with_stale_if_match_is_412(client: httpx.AsyncClient) -> None:
    resource = (await create(client, patient())).json()
    url = f"/Patient/{resource['id']}"
    ok = await client.put(url, json=resource, headers={**FHIR_JSON, "If-Match": 'W/"1"'})
    assert ok.status_code == 200
    stale = await client.put(url, json=resource, headers={**FHIR_JSON, "If-Match": 'W/"1"'})
    assert stale.status_code == 412
    assert issues(stale.json())[0][0] == "conflict"
    assert stale.headers["etag"] == 'W/"2"'


async def test_update_needs_matching_id(client: httpx.AsyncClient) -> None:
    resource = (await create(client, patient())).json()
    resource["id"] = "another"
    response = await client.put("/Patient/not-another", json=resource, headers=FHIR_JSON)
    assert response.status_code == 400
    assert issues(response.json()) == [("invalid", ["Patient.id"])]
    del resource["id"]
    response = await client.put("/Patient/not-another", json=resource, headers=FHIR_JSON)
    assert response.status_code == 400


async def test_update_can_create_with_a_client_id(client: httpx.AsyncClient) -> None:
    resource = patient(id="seed-patient-1")
    response = await client.put("/Patient/seed-patient-1", json=resource, headers=FHIR_JSON)
    assert response.status_code == 201
    assert response.headers["location"].endswith("/Patient/seed-patient-1/_history/1")


async def test_concurrent_updates_with_if_match_one_wins(client: httpx.AsyncClient) -> None:
    resource = (await create(client, patient())).json()
    url = f"/Patient/{resource['id']}"
    headers = {**FHIR_JSON, "If-Match": 'W/"1"'}
    responses = await asyncio.gather(
        *(client.put(url, json=resource, headers=headers) for _ in range(5))
    )
    assert sorted(r.status_code for r in responses) == [200, 412, 412, 412, 412]
    assert (await client.get(url)).json()["meta"]["versionId"] == "2"


async def test_patch_applies_json_patch_and_honours_if_match(client: httpx.AsyncClient) -> None:
    resource = (await create(client, patient())).json()
    url = f"/Patient/{resource['id']}"
    ops = [{"op": "replace", "path": "/name/0/family", "value": "Patched"}]
    headers = {"Content-Type": "application/json-patch+json", "If-Match": 'W/"1"'}
    patched = await client.patch(url, json=ops, headers=headers)
    assert patched.status_code == 200, patched.text
    assert patched.json()["name"][0]["family"] == "Patched"
    assert patched.json()["meta"]["versionId"] == "2"
    assert (await client.patch(url, json=ops, headers=headers)).status_code == 412
    history = (await client.get(f"{url}/_history")).json()
    assert [e["request"]["method"] for e in history["entry"]] == ["PATCH", "POST"]


async def test_patch_that_breaks_the_resource_is_refused(client: httpx.AsyncClient) -> None:
    resource = (await create(client, patient())).json()
    url = f"/Patient/{resource['id']}"
    headers = {"Content-Type": "application/json-patch+json"}
    bad_code = [{"op": "replace", "path": "/gender", "value": "bogus"}]
    response = await client.patch(url, json=bad_code, headers=headers)
    assert response.status_code == 400
    assert issues(response.json()) == [("code-invalid", ["Patient.gender"])]
    failed_test = [{"op": "test", "path": "/gender", "value": "male"}]
    assert (await client.patch(url, json=failed_test, headers=headers)).status_code == 422
    malformed = [{"op": "jump", "path": "/gender"}]
    assert (await client.patch(url, json=malformed, headers=headers)).status_code == 400
    wrong_type = await client.patch(url, json=bad_code, headers=FHIR_JSON)
    assert wrong_type.status_code == 415
    assert (await client.get(url)).json()["meta"]["versionId"] == "1"


async def test_patch_errors_name_the_operation_and_never_quote_the_resource(
    client: httpx.AsyncClient,
) -> None:
    resource = (await create(client, patient("9434765919"))).json()
    url = f"/Patient/{resource['id']}"
    headers = {"Content-Type": "application/json-patch+json"}
    for operations, status in (
        (
            [
                {"op": "add", "path": "/active", "value": True},
                {"op": "replace", "path": "/nope/0", "value": 1},
            ],
            422,
        ),
        ([{"op": "test", "path": "/name/0/family", "value": "Someone else"}], 422),
        ([{"op": "replace", "path": "/name/9/family", "value": "X"}], 422),
        ([{"op": "move", "path": "/active"}], 400),
    ):
        response = await client.patch(url, json=operations, headers=headers)
        assert response.status_code == status, response.text
        text = response.json()["issue"][0]["diagnostics"]
        assert f"operation {len(operations) - 1} (" in text
        for private in ("9434765919", resource["name"][0]["family"]):
            assert private not in response.text


async def test_delete_then_read_is_410_and_history_keeps_the_tombstone(
    client: httpx.AsyncClient,
) -> None:
    resource = (await create(client, patient())).json()
    url = f"/Patient/{resource['id']}"
    deleted = await client.delete(url)
    assert deleted.status_code == 204
    assert deleted.headers["etag"] == 'W/"2"'
    gone = await client.get(url)
    assert gone.status_code == 410
    assert issues(gone.json()) == [("deleted", [])]
    assert (await client.delete(url)).status_code == 204  # idempotent
    assert (await client.get(f"{url}/_history/1")).status_code == 200
    assert (await client.get(f"{url}/_history/2")).status_code == 410
    history = (await client.get(f"{url}/_history")).json()
    assert [e["request"]["method"] for e in history["entry"]] == ["DELETE", "POST"]
    assert "resource" not in history["entry"][0]
    assert (await client.delete("/Patient/never-was")).status_code == 404
    search = (await client.get("/Patient", params={"_id": resource["id"]})).json()
    assert search["total"] == 0


async def test_delete_honours_if_match_as_put_and_patch_do(client: httpx.AsyncClient) -> None:
    """One If-Match rule for every version-aware write: 412 when stale, 400 when malformed."""
    resource = (await create(client, patient())).json()
    url = f"/Patient/{resource['id']}"
    resource["gender"] = "female"
    assert (await client.put(url, json=resource, headers=FHIR_JSON)).status_code == 200
    stale = await client.delete(url, headers={"If-Match": 'W/"1"'})
    assert stale.status_code == 412
    assert issues(stale.json())[0][0] == "conflict"
    assert stale.headers["etag"] == 'W/"2"'
    for malformed in ("banana", "2", "W/2", '"2', "*", 'W/"1", W/"2"', 'W/"-2"'):
        refused = await client.delete(url, headers={"If-Match": malformed})
        assert refused.status_code == 400, malformed
        assert issues(refused.json()) == [("invalid", ["If-Match"])], malformed
    assert (await client.get(url)).status_code == 200  # none of those deleted it
    deleted = await client.delete(url, headers={"If-Match": 'W/"2"'})
    assert deleted.status_code == 204
    assert deleted.headers["etag"] == 'W/"3"'
    # A retry of a delete whose answer was lost succeeds (RFC 9110 section 13.1.1).
    assert (await client.delete(url, headers={"If-Match": 'W/"2"'})).status_code == 204


async def test_if_match_without_quotes_is_refused_by_put_and_patch_alike(
    client: httpx.AsyncClient,
) -> None:
    """An ETag is a quoted string (RFC 9110 section 8.8.3): a bare 1 is not one."""
    resource = (await create(client, patient())).json()
    url = f"/Patient/{resource['id']}"
    put = await client.put(url, json=resource, headers={**FHIR_JSON, "If-Match": "1"})
    ops = [{"op": "replace", "path": "/gender", "value": "female"}]
    patch_headers = {"Content-Type": "application/json-patch+json", "If-Match": "1"}
    patched = await client.patch(url, json=ops, headers=patch_headers)
    for response in (put, patched):
        assert response.status_code == 400
        assert issues(response.json()) == [("invalid", ["If-Match"])]
    strong = await client.put(url, json=resource, headers={**FHIR_JSON, "If-Match": '"1"'})
    assert strong.status_code == 200
    assert strong.headers["etag"] == 'W/"2"'


async def test_recreating_a_deleted_resource_continues_its_versions(
    client: httpx.AsyncClient,
) -> None:
    resource = (await create(client, patient())).json()
    url = f"/Patient/{resource['id']}"
    await client.delete(url)
    again = await client.put(url, json=resource, headers=FHIR_JSON)
    assert again.status_code == 200
    assert again.json()["meta"]["versionId"] == "3"


async def test_type_history_lists_every_version_newest_first(client: httpx.AsyncClient) -> None:
    first = (await create(client, patient())).json()
    second = (await create(client, patient("9912003888"))).json()
    await client.put(f"/Patient/{first['id']}", json=first, headers=FHIR_JSON)
    history = (await client.get("/Patient/_history")).json()
    assert history["type"] == "history"
    assert [
        (e["resource"]["id"], e["resource"]["meta"]["versionId"]) for e in history["entry"]
    ] == [
        (first["id"], "2"),
        (second["id"], "1"),
        (first["id"], "1"),
    ]
    limited = (await client.get("/Patient/_history", params={"_count": 1})).json()
    assert len(limited["entry"]) == 1
    assert (await client.get("/Patient/unknown/_history")).status_code == 404
    since = await client.get("/Patient/_history", params={"_since": "2999-01-01"})
    assert since.json()["total"] == 0


async def test_history_pages_with_next_links_and_counts_only_what_it_knows(
    client: httpx.AsyncClient,
) -> None:
    made = [(await create(client, patient())).json() for _ in range(3)]
    for resource in made[:2]:
        await client.put(f"/Patient/{resource['id']}", json=resource, headers=FHIR_JSON)

    def versions(bundle: dict[str, Any]) -> list[tuple[str, str]]:
        return [(e["resource"]["id"], e["resource"]["meta"]["versionId"]) for e in bundle["entry"]]

    def links(bundle: dict[str, Any]) -> dict[str, str]:
        return {link["relation"]: link["url"] for link in bundle["link"]}

    whole = (await client.get("/Patient/_history")).json()
    assert len(versions(whole)) == 5
    assert whole["total"] == 5  # all of it on one page: the count is known
    assert "next" not in links(whole)

    page = (await client.get("/Patient/_history", params={"_count": 2})).json()
    assert "total" not in page  # two of five: the page length is not the total
    # A write while paging is newer than every page, so nothing after the first page shifts.
    await client.put(f"/Patient/{made[2]['id']}", json=made[2], headers=FHIR_JSON)
    seen = versions(page)
    while "next" in links(page):
        assert "_count=2" in links(page)["next"]
        page = (await client.get(links(page)["next"])).json()
        assert "total" not in page
        again = (await client.get(links(page)["self"])).json()
        assert versions(again) == versions(page)  # the self link reproduces the page
        seen += versions(page)
    assert seen == versions(whole)

    instance = f"/Patient/{made[0]['id']}/_history"
    first = (await client.get(instance, params={"_count": 1})).json()
    last = (await client.get(links(first)["next"])).json()
    assert [v for _, v in versions(first) + versions(last)] == ["2", "1"]
    assert "next" not in links(last)


@pytest.mark.parametrize("cursor", ["bm9wZQ", "WzEsMiwzXQ", "!!", "WyIyMDI2LTAxLTAxIiwieCIsMV0"])
async def test_crafted_history_cursors_are_400(client: httpx.AsyncClient, cursor: str) -> None:
    response = await client.get("/Patient/_history", params={"_cursor": cursor})
    assert response.status_code == 400, response.text
    assert issues(response.json()) == [("invalid", ["_cursor"])]


async def test_conditional_create(client: httpx.AsyncClient) -> None:
    condition = {**FHIR_JSON, "If-None-Exist": f"identifier={NHS}|9434765919"}
    first = await client.post("/Patient", json=patient(), headers=condition)
    assert first.status_code == 201
    again = await client.post("/Patient", json=patient(), headers=condition)
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    by_id = await client.post(
        "/Patient",
        json=patient(),
        headers={**FHIR_JSON, "If-None-Exist": f"_id={first.json()['id']}"},
    )
    assert by_id.status_code == 200
    await create(client, patient())  # a second Patient with the same NHS number
    ambiguous = await client.post("/Patient", json=patient(), headers=condition)
    assert ambiguous.status_code == 412
    assert issues(ambiguous.json())[0][0] == "multiple-matches"
    unknown = await client.post(
        "/Patient", json=patient(), headers={**FHIR_JSON, "If-None-Exist": "shoe-size=9"}
    )
    assert unknown.status_code == 400


async def test_concurrent_conditional_creates_make_one_resource(
    client: httpx.AsyncClient,
) -> None:
    condition = {**FHIR_JSON, "If-None-Exist": f"identifier={NHS}|9912003888"}
    responses = await asyncio.gather(
        *(client.post("/Patient", json=patient("9912003888"), headers=condition) for _ in range(8))
    )
    assert sorted(r.status_code for r in responses) == [200] * 7 + [201]
    assert len({r.json()["id"] for r in responses}) == 1
    search = await client.get("/Patient", params={"identifier": f"{NHS}|9912003888"})
    assert search.json()["total"] == 1


@pytest.mark.parametrize(
    ("prefer", "has_body", "resource_type"),
    [
        ("return=minimal", False, None),
        ("return=representation", True, "Patient"),
        ("return=OperationOutcome", True, "OperationOutcome"),
    ],
)
async def test_prefer_return(
    client: httpx.AsyncClient, prefer: str, has_body: bool, resource_type: str | None
) -> None:
    response = await client.post(
        "/Patient", json=patient(), headers={**FHIR_JSON, "Prefer": prefer}
    )
    assert response.status_code == 201
    assert "location" in response.headers
    assert bool(response.content) is has_body
    if resource_type:
        assert response.json()["resourceType"] == resource_type


async def test_search_by_id_and_identifier_with_paging(client: httpx.AsyncClient) -> None:
    ids = [(await create(client, patient())).json()["id"] for _ in range(5)]
    other = (await create(client, patient("9912003888"))).json()["id"]
    by_id = (await client.get("/Patient", params={"_id": f"{ids[0]},{other}"})).json()
    assert by_id["type"] == "searchset"
    assert sorted(e["resource"]["id"] for e in by_id["entry"]) == sorted([ids[0], other])
    assert all(
        e["fullUrl"] == f"http://testserver/Patient/{e['resource']['id']}" for e in by_id["entry"]
    )
    seen: list[str] = []
    url: str | None = f"/Patient?identifier={NHS}|9434765919&_count=2"
    pages = 0
    while url:
        page = (await client.get(url)).json()
        seen += [e["resource"]["id"] for e in page.get("entry", [])]
        if pages == 0:
            await create(client, patient())  # a write between pages must not upset paging
        links = {link["relation"]: link["url"] for link in page["link"]}
        url = links.get("next")
        pages += 1
    assert len(seen) == len(set(seen))
    assert set(ids) <= set(seen)
    assert other not in seen
    by_code_only = (await client.get("/Patient", params={"identifier": "9912003888"})).json()
    assert [e["resource"]["id"] for e in by_code_only["entry"]] == [other]
    count = (await client.get("/Patient", params={"_summary": "count"})).json()
    assert count["total"] == 7
    assert "entry" not in count


async def test_search_by_last_updated(client: httpx.AsyncClient) -> None:
    resource = (await create(client, patient())).json()
    day = resource["meta"]["lastUpdated"][:10]
    found = (await client.get("/Patient", params={"_lastUpdated": day})).json()
    assert [e["resource"]["id"] for e in found["entry"]] == [resource["id"]]
    assert (await client.get("/Patient", params={"_lastUpdated": f"gt{day}"})).json()["total"] == 0
    assert (await client.get("/Patient", params={"_lastUpdated": f"ge{day}"})).json()["total"] == 1
    bad = await client.get("/Patient", params={"_lastUpdated": "yesterday"})
    assert bad.status_code == 400


async def test_unknown_search_parameter_is_400(client: httpx.AsyncClient) -> None:
    response = await client.get("/Patient", params={"shoe-size": "9"})
    assert response.status_code == 400
    assert issues(response.json()) == [("invalid", ["shoe-size"])]
