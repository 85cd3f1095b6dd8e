"""Schema versions of the SQL stores: each keeps an ordered list of migrations, and the
version it has reached in a one-row table `schema_version`.

A store applies what is missing at start, in one transaction with the new version, under
the lock its `create_schema` already takes (PostgreSQL's advisory lock, SQLite's write
transaction): one process migrates, the others wait and then find nothing to do. Version 1
is the schema as it was before there were versions, every statement IF NOT EXISTS, so a
database made then (tables, no version) is taken from version 0 without a change. A
migration only adds (a table, an index, a column with a default): a rolled-back phoenix
still runs on the schema a newer one left.

Why not Alembic: the stores have three tables, written by hand in two dialects (the "C"
collation and BIGSERIAL here, AUTOINCREMENT there) with no ORM models for it to compare
against. Alembic would bring SQLAlchemy, which nothing else here uses, a migration folder
per dialect and a version table and lock of its own beside the lock the stores already
take; a numbered list of statements, applied in the transaction that records the number,
is all they need.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

VERSION_TABLE = """CREATE TABLE IF NOT EXISTS schema_version (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
)"""
READ_VERSION = "SELECT version FROM schema_version WHERE id = 1"


@dataclass(frozen=True, slots=True)
class Migration:
    """One step of a store's schema: the version it leads to, why, and its statements."""

    version: int
    reason: str
    statements: tuple[str, ...]


def check_migrations(migrations: Sequence[Migration]) -> Sequence[Migration]:
    """`migrations`, once their versions are checked to be 1, 2, 3 ... in order."""
    versions = [migration.version for migration in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"migration versions must be 1, 2, 3 ... in order, not {versions}")
    return migrations


def pending(current: int, migrations: Sequence[Migration]) -> list[Migration]:
    """The migrations to apply to a database at version `current`, in order.

    Nothing if the database is newer than every migration known here (a rollback after an
    upgrade): every migration adds and none removes or renames, so the schema a newer
    phoenix left is one an older one can read and write.
    """
    return [migration for migration in migrations if migration.version > current]
