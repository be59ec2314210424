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
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from joserfc import jws, jwt
from joserfc.errors import ClaimError, ExpiredTokenError, JoseError
from joserfc.jwk import Key, KeySet
from joserfc.jws import CompactSignature, JWSRegistry
from sqlalchemy.ext.asyncio import AsyncConnection

from app.clock import Clock, system_clock
from app.config import Settings
from app.security.clients import Client, ClientKeys, ClientRepository, KeysUnavailable
from app.security.principal import Principal
from app.security.scopes import narrow
from app.security.signing_keys import SIGNING_ALGORITHM, SigningKeys

log = logging.getLogger("waymark.security")

GRANT_TYPE = "client_credentials"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_ALGORITHMS = ("RS384", "ES384")
#: SMART: an assertion's ``exp`` is "no more than five minutes in the future".
MAX_ASSERTION_LIFETIME = timedelta(minutes=5)
#: Allowance for the client's clock and ours disagreeing, on every time check.
CLOCK_SKEW = timedelta(seconds=30)
#: RFC 9068: the ``typ`` that keeps an access token from being mistaken for another JWT.
ACCESS_TOKEN_TYPE = "at+jwt"  # noqa: S105 (not a secret)

# Client assertions may carry header parameters of their own; our own tokens may not.
_ASSERTIONS = JWSRegistry(algorithms=ASSERTION_ALGORITHMS, strict_check_header=False)
_ACCESS_TOKENS = JWSRegistry(algorithms=[SIGNING_ALGORITHM])


class InvalidToken(Exception):
    """An access token that is not accepted; ``reason`` says why and is safe to show."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TokenRequestError(Exception):
    """A refused token request, as an OAuth 2.0 error response (RFC 6749 section 5.2)."""

    status = 400

    def __init__(self, error: str, description: str) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


def _invalid_client(description: str) -> TokenRequestError:
    # SMART: every failure to authenticate the client's assertion is invalid_client.
    return TokenRequestError("invalid_client", description)


class TokenService:
    """Issues access tokens to registered clients and verifies them on every request.

    Verifying a token is on every FHIR request's path, so a verified token is remembered
    (in a bounded map) until it expires: the signature is checked once per token.
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
    ) -> None:
        self.issuer = issuer
        self.signing_keys = SigningKeys(key_file)
        self.access_token_seconds = access_token_seconds
        self._clock = clock
        self._client_keys = ClientKeys(clock=clock, transport=http_transport)
        self._cache_size = cache_size
        self._verified: dict[str, tuple[Principal, float]] = {}

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        clock: Clock = system_clock,
        http_transport: httpx.AsyncBaseTransport | None = None,
    ) -> TokenService:
        return cls(
            issuer=settings.base_url,
            key_file=settings.token_key_file,
            clock=clock,
            access_token_seconds=settings.access_token_seconds,
            http_transport=http_transport,
        )

    # -- the token endpoint -------------------------------------------------------------------

    async def issue(
        self, conn: AsyncConnection, *, form: Mapping[str, str], token_url: str
    ) -> dict[str, Any]:
        """Answer a token request (client credentials with a signed JWT assertion).

        The assertion's ``jti`` is recorded on ``conn``: the caller commits it with the answer.
        Raises :class:`TokenRequestError`. Assertions are never logged.
        """
        requested = _check_request(form)
        assertion = _parse_assertion(form["client_assertion"])
        header, claims = assertion.headers(), _claims(assertion)
        client_id = claims.get("iss")
        if not isinstance(client_id, str) or claims.get("sub") != client_id:
            raise _invalid_client("the assertion's iss and sub must both be the client_id")
        if form.get("client_id", client_id) != client_id:
            raise _invalid_client("client_id does not match the assertion's iss")
        repository = ClientRepository(conn)
        client = await repository.get(client_id)
        if client is None or not client.enabled:
            state = "not registered" if client is None else "disabled"
            raise _invalid_client(f"client {client_id!r} is {state}")
        try:
            await self._verify_assertion(client, assertion, header)
            expires = self._check_claims(claims, token_url=token_url)
            granted = narrow(requested, client.allowed_scopes)
            if not granted:
                raise TokenRequestError(
                    "invalid_scope", "none of the requested scopes is allowed for this client"
                )
            now = self._clock()
            await repository.prune_assertions(now=now)
            if not await repository.record_assertion(client_id, claims["jti"], expires_at=expires):
                raise _invalid_client("this assertion's jti has been used before (a replay)")
        except TokenRequestError as error:
            log.info("token request of client %s refused: %s", client_id, error.error)
            raise
        log.info("access token issued to client %s for %s", client_id, " ".join(granted))
        return {
            "access_token": self._sign(client_id, granted, now),
            "token_type": "bearer",
            "expires_in": self.access_token_seconds,
            "scope": " ".join(granted),
        }

    async def _verify_assertion(
        self, client: Client, assertion: CompactSignature, header: Mapping[str, Any]
    ) -> None:
        kid, alg = header.get("kid"), header.get("alg")
        if alg not in ASSERTION_ALGORITHMS:
            allowed = " or ".join(ASSERTION_ALGORITHMS)
            raise _invalid_client(f"the assertion must be signed with {allowed}")
        if not isinstance(kid, str) or not kid:
            raise _invalid_client("the assertion's header has no kid")
        if header.get("typ", "JWT") != "JWT":
            raise _invalid_client("the assertion's typ must be JWT")
        if "jku" in header and header["jku"] != client.jwks_url:
            raise _invalid_client("the assertion's jku is not the client's registered JWKS URL")
        try:
            keys = await self._client_keys.key_set(client, kid=kid)
        except KeysUnavailable as error:
            raise _invalid_client(str(error)) from error
        key = _by_kid(keys, kid)
        if key is None:
            raise _invalid_client(f"the client has no key with kid {kid!r}")
        try:
            verified = jws.validate_compact(assertion, key, registry=_ASSERTIONS)
        except JoseError as error:
            raise _invalid_client(f"the key {kid!r} cannot verify {alg}") from error
        if not verified:
            raise _invalid_client("the assertion's signature does not verify")

    def _check_claims(self, claims: dict[str, Any], *, token_url: str) -> datetime:
        """Check the assertion's claims; the time until which its jti must be remembered."""
        now = self._clock()
        registry = jwt.JWTClaimsRegistry(
            now=int(now.timestamp()),
            leeway=int(CLOCK_SKEW.total_seconds()),
            aud={"essential": True, "value": token_url},
            exp={"essential": True},
            jti={"essential": True},
        )
        try:
            registry.validate(claims)
        except ExpiredTokenError as error:
            raise _invalid_client("the assertion has expired") from error
        except ClaimError as error:
            hint = f" (it must be {token_url})" if error.claim == "aud" else ""
            message = f"the assertion's {error.claim} claim is not valid{hint}"
            raise _invalid_client(message) from error
        expires = datetime.fromtimestamp(claims["exp"], UTC)
        if expires > now + MAX_ASSERTION_LIFETIME + CLOCK_SKEW:
            raise _invalid_client("the assertion's exp is more than five minutes away")
        return expires + CLOCK_SKEW

    # -- access tokens --------------------------------------------------------------------------

    def mint(self, *, client_id: str, scopes: Iterable[str]) -> str:
        """An access token for ``client_id`` with ``scopes``, signed now (``waymark token``).

        The caller decides what the client may have; nothing is checked here.
        """
        return self._sign(client_id, list(scopes), self._clock())

    def _sign(self, client_id: str, scopes: list[str], now: datetime) -> str:
        key = self.signing_keys.current()
        issued = int(now.timestamp())
        claims = {
            "iss": self.issuer,
            "aud": self.issuer,
            "sub": client_id,
            "client_id": client_id,
            "scope": " ".join(scopes),
            "jti": uuid.uuid4().hex,
            "iat": issued,
            "exp": issued + self.access_token_seconds,
        }
        header = {"alg": SIGNING_ALGORITHM, "kid": key.kid, "typ": ACCESS_TOKEN_TYPE}
        return jwt.encode(header, claims, key, registry=_ACCESS_TOKENS)

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
        principal = Principal(claims["sub"], frozenset(scope.split()), token_id=claims["jti"])
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


def _check_request(form: Mapping[str, str]) -> list[str]:
    """The requested scopes, once the request's form is complete."""
    grant_type = form.get("grant_type")
    if not grant_type:
        raise TokenRequestError("invalid_request", "grant_type is missing")
    if grant_type != GRANT_TYPE:
        raise TokenRequestError(
            "unsupported_grant_type", f"only grant_type={GRANT_TYPE} is supported"
        )
    if form.get("client_assertion_type") != ASSERTION_TYPE:
        raise _invalid_client(f"client_assertion_type must be {ASSERTION_TYPE}")
    if not form.get("client_assertion"):
        raise _invalid_client("client_assertion (a signed JWT) is missing")
    requested = form.get("scope", "").split()
    if not requested:
        raise TokenRequestError("invalid_request", "scope is missing, e.g. scope=system/*.rs")
    return requested


def _parse_assertion(assertion: str) -> CompactSignature:
    try:
        parsed = jws.extract_compact(assertion.encode("ascii"), registry=_ASSERTIONS)
        parsed.headers()
    except (JoseError, ValueError) as error:
        raise _invalid_client("client_assertion is not a signed JWT") from error
    return parsed


def _claims(signed: CompactSignature) -> dict[str, Any]:
    try:
        claims = json.loads(signed.payload)
    except ValueError as error:
        raise _invalid_client("the assertion's payload is not JSON") from error
    if not isinstance(claims, dict):
        raise _invalid_client("the assertion's payload is not a JSON object")
    return claims


def _token_claims(signed: CompactSignature) -> dict[str, Any]:
    claims = json.loads(signed.payload)  # signed by us: it is our JSON
    assert isinstance(claims, dict)
    return claims


def _by_kid(keys: KeySet, kid: str) -> Key | None:
    return next((key for key in keys if key.kid == kid), None)
