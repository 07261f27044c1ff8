"""One set of migration files for both shapes: a statement as written for one server,
rewritten for a replicated cluster.

On a cluster (``?cluster=NAME`` in the ClickHouse URL) every DDL statement runs
``ON CLUSTER`` (each replica applies it; the statement returns once all have), with its
table named with the database, and every MergeTree engine is its Replicated variant. Each
replicated table's ZooKeeper path names the database, the table and the migration that
created it, so a table renamed aside and created again under its old name (migration 0012)
gets a path of its own. Data statements (``INSERT … SELECT`` of a backfill) are not
rewritten: written on one replica, the rows replicate.
"""

from __future__ import annotations

import re

_TARGET = re.compile(
    r"^(?P<verb>CREATE TABLE IF NOT EXISTS|CREATE VIEW IF NOT EXISTS|DROP TABLE IF EXISTS"
    r"|ALTER TABLE)\s+(?P<name>[\w.]+)",
    re.IGNORECASE,
)
_RENAME = re.compile(r"^RENAME TABLE\s+(?P<old>[\w.]+)\s+TO\s+(?P<new>[\w.]+)\s*$", re.IGNORECASE)
_ENGINE = re.compile(r"ENGINE\s*=\s*(?P<kind>Replacing)?MergeTree\((?P<args>[^)]*)\)")


def _qualified(name: str, database: str) -> str:
    return name if "." in name else f"{database}.{name}"


def for_cluster(statement: str, cluster: str, database: str, version: int) -> str:
    """``statement`` of migration ``version`` as it runs on ``cluster``."""
    renamed = _RENAME.match(statement)
    if renamed:
        old, new = (_qualified(renamed.group(g), database) for g in ("old", "new"))
        return f"RENAME TABLE {old} TO {new} ON CLUSTER {cluster}"
    target = _TARGET.match(statement)
    if target is None:
        return statement
    name = _qualified(target.group("name"), database)
    table = name.split(".", 1)[1]
    out = f"{target.group('verb')} {name} ON CLUSTER {cluster}{statement[target.end() :]}"

    def replicated(engine: re.Match[str]) -> str:
        path = f"'/clickhouse/tables/{{shard}}/{database}/{table}_{version:04d}'"
        args = ", ".join(a for a in (path, "'{replica}'", engine.group("args").strip()) if a)
        return f"ENGINE = Replicated{engine.group('kind') or ''}MergeTree({args})"

    return _ENGINE.sub(replicated, out)
