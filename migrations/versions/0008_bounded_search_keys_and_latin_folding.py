"""Search indexes hold bounded keys, and string values are folded with the Latin letters table

PostgreSQL refuses a B-tree entry over ~2,700 bytes, so a family name, identifier or code of
a few thousand characters could not be indexed and its write failed. Now search_string and
search_token keep each value whole, unindexed, beside an indexed key of its first
INDEX_KEY_LENGTH characters (value_key, code_key); a reference's target too long to index is
kept as reference_key() of it. String search folds Latin letters that do not decompose (Ł, Đ,
Ø, Æ, ...) to their base letters, so existing rows holding such letters are folded again.

The fold is the application's (app/fhir/search/index.py), which is what searches compare
with: should it change again, a migration of its own folds the rows again.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 21:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.fhir.search.index import INDEX_KEY_LENGTH, normalise, reference_key

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD_STRING_INDEX = "ix_search_string_resource_type_param_value"
_NEW_STRING_INDEX = "ix_search_string_resource_type_param_value_key"
_OLD_CODE_INDEX = "ix_search_token_resource_type_param_code_resource_id"
_NEW_CODE_INDEX = "ix_search_token_resource_type_param_code_key_resource_id"


def upgrade() -> None:
    op.drop_index(_OLD_STRING_INDEX, table_name="search_string")
    op.drop_index(_OLD_CODE_INDEX, table_name="search_token")
    op.add_column("search_string", sa.Column("value_key", sa.Text(), nullable=True))
    op.add_column("search_token", sa.Column("code_key", sa.Text(), nullable=True))
    connection = op.get_bind()
    _fold_again(connection)
    # index_key() in SQL: substr counts characters on both databases, as Python's slices do.
    connection.execute(
        sa.text("UPDATE search_string SET value_key = substr(value, 1, :n)"),
        {"n": INDEX_KEY_LENGTH},
    )
    connection.execute(
        sa.text("UPDATE search_token SET code_key = substr(code, 1, :n)"),
        {"n": INDEX_KEY_LENGTH},
    )
    _key_long_references(connection)
    with op.batch_alter_table("search_string") as batch:
        batch.alter_column("value_key", existing_type=sa.Text(), nullable=False)
    with op.batch_alter_table("search_token") as batch:
        batch.alter_column("code_key", existing_type=sa.Text(), nullable=False)
    op.create_index(_NEW_STRING_INDEX, "search_string", ["resource_type", "param", "value_key"])
    op.create_index(
        _NEW_CODE_INDEX, "search_token", ["resource_type", "param", "code_key", "resource_id"]
    )


def _fold_again(connection: sa.Connection) -> None:
    """Fold every non-ASCII string value with today's normalise() (an ASCII one folds as it
    did: lower-cased and stripped). A text is ASCII exactly when its length in characters is
    its length in bytes."""
    octets = (
        "octet_length(exact)"
        if connection.dialect.name == "postgresql"
        else "length(CAST(exact AS BLOB))"
    )
    rows = connection.execute(
        sa.text(
            f"SELECT DISTINCT exact, value FROM search_string WHERE length(exact) <> {octets}"  # noqa: S608
        )
    ).all()
    changed = {exact: folded for exact, value in rows if (folded := normalise(exact)) != value}
    if not changed:
        return
    connection.execute(sa.text("CREATE TEMPORARY TABLE refolded (exact TEXT, value TEXT)"))
    connection.execute(
        sa.text("INSERT INTO refolded (exact, value) VALUES (:exact, :value)"),
        [{"exact": exact, "value": value} for exact, value in changed.items()],
    )
    connection.execute(
        sa.text(
            "UPDATE search_string SET value = refolded.value FROM refolded "
            "WHERE search_string.exact = refolded.exact"
        )
    )
    connection.execute(sa.text("DROP TABLE refolded"))


def _key_long_references(connection: sa.Connection) -> None:
    """A target too long to index (which only SQLite could have stored) is kept by its key."""
    long_targets = connection.execute(
        sa.text("SELECT DISTINCT target_id FROM search_reference WHERE length(target_id) > :n"),
        {"n": INDEX_KEY_LENGTH},
    ).scalars()
    keyed = [{"old": target, "new": reference_key(target)} for target in long_targets]
    if keyed:
        connection.execute(
            sa.text("UPDATE search_reference SET target_id = :new WHERE target_id = :old"),
            keyed,
        )


def downgrade() -> None:
    """The keys go. Values stay folded by the newer rule (the older one then misses them when
    searched with a letter such as Ł that it kept), and long references stay keyed. Rows too
    long for the older indexes make the downgrade fail on PostgreSQL: remove those first."""
    op.drop_index(_NEW_CODE_INDEX, table_name="search_token")
    op.drop_index(_NEW_STRING_INDEX, table_name="search_string")
    with op.batch_alter_table("search_token") as batch:
        batch.drop_column("code_key")
    with op.batch_alter_table("search_string") as batch:
        batch.drop_column("value_key")
    op.create_index(
        _OLD_CODE_INDEX, "search_token", ["resource_type", "param", "code", "resource_id"]
    )
    op.create_index(_OLD_STRING_INDEX, "search_string", ["resource_type", "param", "value"])
