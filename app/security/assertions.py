"""A token request read and checked as far as it can be without asking anyone: no database,
no key, no signature. These checks cost microseconds and run first, so a malformed or forged
request is refused before anything expensive (a lookup, a JWKS fetch, a signature check).

A failure of the assertion is ``invalid_client`` with one description for every cause (RFC
7523 section 3.2): what is wrong goes to the server's log and the AuditEvent, never to the
caller, so that nobody can learn from the answers which clients exist, are disabled, or which
of their keys a signature nearly matched.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jws import CompactSignature, JWSRegistry

from app.security.clients import is_client_id

GRANT_TYPE = "client_credentials"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_ALGORITHMS = ("RS384", "ES384")
#: SMART: an assertion's ``exp`` is "no more than five minutes in the future".
MAX_ASSERTION_LIFETIME = timedelta(minutes=5)
#: Allowance for the client's clock and ours disagreeing, on every time check.
CLOCK_SKEW = timedelta(seconds=30)
_MAX_JTI = 256
_MAX_KID = 256

# Client assertions may carry header parameters of their own.
ASSERTIONS = JWSRegistry(algorithms=ASSERTION_ALGORITHMS, strict_check_header=False)


class TokenRequestError(Exception):
    """A refused token request, as an OAuth 2.0 error response (RFC 6749 section 5.2).

    ``description`` is what the caller is told; ``reason`` (for the log and the AuditEvent
    only) says what was really wrong; ``client_id`` is the client the request claimed to be.
    """

    def __init__(
        self,
        error: str,
        description: str,
        *,
        status: int = 400,
        headers: Mapping[str, str] | None = None,
        reason: str | None = None,
        client_id: str | None = None,
    ) -> None:
        super().__init__(f"{error}: {reason or description}")
        self.error = error
        self.description = description
        self.status = status
        self.headers = dict(headers or {})
        self.reason = reason or description
        self.client_id = client_id

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


def invalid_client(token_url: str, reason: str) -> TokenRequestError:
    """The one answer to an assertion that does not authenticate its client, whatever the
    cause (``reason``, which the caller is not told)."""
    return TokenRequestError(
        "invalid_client",
        "The client could not be authenticated. Check that it is registered and enabled, that "
        "the assertion is signed (RS384 or ES384) by one of its registered keys named by kid, "
        f"that iss and sub are its client_id, aud is {token_url}, exp is at most five minutes "
        "ahead, and jti is new. Which check failed is recorded in the server's audit trail "
        "(the AuditEvent of this response's X-Request-ID).",
        reason=reason,
    )


@dataclass(frozen=True, slots=True)
class ClientAssertion:
    """A client assertion whose shape and claims are right; its signature is not checked yet."""

    client_id: str
    kid: str
    jti: str
    #: Until when its jti must be remembered to refuse a replay.
    remember_until: datetime
    header: Mapping[str, Any]
    signed: CompactSignature


def requested_scopes(form: Mapping[str, str]) -> list[str]:
    """The requested scopes, once the request's form is complete (specific errors: they
    concern the form alone, the same whoever the caller claims to be)."""
    grant_type = form.get("grant_type")
    if not grant_type:
        raise TokenRequestError("invalid_request", "grant_type is missing")
    if grant_type != GRANT_TYPE:
        raise TokenRequestError(
            "unsupported_grant_type", f"only grant_type={GRANT_TYPE} is supported"
        )
    if form.get("client_assertion_type") != ASSERTION_TYPE:
        raise TokenRequestError(
            "invalid_request", f"client_assertion_type must be {ASSERTION_TYPE}"
        )
    if not form.get("client_assertion"):
        raise TokenRequestError("invalid_request", "client_assertion (a signed JWT) is missing")
    requested = form.get("scope", "").split()
    if not requested:
        raise TokenRequestError("invalid_request", "scope is missing, e.g. scope=system/*.rs")
    return requested


def read_assertion(form: Mapping[str, str], *, token_url: str, now: datetime) -> ClientAssertion:
    """The request's client assertion, refused (``invalid_client``) unless its header and
    claims are all as SMART Backend Services requires."""

    def refuse(reason: str) -> TokenRequestError:
        return invalid_client(token_url, reason)

    try:
        signed = jws.extract_compact(form["client_assertion"].encode("ascii"), registry=ASSERTIONS)
        header = signed.headers()
        claims = json.loads(signed.payload)
    except (JoseError, ValueError, UnicodeError, RecursionError) as error:  # deep nesting too
        raise refuse(f"the assertion is not a signed JWT ({type(error).__name__})") from error
    if not isinstance(claims, dict):
        raise refuse("the assertion's payload is not a JSON object")
    alg, kid = header.get("alg"), header.get("kid")
    if alg not in ASSERTION_ALGORITHMS:
        raise refuse("the assertion is not signed with RS384 or ES384")
    if not isinstance(kid, str) or not 0 < len(kid) <= _MAX_KID:
        raise refuse("the assertion's header has no usable kid")
    if header.get("typ", "JWT") != "JWT":
        raise refuse("the assertion's typ is not JWT")
    client_id = claims.get("iss")
    if not isinstance(client_id, str) or not is_client_id(client_id):
        raise refuse("the assertion's iss is not a client name")
    if claims.get("sub") != client_id:
        raise refuse("the assertion's sub is not its iss")
    if form.get("client_id", client_id) != client_id:
        raise refuse("the form's client_id is not the assertion's iss")
    audience = claims.get("aud")
    if audience != token_url and not (isinstance(audience, list) and token_url in audience):
        raise refuse("the assertion's aud is not this token endpoint")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not 0 < len(jti) <= _MAX_JTI:
        raise refuse("the assertion has no usable jti")
    expires = _expiry(claims, now=now, refuse=refuse)
    return ClientAssertion(client_id, kid, jti, expires + CLOCK_SKEW, header, signed)


def _expiry(
    claims: Mapping[str, Any], *, now: datetime, refuse: Callable[[str], TokenRequestError]
) -> datetime:
    """The assertion's ``exp``, once ``exp``, ``iat`` and ``nbf`` are whole seconds in range.

    NumericDate values are compared as integers of seconds since the epoch, before any is
    turned into a datetime: ``1e20``, ``-1``, ``"123"``, ``true`` or ``10**30`` are refused
    here rather than overflowing a conversion.
    """
    moment = int(now.timestamp())
    skew = int(CLOCK_SKEW.total_seconds())
    latest = moment + int(MAX_ASSERTION_LIFETIME.total_seconds()) + skew
    exp = claims.get("exp")
    if not _is_seconds(exp):
        raise refuse("the assertion's exp is not a whole number of seconds")
    assert isinstance(exp, int)
    if exp <= moment - skew:
        raise refuse("the assertion has expired")
    if exp > latest:
        raise refuse("the assertion's exp is more than five minutes away")
    for name in ("iat", "nbf"):
        if name in claims:
            value = claims[name]
            if not _is_seconds(value):
                raise refuse(f"the assertion's {name} is not a whole number of seconds")
            if value > moment + skew:
                raise refuse(f"the assertion's {name} is in the future")
    return datetime.fromtimestamp(exp, UTC)


def _is_seconds(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
