"""The app under benchmark: Waymark's own app plus two baseline routes that exist only here.

``uvicorn bench.app:create_bench_app --factory`` serves it. The baselines go through the same
middleware, exception handlers and router as the FHIR routes, so a ratio against them measures
what the FHIR interaction adds:

* ``GET /_bench/bare``: a fixed tiny JSON body.
* ``POST /_bench/validate``: read the body, ``orjson.loads`` it and validate it as a Patient
  exactly as a create does (fhir.resources plus Waymark's own checks); no storage and no
  re-serialisation.

``bench.app:create_bench_app_audit_switch`` is the same app whose audit trail writers
(:meth:`app.audit.events.RequestAudit.write` for writes, :meth:`app.audit.trail.AuditTrail.write`
for reads and refusals) write nothing while the file named by
``WAYMARK_BENCH_NO_AUDIT_FLAG`` exists, in that server's processes only: what a request costs
without its AuditEvents, measured on the same warm server between runs with the trail
(``python -m bench.auth``). It exists only here; production always writes the trail.
"""

from __future__ import annotations

from typing import Any

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


def create_bench_app_audit_switch() -> FastAPI:
    """The bench app with a switch for its audit trail (a bench-only variant): no AuditEvent
    is written while the file ``WAYMARK_BENCH_NO_AUDIT_FLAG`` names exists. The check (one
    ``stat``) is made whether or not the file exists."""
    import os
    from pathlib import Path

    from app.audit.events import RequestAudit
    from app.audit.trail import AuditTrail
    from app.fhir.store import FhirStore

    flag = Path(os.environ["WAYMARK_BENCH_NO_AUDIT_FLAG"])
    write = RequestAudit.write

    async def write_unless_switched_off(self: RequestAudit, store: FhirStore) -> None:
        if flag.exists():  # noqa: ASYNC240 (one stat of a local file, on every variant)
            self.done.clear()
            self.failures.clear()
            return
        await write(self, store)

    RequestAudit.write = write_unless_switched_off  # type: ignore[method-assign]
    batched = AuditTrail.write

    async def batch_unless_switched_off(self: AuditTrail, documents: list[Any]) -> None:
        if flag.exists():  # noqa: ASYNC240 (as above)
            return
        await batched(self, documents)

    AuditTrail.write = batch_unless_switched_off  # type: ignore[method-assign]
    return create_bench_app()
