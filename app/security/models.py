"""Storage tables of the SMART Backend Services client registry.

They share the FHIR store's MetaData (and so its naming convention), which is what Alembic
compares the migrations against.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    PrimaryKeyConstraint,
    Table,
    Text,
)

from app.fhir.models import Base

#: A registered backend client: its name is its OAuth ``client_id``. Its public keys are held
#: here (``jwks``) or fetched from the client's own URL (``jwks_url``), never both.
auth_client = Table(
    "auth_client",
    Base.metadata,
    Column("client_id", Text, primary_key=True),
    Column("jwks", Text, nullable=True),
    Column("jwks_url", Text, nullable=True),
    Column("allowed_scopes", Text, nullable=False),  # space-separated SMART scopes
    Column("enabled", Boolean, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # Access tokens issued until this moment are refused (set when the client is disabled).
    Column("tokens_revoked_at", DateTime(timezone=True), nullable=True),
)

#: The ``jti`` of every client assertion accepted, kept until the assertion expires, so that a
#: replayed assertion is refused. Rows past ``expires_at`` are pruned when tokens are issued.
auth_jti = Table(
    "auth_jti",
    Base.metadata,
    Column(
        "client_id",
        Text,
        ForeignKey("auth_client.client_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("jti", Text, nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("client_id", "jti"),
    Index(None, "expires_at"),
)
