"""Before a worker joins its group: is the ClickHouse it was given the one it needs?

Both ports answer (queries go over the native port, the ledger's bulk inserts over HTTP),
and every migration is applied. A worker that found out in its first batch would exit
uncommitted after a rebalance; here it fails at once, naming what is wrong.
"""

from __future__ import annotations

import http.client

from core.errors import ConfigError
from warehouse.client import Warehouse
from warehouse.migrate import pending


def check_warehouse(warehouse: Warehouse, timeout_s: float = 10.0) -> None:
    s = warehouse.settings
    warehouse.execute("SELECT 1")  # the native port, within the settings' give-up time
    at = warehouse.endpoint  # a replica that answered, if the first did not
    connection = http.client.HTTPConnection(at.host, at.http_port, timeout=timeout_s)
    try:
        connection.request("GET", "/ping")
        answer = connection.getresponse().read()
    except OSError as exc:
        raise ConfigError(
            f"ClickHouse's HTTP port {at.host}:{at.http_port} does not answer ({exc}): the worker "
            "writes the ledger over HTTP; give its port as ?http_port=PORT in --clickhouse-url "
            "(and a replica's as its third field, replica=HOST:PORT:HTTP_PORT)"
        ) from exc
    finally:
        connection.close()
    if answer.strip() != b"Ok.":
        raise ConfigError(
            f"{at.host}:{at.http_port} is not ClickHouse's HTTP port (it answered "
            f"{answer[:60]!r}): fix ?http_port= in --clickhouse-url"
        )
    missing = [f"{m.version:04d}" for m in pending(warehouse)]
    if missing:
        raise ConfigError(
            f"database {s.database!r} is missing migrations {', '.join(missing)}: run `meter "
            "migrate` with the same --clickhouse-url first"
        )
