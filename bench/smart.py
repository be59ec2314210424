"""A benchmark client that authenticates as an EHR does: SMART Backend Services.

The client has its own ES384 key pair; an administrator registers its public JWKS with
``waymark client add NAME --jwks FILE --scope ...`` (the real CLI, on the benchmark database);
it then gets each access token from ``POST /auth/token`` with a client assertion it signed (a
JWT: iss = sub = its name, aud = the token URL, a new jti, exp a few minutes ahead), exactly
as docs/security.md, "Authentication", tells an EHR to.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
from joserfc import jwt
from joserfc.jwk import ECKey

from bench import loadrun
from bench.crud import BenchError

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@dataclass
class Token:
    value: str
    expires_at: float  # time.monotonic() when it expires

    def left(self) -> float:
        return self.expires_at - time.monotonic()


@dataclass
class SmartClient:
    name: str
    key: ECKey
    scope: str

    @classmethod
    def register(cls, database_url: str, work_dir: Path, *, name: str, scope: str) -> SmartClient:
        """Make the client's key pair and register its public keys with the CLI."""
        key = ECKey.generate_key(
            "P-384", parameters={"kid": f"{name}-{uuid.uuid4().hex[:8]}", "alg": "ES384"}
        )
        public = work_dir / f"{name}-jwks.json"
        public.write_text(json.dumps({"keys": [key.as_dict(private=False)]}))
        loadrun.waymark(
            "client",
            "add",
            name,
            "--jwks",
            str(public),
            "--scope",
            scope,
            database_url=database_url,
        )
        return cls(name, key, scope)

    def assertion(self, token_url: str) -> str:
        now = int(time.time())
        claims = {
            "iss": self.name,
            "sub": self.name,
            "aud": token_url,
            "iat": now,
            "exp": now + 240,
            "jti": uuid.uuid4().hex,
        }
        header = {"alg": "ES384", "kid": self.key.kid, "typ": "JWT"}
        return jwt.encode(header, claims, self.key, algorithms=["ES384"])

    def token(self, base_url: str) -> Token:
        """A new access token from the server's token endpoint."""
        token_url = f"{base_url}/auth/token"
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": self.assertion(token_url),
            "scope": self.scope,
        }
        started = time.monotonic()
        response = httpx.post(token_url, data=form, timeout=30, trust_env=False)
        if response.status_code != 200:
            raise BenchError(f"POST /auth/token: {response.status_code} {response.text[:300]}")
        answer = response.json()
        return Token(answer["access_token"], started + float(answer["expires_in"]))


def verification_cost(key_file: Path, issuer: str, token: str, count: int = 300) -> float:
    """Milliseconds the server's check of a token's signature and claims takes when the token
    is not yet in its cache (once per token and worker), measured in this process."""
    from app.security.tokens import TokenService

    service = TokenService(issuer=issuer, key_file=key_file)
    now = time.time()
    service._verify(token, now)  # the key file read, the first time
    started = time.perf_counter()
    for _ in range(count):
        service._verify(token, now)
    return (time.perf_counter() - started) * 1000 / count
