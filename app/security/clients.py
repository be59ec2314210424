"""The registry of backend clients (SMART Backend Services) and their public keys.

A client is registered by name; the name is its OAuth ``client_id``. It proves who it is with
a JWT signed by one of its own keys (RS384 or ES384), published as a JWKS that is either held
here or fetched from the client's URL. Registering a new JWKS is how a client rotates its keys.
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from joserfc.errors import JoseError, SecurityWarning
from joserfc.jwk import ECKey, JWKRegistry, Key, KeySet, RSAKey
from sqlalchemy import RowMapping, delete, insert, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from app.config import is_loopback
from app.security.models import auth_client, auth_jti
from app.security.scopes import OPERATION_SCOPES, parse_scope

log = logging.getLogger("waymark.security")

_CLIENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_MIN_RSA_BITS = 2048


class ClientRegistryError(Exception):
    """A registration or change refused; the message says why and is safe to show."""


@dataclass(frozen=True, slots=True)
class Client:
    client_id: str
    allowed_scopes: tuple[str, ...]
    enabled: bool
    created_at: datetime
    jwks: str | None = None  # the registered JWKS document (public keys only)
    jwks_url: str | None = None
    #: Access tokens issued until then are refused (set when the client is disabled).
    tokens_revoked_at: datetime | None = None

    def accepts_token_issued_at(self, issued_at: int) -> bool:
        """Whether an access token of this client issued at ``issued_at`` (a JWT ``iat``, in
        whole seconds) still stands: the client is enabled, was registered by then (not a
        removed client of the same name), and has not had its tokens revoked since."""
        if not self.enabled or issued_at < int(_aware(self.created_at).timestamp()):
            return False
        revoked = self.tokens_revoked_at
        # A token issued in the second of the revocation is refused: iat has no fraction.
        return revoked is None or issued_at > int(_aware(revoked).timestamp())


def _aware(moment: datetime) -> datetime:
    """SQLite gives back timestamps without their zone; Waymark stores UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def is_client_id(text: str) -> bool:
    """Whether ``text`` could be a client's name (checked before any lookup)."""
    return _CLIENT_ID.fullmatch(text) is not None


def check_client_id(client_id: str) -> str:
    if not is_client_id(client_id):
        raise ClientRegistryError(
            f"{client_id!r} is not a usable client name: letters, digits, '.', '_' and '-', "
            "starting with a letter or digit, at most 128 characters"
        )
    return client_id


def check_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """The scopes, each one a SMART system scope Waymark can grant (v2 or v1 syntax)."""
    checked = tuple(dict.fromkeys(s for text in scopes for s in text.split()))
    if not checked:
        raise ClientRegistryError("a client needs at least one scope, e.g. system/*.rs")
    unusable = [s for s in checked if parse_scope(s) is None and s not in OPERATION_SCOPES]
    if unusable:
        raise ClientRegistryError(
            f"not a system scope Waymark can grant: {', '.join(unusable)} "
            "(examples: system/Task.cruds, system/*.rs, system/Patient.read)"
        )
    return checked


def check_jwks_url(url: str) -> str:
    """An https URL (plain http only to a loopback address, for local testing)."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and parts.hostname and is_loopback(parts.hostname):
        return url
    raise ClientRegistryError(f"the JWKS URL must be https: {url}")


def key_problem(key: Key) -> str | None:
    """Why ``key`` cannot verify a SMART client assertion (RS384 or ES384), or None."""
    if not isinstance(key, RSAKey | ECKey):
        return f"key type {key.key_type} is not RSA (RS384) or EC (ES384)"
    if key.is_private:
        return "it is a private key (register only the public keys)"
    if isinstance(key, RSAKey):
        bits = key.public_key.key_size
        return None if bits >= _MIN_RSA_BITS else f"an RSA key of {bits} bits is too short"
    return None if key.curve_name == "P-384" else f"ES384 needs P-384, not {key.curve_name}"


def parse_jwks(document: str | bytes | Mapping[str, Any], *, strict: bool) -> KeySet:
    """The usable public keys of a JWKS document.

    ``strict`` (registration) refuses a document with any unusable key, so that the operator
    hears about it; otherwise (a JWKS fetched from the client) such keys are skipped.
    """
    try:
        data = json.loads(document) if isinstance(document, str | bytes) else dict(document)
        entries = data["keys"]
        if not isinstance(entries, list):
            raise TypeError("keys is not a list")
    except (ValueError, TypeError, KeyError) as error:
        raise ClientRegistryError(
            f'not a JWKS document ({{"keys": [...]}}): {type(error).__name__}'
        ) from error
    keys: list[Key] = []
    for position, entry in enumerate(entries):
        problem, key = _import_key(entry)
        if problem is None and key is not None:
            keys.append(key)
        elif strict:
            raise ClientRegistryError(f"key {position} of the JWKS cannot be used: {problem}")
    if not keys:
        raise ClientRegistryError("the JWKS holds no RS384 or ES384 public key")
    return KeySet(keys)


def _import_key(entry: object) -> tuple[str | None, Key | None]:
    if not isinstance(entry, dict) or not isinstance(entry.get("kid"), str) or not entry["kid"]:
        return "every key needs a kid", None
    if entry.get("use", "sig") != "sig":
        return "its use is not sig", None
    try:
        with warnings.catch_warnings():
            # joserfc warns of short RSA keys; key_problem() refuses them instead.
            warnings.simplefilter("ignore", SecurityWarning)
            key = JWKRegistry.import_key(entry)
    except (JoseError, ValueError, TypeError) as error:
        return f"not a valid JWK ({type(error).__name__})", None
    return key_problem(key), key


class ClientRepository:
    """All SQL on the client registry, on the caller's connection (the caller commits)."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def get(self, client_id: str) -> Client | None:
        query = select(auth_client).where(auth_client.c.client_id == client_id)
        row = (await self.conn.execute(query)).mappings().first()
        return None if row is None else _client(row)

    async def all(self) -> list[Client]:
        rows = await self.conn.execute(select(auth_client).order_by(auth_client.c.client_id))
        return [_client(row) for row in rows.mappings()]

    async def add(
        self,
        *,
        client_id: str,
        scopes: Iterable[str],
        now: datetime,
        jwks: str | None = None,
        jwks_url: str | None = None,
    ) -> Client:
        check_client_id(client_id)
        if await self.get(client_id) is not None:
            raise ClientRegistryError(f"a client named {client_id!r} is already registered")
        keys = _keys(jwks, jwks_url)
        client = Client(
            client_id=client_id,
            allowed_scopes=check_scopes(scopes),
            enabled=True,
            created_at=now,
            jwks=keys["jwks"],
            jwks_url=keys["jwks_url"],
        )
        await self.conn.execute(
            insert(auth_client).values(
                client_id=client.client_id,
                jwks=client.jwks,
                jwks_url=client.jwks_url,
                allowed_scopes=" ".join(client.allowed_scopes),
                enabled=True,
                created_at=now,
            )
        )
        return client

    async def set_enabled(self, client_id: str, *, enabled: bool, now: datetime) -> None:
        """Enable or disable a client; disabling revokes every access token it holds."""
        if enabled:
            await self._update(client_id, enabled=True)
        else:
            await self._update(client_id, enabled=False, tokens_revoked_at=now)

    async def remove(self, client_id: str) -> None:
        """Forget a client: its access tokens are refused, its name may be registered again."""
        await self.conn.execute(delete(auth_jti).where(auth_jti.c.client_id == client_id))
        result = await self.conn.execute(
            delete(auth_client).where(auth_client.c.client_id == client_id)
        )
        if result.rowcount == 0:
            raise ClientRegistryError(f"no client named {client_id!r} is registered")

    async def set_scopes(self, client_id: str, scopes: Iterable[str]) -> None:
        await self._update(client_id, allowed_scopes=" ".join(check_scopes(scopes)))

    async def replace_keys(
        self, client_id: str, *, jwks: str | None = None, jwks_url: str | None = None
    ) -> None:
        """Register new keys (key rotation): assertions signed by the old ones then fail."""
        await self._update(client_id, **_keys(jwks, jwks_url))

    async def _update(self, client_id: str, **values: object) -> None:
        result = await self.conn.execute(
            update(auth_client).where(auth_client.c.client_id == client_id).values(**values)
        )
        if result.rowcount == 0:
            raise ClientRegistryError(f"no client named {client_id!r} is registered")

    async def record_assertion(self, client_id: str, jti: str, *, expires_at: datetime) -> bool:
        """Remember an assertion's ``jti``; False when it was seen before (a replay)."""
        values = {"client_id": client_id, "jti": jti, "expires_at": expires_at}
        postgresql = self.conn.dialect.name == "postgresql"
        statement = (postgresql_insert if postgresql else sqlite_insert)(auth_jti).values(**values)
        result = await self.conn.execute(statement.on_conflict_do_nothing())
        return result.rowcount == 1

    async def assertion_seen(self, client_id: str, jti: str) -> bool:
        """Whether an assertion with this ``jti`` was accepted before (and not yet pruned)."""
        query = select(auth_jti.c.jti).where(
            auth_jti.c.client_id == client_id, auth_jti.c.jti == jti
        )
        return (await self.conn.execute(query)).first() is not None

    async def prune_assertions(self, *, now: datetime) -> None:
        """Forget the ``jti`` of assertions that have expired (they are refused anyway)."""
        await self.conn.execute(delete(auth_jti).where(auth_jti.c.expires_at < now))


def _keys(jwks: str | None, jwks_url: str | None) -> dict[str, str | None]:
    if (jwks is None) == (jwks_url is None):
        raise ClientRegistryError("give the client's public keys as a JWKS or a JWKS URL (one)")
    if jwks is not None:
        keys = parse_jwks(jwks, strict=True)
        return {"jwks": json.dumps(keys.as_dict(private=False), sort_keys=True), "jwks_url": None}
    assert jwks_url is not None
    return {"jwks": None, "jwks_url": check_jwks_url(jwks_url)}


def _client(row: RowMapping) -> Client:
    return Client(
        client_id=row["client_id"],
        allowed_scopes=tuple(row["allowed_scopes"].split()),
        enabled=bool(row["enabled"]),
        created_at=row["created_at"],
        jwks=row["jwks"],
        jwks_url=row["jwks_url"],
        tokens_revoked_at=row["tokens_revoked_at"],
    )
