"""The ``waymark`` command: serve, migrate, openapi."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from app.config import get_settings

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

    settings = get_settings()
    host = host or settings.host
    port = port or settings.port
    workers = workers or settings.workers
    # Worker processes read their settings from the environment: pass the CLI's choices on.
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104
    os.environ["WAYMARK_HOST"], os.environ["WAYMARK_PORT"] = host, str(port)
    os.environ.setdefault("WAYMARK_BASE_URL", f"http://{shown}:{port}")
    get_settings.cache_clear()
    settings = get_settings()
    typer.echo(f"Waymark FHIR API on http://{shown}:{port}")
    typer.echo(f"  CapabilityStatement: http://{shown}:{port}/metadata")
    typer.echo(f"  API docs:            http://{shown}:{port}/docs")
    typer.echo(f"  Database:            {_redacted(settings.database_url)}")
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=settings.log_level,
        # uvicorn's access log prints query strings, which can hold NHS numbers.
        access_log=False,
        proxy_headers=True,
    )


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


def main() -> None:
    cli()
