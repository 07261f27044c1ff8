"""One place that talks to ClickHouse: settings validated once, retries with backoff."""

from __future__ import annotations

import http.client
import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlencode, urlparse

from clickhouse_driver import Client
from clickhouse_driver import errors as ch_errors

from core.errors import ConfigError
from warehouse.errors import SinkError

log = logging.getLogger(__name__)
T = TypeVar("T")

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
UNKNOWN_DATABASE = 81
# Failures that mean "the server is not reachable right now", worth waiting out.
_TRANSIENT = (ch_errors.NetworkError, ch_errors.SocketTimeoutError, EOFError, OSError)
# Server errors of a replicated table that lost ZooKeeper, worth waiting out too: every
# replica refuses inserts until it is back (docs/CLUSTER.md). 242: table is in readonly
# mode; 225: no ZooKeeper; 999: a ZooKeeper session error; 319: the insert's outcome is
# unknown (the retry writes the same rows, which the tables' keys make harmless).
_TRANSIENT_CODES = frozenset({242, 225, 999, 319})


# ClickHouse 18.16 pushes a WHERE into the views (through GROUP BY and UNION ALL) only with
# this; current ClickHouse has it on by default. The views rely on it to read only the rows
# a question needs (warehouse/migrations/0011_hour_and_day_rollups.sql).
QUERY_SETTINGS = {"enable_optimize_predicate_expression": 1}


def check_identifier(name: str, what: str = "database") -> str:
    if not _IDENTIFIER.match(name):
        raise ConfigError(f"{what} name {name!r} must match {_IDENTIFIER.pattern}")
    return name


@dataclass(frozen=True)
class Endpoint:
    """One ClickHouse server: its native port (queries) and HTTP port (the ledger)."""

    host: str
    port: int = 9000
    http_port: int = 8123

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        """``host:port:http_port``, as ``&replica=`` gives it in a URL."""
        host, _, ports = text.partition(":")
        port, _, http_port = ports.partition(":")
        try:
            return cls(host, int(port), int(http_port))
        except ValueError as exc:
            raise ConfigError(
                f"replica {text!r} in the ClickHouse URL must be HOST:PORT:HTTP_PORT "
                "(the native and the HTTP port), e.g. replica=ch2.internal:9000:8123"
            ) from exc


@dataclass(frozen=True)
class ClickHouseSettings:
    host: str = "127.0.0.1"
    port: int = 9000
    database: str = "gpu_meter"
    user: str = "default"
    password: str = ""
    http_port: int = 8123  # bulk inserts (the Native ledger) go over HTTP
    # The cluster (remote_servers) the database is replicated across; "": one server.
    # Migrations then run ON CLUSTER with Replicated engines (warehouse/cluster_ddl.py).
    cluster: str = ""
    # Other replicas of the same shard, tried in order when the current one is unreachable
    # (docs/CLUSTER.md, "The worker on a cluster").
    replicas: tuple[Endpoint, ...] = ()
    # Replicated tables drop a block identical to one inserted recently; exactness must
    # not rest on it (the tables' keys make a rewrite harmless), and the fault tests run
    # with it off to show so (``&insert_deduplicate=0``).
    insert_deduplicate: bool = True
    # How long to wait out an unreachable server; None: for ever (a worker must not drop
    # data). One-shot commands give up after a bounded time.
    give_up_after_s: float | None = None

    def __post_init__(self) -> None:
        check_identifier(self.database)
        if self.cluster:
            check_identifier(self.cluster)
        for endpoint in self.endpoints:
            for port in (endpoint.port, endpoint.http_port):
                if not 0 < port < 65536:
                    raise ConfigError(f"ClickHouse port {port} of {endpoint.host} out of range")
        if self.replicas and not self.cluster:
            raise ConfigError(
                "replica= in the ClickHouse URL names other replicas of a cluster: add "
                "&cluster=NAME (the remote_servers cluster they belong to)"
            )

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        """Every server to use, the URL's own first."""
        return (Endpoint(self.host, self.port, self.http_port), *self.replicas)

    def to_url(self) -> str:
        return (
            f"clickhouse://{self.user}:{self.password}@{self.host}:{self.port}/{self.database}"
            f"?http_port={self.http_port}"
            + (f"&cluster={self.cluster}" if self.cluster else "")
            + "".join(f"&replica={r.host}:{r.port}:{r.http_port}" for r in self.replicas)
            + ("" if self.insert_deduplicate else "&insert_deduplicate=0")
        )

    @classmethod
    def from_url(cls, url: str, database: str | None = None) -> ClickHouseSettings:
        """``clickhouse://user:password@host:port/database?http_port=8123[&cluster=NAME]
        [&replica=HOST:PORT:HTTP_PORT ...]`` (the native port; ``cluster``: the database is
        replicated across that cluster; ``replica``: another replica to fail over to)."""
        parsed = urlparse(url)
        if parsed.scheme != "clickhouse" or not parsed.hostname:
            raise ConfigError(f"ClickHouse URL {url!r} must look like clickhouse://host:port/db")
        try:
            port = parsed.port
        except ValueError as exc:  # "Port out of range 0-65535", "invalid literal"
            raise ConfigError(f"ClickHouse URL {url!r}: the port is not 1–65535 ({exc})") from exc
        query = parse_qs(parsed.query)
        try:
            http_port = int(query.get("http_port", ["8123"])[0])
        except ValueError as exc:
            raise ConfigError(f"http_port in {url!r} is not a number") from exc
        return cls(
            host=parsed.hostname,
            port=port or 9000,
            database=database or parsed.path.lstrip("/") or cls.database,
            user=parsed.username or "default",
            password=parsed.password or "",
            http_port=http_port,
            cluster=query.get("cluster", [""])[0],
            replicas=tuple(Endpoint.parse(r) for r in query.get("replica", [])),
            insert_deduplicate=query.get("insert_deduplicate", ["1"])[0] != "0",
        )

    @property
    def server_settings(self) -> dict[str, Any]:
        """Settings every query and insert of this connection sends."""
        return {**QUERY_SETTINGS, **({} if self.insert_deduplicate else {"insert_deduplicate": 0})}


@dataclass(frozen=True)
class Backoff:
    first_s: float = 0.1
    max_s: float = 5.0
    give_up_after_s: float | None = None  # None: keep trying (a worker must not drop data)

    def delays(self) -> Any:
        delay = self.first_s
        while True:
            yield delay
            delay = min(delay * 2, self.max_s)


class Warehouse:
    """A ClickHouse connection that reconnects and retries transient failures.

    Given replicas, it uses one at a time for every read and write, so what it reads is
    what it wrote, and moves to the next when the current one fails: a worker keeps
    metering through a lost replica (docs/CLUSTER.md, "The worker on a cluster")."""

    def __init__(
        self,
        settings: ClickHouseSettings,
        backoff: Backoff | None = None,
        sleep: Callable[[float], object] | None = None,
    ) -> None:
        self.settings = settings
        self.backoff = backoff or Backoff(give_up_after_s=settings.give_up_after_s)
        # Set when the process is stopping: a retry loop ends at once instead of waiting
        # out an unreachable server (nothing it was writing is committed).
        self._cancelled = threading.Event()
        self._sleep = sleep if sleep is not None else self._cancelled.wait
        self._endpoints = settings.endpoints
        self._at = 0  # the replica in use
        self._client = self._connect(settings.database)
        # clickhouse-driver allows one query at a time per connection; the worker loads a
        # partition's state while the previous batch is still being written.
        self._lock = threading.RLock()

    @property
    def endpoint(self) -> Endpoint:
        """The server queries and inserts go to now."""
        return self._endpoints[self._at]

    def _connect(
        self, database: str, timeout_s: float = 60, settings: dict[str, Any] | None = None
    ) -> Client:
        s, endpoint = self.settings, self.endpoint
        return Client(
            endpoint.host,
            port=endpoint.port,
            database=database,
            user=s.user,
            password=s.password,
            connect_timeout=5,
            send_receive_timeout=timeout_s,
            settings={**s.server_settings, **(settings or {})},
        )

    def close(self) -> None:
        self._client.disconnect()

    def cancel(self) -> None:
        """End every retry loop now, from any thread: the process is stopping."""
        self._cancelled.set()

    def _retrying(self, what: str, call: Callable[[Endpoint], T], driver: bool = True) -> T:
        """``call`` on the replica in use until it succeeds. After a failure the next
        attempt goes to the next replica; with one server, a driver call reconnects (an
        HTTP call leaves the driver's connection alone: other threads use it)."""
        started = time.monotonic()
        for delay in self.backoff.delays():
            if self._cancelled.is_set():
                raise SinkError(f"{what}: stopped while waiting for ClickHouse (not written)")
            used = self._at
            try:
                return call(self._endpoints[used])
            except (*_TRANSIENT, ch_errors.ServerException) as exc:
                if isinstance(exc, ch_errors.ServerException) and exc.code not in _TRANSIENT_CODES:
                    raise
                limit = self.backoff.give_up_after_s
                if limit is not None and time.monotonic() - started + delay > limit:
                    raise SinkError(self._unreachable(what, limit, exc)) from exc
                log.warning(
                    "%s: ClickHouse unreachable at %s (%s); retrying in %.1f s",
                    what,
                    self._endpoints[used],
                    str(exc).split(". Stack trace")[0][:300],
                    delay,
                )
                if not self._fail_over(used) and driver:
                    with self._lock:
                        self._client.disconnect()
                self._sleep(delay)
        raise AssertionError("unreachable")

    def _fail_over(self, used: int) -> bool:
        """Move to the replica after ``used`` unless another thread already moved; False
        with one server. Sticky: it stays on the new replica while that one answers."""
        if len(self._endpoints) == 1:
            return False
        with self._lock:
            if self._at == used:
                self._client.disconnect()
                self._at = (used + 1) % len(self._endpoints)
                self._client = self._connect(self.settings.database)
                log.warning(
                    "ClickHouse: failing over from %s to replica %s",
                    self._endpoints[used],
                    self.endpoint,
                )
        return True

    def _unreachable(self, what: str, limit: float, exc: BaseException) -> str:
        s = self.settings
        where = ", ".join(map(str, self._endpoints))
        if isinstance(exc, EOFError):
            # 18.16 drops the connection at login, sending no error, when the user may not
            # use the database (code 291 in the server's log).
            return (
                f"{what}: ClickHouse at {where} closed the connection at login "
                f"for {limit:g} s: is user {s.user!r} allowed database {s.database!r} "
                "(a read-only user such as finance is not, nor `default`)?"
            )
        return (
            f"{what}: cannot reach ClickHouse at {where} for {limit:g} s ({exc}): "
            "is it running, and is --clickhouse-url right?"
        )

    def execute(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._retrying("query", lambda _: self._client.execute(sql, params))

    def execute_long(self, sql: str, timeout_s: float, settings: dict[str, Any]) -> None:
        """``sql`` once, on a connection of its own that waits up to ``timeout_s`` for the
        answer: work the server goes on with if the client leaves (a merge) is not
        started again by a retry."""
        client = self._connect(self.settings.database, timeout_s, settings)
        try:
            client.execute(sql)
        except _TRANSIENT as exc:
            what = sql.split(" PARTITION")[0]
            raise SinkError(f"{what}: no answer from ClickHouse: {exc}") from exc
        finally:
            client.disconnect()

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> int:
        if not rows:
            return 0
        sql = f"INSERT INTO {check_identifier(table, 'table')} ({', '.join(columns)}) VALUES"
        with self._lock:
            self._retrying(f"insert into {table}", lambda _: self._client.execute(sql, rows))
        return len(rows)

    def insert_native(self, table: str, columns: Sequence[str], data: bytes, rows: int) -> int:
        """Insert pre-encoded Native blocks over HTTP (one request, retried as a whole)."""
        if not rows:
            return 0
        s = self.settings
        query = urlencode(
            {
                "database": s.database,
                "user": s.user,
                "password": s.password,
                "query": f"INSERT INTO {check_identifier(table, 'table')} "
                f"({', '.join(columns)}) FORMAT Native",
                **s.server_settings,
            }
        )

        def post(endpoint: Endpoint) -> None:
            conn = http.client.HTTPConnection(endpoint.host, endpoint.http_port, timeout=120)
            try:
                conn.request("POST", f"/?{query}", body=data)
                response = conn.getresponse()
                body = response.read()
            finally:
                conn.close()
            if response.status != 200:
                if response.status >= 500 and b"Code: 241" not in body:
                    raise OSError(f"HTTP {response.status}: {body[:300]!r}")  # retried
                raise SinkError(f"insert into {table}: HTTP {response.status}: {body[:500]!r}")

        # A fresh HTTP connection per attempt, and never a reset of the driver's connection:
        # several of these run at once, beside driver queries on other threads.
        self._retrying(f"insert into {table}", post, driver=False)
        return rows

    def _on_default_database(self, sql: str) -> None:
        """Run ``sql`` over a connection to ``default``: one to our database may not exist."""

        def attempt(_: Endpoint) -> None:
            admin = self._connect("default")  # on the replica in use at each attempt
            try:
                admin.execute(sql)
            finally:
                admin.disconnect()

        self._retrying(sql.split(" IF ")[0].lower(), attempt, driver=False)
        with self._lock:
            self._client.disconnect()  # reconnect to the database as it now is

    def ensure_database(self) -> None:
        """Create the database unless it exists (asked first over our own connection: a
        user may be allowed its database and not ``default``)."""
        with self._lock:
            try:
                self._client.execute("SELECT 1")
                return
            except ch_errors.ServerException as exc:
                if exc.code != UNKNOWN_DATABASE:
                    raise
            except _TRANSIENT:
                pass  # waited out, and named, on the way below
            finally:
                self._client.disconnect()
        on_cluster = f" ON CLUSTER {self.settings.cluster}" if self.settings.cluster else ""
        self._on_default_database(
            f"CREATE DATABASE IF NOT EXISTS {self.settings.database}{on_cluster}"
        )

    def drop_database(self) -> None:
        self._on_default_database(f"DROP DATABASE IF EXISTS {self.settings.database}")
