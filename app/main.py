"""create_app(): routers, lifespan (engine), and the one error renderer."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version

import orjson
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import APIRoute
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import pathway
from app.api import auth, fhir_rest, fhir_system, health, metadata, operations
from app.api.access import caller, record_failure, smart_security
from app.api.requests import RequestContext
from app.canonical import WAYMARK
from app.config import Settings, get_settings
from app.db import make_engine
from app.fhir.capability import capability_statement, routed_operations
from app.fhir.errors import FhirError, Issue, operation_outcome_bytes
from app.fhir.http import FHIR_JSON
from app.fhir.resources import warm_up
from app.runtime import Runtime

log = logging.getLogger("waymark")

DOCS_ASSETS_URL = "/docs/assets"

try:
    SOFTWARE_VERSION = version("waymark")
except PackageNotFoundError:  # running from a source tree that is not installed
    SOFTWARE_VERSION = "0.0.0"


def _outcome(status: int, issues: list[Issue], headers: dict[str, str] | None = None) -> Response:
    return Response(
        operation_outcome_bytes(issues),
        status_code=status,
        media_type=FHIR_JSON,
        headers=headers,
    )


async def _fhir_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, FhirError)
    await record_failure(request, status=error.status, reason=type(error).__name__)
    return _outcome(error.status, error.issues, error.headers)


async def _http_error(_request: Request, error: Exception) -> Response:
    assert isinstance(error, StarletteHTTPException)
    code = {404: "not-found", 405: "not-supported"}.get(error.status_code, "processing")
    text = {
        404: "No FHIR endpoint at this path",
        405: "This method is not allowed at this path",
    }.get(error.status_code, str(error.detail))
    return _outcome(error.status_code, [Issue(code, text)], dict(error.headers or {}))


async def _validation_error(_request: Request, error: Exception) -> Response:
    assert isinstance(error, RequestValidationError)
    issues = [
        Issue(
            "invalid",
            str(detail.get("msg", "invalid")),
            expression=(".".join(str(p) for p in detail.get("loc", ())),),
        )
        for detail in error.errors()
    ]
    return _outcome(400, issues or [Issue("invalid", "The request is not valid")])


class CatchAllErrors:
    """Turns an unexpected exception into a 500 OperationOutcome with no internals in it.

    Only the exception's type is logged: messages can carry patient data.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as error:
            await record_failure(Request(scope), status=500, reason=type(error).__name__)
            route = scope.get("route")
            log.error(
                "unhandled %s on %s %s",
                type(error).__name__,
                scope.get("method"),
                getattr(route, "path", "?"),
                extra={"request_id": scope.get("state", {}).get("request_id")},
            )
            if started:
                return
            response = _outcome(
                500, [Issue("exception", "An internal error occurred; nothing was changed")]
            )
            await response(scope, receive, send)


def create_app(settings: Settings | None = None, *, runtime: Runtime | None = None) -> FastAPI:
    """Build the application. ``runtime`` lets tests inject a clock or hooks."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings) if runtime is None else runtime.engine
        app.state.runtime = runtime or Runtime(
            settings=settings, engine=engine, hooks=pathway.hooks()
        )
        warm_up()
        if settings.auth == "off":
            log.warning(
                "authentication is OFF (WAYMARK_AUTH=off): every caller has every scope; "
                "this is for local development on a loopback address only"
            )
        implemented = {
            getattr(route, "name", "")
            for router in (fhir_rest.router, fhir_system.router)
            for route in router.routes
        }
        app.state.capability_statement = orjson.dumps(
            capability_statement(
                implemented=implemented,
                base_url=settings.base_url,
                software_version=SOFTWARE_VERSION,
                now=app.state.runtime.clock(),
                max_bundle_entries=app.state.runtime.settings.max_bundle_entries,
                security=smart_security(settings) if settings.auth == "on" else None,
                operations=routed_operations(
                    (
                        (route.path, route.name)
                        for route in operations.router.routes
                        if isinstance(route, APIRoute)
                    ),
                    f"{WAYMARK}/OperationDefinition",
                ),
            )
        )
        try:
            yield
        finally:
            if runtime is None:
                await engine.dispose()

    # Swagger UI (/docs) and ReDoc (/redoc) from assets the app serves itself (fastapi-offline
    # ships them), never from a CDN: NHS networks are often offline. Swagger UI's default
    # validatorUrl is an outside host; null turns it off.
    app = FastAPIOffline(
        title="Waymark",
        summary="FHIR R4 clinical-pathway service for trauma-informed substance-use care",
        version=SOFTWARE_VERSION,
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url="/redoc",
        static_url=DOCS_ASSETS_URL,
        swagger_ui_parameters={"validatorUrl": None},
    )
    app.add_exception_handler(FhirError, _fhir_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_middleware(CatchAllErrors)
    app.add_middleware(RequestContext)  # outermost: even a 500 carries its X-Request-ID
    app.include_router(health.router)
    app.include_router(metadata.router)
    app.include_router(auth.router)
    authenticated = [Depends(caller)]
    # Operations first: their literal segments must win over the generic FHIR routes.
    app.include_router(operations.router, dependencies=authenticated)
    app.include_router(fhir_rest.router, dependencies=authenticated)
    app.include_router(fhir_system.router, dependencies=authenticated)
    return app
