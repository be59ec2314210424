"""Test databases: every storage and API test runs on SQLite and on a real PostgreSQL.

PostgreSQL comes from WAYMARK_TEST_POSTGRES_URL (default: the local server as user postgres);
each run creates its own database and drops it at the end. When the server cannot be reached
the PostgreSQL tests are skipped with the reason, except under CI=true, where that is a failure.
Schemas are made by Alembic only, once per run; each test starts from empty tables.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import uvicorn
from fastapi import FastAPI
from joserfc import jwt
from joserfc.jwk import ECKey
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.db import make_engine, transaction
from app.fhir.models import Base
from app.main import create_app
from app.migrate import upgrade
from app.pathway import models as _pathway_models  # noqa: F401  (its tables are emptied too)
from app.runtime import Runtime
from app.security.clients import ClientRepository
from tests.fhir_parse import assert_parses_as_r4

DEFAULT_POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
BASE_URL = "http://testserver"


def _postgres_admin_dsn() -> tuple[str, str]:
    url = make_url(os.environ.get("WAYMARK_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL))
    plain = url.set(drivername="postgresql").render_as_string(hide_password=False)
    return plain, url.render_as_string(hide_password=False)


async def _admin(dsn: str, statement: str) -> None:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@contextmanager
def fresh_database(kind: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A new, empty database of ``kind`` (sqlite | postgresql), dropped afterwards."""
    if kind == "sqlite":
        path: Path = tmp_path_factory.mktemp("db") / "waymark.db"
        yield f"sqlite+aiosqlite:///{path}"
        return
    admin_dsn, sqlalchemy_url = _postgres_admin_dsn()
    name = f"waymark_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        asyncio.run(_admin(admin_dsn, f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError, TimeoutError) as error:
        reason = f"PostgreSQL not reachable at {make_url(admin_dsn).host}: {error}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (CI needs PostgreSQL)", pytrace=False)
        pytest.skip(reason)
    try:
        yield make_url(sqlalchemy_url).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(_admin(admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def database_url(database_kind: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A database of each kind for the whole run, migrated once by Alembic."""
    with fresh_database(database_kind, tmp_path_factory) as url:
        upgrade(url)
        yield url


@pytest.fixture(scope="session")
def token_key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Waymark's own signing key for the run (made on first use, as in production)."""
    return tmp_path_factory.mktemp("keys") / "token-signing-key.json"


@pytest.fixture
def settings(database_url: str, token_key_file: Path) -> Settings:
    return Settings(
        database_url=database_url,
        base_url=BASE_URL,
        max_body_bytes=64 * 1024,
        token_key_file=token_key_file,
    )


async def empty_tables(engine: AsyncEngine) -> None:
    tables = [table.name for table in Base.metadata.sorted_tables]
    async with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            await conn.execute(text(f"TRUNCATE {', '.join(tables)}"))
        else:
            for table in tables:
                await conn.execute(text(f"DELETE FROM {table}"))


@pytest.fixture
async def runtime(settings: Settings) -> AsyncIterator[Runtime]:
    engine = make_engine(settings)
    await empty_tables(engine)
    yield Runtime(settings=settings, engine=engine)
    await engine.dispose()


@pytest.fixture
async def app(settings: Settings, runtime: Runtime) -> AsyncIterator[FastAPI]:
    application = create_app(settings, runtime=runtime)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture(scope="session")
def client_key() -> ECKey:
    """The test client's own key pair; the server knows only its public JWKS."""
    return ECKey.generate_key("P-384", parameters={"kid": "test-client-key"}, private=True)


@pytest.fixture
def test_client_id() -> str:
    return "test-ehr"


@pytest.fixture
async def registered_client(runtime: Runtime, client_key: ECKey, test_client_id: str) -> str:
    """A client registered by an administrator, allowed every scope (its tokens carry only
    what each test asks for)."""
    jwks = orjson.dumps({"keys": [client_key.as_dict(private=False)]}).decode()
    async with transaction(runtime.engine, write=True) as conn:
        await ClientRepository(conn).add(
            client_id=test_client_id,
            scopes=["system/*.cruds", "waymark/gate.override"],
            jwks=jwks,
            # The token clock: a client registered after its tokens were issued (by the
            # clinical clock's reckoning, moved by tests) would have them refused.
            now=runtime.token_clock(),
        )
    return test_client_id


async def obtain_token(
    http: httpx.AsyncClient, *, client_id: str, key: ECKey, scopes: str, base_url: str
) -> str:
    """An access token, obtained the way a SMART backend service does: a signed assertion
    sent to the token endpoint."""
    token_url = f"{base_url}/auth/token"
    assertion = jwt.encode(
        {"alg": "ES384", "kid": key.kid, "typ": "JWT"},
        {
            "iss": client_id,
            "sub": client_id,
            "aud": token_url,
            "exp": int(time.time()) + 240,
            "jti": str(uuid.uuid4()),
        },
        key,
        algorithms=["ES384"],
    )
    response = await http.post(
        token_url,
        data={
            "grant_type": "client_credentials",
            "scope": scopes,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion,
        },
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


@pytest.fixture
async def anonymous(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the app with no access token."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL) as http:
        yield http


class ReceivedResources:
    """An httpx response hook keeping every FHIR resource received, so that a fixture can
    check at teardown that each parses with fhirclient's R4 models in strict mode."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    async def __call__(self, response: httpx.Response) -> None:
        await response.aread()
        if response.headers.get("content-type", "").startswith(
            ("application/fhir+json", "application/json")
        ):
            body = response.json()
            if isinstance(body, dict) and "resourceType" in body:
                self.bodies.append(body)

    def assert_all_parse_as_r4(self) -> None:
        for body in self.bodies:
            assert_parses_as_r4(body)


@pytest.fixture
async def scoped_client(
    app: FastAPI, anonymous: httpx.AsyncClient, registered_client: str, client_key: ECKey
) -> AsyncIterator[Callable[[str], Awaitable[httpx.AsyncClient]]]:
    """Make HTTP clients on the app holding a token for the given scopes; every FHIR
    resource they receive must parse as R4."""
    opened: list[httpx.AsyncClient] = []
    received = ReceivedResources()

    async def make(scopes: str) -> httpx.AsyncClient:
        token = await obtain_token(
            anonymous, client_id=registered_client, key=client_key, scopes=scopes, base_url=BASE_URL
        )
        http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url=BASE_URL,
            headers={"Authorization": f"Bearer {token}"},
            event_hooks={"response": [received]},
        )
        opened.append(http)
        return http

    yield make
    for http in opened:
        await http.aclose()
    received.assert_all_parse_as_r4()


@pytest.fixture
async def client(
    app: FastAPI, anonymous: httpx.AsyncClient, registered_client: str, client_key: ECKey
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the app with a token for every scope; every FHIR resource it
    receives must parse as R4."""
    token = await obtain_token(
        anonymous,
        client_id=registered_client,
        key=client_key,
        scopes="system/*.cruds",
        base_url=BASE_URL,
    )
    received = ReceivedResources()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport,
        base_url=BASE_URL,
        event_hooks={"response": [received]},
        headers={"Authorization": f"Bearer {token}"},
    ) as http:
        yield http
    received.assert_all_parse_as_r4()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveServer:
    """The real app under a real uvicorn, in a thread, on a loopback port."""

    def __init__(self, database_url: str, token_key_file: Path, client_key: ECKey) -> None:
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.settings = Settings(
            database_url=database_url, base_url=self.base_url, token_key_file=token_key_file
        )
        self.client_key = client_key
        self.client_id = f"live-{uuid.uuid4().hex[:8]}"
        #: An access token for every scope, obtained from the server's token endpoint.
        self.token = ""
        settings = self.settings
        config = uvicorn.Config(
            create_app(settings),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            access_log=False,
            lifespan="on",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        asyncio.run(self._authorise())
        return self

    async def _authorise(self) -> None:
        engine = make_engine(self.settings)
        jwks = orjson.dumps({"keys": [self.client_key.as_dict(private=False)]}).decode()
        try:
            async with transaction(engine, write=True) as conn:
                await ClientRepository(conn).add(
                    client_id=self.client_id,
                    scopes=["system/*.cruds"],
                    jwks=jwks,
                    now=datetime.now(UTC),
                )
        finally:
            await engine.dispose()
        async with httpx.AsyncClient(timeout=30) as http:
            self.token = await obtain_token(
                http,
                client_id=self.client_id,
                key=self.client_key,
                scopes="system/*.cruds",
                base_url=self.base_url,
            )

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def __exit__(self, *_exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def live_server(database_url: str, token_key_file: Path, client_key: ECKey) -> Iterator[LiveServer]:
    with LiveServer(database_url, token_key_file, client_key) as server:
        yield server
