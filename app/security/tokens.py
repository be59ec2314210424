"""SMART Backend Services: access tokens for registered clients, and checking them.

A client asks ``POST /auth/token`` for an access token with a JWT it signed with its own key
(RFC 7523 client authentication, as SMART App Launch v2 "Backend Services" profiles it).
Waymark answers with a short-lived access token, a JWT signed with Waymark's own key, which
every FHIR request then carries as ``Authorization: Bearer``. All JOSE work is joserfc's.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from joserfc import jws, jwt
from joserfc.errors import ClaimError, ExpiredTokenError, JoseError
from joserfc.jwk import Key
from joserfc.jws import CompactSignature, JWSRegistry
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.clock import Clock, system_clock
from app.config import Settings
from app.db import transaction
from app.security.assertions import (
    ASSERTION_ALGORITHMS,
    ASSERTION_TYPE,
    ASSERTIONS,
    ClientAssertion,
    TokenRequestError,
    invalid_client,
    read_assertion,
    requested_scopes,
)
from app.security.client_directory import ClientDirectory
from app.security.client_keys import ClientKeys, KeysUnavailable
from app.security.clients import Client, ClientRepository
from app.security.principal import Principal
from app.security.scopes import narrow
from app.security.signing_keys import SIGNING_ALGORITHM, SigningKeys
from app.security.throttle import Admission, FailureLimiter, Throttled

__all__ = [
    "ASSERTION_ALGORITHMS",
    "ASSERTION_TYPE",
    "AccessGrant",
    "InvalidToken",
    "TokenRequestError",
    "TokenService",
]

log = logging.getLogger("waymark.security")

#: RFC 9068: the ``typ`` that keeps an access token from being mistaken for another JWT.
ACCESS_TOKEN_TYPE = "at+jwt"  # noqa: S105 (not a secret)

# Our own tokens may carry no header parameters but ours.
_ACCESS_TOKENS = JWSRegistry(algorithms=[SIGNING_ALGORITHM])


class InvalidToken(Exception):
    """An access token that is not accepted; ``reason`` says why and is safe to show."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class AccessGrant:
    """An access token issued: what the audit trail records of it (never the token)."""

    client_id: str
    scopes: list[str]
    token_id: str
    expires_in: int


#: Records a grant on the transaction that stores its assertion's jti (the AuditEvent).
GrantRecorder = Callable[[AsyncConnection, AccessGrant], Awaitable[None]]


def _verify_signature(signed: CompactSignature, key: Key) -> bool:
    """Whether ``key`` made the assertion's signature: the one costly step of a token request,
    taken last (tests count its calls)."""
    try:
        return bool(jws.validate_compact(signed, key, registry=ASSERTIONS))
    except JoseError:
        return False


class TokenService:
    """Issues access tokens to registered clients and verifies them on every request.

    Verifying a token is on every FHIR request's path, so a verified token is remembered
    (in a bounded map) until it expires: the signature is checked once per token. Whether its
    client still stands (registered, enabled, tokens not revoked) is asked of a
    :class:`ClientDirectory`, which reads the registry again every few seconds.
    """

    def __init__(
        self,
        *,
        issuer: str,
        key_file: Path,
        clock: Clock = system_clock,
        access_token_seconds: int = 300,
        http_transport: httpx.AsyncBaseTransport | None = None,
        cache_size: int = 4096,
        engine: AsyncEngine | None = None,
        client_check_seconds: int = 10,
        max_concurrent: int = 16,
        failures_per_client: int = 10,
        failures_global: int = 100,
        failure_window_seconds: int = 60,
        jwks_timeout_seconds: float = 3.0,
    ) -> None:
        self.issuer = issuer
        self.signing_keys = SigningKeys(key_file)
        self.access_token_seconds = access_token_seconds
        self._clock = clock
        self._engine = engine
        self._client_keys = ClientKeys(
            clock=clock, transport=http_transport, timeout_seconds=jwks_timeout_seconds
        )
        self.clients = (
            None
            if engine is None
            else ClientDirectory(
                engine, clock=clock, fresh_for=timedelta(seconds=client_check_seconds)
            )
        )
        self._admission = Admission(max_concurrent)
        self._failures = FailureLimiter(
            clock=clock,
            per_client=failures_per_client,
            overall=failures_global,
            window_seconds=failure_window_seconds,
        )
        self._cache_size = cache_size
        self._verified: dict[str, tuple[Principal, float]] = {}

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        clock: Clock = system_clock,
        http_transport: httpx.AsyncBaseTransport | None = None,
        engine: AsyncEngine | None = None,
    ) -> TokenService:
        return cls(
            issuer=settings.base_url,
            key_file=settings.token_key_file,
            clock=clock,
            access_token_seconds=settings.access_token_seconds,
            http_transport=http_transport,
            engine=engine,
            client_check_seconds=settings.client_check_seconds,
            max_concurrent=settings.token_max_concurrent,
            failures_per_client=settings.token_failures_per_client,
            failures_global=settings.token_failures_global,
            failure_window_seconds=settings.token_failure_window_seconds,
            jwks_timeout_seconds=settings.jwks_timeout_seconds,
        )

    # -- the token endpoint -------------------------------------------------------------------

    async def issue(
        self,
        *,
        form: Mapping[str, str],
        token_url: str,
        record_grant: GrantRecorder | None = None,
    ) -> dict[str, Any]:
        """Answer a token request (client credentials with a signed JWT assertion).

        Cheapest checks first: the form and the assertion's shape and claims (no I/O), then
        the failure limit, then the client's registration (cached) and the jti (one read),
        and only then the client's keys (perhaps a fetch) and the signature. No transaction
        is held until the assertion has verified; then one stores its jti, and ``record_grant``
        records the grant on it. Raises :class:`TokenRequestError`. Assertions are never
        logged, and a refused assertion's answer never says why (see ``invalid_client``).
        """
        claimed: str | None = None
        try:
            requested = requested_scopes(form)
            assertion = read_assertion(form, token_url=token_url, now=self._clock())
            claimed = assertion.client_id
            self._failures.check(claimed)
            async with self._admission.admitted():
                answer = await self._issue(assertion, requested, token_url, record_grant)
        except Throttled as throttled:
            error = _throttled(throttled, claimed)
            log.info("token request of client %s refused: %s", claimed, error.reason)
            raise error from None
        except TokenRequestError as error:
            error.client_id = error.client_id or claimed
            log.info("token request of client %s refused: %s", claimed, error.reason)
            raise
        log.info("access token issued to client %s for %s", claimed, answer["scope"])
        return answer

    async def _issue(
        self,
        assertion: ClientAssertion,
        requested: list[str],
        token_url: str,
        record_grant: GrantRecorder | None,
    ) -> dict[str, Any]:
        engine, clients = self._engine, self.clients
        assert engine is not None, "the token endpoint needs a database"
        assert clients is not None
        client_id = assertion.client_id
        try:
            client = await self._authenticate(assertion, token_url, clients, engine)
        except TokenRequestError:
            self._failures.failed(client_id)
            raise
        granted = narrow(requested, client.allowed_scopes)
        if not granted:
            raise TokenRequestError(
                "invalid_scope", "none of the requested scopes is allowed for this client"
            )
        now = self._clock()
        async with transaction(engine, write=True) as conn:
            repository = ClientRepository(conn)
            await repository.prune_assertions(now=now)
            jti, until = assertion.jti, assertion.remember_until
            if not await repository.record_assertion(client_id, jti, expires_at=until):
                self._failures.failed(client_id)
                raise invalid_client(token_url, "the assertion's jti was used before (a replay)")
            token, token_id = self._sign(client_id, granted, now)
            if record_grant is not None:
                grant = AccessGrant(client_id, granted, token_id, self.access_token_seconds)
                await record_grant(conn, grant)
        return {
            "access_token": token,
            "token_type": "bearer",
            "expires_in": self.access_token_seconds,
            "scope": " ".join(granted),
        }

    async def _authenticate(
        self,
        assertion: ClientAssertion,
        token_url: str,
        clients: ClientDirectory,
        engine: AsyncEngine,
    ) -> Client:
        """The client the assertion proves it is, cheapest refusals first."""

        def refuse(reason: str) -> TokenRequestError:
            return invalid_client(token_url, reason)

        client = await clients.get(assertion.client_id)
        if client is None:
            raise refuse("the client is not registered")
        if not client.enabled:
            raise refuse("the client is disabled")
        jku = assertion.header.get("jku")
        if jku is not None and jku != client.jwks_url:
            raise refuse("the assertion's jku is not the client's registered JWKS URL")
        async with transaction(engine, write=False) as conn:
            seen = await ClientRepository(conn).assertion_seen(client.client_id, assertion.jti)
        if seen:
            raise refuse("the assertion's jti was used before (a replay)")
        try:
            keys = await self._client_keys.key_set(client, kid=assertion.kid)
        except KeysUnavailable as error:
            raise refuse(f"no keys: {error}") from error
        key = next((key for key in keys if key.kid == assertion.kid), None)
        if key is None:
            raise refuse("the client has no key with the assertion's kid")
        if not _verify_signature(assertion.signed, key):
            raise refuse("the assertion's signature does not verify with the key its kid names")
        return client

    # -- access tokens --------------------------------------------------------------------------

    def mint(self, *, client_id: str, scopes: Iterable[str]) -> str:
        """An access token for ``client_id`` with ``scopes``, signed now (``waymark token``).

        The caller decides what the client may have; nothing is checked here.
        """
        return self._sign(client_id, list(scopes), self._clock())[0]

    def _sign(self, client_id: str, scopes: list[str], now: datetime) -> tuple[str, str]:
        """A new access token, and its id (``jti``)."""
        key = self.signing_keys.current()
        issued = int(now.timestamp())
        token_id = uuid.uuid4().hex
        claims = {
            "iss": self.issuer,
            "aud": self.issuer,
            "sub": client_id,
            "client_id": client_id,
            "scope": " ".join(scopes),
            "jti": token_id,
            "iat": issued,
            "exp": issued + self.access_token_seconds,
        }
        header = {"alg": SIGNING_ALGORITHM, "kid": key.kid, "typ": ACCESS_TOKEN_TYPE}
        return jwt.encode(header, claims, key, registry=_ACCESS_TOKENS), token_id

    async def authenticate(self, token: str) -> Principal:
        """The caller an access token names, if its client still stands, or
        :class:`InvalidToken`: checked on every request. A disabled or removed client's tokens
        are refused once this worker has read the registry again (``client_check_seconds``)."""
        principal = self.verify_access_token(token)
        if self.clients is None:
            return principal
        client = await self.clients.get(principal.client_id)
        issued = principal.issued_at
        if client is None or issued is None or not client.accepts_token_issued_at(issued):
            raise InvalidToken("the access token has been revoked")
        return principal

    def verify_access_token(self, token: str) -> Principal:
        """The caller an access token names, or :class:`InvalidToken`."""
        now = self._clock().timestamp()
        remembered = self._verified.get(token)
        if remembered is not None:
            principal, expires = remembered
            if now < expires:
                return principal
            self._verified.pop(token, None)
            raise InvalidToken("the access token has expired")
        principal, expires = self._verify(token, now)
        if len(self._verified) >= self._cache_size:
            self._forget_some(now)
        self._verified[token] = (principal, expires)
        return principal

    def _verify(self, token: str, now: float) -> tuple[Principal, float]:
        try:
            signed = jws.extract_compact(token.encode("ascii"))
            header = signed.headers()
        except (JoseError, ValueError) as error:
            raise InvalidToken("the access token is not a JWT") from error
        if header.get("typ") != ACCESS_TOKEN_TYPE or header.get("alg") != SIGNING_ALGORITHM:
            raise InvalidToken("the access token was not issued by Waymark")
        key = self.signing_keys.verification_key(header.get("kid"))
        if key is None:
            raise InvalidToken("the access token is signed with a key Waymark does not hold")
        try:
            verified = jws.validate_compact(signed, key, registry=_ACCESS_TOKENS)
        except JoseError as error:
            raise InvalidToken("the access token's signature does not verify") from error
        if not verified:
            raise InvalidToken("the access token's signature does not verify")
        claims = _token_claims(signed)
        if claims.get("iss") != self.issuer:
            # Most often a token made by `waymark token` with another WAYMARK_BASE_URL.
            raise InvalidToken(
                f"the access token was issued for {claims.get('iss')!r}, not for this server "
                f"({self.issuer}); get one with the same WAYMARK_BASE_URL"
            )
        registry = jwt.JWTClaimsRegistry(
            now=int(now),
            iss={"essential": True, "value": self.issuer},
            aud={"essential": True, "value": self.issuer},
            sub={"essential": True},
            exp={"essential": True},
            jti={"essential": True},
        )
        try:
            registry.validate(claims)
        except ExpiredTokenError as error:
            raise InvalidToken("the access token has expired") from error
        except ClaimError as error:
            raise InvalidToken(f"the access token's {error.claim} claim is not valid") from error
        scope = claims.get("scope")
        if not isinstance(scope, str):
            raise InvalidToken("the access token has no scope")
        issued = claims.get("iat")
        principal = Principal(
            claims["sub"],
            frozenset(scope.split()),
            token_id=claims["jti"],
            issued_at=issued if isinstance(issued, int) else None,
        )
        return principal, float(claims["exp"])

    def _forget_some(self, now: float) -> None:
        """Make room: drop expired tokens, then (if that was not enough) the older half."""
        for token in [t for t, (_, expires) in self._verified.items() if expires <= now]:
            del self._verified[token]
        if len(self._verified) >= self._cache_size:
            for token in list(self._verified)[: len(self._verified) // 2 + 1]:
                del self._verified[token]

    def public_jwks(self) -> dict[str, Any]:
        """Waymark's public keys (the current one first), for ``/.well-known/jwks.json``."""
        return self.signing_keys.public_jwks()


def _throttled(throttled: Throttled, client_id: str | None) -> TokenRequestError:
    busy = throttled.busy
    return TokenRequestError(
        "temporarily_unavailable",
        (
            "the token endpoint is busy"
            if busy
            else "too many failed token requests lately; try again later"
        )
        + f" (retry after {throttled.retry_after} s)",
        status=503 if busy else 429,
        headers={"Retry-After": str(throttled.retry_after)},
        reason="busy" if busy else "failure limit reached",
        client_id=client_id,
    )


def _token_claims(signed: CompactSignature) -> dict[str, Any]:
    claims = json.loads(signed.payload)  # signed by us: it is our JSON
    assert isinstance(claims, dict)
    return claims
