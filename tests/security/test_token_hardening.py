"""The token endpoint under attack: anonymous callers cannot stall it through a client's JWKS
URL, make it verify signatures for forged requests, learn which clients exist, or crash it
with odd claims; every request is audited; a disabled or removed client's tokens stop working.

Time is the frozen token clock throughout: limits, back-offs and caches move only when a test
advances it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, Key

from app.db import transaction
from app.runtime import Runtime
from app.security import tokens as tokens_module
from app.security.client_keys import ClientKeys
from app.security.clients import Client, ClientRepository
from app.security.tokens import TokenService
from tests.security.token_helpers import (
    INVALID_CLIENT_BODY,
    TOKEN_URL,
    FrozenClock,
    assert_refused,
    assertion,
    register,
    request_token,
    token_event,
)

JWKS_URL = "https://ehr.example/.well-known/jwks.json"


def token_service(
    runtime: Runtime,
    clock: FrozenClock,
    handler: Callable[[httpx.Request], Any] | None = None,
    **limits: Any,
) -> TokenService:
    """The runtime's token service, rebuilt with a fake JWKS server and ``limits``."""
    settings = runtime.settings.model_copy(update=limits)
    transport = None if handler is None else httpx.MockTransport(handler)
    service = TokenService.from_settings(
        settings, clock=clock, http_transport=transport, engine=runtime.engine
    )
    runtime.tokens = service
    return service


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every signature verification of a client assertion (the costly step), by kid."""
    calls: list[str] = []
    real = tokens_module._verify_signature

    def spy(signed: Any, key: Key) -> bool:
        calls.append(str(key.kid))
        return real(signed, key)

    monkeypatch.setattr(tokens_module, "_verify_signature", spy)
    return calls


# -- item 6: a client's JWKS URL ----------------------------------------------------------------


async def test_concurrent_token_requests_share_one_jwks_fetch(
    http: httpx.AsyncClient,
    runtime: Runtime,
    clock: FrozenClock,
    keys: dict[str, Key],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key, waiting = keys["ES384"], 5
    fetches: list[str] = []
    all_waiting = asyncio.Event()

    async def slow_jwks(request: httpx.Request) -> httpx.Response:
        fetches.append(str(request.url))
        await all_waiting.wait()  # answers only once every request waits for keys
        return httpx.Response(200, json={"keys": [key.as_dict(private=False)]})

    token_service(runtime, clock, slow_jwks)
    arrived = 0
    real_key_set = ClientKeys.key_set

    async def counting(self: ClientKeys, client: Client, *, kid: str) -> Any:
        nonlocal arrived
        arrived += 1
        if arrived == waiting:
            all_waiting.set()
        return await real_key_set(self, client, kid=kid)

    monkeypatch.setattr(ClientKeys, "key_set", counting)
    await register(runtime, "ehr", jwks_url=JWKS_URL)

    # The timeout only turns a deadlock (fetches serialised by a lock) into a failure.
    async with asyncio.timeout(60):
        responses = await asyncio.gather(
            *(
                request_token(http, assertion(key, client_id="ehr", now=clock()))
                for _ in range(waiting)
            )
        )

    assert [r.status_code for r in responses] == [200] * waiting
    assert fetches == [JWKS_URL]  # one fetch served all five


async def test_a_failing_jwks_url_is_asked_once_per_backoff_and_never_named(
    http: httpx.AsyncClient,
    runtime: Runtime,
    clock: FrozenClock,
    keys: dict[str, Key],
    caplog: pytest.LogCaptureFixture,
) -> None:
    fetches: list[str] = []

    def down(request: httpx.Request) -> httpx.Response:
        fetches.append(str(request.url))
        return httpx.Response(502, text="upstream proxy error at 10.1.2.3")

    token_service(runtime, clock, down)
    await register(runtime, "ehr", jwks_url=JWKS_URL)

    async def attempt() -> httpx.Response:
        return await request_token(http, assertion(keys["ES384"], client_id="ehr", now=clock()))

    with caplog.at_level(logging.INFO, logger="waymark"):
        first = await attempt()
    second = await attempt()
    assert len(fetches) == 1  # the failure is remembered: no second fetch
    clock.advance(seconds=11)
    await attempt()
    assert len(fetches) == 2  # the first back-off (10 s) is over
    clock.advance(seconds=11)
    await attempt()
    assert len(fetches) == 2  # the second is 20 s
    clock.advance(seconds=10)
    await attempt()
    assert len(fetches) == 3

    for response in (first, second):
        assert response.content == json.dumps(INVALID_CLIENT_BODY, separators=(",", ":")).encode()
        assert "ehr.example" not in response.text
        assert "502" not in response.text
    event = await assert_refused(runtime, first, "no keys")
    assert "ehr.example" not in json.dumps(event)
    logged = [record.getMessage() for record in caplog.records]
    assert any("JWKS fetch failed for client ehr" in line for line in logged), logged
    assert not any("ehr.example" in line or "10.1.2.3" in line for line in logged)


async def test_a_failed_refetch_for_an_unknown_kid_keeps_the_keys_fetched_before(
    http: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock, keys: dict[str, Key]
) -> None:
    key = keys["ES384"]
    served: list[httpx.Response] = [
        httpx.Response(200, json={"keys": [key.as_dict(private=False)]}),
        httpx.Response(500),
    ]
    fetches = 0

    def jwks(_request: httpx.Request) -> httpx.Response:
        nonlocal fetches
        fetches += 1
        return served.pop(0)

    token_service(runtime, clock, jwks)
    await register(runtime, "ehr", jwks_url=JWKS_URL)
    assert (await request_token(http, assertion(key, client_id="ehr", now=clock()))).is_success

    clock.advance(seconds=15)  # past the early-refetch pause: a made-up kid makes one refetch
    made_up = await request_token(http, assertion(key, client_id="ehr", now=clock(), kid="x"))
    await assert_refused(runtime, made_up, "no keys")
    genuine = await request_token(http, assertion(key, client_id="ehr", now=clock()))

    assert genuine.status_code == 200, genuine.text
    assert fetches == 2


async def test_token_work_at_once_is_capped(
    http: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock, keys: dict[str, Key]
) -> None:
    key = keys["ES384"]
    fetching, release = asyncio.Event(), asyncio.Event()

    async def stalling(_request: httpx.Request) -> httpx.Response:
        fetching.set()
        await release.wait()
        return httpx.Response(200, json={"keys": [key.as_dict(private=False)]})

    token_service(runtime, clock, stalling, token_max_concurrent=1)
    await register(runtime, "ehr", jwks_url=JWKS_URL)
    await register(runtime, "lab", key)

    stalled = asyncio.create_task(request_token(http, assertion(key, client_id="ehr", now=clock())))
    await fetching.wait()
    async with asyncio.timeout(60):  # only turns waiting behind the stalled one into a failure
        refused = await request_token(http, assertion(key, client_id="lab", now=clock()))
    release.set()

    assert refused.status_code == 503, refused.text
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["error"] == "temporarily_unavailable"
    assert (await stalled).status_code == 200
    event = await token_event(runtime, refused)
    assert event["outcome"] == "4"
    assert "busy" in event["outcomeDesc"]


# -- item 7: cheap refusals first, and limits on failures ------------------------------------------


async def test_forged_or_malformed_requests_verify_no_signature(
    http: httpx.AsyncClient,
    runtime: Runtime,
    clock: FrozenClock,
    keys: dict[str, Key],
    verifications: list[str],
) -> None:
    key = keys["ES384"]
    await register(runtime, "ehr", key)
    await register(runtime, "off", key)
    async with transaction(runtime.engine, write=True) as conn:
        await ClientRepository(conn).set_enabled("off", enabled=False, now=clock())
    used = assertion(key, client_id="ehr", now=clock())
    assert (await request_token(http, used)).status_code == 200
    verifications.clear()
    impostor = ECKey.generate_key("P-384", parameters={"kid": key.kid})

    cheap = [
        assertion(impostor, client_id="stranger", now=clock()),  # no such client
        assertion(impostor, client_id="off", now=clock()),  # disabled
        used,  # a replay
        assertion(impostor, client_id="ehr", now=clock(), exp_in=-300),  # expired
        assertion(impostor, client_id="ehr", now=clock(), aud="https://elsewhere/token"),
        assertion(impostor, client_id="ehr", now=clock(), kid="unknown-kid"),
        assertion(impostor, client_id="ehr", now=clock(), sub="someone"),
        assertion(impostor, client_id="bad name!", now=clock()),
        "not.a.jwt",
        "x" * 4000,
    ]
    for forged in cheap:
        assert (await request_token(http, forged)).status_code == 400
    assert verifications == []

    # Only an assertion naming a registered, enabled client and one of its keys costs one.
    forged = await request_token(http, assertion(impostor, client_id="ehr", now=clock()))
    await assert_refused(runtime, forged, "signature does not verify")
    assert verifications == [key.kid]


async def test_failed_assertions_are_limited_per_client(
    http: httpx.AsyncClient,
    runtime: Runtime,
    clock: FrozenClock,
    keys: dict[str, Key],
    verifications: list[str],
) -> None:
    key = keys["ES384"]
    impostor = ECKey.generate_key("P-384", parameters={"kid": key.kid})
    token_service(runtime, clock, token_failures_per_client=3, token_failure_window_seconds=60)
    await register(runtime, "ehr", key)
    await register(runtime, "lab", key)

    for _ in range(3):
        forged = await request_token(http, assertion(impostor, client_id="ehr", now=clock()))
        assert forged.status_code == 400
    limited = await request_token(http, assertion(key, client_id="ehr", now=clock()))

    assert limited.status_code == 429, limited.text
    assert limited.headers["retry-after"] == "20"  # one failure more is allowed per 60/3 s
    assert limited.json()["error"] == "temporarily_unavailable"
    assert len(verifications) == 3  # the limited request was not verified
    assert "failure limit" in (await token_event(runtime, limited))["outcomeDesc"]
    # Other clients are not held back by this one's failures.
    other = await request_token(http, assertion(key, client_id="lab", now=clock()))
    assert other.status_code == 200
    # A name nobody registered is limited alike, so the limit does not tell which exist.
    for _ in range(3):
        await request_token(http, assertion(impostor, client_id="nobody", now=clock()))
    unknown = await request_token(http, assertion(impostor, client_id="nobody", now=clock()))
    assert unknown.status_code == 429

    clock.advance(seconds=20)
    again = await request_token(http, assertion(key, client_id="ehr", now=clock()))
    assert again.status_code == 200, again.text


async def test_failed_assertions_are_limited_overall(
    http: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock, keys: dict[str, Key]
) -> None:
    key = keys["ES384"]
    impostor = ECKey.generate_key("P-384", parameters={"kid": key.kid})
    token_service(
        runtime,
        clock,
        token_failures_per_client=100,
        token_failures_global=4,
        token_failure_window_seconds=60,
    )
    await register(runtime, "ehr", key)

    for number in range(4):
        name = f"client-{number}"
        forged = await request_token(http, assertion(impostor, client_id=name, now=clock()))
        assert forged.status_code == 400
    limited = await request_token(http, assertion(key, client_id="ehr", now=clock()))

    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "15"
    clock.advance(seconds=15)
    assert (await request_token(http, assertion(key, client_id="ehr", now=clock()))).is_success


# -- item 10: odd NumericDates -------------------------------------------------------------


@pytest.mark.parametrize(
    ("claim", "value"),
    [
        ("exp", 1e20),
        ("exp", -1),
        ("exp", 1.5),
        ("exp", 10**30),
        ("exp", -(10**30)),
        ("exp", "1999999999"),
        ("exp", True),
        ("exp", []),
        ("exp", {"at": 1}),
        ("exp", None),
        ("iat", 1e20),
        ("iat", "now"),
        ("iat", 10**30),
        ("nbf", -1),
        ("nbf", False),
    ],
)
async def test_odd_numeric_dates_are_invalid_client_not_500(
    http: httpx.AsyncClient,
    runtime: Runtime,
    clock: FrozenClock,
    keys: dict[str, Key],
    claim: str,
    value: Any,
) -> None:
    key = keys["ES384"]
    await register(runtime, "ehr", key)
    claims = {
        "iss": "ehr",
        "sub": "ehr",
        "aud": TOKEN_URL,
        "jti": "odd-date",
        "exp": int(clock().timestamp()) + 60,
        claim: value,
    }
    claims = {name: v for name, v in claims.items() if v is not None}
    signed = jwt.encode({"alg": "ES384", "kid": key.kid}, claims, key, algorithms=["ES384"])

    response = await request_token(http, signed)

    await assert_refused(runtime, response, claim)


async def test_a_deeply_nested_assertion_is_invalid_client_not_500(
    http: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock, keys: dict[str, Key]
) -> None:
    header = base64.urlsafe_b64encode(b'{"alg":"ES384","kid":"ec-1"}').rstrip(b"=").decode()
    payload = base64.urlsafe_b64encode(b"[" * 3000 + b"]" * 3000).rstrip(b"=").decode()

    response = await request_token(http, f"{header}.{payload}.c2ln")

    await assert_refused(runtime, response, "not a signed JWT")


# -- item 19: one answer for every refused assertion -----------------------------------------------


async def test_every_refused_assertion_gets_the_same_answer(
    http: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock, keys: dict[str, Key]
) -> None:
    key = keys["ES384"]
    await register(runtime, "ehr", key)
    await register(runtime, "off", key)
    async with transaction(runtime.engine, write=True) as conn:
        await ClientRepository(conn).set_enabled("off", enabled=False, now=clock())
    impostor = ECKey.generate_key("P-384", parameters={"kid": key.kid})
    used = assertion(key, client_id="ehr", now=clock())
    assert (await request_token(http, used)).status_code == 200

    cases = {
        "not registered": assertion(key, client_id="stranger", now=clock()),
        "disabled": assertion(key, client_id="off", now=clock()),
        "signature": assertion(impostor, client_id="ehr", now=clock()),
        "expired": assertion(key, client_id="ehr", now=clock(), exp_in=-300),
        "used before": used,
        "kid": assertion(key, client_id="ehr", now=clock(), kid="other"),
        "not a signed JWT": "garbage",
    }
    answers = {}
    for reason, signed in cases.items():
        response = await request_token(http, signed)
        await assert_refused(runtime, response, reason)
        answers[reason] = (response.status_code, response.content)

    assert len(set(answers.values())) == 1, answers
    assert b"stranger" not in answers["not registered"][1]


# -- item 18: audit and revocation ----------------------------------------------------------


async def test_grants_and_refusals_are_audited_without_assertion_or_token(
    http: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock, keys: dict[str, Key]
) -> None:
    key = keys["ES384"]
    await register(runtime, "ehr", key, scopes="system/Patient.rs")
    signed = assertion(key, client_id="ehr", now=clock())

    granted = await request_token(http, signed, scope="system/Patient.rs system/Task.rs")
    refused = await request_token(http, signed)  # a replay

    assert granted.status_code == 200
    token = granted.json()["access_token"]
    principal = runtime.tokens.verify_access_token(token)
    grant = await token_event(runtime, granted)
    assert grant["type"] == {
        "system": "http://dicom.nema.org/resources/ontology/DCM",
        "code": "110114",
        "display": "User Authentication",
    }
    assert grant["subtype"][0]["code"] == "ITI-71"
    assert grant["subtype"][0]["system"] == "urn:ihe:event-type-code"
    assert (grant["action"], grant["outcome"]) == ("E", "0")
    client = grant["agent"][0]
    assert client["who"]["identifier"]["value"] == "ehr"
    assert client["policy"] == [f"urn:ietf:params:oauth:jti:{principal.token_id}"]
    details = {d["type"]: d["valueString"] for d in grant["entity"][1]["detail"]}
    assert details["granted scope"] == "system/Patient.rs"
    assert details["requested scope"] == "system/Patient.rs system/Task.rs"
    refusal = await assert_refused(runtime, refused, "used before")
    assert refusal["agent"][0]["who"]["display"] == "claimed by an unauthenticated caller"
    for event in (grant, refusal):
        text = json.dumps(event)
        for secret in (signed, token, *signed.split("."), *token.split(".")):
            assert secret not in text


async def test_form_errors_are_audited_too(http: httpx.AsyncClient, runtime: Runtime) -> None:
    response = await http.post("/auth/token", data={"grant_type": "password"})

    assert response.status_code == 400
    event = await token_event(runtime, response)
    assert event["outcome"] == "4"
    assert "unsupported_grant_type" in event["outcomeDesc"]
    assert event["agent"][0]["who"] == {"display": "unauthenticated caller"}


async def _bearer(http: httpx.AsyncClient, key: Key, clock: FrozenClock) -> dict[str, str]:
    response = await request_token(http, assertion(key, client_id="ehr", now=clock()))
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def test_disabling_a_client_revokes_its_tokens_within_the_check_interval(
    http: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock, keys: dict[str, Key]
) -> None:
    key = keys["ES384"]
    assert runtime.settings.client_check_seconds == 10
    await register(runtime, "ehr", key)
    bearer = await _bearer(http, key, clock)
    assert (await http.get("/Patient", headers=bearer)).status_code == 200

    clock.advance(seconds=1)
    async with transaction(runtime.engine, write=True) as conn:
        await ClientRepository(conn).set_enabled("ehr", enabled=False, now=clock())
    clock.advance(seconds=8)
    # What this worker read of the client 9 s ago (issuing the token) still stands...
    assert (await http.get("/Patient", headers=bearer)).status_code == 200
    clock.advance(seconds=1)
    # ...and at 10 s it reads the registry again: within 10 s of the disabling.
    revoked = await http.get("/Patient", headers=bearer)
    assert revoked.status_code == 401
    assert "revoked" in revoked.text

    clock.advance(seconds=1)
    async with transaction(runtime.engine, write=True) as conn:
        await ClientRepository(conn).set_enabled("ehr", enabled=True, now=clock())
    clock.advance(seconds=11)
    # Enabling the client again does not bring back the tokens revoked; new ones work.
    assert (await http.get("/Patient", headers=bearer)).status_code == 401
    assert (await http.get("/Patient", headers=await _bearer(http, key, clock))).is_success


async def test_removing_a_client_revokes_its_tokens_even_if_its_name_returns(
    http: httpx.AsyncClient, runtime: Runtime, clock: FrozenClock, keys: dict[str, Key]
) -> None:
    key = keys["ES384"]
    await register(runtime, "ehr", key)
    bearer = await _bearer(http, key, clock)
    assert (await http.get("/Patient", headers=bearer)).status_code == 200

    async with transaction(runtime.engine, write=True) as conn:
        await ClientRepository(conn).remove("ehr")
    clock.advance(seconds=11)
    assert (await http.get("/Patient", headers=bearer)).status_code == 401
    await register(runtime, "ehr", key)  # the same name registered anew, later
    clock.advance(seconds=11)

    assert (await http.get("/Patient", headers=bearer)).status_code == 401
    assert (await http.get("/Patient", headers=await _bearer(http, key, clock))).is_success


async def test_a_request_checks_its_client_once_per_interval(
    http: httpx.AsyncClient,
    runtime: Runtime,
    clock: FrozenClock,
    keys: dict[str, Key],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = keys["ES384"]
    await register(runtime, "ehr", key)
    bearer = await _bearer(http, key, clock)
    reads: list[str] = []
    real_get = ClientRepository.get

    async def counting(self: ClientRepository, client_id: str) -> Client | None:
        reads.append(client_id)
        return await real_get(self, client_id)

    monkeypatch.setattr(ClientRepository, "get", counting)
    clock.advance(seconds=11)
    for _ in range(3):
        assert (await http.get("/Patient", headers=bearer)).status_code == 200

    assert reads == ["ehr"]
