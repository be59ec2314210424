"""SMART Backend Services at the HTTP edge: discovery, the token endpoint, Waymark's public keys.

These answer in OAuth's JSON, not FHIR's: a token error is ``{"error", "error_description"}``
(RFC 6749 section 5.2), never an OperationOutcome.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncConnection

from app.api.edge import runtime as _runtime
from app.audit.token_events import token_granted, token_refused
from app.runtime import Runtime
from app.security.scopes import GATE_OVERRIDE_SCOPE
from app.security.tokens import ASSERTION_ALGORITHMS, AccessGrant, TokenRequestError

log = logging.getLogger("waymark.security")

router = APIRouter(tags=["Authorisation"])

TOKEN_PATH = "/auth/token"  # noqa: S105 (a path, not a secret)
JWKS_PATH = "/.well-known/jwks.json"
_FORM = "application/x-www-form-urlencoded"
_MAX_FORM_BYTES = 16 * 1024  # an assertion is a few kilobytes at most
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}

#: Advertised examples; any system scope that an allowed scope covers may be requested.
SCOPES_SUPPORTED = [
    "system/*.cruds",
    "system/*.rs",
    "system/*.read",
    "system/*.write",
    "system/*.*",
    # Releasing a referral held by a gate ($override-gate), with system/Task.u.
    GATE_OVERRIDE_SCOPE,
]

_TOKEN_RESPONSES: dict[int | str, Any] = {
    200: {
        "description": "An access token",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["access_token", "token_type", "expires_in", "scope"],
                    "properties": {
                        "access_token": {"type": "string"},
                        "token_type": {"const": "bearer"},
                        "expires_in": {"type": "integer"},
                        "scope": {"type": "string"},
                    },
                }
            }
        },
    },
    400: {
        "description": "OAuth 2.0 error (RFC 6749 section 5.2)",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "enum": [
                                "invalid_request",
                                "invalid_client",
                                "invalid_grant",
                                "invalid_scope",
                                "unsupported_grant_type",
                            ]
                        },
                        "error_description": {"type": "string"},
                    },
                }
            }
        },
    },
}
_THROTTLED = {
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["error"],
                "properties": {
                    "error": {"const": "temporarily_unavailable"},
                    "error_description": {"type": "string"},
                },
            }
        }
    },
    "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds"}},
}
_TOKEN_RESPONSES[429] = {"description": "Too many failed token requests lately", **_THROTTLED}
_TOKEN_RESPONSES[503] = {"description": "Too many token requests at once", **_THROTTLED}


@router.get(
    "/.well-known/smart-configuration",
    summary="SMART configuration: how to get an access token",
    response_class=JSONResponse,
)
async def smart_configuration(request: Request) -> JSONResponse:
    base_url = _runtime(request).settings.base_url
    return JSONResponse(
        {
            "token_endpoint": base_url + TOKEN_PATH,
            "jwks_uri": base_url + JWKS_PATH,
            "token_endpoint_auth_methods_supported": ["private_key_jwt"],
            "token_endpoint_auth_signing_alg_values_supported": list(ASSERTION_ALGORITHMS),
            "grant_types_supported": ["client_credentials"],
            "scopes_supported": SCOPES_SUPPORTED,
            "capabilities": [
                "client-confidential-asymmetric",
                "permission-v2",
                "permission-v1",
            ],
        }
    )


@router.get(JWKS_PATH, summary="Waymark's public keys, which sign its access tokens")
async def jwks(request: Request) -> JSONResponse:
    return JSONResponse(_runtime(request).tokens.public_jwks())


@router.post(
    TOKEN_PATH,
    summary="Token endpoint (SMART Backend Services: client credentials, private_key_jwt)",
    responses=_TOKEN_RESPONSES,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                _FORM: {
                    "schema": {
                        "type": "object",
                        "required": [
                            "grant_type",
                            "client_assertion_type",
                            "client_assertion",
                            "scope",
                        ],
                        "properties": {
                            "grant_type": {"const": "client_credentials"},
                            "client_assertion_type": {
                                "const": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
                            },
                            "client_assertion": {"type": "string"},
                            "scope": {"type": "string"},
                        },
                    }
                }
            },
        }
    },
)
async def token(request: Request) -> JSONResponse:
    runtime = _runtime(request)
    token_url = runtime.settings.base_url + TOKEN_PATH
    form: dict[str, str] = {}

    async def record_grant(conn: AsyncConnection, grant: AccessGrant) -> None:
        event = token_granted(
            grant, requested=form.get("scope", ""), **_audit_context(request, runtime)
        )
        await runtime.store(conn).create_trusted("AuditEvent", [event])

    try:
        form = await _form(request)
        answer = await runtime.tokens.issue(
            form=form, token_url=token_url, record_grant=record_grant
        )
    except TokenRequestError as error:
        await _record_refusal(request, error)
        headers = {**_NO_STORE, **error.headers}
        return JSONResponse(error.body(), status_code=error.status, headers=headers)
    except Exception as error:
        failed = TokenRequestError("server_error", "", status=500, reason=type(error).__name__)
        await _record_refusal(request, failed)
        raise
    return JSONResponse(answer, headers=_NO_STORE)


def _audit_context(request: Request, runtime: Runtime) -> dict[str, Any]:
    return {
        "recorded": runtime.clock(),
        "request_id": request.state.request_id,
        "server": runtime.settings.base_url,
        "client_address": request.client.host if request.client else None,
    }


async def _record_refusal(request: Request, error: TokenRequestError) -> None:
    """The refusal's AuditEvent, through the audit trail's own transaction (nothing of the
    request's was committed); failing to record it is logged, and the caller still gets the
    refusal."""
    runtime = _runtime(request)
    try:
        event = token_refused(error, **_audit_context(request, runtime))
        await runtime.audit_trail.write([event])
    except Exception as failure:
        log.error("could not record a refused token request: %s", type(failure).__name__)


async def _form(request: Request) -> dict[str, str]:
    """The form-encoded body, each parameter at most once (RFC 6749 section 3.2)."""
    media_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if media_type != _FORM:
        raise TokenRequestError("invalid_request", f"the body must be {_FORM}")
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > _MAX_FORM_BYTES:
        raise TokenRequestError("invalid_request", "the request body is too large")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_FORM_BYTES:
            raise TokenRequestError("invalid_request", "the request body is too large")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError as error:
        raise TokenRequestError("invalid_request", "the body is not UTF-8") from error
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise TokenRequestError("invalid_request", f"{name} is given more than once")
        form[name] = value
    return form
