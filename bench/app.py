"""The app under benchmark: Waymark's own app plus two baseline routes that exist only here.

``uvicorn bench.app:create_bench_app --factory`` serves it. The baselines go through the same
middleware, exception handlers and router as the FHIR routes, so a ratio against them measures
what the FHIR interaction adds:

* ``GET /_bench/bare``: a fixed tiny JSON body.
* ``POST /_bench/validate``: read the body, ``orjson.loads`` it and validate it as a Patient
  exactly as a create does (fhir.resources plus Waymark's own checks); no storage and no
  re-serialisation.
"""

from __future__ import annotations

import orjson
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response

from app.config import get_settings
from app.fhir.validation import validate_resource
from app.main import create_app

_BARE_BODY = b'{"status":"ok"}'
_VALID_BODY = b'{"valid":true}'


def create_bench_app() -> FastAPI:
    settings = get_settings()
    app = create_app(settings)
    router = APIRouter(include_in_schema=False)

    @router.get("/_bench/bare", name="bench-bare")
    async def bare() -> Response:
        return Response(_BARE_BODY, media_type="application/json")

    @router.post("/_bench/validate", name="bench-validate")
    async def validate(request: Request) -> Response:
        document = orjson.loads(await request.body())
        validate_resource(document, expected_type="Patient", chi_system=settings.chi_system)
        return Response(_VALID_BODY, media_type="application/json")

    # /{resource_type}/{resource_id} would match /_bench/bare: these go first.
    before = len(app.router.routes)
    app.include_router(router)
    added = app.router.routes[before:]
    del app.router.routes[before:]
    app.router.routes[:0] = added
    return app
