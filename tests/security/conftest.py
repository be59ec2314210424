"""Fixtures of the security tests: client key pairs, a frozen token clock, an HTTP client."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from joserfc.jwk import ECKey, Key, RSAKey

from app.runtime import Runtime
from tests.conftest import BASE_URL
from tests.security.token_helpers import FrozenClock


@pytest.fixture(scope="module")
def keys() -> dict[str, Key]:
    """A key pair per algorithm SMART allows for client assertions."""
    return {
        "RS384": RSAKey.generate_key(2048, parameters={"kid": "rsa-1"}),
        "ES384": ECKey.generate_key("P-384", parameters={"kid": "ec-1"}),
    }


@pytest.fixture
def clock(runtime: Runtime) -> FrozenClock:
    frozen = FrozenClock()
    runtime.token_clock = frozen
    return frozen


@pytest.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL) as c:
        yield c
