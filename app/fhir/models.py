"""Storage tables of the generic FHIR store.

These are storage rows, not API models: a resource's content is the JSON document exactly as
served (the client's validated JSON with ``id`` and ``meta`` set by the server).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Boolean,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
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


class SearchToken(Base):
    """Token search index: one row per (resource, parameter, system, code).

    ``system`` is the empty string when the value has no system, so ``|code`` searches work.
    """

    __tablename__ = "search_token"

    resource_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    param: Mapped[str] = mapped_column(String(64), primary_key=True)
    code: Mapped[str] = mapped_column(Text, primary_key=True)
    system: Mapped[str] = mapped_column(Text, primary_key=True)
    resource_id: Mapped[str] = mapped_column(String(64), primary_key=True)

    __table_args__ = (Index(None, "resource_type", "resource_id"),)
