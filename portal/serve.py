"""``meter portal serve``: the portal over uvicorn, reading ClickHouse through a small
pool of read-only connections. SIGTERM stops it within seconds: uvicorn stops accepting,
gives open requests up to 3 s, and the portal holds nothing that needs committing."""

from __future__ import annotations

import logging
import queue
import signal
import socket
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace

import uvicorn

from core.errors import ConfigError
from portal.app import build_app
from portal.errors import PortalError
from portal.reads import Reader
from portal.tokens import Grant, TokenBook
from warehouse.client import ClickHouseSettings, Warehouse

log = logging.getLogger(__name__)


class Pool:
    """``size`` connections lent one request at a time (clickhouse-driver runs one query
    at a time per connection)."""

    def __init__(self, settings: ClickHouseSettings, size: int) -> None:
        self._free: queue.Queue[Warehouse] = queue.Queue()
        for _ in range(size):
            self._free.put(Warehouse(settings))

    @contextmanager
    def reader(self) -> Iterator[Reader]:
        warehouse = self._free.get()
        try:
            yield Reader(warehouse)
        finally:
            self._free.put(warehouse)

    def close(self) -> None:
        while not self._free.empty():
            self._free.get().close()


def check_ready(settings: ClickHouseSettings) -> None:
    """Fail at start, in one line, if the portal cannot read what it serves."""
    warehouse = Warehouse(settings)
    try:
        warehouse.execute("SELECT count() FROM portal_token_state")
    except Exception as exc:  # refined by meter.boundary; the hint says which database
        if getattr(exc, "code", None) == 60:
            raise PortalError(
                f"database {settings.database!r} has no portal views: run `meter migrate` "
                "with the pipeline's --clickhouse-url first"
            ) from exc
        raise
    finally:
        warehouse.close()


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, or one line saying why it cannot be had."""
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port {port} must be 0..65535")
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit it: without, a keep-alive client's second request
    # waited out a delayed ACK (40 ms) between the response's headers and its body.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot listen on {host}:{port} ({exc.strerror}): pick a free --port, or stop "
            "what holds it"
        ) from exc
    sock.listen(512)
    return sock


def serve(settings: ClickHouseSettings, host: str, port: int, connections: int) -> int:
    if not 1 <= connections <= 64:
        raise ConfigError(f"--connections {connections} must be 1..64")
    settings = replace(settings, give_up_after_s=settings.give_up_after_s or 10.0)
    check_ready(settings)
    sock = bind(host, port)
    pool = Pool(settings, connections)

    def grant_of(token: str, now_us: int) -> Grant:
        with pool.reader() as r:
            return TokenBook(r.warehouse).lookup(token, now_us)

    app = build_app(pool.reader, grant_of)
    bound = sock.getsockname()
    print(
        f"portal listening on http://{bound[0]}:{bound[1]}/ (database {settings.database})",
        flush=True,
    )
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,  # a login URL carries its token: it must not reach a log
        timeout_graceful_shutdown=3,
        lifespan="off",
    )
    # uvicorn handles SIGTERM and SIGINT while it runs, then raises the signal again for
    # the handler found before it: this one lets the process end with status 0, done.
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        signal.signal(signal.SIGTERM, previous)
        pool.close()
        sock.close()
    return 0


def wait_until_serving(url: str, alive: Callable[[], bool], timeout_s: float = 60.0) -> None:
    """Until ``url`` answers its OpenAPI description (a portal just started), or raise."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive():
            raise PortalError(f"the portal at {url} exited before it answered")
        try:
            with urllib.request.urlopen(f"{url}/openapi.json", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise PortalError(f"the portal at {url} did not answer in {timeout_s:.0f} s")
