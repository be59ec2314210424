"""SMART Backend Services: the token endpoint, access tokens, and the client registry.

Clients here hold real RS384 and ES384 key pairs and sign real assertions; the server knows
only their public keys, as it would in production.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, Key, OctKey
from sqlalchemy import func, select
from typer.testing import CliRunner

from app.cli import cli
from app.config import Settings, get_settings
from app.db import transaction
from app.runtime import Runtime
from app.security.clients import ClientRegistryError, ClientRepository
from app.security.models import auth_jti
from app.security.tokens import InvalidToken, TokenService
from tests.conftest import BASE_URL
from tests.security.token_helpers import (
    TOKEN_URL,
    FrozenClock,
    assert_oauth_error,
    assert_refused,
    assertion,
    public_jwks,
    register,
    request_token,
)

# -- discovery ---------------------------------------------------------------------------------


async def test_smart_configuration_describes_backend_services(http: httpx.AsyncClient) -> None:
    response = await http.get("/.well-known/smart-configuration")
    assert response.status_code == 200
    config = response.json()
    assert config["token_endpoint"] == TOKEN_URL
    assert config["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
    assert set(config["token_endpoint_auth_signing_alg_values_supported"]) == {"RS384", "ES384"}
    assert config["grant_types_supported"] == ["client_credentials"]
    assert "system/*.rs" in config["scopes_supported"]
    assert {"client-confidential-asymmetric", "permission-v2", "permission-v1"} <= set(
        config["capabilities"]
    )
    assert config["jwks_uri"] == f"{BASE_URL}/.well-known/jwks.json"


async def test_jwks_publishes_the_public_signing_key(
    http: httpx.AsyncClient, runtime: Runtime
) -> None:
    published = (await http.get("/.well-known/jwks.json")).json()["keys"]
    token = runtime.tokens.mint(client_id="anyone", scopes=["system/Task.r"])
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert published[0]["kid"] == header["kid"]
    assert all("d" not in key for key in published)  # no private part
    assert published[0]["crv"] == "P-384"


# -- the token endpoint --------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["RS384", "ES384"])
async def test_a_signed_assertion_gets_an_access_token(
    http: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock, keys: dict[str, Key], alg: str
) -> None:
    await register(runtime, "ehr", keys[alg], scopes="system/*.rs")
    signed = assertion(keys[alg], client_id="ehr", now=clock())

    response = await request_token(http, signed, scope="system/Patient.rs")

    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 300
    assert body["scope"] == "system/Patient.rs"
    principal = runtime.tokens.verify_access_token(body["access_token"])
    assert principal.client_id == "ehr"
    assert principal.scopes == frozenset({"system/Patient.rs"})
    assert principal.token_id
    # The token opens the FHIR API; no token does not.
    bearer = {"Authorization": f"Bearer {body['access_token']}"}
    assert (await http.get("/Patient", headers=bearer)).status_code == 200
    assert (await http.get("/Patient")).status_code == 401


async def test_granted_scopes_are_the_requested_ones_the_client_is_allowed(
    http: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock, keys: dict[str, Key]
) -> None:
    key = keys["ES384"]
    await register(runtime, "ehr", key, scopes="system/Patient.rs system/Task.cruds")
    requested = "system/Patient.read system/Task.rs system/Observation.rs system/Patient.cruds"

    response = await request_token(
        http, assertion(key, client_id="ehr", now=clock()), scope=requested
    )

    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "system/Patient.read system/Task.rs"
    principal = runtime.tokens.verify_access_token(response.json()["access_token"])
    assert principal.scopes == frozenset({"system/Patient.read", "system/Task.rs"})

    # Asked for more than it may have, a client gets the intersection, not a refusal.
    wide = await request_token(
        http, assertion(key, client_id="ehr", now=clock()), scope="system/*.rs"
    )
    assert wide.status_code == 200, wide.text
    assert wide.json()["scope"] == "system/Patient.rs system/Task.rs"


async def test_no_allowed_scope_is_invalid_scope(
    http: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock, keys: dict[str, Key]
) -> None:
    key = keys["ES384"]
    await register(runtime, "ehr", key, scopes="system/Patient.rs")
    signed = assertion(key, client_id="ehr", now=clock())

    refused = await request_token(http, signed, scope="system/Observation.rs patient/*.rs")
    assert_oauth_error(refused, "invalid_scope", "none of the requested scopes")

    # The refusal did not use up the assertion's jti: it was rolled back with the refusal.
    assert (await request_token(http, signed, scope="system/Patient.r")).status_code == 200


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"exp_in": -120}, "expired"),
        ({"exp_in": 600}, "five minutes"),
        ({"exp": None}, "exp"),
        ({"aud": "https://elsewhere.example/auth/token"}, "aud is not this token endpoint"),
        ({"aud": None}, "aud"),
        ({"jti": None}, "jti"),
        ({"sub": "someone-else"}, "sub is not its iss"),
        ({"kid": "no-such-key"}, "no key with the assertion's kid"),
    ],
)
async def test_an_assertion_with_bad_claims_is_refused(
    http: httpx.AsyncClient,
    runtime: Runtime,
    clock: FrozenClock,
    keys: dict[str, Key],
    claims: dict[str, Any],
    reason: str,
) -> None:
    key = keys["ES384"]
    await register(runtime, "ehr", key)

    response = await request_token(http, assertion(key, client_id="ehr", now=clock(), **claims))

    await assert_refused(runtime, response, reason)


async def test_an_expired_assertion_is_refused_by_the_servers_clock(
    http: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock, keys: dict[str, Key]
) -> None:
    key = keys["RS384"]
    await register(runtime, "ehr", key)
    signed = assertion(key, client_id="ehr", now=clock(), exp_in=60)

    clock.advance(minutes=2)

    await assert_refused(runtime, await request_token(http, signed), "expired")


async def test_a_replayed_assertion_is_refused(
    http: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock, keys: dict[str, Key]
) -> None:
    key = keys["ES384"]
    await register(runtime, "ehr", key)
    signed = assertion(key, client_id="ehr", now=clock())

    assert (await request_token(http, signed)).status_code == 200
    replay = await request_token(http, signed)

    await assert_refused(runtime, replay, "used before")


async def test_the_same_jti_from_two_clients_is_not_a_replay(
    http: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock, keys: dict[str, Key]
) -> None:
    await register(runtime, "ehr", keys["ES384"])
    await register(runtime, "lab", keys["RS384"])
    for name, key in (("ehr", keys["ES384"]), ("lab", keys["RS384"])):
        signed = assertion(key, client_id=name, now=clock(), jti="shared-jti")
        assert (await request_token(http, signed)).status_code == 200


async def test_jtis_of_expired_assertions_are_pruned(
    http: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock, keys: dict[str, Key]
) -> None:
    key = keys["ES384"]
    await register(runtime, "ehr", key)
    assert (await request_token(http, assertion(key, client_id="ehr", now=clock()))).is_success

    clock.advance(minutes=10)
    assert (await request_token(http, assertion(key, client_id="ehr", now=clock()))).is_success

    async with transaction(runtime.engine, write=False) as conn:
        remembered = (await conn.execute(select(func.count()).select_from(auth_jti))).scalar()
    assert remembered == 1  # only the assertion that has not expired yet


async def test_an_unregistered_client_is_refused(
    http: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock, keys: dict[str, Key]
) -> None:
    signed = assertion(keys["ES384"], client_id="stranger", now=clock())

    await assert_refused(runtime, await request_token(http, signed), "not registered")


async def test_a_disabled_client_is_refused(
    http: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock, keys: dict[str, Key]
) -> None:
    key = keys["ES384"]
    await register(runtime, "ehr", key)
    async with transaction(runtime.engine, write=True) as conn:
        await ClientRepository(conn).set_enabled("ehr", enabled=False, now=clock())

    response = await request_token(http, assertion(key, client_id="ehr", now=clock()))

    await assert_refused(runtime, response, "disabled")


async def test_an_assertion_signed_by_another_key_is_refused(
    http: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock, keys: dict[str, Key]
) -> None:
    await register(runtime, "ehr", keys["ES384"])
    impostor = ECKey.generate_key("P-384", parameters={"kid": keys["ES384"].kid})

    response = await request_token(http, assertion(impostor, client_id="ehr", now=clock()))

    await assert_refused(runtime, response, "signature does not verify")


async def test_an_assertion_whose_alg_does_not_fit_the_key_is_refused(
    http: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock, keys: dict[str, Key]
) -> None:
    await register(runtime, "ehr", keys["ES384"])
    rsa_signed = assertion(keys["RS384"], client_id="ehr", now=clock(), kid=keys["ES384"].kid)
    hs256 = jwt.encode(
        {"alg": "HS256", "kid": "ec-1"},
        {"iss": "ehr", "sub": "ehr", "aud": TOKEN_URL, "exp": int(clock().timestamp()) + 60},
        OctKey.import_key("a-shared-secret-of-thirty-two-bytes!"),
        algorithms=["HS256"],
    )

    await assert_refused(runtime, await request_token(http, rsa_signed), "does not verify")
    await assert_refused(runtime, await request_token(http, hs256), "RS384 or ES384")


@pytest.mark.parametrize(
    ("form", "error", "mentions"),
    [
        ({"grant_type": "authorization_code"}, "unsupported_grant_type", "client_credentials"),
        ({"grant_type": ""}, "invalid_request", "grant_type"),
        ({"scope": ""}, "invalid_request", "scope"),
        ({"client_assertion_type": "urn:other"}, "invalid_request", "client_assertion_type"),
        ({"client_assertion": ""}, "invalid_request", "client_assertion"),
    ],
)
async def test_malformed_token_requests_get_oauth_errors(
    http: httpx.AsyncClient,
    runtime: Runtime,
    clock: FrozenClock,
    keys: dict[str, Key],
    form: dict[str, str],
    error: str,
    mentions: str,
) -> None:
    await register(runtime, "ehr", keys["ES384"])
    signed = assertion(keys["ES384"], client_id="ehr", now=clock())

    assert_oauth_error(await request_token(http, signed, **form), error, mentions)


async def test_the_token_endpoint_takes_each_parameter_once_and_only_as_a_form(
    http: httpx.AsyncClient,
) -> None:
    twice = await http.post(
        "/auth/token",
        content="grant_type=client_credentials&grant_type=client_credentials",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    as_json = await http.post("/auth/token", json={"grant_type": "client_credentials"})

    assert_oauth_error(twice, "invalid_request", "more than once")
    assert_oauth_error(as_json, "invalid_request", "x-www-form-urlencoded")


async def test_keys_fetched_from_a_jwks_url_follow_the_clients_rotation(
    http: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock, keys: dict[str, Key]
) -> None:
    jwks_url = "https://ehr.example/.well-known/jwks.json"
    old, new = keys["ES384"], ECKey.generate_key("P-384", parameters={"kid": "ec-2"})
    served = {"keys": [old.as_dict(private=False)]}
    fetched: list[str] = []

    def client_server(request: httpx.Request) -> httpx.Response:
        fetched.append(str(request.url))
        return httpx.Response(200, json=served)

    runtime.tokens = TokenService.from_settings(
        runtime.settings,
        clock=clock,
        http_transport=httpx.MockTransport(client_server),
        engine=runtime.engine,
    )
    await register(runtime, "ehr", jwks_url=jwks_url)

    assert (await request_token(http, assertion(old, client_id="ehr", now=clock()))).is_success
    assert (await request_token(http, assertion(old, client_id="ehr", now=clock()))).is_success
    assert fetched == [jwks_url]  # cached

    served = {"keys": [new.as_dict(private=False)]}  # the client rotates its key
    # An unknown kid just after a fetch does not make Waymark fetch again at once...
    too_soon = await request_token(http, assertion(new, client_id="ehr", now=clock()))
    await assert_refused(runtime, too_soon, "no key with the assertion's kid")
    assert len(fetched) == 1
    # ...but a few seconds on it does, once, and then the new key works.
    clock.advance(seconds=15)
    assert (await request_token(http, assertion(new, client_id="ehr", now=clock()))).is_success
    assert len(fetched) == 2


# -- access tokens -------------------------------------------------------------------------------


async def test_access_tokens_expire(runtime: Runtime, clock: FrozenClock) -> None:
    token = runtime.tokens.mint(client_id="ehr", scopes=["system/Task.rs"])
    assert runtime.tokens.verify_access_token(token).client_id == "ehr"  # now remembered

    clock.advance(seconds=299)
    assert runtime.tokens.verify_access_token(token).scopes == frozenset({"system/Task.rs"})
    clock.advance(seconds=2)
    with pytest.raises(InvalidToken, match="expired"):
        runtime.tokens.verify_access_token(token)
    # A token first seen after it expired is refused by the claims check itself.
    late = runtime.tokens.mint(client_id="ehr", scopes=["system/Task.rs"])
    clock.advance(minutes=6)
    with pytest.raises(InvalidToken, match="expired"):
        runtime.tokens.verify_access_token(late)


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(data)).rstrip(b"=").decode()


async def test_tampered_or_foreign_tokens_are_refused(
    runtime: Runtime, clock: FrozenClock, tmp_path: Path
) -> None:
    token = runtime.tokens.mint(client_id="ehr", scopes=["system/Task.r"])
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    more_scope = _b64({**claims, "scope": "system/*.cruds"})
    flipped = signature[:10] + ("A" if signature[10] != "A" else "B") + signature[11:]
    unsigned = f"{_b64({'alg': 'none', 'typ': 'at+jwt'})}.{payload}."
    stranger = TokenService(issuer=BASE_URL, key_file=tmp_path / "other.json", clock=clock)

    with pytest.raises(InvalidToken, match="signature"):
        runtime.tokens.verify_access_token(f"{header}.{more_scope}.{signature}")
    with pytest.raises(InvalidToken, match="signature"):
        runtime.tokens.verify_access_token(f"{header}.{payload}.{flipped}")
    with pytest.raises(InvalidToken, match="not issued by Waymark"):
        runtime.tokens.verify_access_token(unsigned)
    with pytest.raises(InvalidToken, match="key Waymark does not hold"):
        runtime.tokens.verify_access_token(stranger.mint(client_id="ehr", scopes=["system/*.*"]))
    with pytest.raises(InvalidToken, match="not a JWT"):
        runtime.tokens.verify_access_token("garbage")
    # An assertion a client signed is not an access token, even with Waymark's own claims.
    client_key = ECKey.generate_key("P-384", parameters={"kid": "ec-9"})
    lookalike = jwt.encode({"alg": "ES384", "kid": "ec-9"}, claims, client_key, ["ES384"])
    with pytest.raises(InvalidToken, match="not issued by Waymark"):
        runtime.tokens.verify_access_token(lookalike)


async def test_a_token_from_another_issuer_is_refused(
    runtime: Runtime, clock: FrozenClock, settings: Settings
) -> None:
    elsewhere = TokenService(
        issuer="https://other.example", key_file=settings.token_key_file, clock=clock
    )
    token = elsewhere.mint(client_id="ehr", scopes=["system/Task.r"])

    with pytest.raises(InvalidToken, match="iss"):
        runtime.tokens.verify_access_token(token)


def test_rotated_signing_keys_still_verify_earlier_tokens(tmp_path: Path) -> None:
    clock = FrozenClock()
    server = TokenService(issuer=BASE_URL, key_file=tmp_path / "key.json", clock=clock)
    before = server.mint(client_id="ehr", scopes=["system/Task.r"])
    assert server.verify_access_token(before).client_id == "ehr"
    assert (tmp_path / "key.json").stat().st_mode & 0o777 == 0o600

    # Another process (waymark keys rotate) rotates the file under the running server.
    rotator = TokenService(issuer=BASE_URL, key_file=tmp_path / "key.json", clock=clock)
    new_kid = rotator.signing_keys.rotate().kid
    after = rotator.mint(client_id="ehr", scopes=["system/Task.r"])

    assert server.verify_access_token(after).client_id == "ehr"
    assert server.public_jwks()["keys"][0]["kid"] == new_kid
    fresh = TokenService(issuer=BASE_URL, key_file=tmp_path / "key.json", clock=clock)
    assert fresh.verify_access_token(before).client_id == "ehr"
    # A second rotation retires the first key: what it signed is no longer accepted.
    rotator.signing_keys.rotate()
    fresh = TokenService(issuer=BASE_URL, key_file=tmp_path / "key.json", clock=clock)
    with pytest.raises(InvalidToken, match="key Waymark does not hold"):
        fresh.verify_access_token(before)


# -- the client registry -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("jwks", "mentions"),
    [
        ({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "s"}]}, "not RSA"),
        ("private", "private key"),
        ("no kid", "kid"),
        ("P-256", "P-384"),
        ({"nokeys": []}, "not a JWKS"),
    ],
)
async def test_unusable_client_keys_are_refused_at_registration(
    runtime: Runtime, keys: dict[str, Key], jwks: Any, mentions: str
) -> None:
    if jwks == "private":
        jwks = {"keys": [keys["ES384"].as_dict(private=True)]}
    elif jwks == "no kid":
        jwks = {"keys": [{**keys["ES384"].as_dict(private=False), "kid": None}]}
    elif jwks == "P-256":
        p256 = ECKey.generate_key("P-256", parameters={"kid": "p256"})
        jwks = {"keys": [p256.as_dict(private=False)]}
    async with transaction(runtime.engine, write=True) as conn:
        with pytest.raises(ClientRegistryError, match=mentions):
            await ClientRepository(conn).add(
                client_id="ehr", scopes=["system/*.rs"], jwks=json.dumps(jwks), now=runtime.clock()
            )


@pytest.fixture
def cli_env(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The CLI on the test database, with its own signing key file."""
    key_file = tmp_path / "cli-key.json"
    monkeypatch.setenv("WAYMARK_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("WAYMARK_BASE_URL", BASE_URL)
    monkeypatch.setenv("WAYMARK_TOKEN_KEY_FILE", str(key_file))
    get_settings.cache_clear()
    yield key_file
    get_settings.cache_clear()


def test_the_cli_registers_clients_and_mints_tokens(
    cli_env: Path, tmp_path: Path, keys: dict[str, Key]
) -> None:
    runner = CliRunner()
    name = f"cli-{uuid.uuid4().hex[:8]}"
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(public_jwks(keys["RS384"]))

    added = runner.invoke(
        cli,
        [
            "client",
            "add",
            name,
            "--jwks",
            str(jwks_file),
            "--scope",
            "system/*.rs system/Task.cruds",
        ],
    )
    assert added.exit_code == 0, added.output
    again = runner.invoke(
        cli, ["client", "add", name, "--jwks", str(jwks_file), "--scope", "system/*.rs"]
    )
    assert again.exit_code == 1
    assert "already registered" in again.output

    listed = runner.invoke(cli, ["client", "list"])
    assert f"{name}\tenabled\tjwks kid=rsa-1\tsystem/*.rs system/Task.cruds" in listed.output

    minted = runner.invoke(
        cli, ["token", "--client", name, "--scope", "system/Task.rs system/Flag.c"]
    )
    assert minted.exit_code == 0, minted.output
    verifier = TokenService(issuer=BASE_URL, key_file=cli_env)
    principal = verifier.verify_access_token(minted.stdout.strip())
    assert principal.client_id == name
    assert principal.scopes == frozenset({"system/Task.rs"})  # Flag.c is not allowed
    assert "granted only system/Task.rs" in minted.stderr  # and the operator is told

    new_keys = tmp_path / "new.json"
    new_keys.write_text(public_jwks(keys["ES384"]))
    assert runner.invoke(cli, ["client", "keys", name, "--jwks", str(new_keys)]).exit_code == 0
    assert "jwks kid=ec-1" in runner.invoke(cli, ["client", "list"]).output

    assert runner.invoke(cli, ["client", "disable", name]).exit_code == 0
    refused = runner.invoke(cli, ["token", "--client", name])
    assert refused.exit_code == 1
    assert "disabled" in refused.output


def test_the_cli_rotates_the_signing_key(cli_env: Path) -> None:
    runner = CliRunner()
    server = TokenService(issuer=BASE_URL, key_file=cli_env)
    before = server.mint(client_id="ehr", scopes=["system/Task.r"])

    rotated = runner.invoke(cli, ["keys", "rotate"])

    assert rotated.exit_code == 0, rotated.output
    kids = [key["kid"] for key in json.loads(cli_env.read_text())["keys"]]
    assert len(kids) == 2
    assert kids[0] in rotated.output
    assert server.verify_access_token(before).client_id == "ehr"
    assert server.public_jwks()["keys"][0]["kid"] == kids[0]


def test_the_cli_removes_clients(cli_env: Path, tmp_path: Path, keys: dict[str, Key]) -> None:
    runner = CliRunner()
    name = f"cli-{uuid.uuid4().hex[:8]}"
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(public_jwks(keys["ES384"]))
    added = runner.invoke(
        cli, ["client", "add", name, "--jwks", str(jwks_file), "--scope", "system/*.rs"]
    )
    assert added.exit_code == 0, added.output

    removed = runner.invoke(cli, ["client", "remove", name])

    assert removed.exit_code == 0, removed.output
    assert "refused within 10 s (WAYMARK_CLIENT_CHECK_SECONDS)" in removed.output
    assert name not in runner.invoke(cli, ["client", "list"]).output
    again = runner.invoke(cli, ["client", "remove", name])
    assert again.exit_code == 1
    assert "no client named" in again.output
    # The name is free again.
    added = runner.invoke(
        cli, ["client", "add", name, "--jwks", str(jwks_file), "--scope", "system/*.rs"]
    )
    assert added.exit_code == 0, added.output


def test_the_cli_token_is_for_the_server_on_waymark_port(
    cli_env: Path, keys: dict[str, Key], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`waymark token` and `waymark serve` derive the base URL alike, from WAYMARK_HOST and
    WAYMARK_PORT when WAYMARK_BASE_URL is not set."""
    import uvicorn

    runner = CliRunner()
    name = f"cli-{uuid.uuid4().hex[:8]}"
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(public_jwks(keys["ES384"]))
    added = runner.invoke(
        cli, ["client", "add", name, "--jwks", str(jwks_file), "--scope", "system/*.rs"]
    )
    assert added.exit_code == 0, added.output
    monkeypatch.delenv("WAYMARK_BASE_URL")
    monkeypatch.setenv("WAYMARK_HOST", "0.0.0.0")  # never bound: uvicorn.run is faked below
    monkeypatch.setenv("WAYMARK_PORT", "9123")
    get_settings.cache_clear()

    minted = runner.invoke(cli, ["token", "--client", name])

    assert minted.exit_code == 0, minted.output
    server_url = "http://127.0.0.1:9123"
    server = TokenService(issuer=server_url, key_file=cli_env)
    assert server.verify_access_token(minted.stdout.strip()).client_id == name
    # `waymark serve` on the same settings serves that base URL.
    monkeypatch.setattr(uvicorn, "run", lambda *_args, **_kwargs: None)
    get_settings.cache_clear()
    served = runner.invoke(cli, ["serve"])
    assert served.exit_code == 0, served.output
    assert get_settings().base_url == server_url


@pytest.mark.parametrize("command", [["token", "--client", "anyone"], ["client", "list"]])
def test_commands_outside_the_repository_create_no_database(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WAYMARK_DATABASE_URL", raising=False)
    monkeypatch.setenv("WAYMARK_TOKEN_KEY_FILE", str(tmp_path / "keys" / "key.json"))
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, command)
    finally:
        get_settings.cache_clear()

    assert result.exit_code == 1
    message = result.stderr.strip()
    assert "\n" not in message
    assert "no database at ./var/waymark.db (WAYMARK_DATABASE_URL)" in message
    assert not (tmp_path / "var").exists()
