"""The API documentation pages work on a network with no way out (issue 18, item 16): /docs
(Swagger UI) and /redoc load every script, style sheet and icon from the app itself."""

from __future__ import annotations

import httpx
import pytest

from tests.docs_pages import DOCS_PAGES, expected_type, page_assets


@pytest.mark.parametrize("page", DOCS_PAGES)
async def test_docs_page_loads_only_assets_the_app_serves(
    anonymous: httpx.AsyncClient, page: str
) -> None:
    response = await anonymous.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "/openapi.json" in response.text
    for url in page_assets(response.text):
        asset = await anonymous.get(url)
        assert asset.status_code == 200, url
        assert expected_type(url) in asset.headers["content-type"], url
        assert len(asset.content) > 0, url
    schema = await anonymous.get("/openapi.json")
    assert schema.status_code == 200
    assert schema.json()["info"]["title"] == "Waymark"


async def test_a_missing_docs_asset_is_an_operation_outcome(anonymous: httpx.AsyncClient) -> None:
    response = await anonymous.get("/docs/assets/no-such-file.js")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/fhir+json")
    assert response.json()["resourceType"] == "OperationOutcome"
