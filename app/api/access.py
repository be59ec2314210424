"""Who is calling, at the HTTP edge: the bearer token checked before any FHIR work, and the
request's audit trail opened, written with its transaction and, on failure, on its own.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.api.edge import require_plain_url
from app.api.edge import runtime as _runtime
from app.audit.events import Attempt, RequestAudit
from app.config import Settings, is_loopback
from app.db import transaction
from app.fhir.errors import Forbidden, Unauthenticated
from app.fhir.store import FhirStore
from app.security.principal import Principal
from app.security.tokens import InvalidToken

log = logging.getLogger("waymark.access")

#: The caller when authentication is off (loopback only, see Settings.auth).
LOCAL_OPERATOR = Principal("local-operator", frozenset({"system/*.cruds"}))
_REALM = 'Bearer realm="waymark"'


_BEARER = HTTPBearer(
    auto_error=False,
    scheme_name="SMART Backend Services",
    description="An access token from POST /auth/token (see /.well-known/smart-configuration)",
)


async def caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)],
) -> None:
    """Router dependency: identify the caller (401 without a valid token) and open the
    request's audit trail, before anything else is read from the request."""
    runtime = _runtime(request)
    route = request.scope.get("route")
    audit = RequestAudit(
        principal=None,
        request_id=request.state.request_id,
        server=runtime.settings.base_url,
        clock=runtime.clock,
        client_address=request.client.host if request.client else None,
        attempt=Attempt(
            getattr(route, "name", "operation"),
            request.path_params.get("resource_type"),
            request.path_params.get("resource_id"),
        ),
        query=request.url.query or None,
        operation=getattr(route, "name", None) if _is_operation(request) else None,
    )
    request.state.audit = audit
    if runtime.settings.auth == "off":
        _require_loopback(request)
        audit.principal = LOCAL_OPERATOR
        request.state.client_id = LOCAL_OPERATOR.client_id
        require_plain_url(request)
        return
    if credentials is None or not credentials.credentials.strip():
        raise Unauthenticated(
            "This request needs an access token: Authorization: Bearer <token> "
            "(see /.well-known/smart-configuration)",
            headers={"WWW-Authenticate": _REALM},
        )
    try:
        audit.principal = await runtime.tokens.authenticate(credentials.credentials.strip())
    except InvalidToken as error:
        raise Unauthenticated(
            f"The access token is not accepted: {error}",
            headers={
                "WWW-Authenticate": f'{_REALM}, error="invalid_token", error_description="{error}"'
            },
        ) from error
    request.state.client_id = audit.principal.client_id
    require_plain_url(request)


def _is_operation(request: Request) -> bool:
    """Operations' paths name them with a '$' (/Patient/{resource_id}/$pathway)."""
    route = request.scope.get("route")
    return "$" in getattr(route, "path", "")


def _require_loopback(request: Request) -> None:
    """Settings refuse WAYMARK_AUTH=off for a non-loopback WAYMARK_HOST, but a server can be
    started another way (``uvicorn --host 0.0.0.0``): the address the request really came in
    on decides."""
    server = request.scope.get("server")
    host = server[0] if server else None
    if host is not None and _is_ip(host) and not is_loopback(host):
        log.error("authentication is off but the server is bound to a non-loopback address")
        raise Forbidden(
            "Authentication is off on this server, which is allowed only on a loopback "
            "address: nothing is served on this one"
        )


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@asynccontextmanager
async def audited_store(request: Request, *, write: bool) -> AsyncIterator[FhirStore]:
    """The request's one transaction, with a store that checks the caller's scopes. A write's
    AuditEvents are written on its transaction before it commits; a read's join the audit
    trail's next batch (app/audit/trail.py), committed before the response is sent."""
    runtime = _runtime(request)
    audit: RequestAudit = request.state.audit
    async with transaction(runtime.engine, write=write) as conn:
        store = runtime.store(conn, access=audit)
        yield store
        if write:
            await audit.write(store)
    if not write:
        await runtime.audit_trail.write(audit.documents())


def note_interaction(request: Request, interaction: str) -> None:
    """Name what the request turned out to be (a batch rather than a transaction), for the
    AuditEvent of a refusal before any entry ran."""
    audit: RequestAudit | None = getattr(request.state, "audit", None)
    if audit is not None:
        audit.attempt = Attempt(interaction, None)


async def record_failure(request: Request, *, status: int, reason: str) -> None:
    """Record a refused or failed interaction. The request's transaction has been rolled
    back, so this goes through the audit trail's own transactions. Failing to record is not
    raised, so that the caller still gets the original error, but it is never silent: it is
    logged at error level and counted (``AuditTrail.unrecorded``)."""
    audit: RequestAudit | None = getattr(request.state, "audit", None)
    if audit is None:
        return
    runtime = _runtime(request)
    try:
        await runtime.audit_trail.write([audit.failure_document(status=status, reason=reason)])
    except Exception as error:
        runtime.audit_trail.unrecorded += 1
        log.error(
            "could not record a refused or failed interaction: %s",
            type(error).__name__,
            extra={
                "request_id": audit.request_id,
                "audit_unrecorded_total": runtime.audit_trail.unrecorded,
            },
        )


def smart_security(settings: Settings) -> dict[str, Any]:
    """The CapabilityStatement's ``rest.security``: SMART on FHIR, with its token URL."""
    return {
        "cors": False,
        "service": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                        "code": "SMART-on-FHIR",
                    }
                ]
            }
        ],
        "description": "SMART Backend Services: a client credentials grant with a signed JWT "
        "assertion (RS384 or ES384) at the token endpoint; SMART v2 system scopes (v1 .read/"
        ".write accepted) are checked on every interaction and every Bundle entry. See "
        "/.well-known/smart-configuration.",
        "extension": [
            {
                "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                "extension": [{"url": "token", "valueUri": f"{settings.base_url}/auth/token"}],
            }
        ],
    }
