"""Versioned ``.sql`` migrations, applied in order and recorded in ``schema_migrations``.

A migration file is ``NNNN_name.sql``: statements separated by a line holding only ``;``
or by a ``;`` at the end of a line. ``{db}`` is replaced by the target database, because
ClickHouse views must name the tables they read fully. An applied migration is never
edited: its SHA-256 is recorded and a changed file stops ``meter migrate``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

from warehouse.backfill import Progress, backfill_coarse, backfill_months, log_progress
from warehouse.client import Warehouse
from warehouse.cluster_ddl import for_cluster
from warehouse.errors import MigrationError
from warehouse.ledger_copy import copy_ledger, copy_moved_aside

# Work a migration needs besides its SQL: run after its statements, before it is recorded,
# so a failure leaves it pending and ``meter migrate`` does it again (it must be rerunnable).
_AFTER: dict[int, Callable[[Warehouse, Progress], object]] = {
    11: backfill_coarse,
    13: lambda warehouse, _: copy_ledger(warehouse),  # it logs its own progress, by month
    16: backfill_months,
    20: lambda warehouse, _: copy_moved_aside(warehouse),  # by day, with its own progress
}

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

_LEDGER_DDL = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version UInt32,
    name String,
    sha256 String,
    applied_at DateTime('UTC')
) ENGINE = MergeTree() ORDER BY version
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.sql.encode("utf-8")).hexdigest()

    def statements(self, database: str) -> list[str]:
        text = "\n".join(
            line for line in self.sql.splitlines() if not line.lstrip().startswith("--")
        )
        parts = re.split(r";\s*(?:\n|$)", text.replace("{db}", database))
        return [part.strip() for part in parts if part.strip()]


def available() -> list[Migration]:
    found = []
    for entry in resources.files("warehouse").joinpath("migrations").iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migrations share a version: {versions}")
    return found


def view_names() -> list[str]:
    """Every view the migrations create, in the order they first appear: the finance
    interface (docker/clickhouse/finance.sql grants each of them)."""
    names: list[str] = []
    for migration in available():
        for name in re.findall(r"CREATE VIEW IF NOT EXISTS (\w+)", migration.sql):
            if name not in names:
                names.append(name)
    return names


def applied(warehouse: Warehouse) -> dict[int, tuple[str, str]]:
    rows = warehouse.execute("SELECT version, name, sha256 FROM schema_migrations")
    return {int(v): (name, digest) for v, name, digest in rows}


def pending(warehouse: Warehouse) -> list[Migration]:
    """The migrations not yet applied to the database (all of them on one never migrated)."""
    ((has_ledger,),) = warehouse.execute(
        "SELECT count() FROM system.tables WHERE database = %(db)s AND name = 'schema_migrations'",
        {"db": warehouse.settings.database},
    )
    done = applied(warehouse) if has_ledger else {}
    return [m for m in available() if m.version not in done]


def migrate(warehouse: Warehouse, progress: Progress = log_progress) -> list[Migration]:
    """Apply pending migrations in order; returns the ones applied now. ``progress`` hears
    about long steps (a backfill: days done, days in all, the day)."""
    warehouse.ensure_database()
    settings = warehouse.settings
    cluster, database = settings.cluster, settings.database

    def shaped(statement: str, version: int) -> str:
        return for_cluster(statement, cluster, database, version) if cluster else statement

    warehouse.execute(shaped(_LEDGER_DDL.strip(), 0))
    done = applied(warehouse)
    newly: list[Migration] = []
    for migration in available():
        if migration.version in done:
            name, digest = done[migration.version]
            if digest != migration.sha256:
                raise MigrationError(
                    f"migration {migration.version:04d}_{name} changed after it was applied; "
                    "add a new migration instead"
                )
            continue
        for statement in migration.statements(warehouse.settings.database):
            if _column_exists(warehouse, statement) or _renamed(warehouse, statement):
                continue  # an ADD COLUMN or RENAME that ran before the migration failed
            try:
                warehouse.execute(shaped(statement, migration.version))
            except Exception as exc:
                raise MigrationError(
                    f"migration {migration.version:04d}_{migration.name} failed on:\n"
                    f"{statement}\n{exc}"
                ) from exc
        after = _AFTER.get(migration.version)
        if after is not None:
            after(warehouse, progress)
        warehouse.execute(
            "INSERT INTO schema_migrations (version, name, sha256, applied_at) "
            "SELECT %(v)s, %(n)s, %(d)s, now()",
            {"v": migration.version, "n": migration.name, "d": migration.sha256},
        )
        newly.append(migration)
    return newly


_ADD_COLUMN = re.compile(r"^ALTER TABLE (\w+) ADD COLUMN (\w+) ", re.IGNORECASE)


def _column_exists(warehouse: Warehouse, statement: str) -> bool:
    """Whether ``statement`` adds a column the table already has. ClickHouse 18.16 has no
    ``ADD COLUMN IF NOT EXISTS``, so this is how such a migration can run again."""
    match = _ADD_COLUMN.match(statement)
    if match is None:
        return False
    rows = warehouse.execute(
        "SELECT count() FROM system.columns WHERE database = %(db)s AND table = %(t)s "
        "AND name = %(c)s",
        {"db": warehouse.settings.database, "t": match.group(1), "c": match.group(2)},
    )
    return bool(rows[0][0])


_RENAME = re.compile(r"^RENAME TABLE (\w+) TO (\w+)$", re.IGNORECASE)


def _renamed(warehouse: Warehouse, statement: str) -> bool:
    """Whether ``statement`` renames a table to a name that already exists: a rerun of a
    migration that failed after its RENAME (there is no RENAME IF EXISTS on 18.16)."""
    match = _RENAME.match(statement.strip())
    if match is None:
        return False
    rows = warehouse.execute(
        "SELECT count() FROM system.tables WHERE database = %(db)s AND name = %(t)s",
        {"db": warehouse.settings.database, "t": match.group(2)},
    )
    return bool(rows[0][0])
