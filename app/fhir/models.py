"""Storage tables of the generic FHIR store.

These are storage rows, not API models: a resource's content is the JSON document exactly as
served (the client's validated JSON with ``id`` and ``meta`` set by the server).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Resource(Base):
    """The current version of every resource (a tombstone row once deleted)."""

    __tablename__ = "resource"

    resource_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version_id: Mapped[int] = mapped_column(Integer)
    last_updated: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    content: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)

    __table_args__ = (Index(None, "resource_type", "last_updated"),)


class ResourceVersion(Base):
    """Every version of every resource, the current one included; deletes are tombstones."""

    __tablename__ = "resource_version"

    resource_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_updated: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    method: Mapped[str] = mapped_column(String(8))
    content: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)

    __table_args__ = (
        Index(None, "resource_type", "last_updated"),
        Index(None, "last_updated"),
    )


# The search index: one table per parameter type, kept in step with every write from the
# search-parameter registry (app/fhir/search). Rows carry no key of their own: they are found by
# (resource_type, param, value) when searching and by (resource_type, resource_id) when replaced.
# Values of any length are kept whole; what is indexed is bounded (app/fhir/search/index.py,
# INDEX_KEY_LENGTH), as PostgreSQL refuses a B-tree entry over ~2,700 bytes: a key column of
# the value's first characters beside it, or for a reference's target a key that stands for it.

search_token = Table(
    "search_token",
    Base.metadata,
    Column("resource_type", String(64), nullable=False),
    Column("param", String(64), nullable=False),
    Column("system", Text, nullable=False),  # '' when the value has no system (so |code works)
    Column("code", Text, nullable=False),
    Column("code_key", Text, nullable=False),  # the start of code: matched, then code confirms
    Column("resource_id", String(64), nullable=False),
    # resource_id last: a search with several criteria intersects index entries before it
    # reads any resource (bench/README.md, "Scale benchmark").
    Index(None, "resource_type", "param", "code_key", "resource_id"),
    Index(None, "resource_type", "resource_id"),
)

search_string = Table(
    "search_string",
    Base.metadata,
    Column("resource_type", String(64), nullable=False),
    Column("param", String(64), nullable=False),
    Column("value", Text, nullable=False),  # normalised: case and accents folded
    Column("exact", Text, nullable=False),  # as written, for :exact
    Column("value_key", Text, nullable=False),  # the start of value: matched, then confirmed
    Column("resource_id", String(64), nullable=False),
    Index(None, "resource_type", "param", "value_key"),
    Index(None, "resource_type", "resource_id"),
)

search_reference = Table(
    "search_reference",
    Base.metadata,
    Column("resource_type", String(64), nullable=False),
    Column("param", String(64), nullable=False),
    Column("target_type", String(64), nullable=False),  # '' for an absolute URL elsewhere
    Column("target_id", Text, nullable=False),  # the id, or the URL (reference_key of a long one)
    Column("resource_id", String(64), nullable=False),
    Index(None, "resource_type", "param", "target_id", "target_type", "resource_id"),
    Index(None, "target_id", "target_type"),
    Index(None, "resource_type", "resource_id"),
)

search_date = Table(
    "search_date",
    Base.metadata,
    Column("resource_type", String(64), nullable=False),
    Column("param", String(64), nullable=False),
    Column("low", DateTime(timezone=True), nullable=False),  # inclusive
    Column("high", DateTime(timezone=True), nullable=False),  # exclusive
    Column("resource_id", String(64), nullable=False),
    Index(None, "resource_type", "param", "low", "high"),
    Index(None, "resource_type", "resource_id"),
)

search_quantity = Table(
    "search_quantity",
    Base.metadata,
    Column("resource_type", String(64), nullable=False),
    Column("param", String(64), nullable=False),
    Column("value", Numeric, nullable=False),
    Column("system", Text, nullable=False),
    Column("code", Text, nullable=False),
    Column("resource_id", String(64), nullable=False),
    Index(None, "resource_type", "param", "value"),
    Index(None, "resource_type", "resource_id"),
)

INDEX_TABLES = (search_token, search_string, search_reference, search_date, search_quantity)
