"""Liveness and readiness for load balancers and the container HEALTHCHECK."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app.fhir.errors import InternalError

router = APIRouter(tags=["Operations"])


@router.get("/health", summary="Readiness: the database answers", include_in_schema=True)
async def health(request: Request) -> JSONResponse:
    engine = request.app.state.runtime.engine
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as error:
        raise InternalError("The database does not answer") from error
    return JSONResponse({"status": "ok"})
