"""Helpers of the token endpoint's tests: real client keys, real signed assertions, and the
AuditEvent each token request leaves behind."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from typing import Any

import httpx
import orjson
from joserfc import jwt
from joserfc.jwk import Key, RSAKey
from sqlalchemy import select

from app.clock import system_clock
from app.db import transaction
from app.fhir.models import Resource
from app.runtime import Runtime
from app.security.assertions import invalid_client
from app.security.clients import ClientRepository
from app.security.tokens import ASSERTION_TYPE
from tests.conftest import BASE_URL

TOKEN_URL = f"{BASE_URL}/auth/token"
#: The one body of every refused assertion, whatever was wrong with it.
INVALID_CLIENT_BODY = invalid_client(TOKEN_URL, "any reason").body()


class FrozenClock:
    """Time that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = system_clock()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def public_jwks(*keys: Key) -> str:
    return json.dumps({"keys": [key.as_dict(private=False) for key in keys]})


async def register(
    runtime: Runtime,
    name: str,
    *keys: Key,
    scopes: str = "system/*.cruds",
    jwks_url: str | None = None,
) -> None:
    async with transaction(runtime.engine, write=True) as conn:
        await ClientRepository(conn).add(
            client_id=name,
            scopes=scopes.split(),
            jwks=None if jwks_url else public_jwks(*keys),
            jwks_url=jwks_url,
            now=runtime.token_clock(),
        )


def assertion(
    key: Key,
    *,
    client_id: str,
    now: datetime,
    alg: str | None = None,
    exp_in: int = 240,
    **overrides: Any,
) -> str:
    """A client assertion as SMART Backend Services describes it; ``overrides`` replace or
    (with None) remove claims, and ``kid`` replaces the header's kid."""
    alg = alg or ("RS384" if isinstance(key, RSAKey) else "ES384")
    header = {"alg": alg, "kid": overrides.pop("kid", key.kid), "typ": "JWT"}
    claims: dict[str, Any] = {
        "iss": client_id,
        "sub": client_id,
        "aud": TOKEN_URL,
        "exp": int(now.timestamp()) + exp_in,
        "jti": uuid.uuid4().hex,
    }
    claims.update(overrides)
    claims = {name: value for name, value in claims.items() if value is not None}
    return jwt.encode(header, claims, key, algorithms=[alg])


async def request_token(
    http: httpx.AsyncClient, signed: str, scope: str = "system/*.rs", **form: str
) -> httpx.Response:
    data = {
        "grant_type": "client_credentials",
        "scope": scope,
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": signed,
        **form,
    }
    return await http.post("/auth/token", data=data)


def assert_oauth_error(response: httpx.Response, error: str, mentions: str) -> None:
    assert response.status_code == 400, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["error"] == error
    assert mentions in body["error_description"]
    assert "access_token" not in body


async def token_event(runtime: Runtime, response: httpx.Response) -> dict[str, Any]:
    """The AuditEvent of the token request ``response`` answered (found by its request id)."""
    request_id = response.headers["x-request-id"]
    query = select(Resource.content).where(Resource.resource_type == "AuditEvent")
    async with transaction(runtime.engine, write=False) as conn:
        events = [orjson.loads(content) for content in (await conn.execute(query)).scalars()]
    found = [
        event
        for event in events
        if event["subtype"][0]["code"] == "ITI-71"
        and any(
            e.get("what", {}).get("identifier", {}).get("value") == request_id
            for e in event["entity"]
        )
    ]
    assert len(found) == 1, found
    return found[0]


async def assert_refused(runtime: Runtime, response: httpx.Response, reason: str) -> dict[str, Any]:
    """``response`` is the one invalid_client answer, and its AuditEvent records ``reason``."""
    assert response.status_code == 400, response.text
    assert response.headers["cache-control"] == "no-store"
    assert response.json() == INVALID_CLIENT_BODY
    event = await token_event(runtime, response)
    assert event["outcome"] == "4"
    assert reason in event["outcomeDesc"], event["outcomeDesc"]
    return event
