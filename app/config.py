"""One Settings object, read from the environment (prefix ``WAYMARK_``)."""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def local_base_url(host: str, port: int) -> str:
    """The URL a server bound to ``host``:``port`` is reached at from this machine."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104
    if ":" in shown:  # an IPv6 address
        shown = f"[{shown}]"
    return f"http://{shown}:{port}"


DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./var/waymark.db"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WAYMARK_", env_file=None, extra="ignore")

    database_url: str = Field(
        default=DEFAULT_DATABASE_URL,
        description="SQLAlchemy async URL: sqlite+aiosqlite:///... or postgresql+asyncpg://...",
    )
    base_url: str = Field(
        default="",
        description="The public base URL of the FHIR endpoint, used in Location, fullUrl and "
        "as the access tokens' issuer and audience. Default: http://WAYMARK_HOST:WAYMARK_PORT "
        "(127.0.0.1 for a wildcard host).",
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    auth: Literal["on", "off"] = Field(
        default="on",
        description="SMART Backend Services on every FHIR interaction. 'off' is accepted only "
        "for a server bound to a loopback address, for local development.",
    )

    token_key_file: Path = Field(
        default=Path("./var/token-signing-key.json"),
        description="Waymark's private JWKS for signing access tokens; made (mode 0600) when "
        "missing. Rotate with `waymark keys rotate`. Every replica needs the same file.",
    )
    access_token_seconds: int = Field(
        default=300, ge=30, le=3600, description="Lifetime of an access token, in seconds."
    )
    client_check_seconds: int = Field(
        default=10,
        ge=0,
        le=300,
        description="How long a worker trusts what it last read of a client's registration: "
        "disabling or removing a client revokes its access tokens within this many seconds.",
    )
    token_max_concurrent: int = Field(
        default=16,
        ge=1,
        le=1000,
        description="Token requests a worker works on at once (before the caller is known); "
        "more are refused with 503 and Retry-After.",
    )
    token_failures_per_client: int = Field(
        default=10,
        ge=1,
        description="Failed client assertions accepted per client name per "
        "WAYMARK_TOKEN_FAILURE_WINDOW_SECONDS, per worker; more get 429 with Retry-After.",
    )
    token_failures_global: int = Field(
        default=100,
        ge=1,
        description="Failed client assertions accepted from all clients together per "
        "WAYMARK_TOKEN_FAILURE_WINDOW_SECONDS, per worker; more get 429 with Retry-After.",
    )
    token_failure_window_seconds: int = Field(default=60, ge=1, le=3600)
    jwks_timeout_seconds: float = Field(
        default=3.0,
        gt=0,
        le=30,
        description="Longest wait for a client's JWKS URL, connection to last byte.",
    )

    # Per worker. A connection opened past the pool is closed when it is returned, so the pool
    # should cover a worker's concurrent requests: below that, every burst reconnects.
    db_pool_size: int = Field(default=32, ge=1, le=200)
    db_max_overflow: int = Field(default=8, ge=0, le=200)

    max_body_bytes: int = Field(
        default=8 * 1024 * 1024, ge=1024, description="Largest request body accepted (413 above)."
    )
    max_bundle_entries: int = Field(
        default=1000,
        ge=1,
        description="Most entries accepted in one transaction or batch Bundle (413 above): "
        "one Bundle is one database transaction, so this bounds how long it holds its locks.",
    )
    max_request_resources: int = Field(
        default=50_000,
        ge=1,
        description="Most resources one request may ask for, counted before anything is read "
        "(413 too-costly above): for a search, its page size (_count) plus 1,000 when it has "
        "_include or _revinclude (the most those add to a page); for a batch or transaction, "
        "the sum over its entries, one for each entry that is not a search.",
    )
    max_response_bytes: int = Field(
        default=32 * 1024 * 1024,
        ge=64 * 1024,
        description="Most bytes of resources one answer may carry, counted as they are read, "
        "shared by every entry of a batch or transaction and by a search's includes (400 "
        "too-costly above, before the response is built; the whole request is refused).",
    )
    default_page_size: int = Field(default=50, ge=1, le=1000)
    max_page_size: int = Field(default=500, ge=1, le=5000)

    # No national FHIR identifier system for the Scottish CHI number is final (DOMAIN.md).
    chi_system: str = "https://fhir.nhs.scot/Id/chi-number"

    @field_validator("base_url")
    @classmethod
    def _strip_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @model_validator(mode="after")
    def _base_url_from_host_and_port(self) -> Settings:
        if not self.base_url:
            self.base_url = local_base_url(self.host, self.port)
        return self

    @model_validator(mode="after")
    def _auth_off_only_on_loopback(self) -> Settings:
        if self.auth == "off" and not is_loopback(self.host):
            raise ValueError(
                f"WAYMARK_AUTH=off is refused for a server bound to {self.host}: turn "
                "authentication off only on a loopback address (127.0.0.1, ::1, localhost)"
            )
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
