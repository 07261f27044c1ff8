"""Mutations on the real server, for tests that change stored rows on purpose."""

from __future__ import annotations

import time
from typing import Any


def mutate(warehouse: Any, sql: str, params: dict[str, Any] | None = None) -> None:
    """Run ``sql`` (an ``ALTER TABLE … UPDATE/DELETE``) and wait until every mutation of
    the database is done: ClickHouse applies them in the background."""
    warehouse.execute(sql, params)
    deadline = time.monotonic() + 60
    while warehouse.execute(
        "SELECT count() FROM system.mutations WHERE database = %(d)s AND is_done = 0",
        {"d": warehouse.settings.database},
    ) != [(0,)]:
        assert time.monotonic() < deadline, f"the mutation did not finish: {sql}"
        time.sleep(0.2)
