"""The ``waymark`` command: serve, migrate, openapi, seed, client, token, keys."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from app.config import Settings, get_settings, local_base_url
from app.logs import logging_config

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

    from app.fhir.store import FhirStore

cli = typer.Typer(no_args_is_help=True, add_completion=False, help="Waymark FHIR service")

OPENAPI_PATH = Path("openapi/openapi.json")


@cli.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (WAYMARK_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="Port to bind (WAYMARK_PORT)")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes (WAYMARK_WORKERS)")] = None,
) -> None:
    """Serve the FHIR API with uvicorn."""
    import os

    import uvicorn

    settings = _settings_or_exit()
    host = host or settings.host
    port = port or settings.port
    workers = workers or settings.workers
    # Worker processes read their settings from the environment: pass the CLI's choices on.
    # The base URL follows from them as it does for every command (Settings.base_url).
    os.environ["WAYMARK_HOST"], os.environ["WAYMARK_PORT"] = host, str(port)
    get_settings.cache_clear()
    settings = _settings_or_exit()
    local = local_base_url(host, port)
    typer.echo(f"Waymark FHIR API on {local}")
    typer.echo(f"  CapabilityStatement: {local}/metadata")
    typer.echo(f"  API docs:            {local}/docs")
    typer.echo(f"  Database:            {_redacted(settings.database_url)}")
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=settings.log_level,
        log_config=logging_config(settings.log_level),
        # uvicorn's access log prints query strings, which can hold NHS numbers; Waymark
        # logs one line per request itself (app/api/requests.py).
        access_log=False,
        proxy_headers=True,
    )


def _settings_or_exit() -> Settings:
    """The settings, or a plain message and exit status 2 when they are refused."""
    from pydantic import ValidationError

    try:
        return get_settings()
    except ValidationError as error:
        for problem in error.errors():
            names = [f"WAYMARK_{str(part).upper()}" for part in problem["loc"]]
            where = f"{', '.join(names)}: " if names else ""
            typer.echo(f"waymark: {where}{problem['msg']}", err=True)
        raise typer.Exit(2) from None


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@cli.command()
def migrate(
    revision: Annotated[str, typer.Argument(help="Target revision")] = "head",
) -> None:
    """Bring the database schema up to date (Alembic)."""
    from app.migrate import upgrade

    settings = get_settings()
    upgrade(settings.database_url, revision)
    typer.echo(f"Database at {_redacted(settings.database_url)} migrated to {revision}")


@cli.command()
def openapi(
    output: Annotated[Path, typer.Option(help="Where to write the document")] = OPENAPI_PATH,
) -> None:
    """Write the OpenAPI document the application serves to openapi/openapi.json."""
    from app.main import create_app

    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(openapi_json(create_app()))
    typer.echo(f"Wrote {output}")


def openapi_json(app: object) -> str:
    from fastapi import FastAPI

    assert isinstance(app, FastAPI)
    return json.dumps(app.openapi(), indent=2, sort_keys=True) + "\n"


# -- SMART Backend Services: clients, tokens, signing keys ---------------------------------

client_cli = typer.Typer(
    no_args_is_help=True, help="Register and manage backend clients (SMART Backend Services)"
)
keys_cli = typer.Typer(no_args_is_help=True, help="Waymark's own access-token signing keys")
cli.add_typer(client_cli, name="client")
cli.add_typer(keys_cli, name="keys")

_T = TypeVar("_T")
_ScopeOption = Annotated[
    list[str],
    typer.Option("--scope", help='SMART system scopes, e.g. "system/*.rs system/Task.cruds"'),
]
_JwksOption = Annotated[
    Path | None,
    typer.Option("--jwks", help="File holding the client's public keys (a JWKS)", exists=True),
]
_JwksUrlOption = Annotated[
    str | None, typer.Option("--jwks-url", help="https URL where the client publishes its JWKS")
]


def _in_transaction(work: Callable[[AsyncConnection], Awaitable[_T]], *, write: bool = True) -> _T:
    """Run ``work`` in one database transaction (the database must exist and be migrated)."""
    import asyncio

    from sqlalchemy.exc import OperationalError, ProgrammingError

    from app.db import make_engine, transaction
    from app.security.clients import ClientRegistryError

    settings = _settings_or_exit()
    _require_database(settings)

    async def run() -> _T:
        engine = make_engine(settings)
        try:
            async with transaction(engine, write=write) as conn:
                return await work(conn)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(run())
    except ClientRegistryError as error:
        typer.echo(f"waymark: {error}", err=True)
        raise typer.Exit(1) from None
    except (OperationalError, ProgrammingError) as error:
        typer.echo(
            f"waymark: the database refused ({type(error.orig).__name__}); "
            "is it migrated (waymark migrate)?",
            err=True,
        )
        raise typer.Exit(1) from None


def _require_database(settings: Settings) -> None:
    """Exit with a one-line message when the SQLite database file does not exist: only
    ``waymark migrate`` makes a database (opening a missing file would create an empty one)."""
    from sqlalchemy.engine import make_url

    url = make_url(settings.database_url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return
    if url.query.get("uri") or url.database.startswith("file:"):
        return
    if not Path(url.database).is_file():
        typer.echo(
            f"waymark: there is no database at {url.database} (WAYMARK_DATABASE_URL): set "
            "WAYMARK_DATABASE_URL to the server's database, or make one with `waymark migrate`",
            err=True,
        )
        raise typer.Exit(1)


def _jwks_text(jwks: Path | None) -> str | None:
    return None if jwks is None else jwks.read_text()


@client_cli.command("add")
def client_add(
    name: Annotated[str, typer.Argument(help="The client's name: its OAuth client_id")],
    scope: _ScopeOption,
    jwks: _JwksOption = None,
    jwks_url: _JwksUrlOption = None,
    key_file: Annotated[
        Path | None,
        typer.Option(
            "--key-file",
            help="For a client run on this machine (a local operator): its private key file, "
            "made (ES384, mode 0600) if missing; the public key is registered",
        ),
    ] = None,
    exist_ok: Annotated[
        bool, typer.Option("--exist-ok", help="Succeed, changing nothing, if NAME is registered")
    ] = False,
) -> None:
    """Register a client with its public keys (--jwks FILE, --jwks-url URL or --key-file FILE)
    and the scopes it may be granted."""
    from app.clock import system_clock
    from app.security.clients import ClientRepository

    if sum(option is not None for option in (jwks, jwks_url, key_file)) != 1:
        typer.echo("waymark: give exactly one of --jwks, --jwks-url or --key-file", err=True)
        raise typer.Exit(2)

    async def add(conn: AsyncConnection) -> bool:
        repository = ClientRepository(conn)
        if exist_ok and await repository.get(name) is not None:
            return False
        public = _local_key(key_file, name) if key_file is not None else _jwks_text(jwks)
        await repository.add(
            client_id=name, scopes=scope, jwks=public, jwks_url=jwks_url, now=system_clock()
        )
        return True

    if _in_transaction(add):
        typer.echo(f"Registered client {name}")
    else:
        typer.echo(f"Client {name} is already registered")


def _local_key(path: Path, client_id: str) -> str:
    """The public JWKS of the private key in ``path``, made there first if missing."""
    import os
    from datetime import UTC, datetime

    from joserfc.jwk import ECKey

    if path.exists():
        kept = ECKey.import_key(json.loads(path.read_text()))
        return json.dumps({"keys": [kept.as_dict(private=False)]})
    kid = f"{client_id}-{datetime.now(UTC):%Y%m%d%H%M%S}"
    key = ECKey.generate_key("P-384", parameters={"kid": kid, "alg": "ES384"}, private=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        json.dump(key.as_dict(private=True), file)
    return json.dumps({"keys": [key.as_dict(private=False)]})


@client_cli.command("list")
def client_list() -> None:
    """List the registered clients, their keys and scopes."""
    from app.security.clients import Client, ClientRepository

    async def all_clients(conn: AsyncConnection) -> list[Client]:
        return await ClientRepository(conn).all()

    for client in _in_transaction(all_clients, write=False):
        if client.jwks is not None:
            kids = [key.get("kid", "?") for key in json.loads(client.jwks)["keys"]]
            keys = f"jwks kid={','.join(kids)}"
        else:
            keys = f"jwks-url {client.jwks_url}"
        state = "enabled" if client.enabled else "disabled"
        typer.echo(f"{client.client_id}\t{state}\t{keys}\t{' '.join(client.allowed_scopes)}")


def _set_enabled(name: str, *, enabled: bool) -> None:
    from app.clock import system_clock
    from app.security.clients import ClientRepository

    async def change(conn: AsyncConnection) -> None:
        await ClientRepository(conn).set_enabled(name, enabled=enabled, now=system_clock())

    _in_transaction(change)


def _revocation_note() -> str:
    seconds = _settings_or_exit().client_check_seconds
    return f"its access tokens are refused within {seconds} s (WAYMARK_CLIENT_CHECK_SECONDS)"


@client_cli.command("disable")
def client_disable(name: Annotated[str, typer.Argument(help="The client's name")]) -> None:
    """Refuse the client new access tokens and revoke those it holds (every server notices
    within WAYMARK_CLIENT_CHECK_SECONDS)."""
    _set_enabled(name, enabled=False)
    typer.echo(f"Disabled client {name}: {_revocation_note()}")


@client_cli.command("enable")
def client_enable(name: Annotated[str, typer.Argument(help="The client's name")]) -> None:
    """Accept a disabled client again (tokens revoked when it was disabled stay revoked)."""
    _set_enabled(name, enabled=True)
    typer.echo(f"Enabled client {name}")


@client_cli.command("remove")
def client_remove(name: Annotated[str, typer.Argument(help="The client's name")]) -> None:
    """Forget a client: its access tokens are revoked (every server notices within
    WAYMARK_CLIENT_CHECK_SECONDS) and its name may be registered again."""
    from app.security.clients import ClientRepository

    async def remove(conn: AsyncConnection) -> None:
        await ClientRepository(conn).remove(name)

    _in_transaction(remove)
    typer.echo(f"Removed client {name}: {_revocation_note()}")


@client_cli.command("keys")
def client_keys(
    name: Annotated[str, typer.Argument(help="The client's name")],
    jwks: _JwksOption = None,
    jwks_url: _JwksUrlOption = None,
) -> None:
    """Replace the client's public keys (key rotation): assertions signed by keys no longer
    registered are refused from now on."""
    from app.security.clients import ClientRepository

    async def replace(conn: AsyncConnection) -> None:
        await ClientRepository(conn).replace_keys(name, jwks=_jwks_text(jwks), jwks_url=jwks_url)

    _in_transaction(replace)
    typer.echo(f"Replaced the keys of client {name}")


@cli.command("token")
def token(
    client: Annotated[str, typer.Option("--client", help="A registered client's name")],
    scope: Annotated[
        list[str] | None,
        typer.Option("--scope", help="Scopes wanted (default: all the client may have)"),
    ] = None,
) -> None:
    """Print an access token for a registered client, for trying the API by hand.

    The token is for the server at WAYMARK_BASE_URL (by default http://WAYMARK_HOST:
    WAYMARK_PORT, as `waymark serve` derives it) and signed with WAYMARK_TOKEN_KEY_FILE, so
    run it with the server's settings. It reads the database and never creates one.
    """
    from app.security.clients import ClientRegistryError, ClientRepository
    from app.security.scopes import narrow
    from app.security.tokens import TokenService

    async def grant(conn: AsyncConnection) -> list[str]:
        found = await ClientRepository(conn).get(client)
        if found is None or not found.enabled:
            state = "not registered" if found is None else "disabled"
            raise ClientRegistryError(f"client {client!r} is {state}")
        requested = [s for text in scope or [] for s in text.split()] or found.allowed_scopes
        granted = narrow(requested, found.allowed_scopes)
        if not granted:
            raise ClientRegistryError(f"none of those scopes is allowed for client {client!r}")
        return granted

    granted = _in_transaction(grant, write=False)
    asked = [s for text in scope or [] for s in text.split()]
    if asked and sorted(granted) != sorted(asked):
        # The token carries less than was asked for: say so rather than fail later with 403.
        typer.echo(f"waymark: granted only {' '.join(granted)}", err=True)
    tokens = TokenService.from_settings(_settings_or_exit())
    typer.echo(tokens.mint(client_id=client, scopes=granted))


@keys_cli.command("rotate")
def keys_rotate() -> None:
    """Make a new signing key for access tokens; the previous key still verifies the tokens
    it signed until they expire. Running servers notice the change without a restart."""
    from app.security.signing_keys import SigningKeys

    path = _settings_or_exit().token_key_file
    new = SigningKeys(path).rotate()
    typer.echo(f"New signing key {new.kid} in {path}")


def _pathway_store(conn: AsyncConnection) -> FhirStore:
    """A store acting for the server, with the pathway rules installed."""
    from app import pathway
    from app.runtime import Runtime

    runtime = Runtime(settings=_settings_or_exit(), engine=conn.engine, hooks=pathway.hooks())
    return runtime.store(conn)


@cli.command()
def seed() -> None:
    """Load Waymark's CodeSystems, ValueSets and pathway definitions (missing or changed)."""
    from app.pathway.seed import load_definitions

    async def load(conn: AsyncConnection) -> list[str]:
        return await load_definitions(_pathway_store(conn))

    written = _in_transaction(load)
    typer.echo(f"Seed definitions: {len(written)} written" + _listed(written))


@cli.command("seed-demo")
def seed_demo() -> None:
    """Load the definitions and a demo directory: two areas (mainland and island) with
    services of every kind. Safe to run again."""
    from app.pathway.seed import load_demo

    settings = _settings_or_exit()

    async def load(conn: AsyncConnection) -> list[str]:
        return await load_demo(
            _pathway_store(conn),
            conn,
            base_url=settings.base_url,
            max_entries=settings.max_bundle_entries,
        )

    written = _in_transaction(load)
    typer.echo(f"Demo data loaded ({len(written)} files or definitions written)" + _listed(written))


@cli.command("rebuild-projections")
def rebuild_projections() -> None:
    """Rebuild the pathway projections (referrals, timelines) from the resources' history."""
    from app.pathway.projections import rebuild

    async def run(conn: AsyncConnection) -> int:
        return await rebuild(_pathway_store(conn))

    typer.echo(f"Rebuilt the projections of {_in_transaction(run)} referrals")


gates_cli = typer.Typer(no_args_is_help=True, help="Gates acting on referrals")
cli.add_typer(gates_cli, name="gates")


@gates_cli.command("reevaluate")
def gates_reevaluate(
    batch: Annotated[int, typer.Option(help="Referrals per transaction")] = 200,
) -> None:
    """Release held referrals whose gates are now met (time passed, or evidence arrived).

    Idempotent, and safe to run from a scheduler on several replicas at once: each referral is
    locked while it is looked at, and one another run holds is skipped (PostgreSQL).
    """
    from app.pathway.gate_release import reevaluate_held

    released = looked = 0
    after = ""
    while True:

        async def step(conn: AsyncConnection, after: str = after) -> tuple[int, int, str | None]:
            return await reevaluate_held(_pathway_store(conn), after=after, limit=batch)

        seen, freed, last = _in_transaction(step)
        looked, released = looked + seen, released + freed
        if last is None:
            break
        after = last
    typer.echo(f"Looked at {looked} held referrals; released {released}")


def _listed(names: list[str]) -> str:
    return "".join(f"\n  {name}" for name in names)


def main() -> None:
    cli()
