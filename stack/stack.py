"""Both local servers as one unit, with their ports and pids kept in ``stack.json``."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from stack import broker, clickhouse, process
from stack.errors import StackError
from warehouse.client import ClickHouseSettings

STATE_FILE = "stack.json"
_START_ATTEMPTS = 3  # a free port can be taken between choosing and binding it


@dataclass(frozen=True)
class StackInfo:
    folder: str
    broker_pid: int
    broker_port: int
    clickhouse_pid: int
    clickhouse_port: int
    clickhouse_http_port: int

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.broker_port}"

    @property
    def clickhouse_password(self) -> str:
        """The pipeline's user's password, generated for this stack (stack/clickhouse.py)."""
        return clickhouse.stack_password(Path(self.folder))

    @property
    def clickhouse_url(self) -> str:
        """Everything a command needs, as --clickhouse-url takes it: user and password,
        native port, database, HTTP port."""
        return self.clickhouse_url_for("gpu_meter")

    def clickhouse_url_for(self, database: str, shown: bool = False) -> str:
        """The URL of ``database``; ``shown``: for a terminal, the password left out
        (where it is kept is said beside it)."""
        password = "****" if shown else self.clickhouse_password
        return (
            f"clickhouse://default:{password}@127.0.0.1:{self.clickhouse_port}/{database}"
            f"?http_port={self.clickhouse_http_port}"
        )

    @property
    def password_path(self) -> Path:
        return Path(self.folder) / clickhouse.PASSWORD_FILE

    def settings(self, database: str, **overrides: Any) -> ClickHouseSettings:
        """Settings for ``database`` on this stack, as its pipeline user."""
        return ClickHouseSettings(
            port=self.clickhouse_port,
            http_port=self.clickhouse_http_port,
            database=database,
            password=self.clickhouse_password,
            **overrides,
        )


def default_folder() -> Path:
    return Path(os.environ.get("METER_STACK_DIR", ".stack")).resolve()


class LocalStack:
    """Start, inspect and stop the broker and ClickHouse kept in one folder."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = (folder or default_folder()).resolve()

    @property
    def state_path(self) -> Path:
        return self.folder / STATE_FILE

    def read(self) -> StackInfo | None:
        try:
            return StackInfo(**json.loads(self.state_path.read_text()))
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as exc:
            raise StackError(f"unreadable {self.state_path}: {exc}") from exc

    def allow_finance(self, database: str) -> None:
        """Let the read-only finance user read ``database`` of the running server."""
        info = self.running()
        if info is None:
            raise StackError(f"no stack is running in {self.folder}")
        clickhouse.allow_finance(self.folder, info.clickhouse_port, database)

    def running(self) -> StackInfo | None:
        info = self.read()
        if info and process.is_alive(info.broker_pid) and process.is_alive(info.clickhouse_pid):
            return info
        return None

    def up(self) -> StackInfo:
        """Start both servers (or return the running pair) and wait until both answer."""
        current = self.running()
        if current:
            return current
        self.down()  # one half may be alive from an earlier, broken start
        # Fail on a missing binary before starting anything.
        broker.tansu_binary()
        clickhouse.server_binary()
        self.folder.mkdir(parents=True, exist_ok=True)
        broker_pid = self._start_with_retries(lambda: self._start_broker())
        try:
            ch_pid, ch_port, ch_http = self._start_with_retries(lambda: self._start_clickhouse())
        except Exception:
            process.stop(broker_pid[0])
            raise
        info = StackInfo(str(self.folder), broker_pid[0], broker_pid[1], ch_pid, ch_port, ch_http)
        self.state_path.write_text(json.dumps(asdict(info), indent=2) + "\n")
        return info

    def _start_broker(self) -> tuple[int, int]:
        port = process.free_port()
        return broker.start(self.folder, port), port

    def _start_clickhouse(self) -> tuple[int, int, int]:
        tcp, http = process.free_port(), process.free_port()
        return clickhouse.start(self.folder, tcp, http), tcp, http

    @staticmethod
    def _start_with_retries(start):  # type: ignore[no-untyped-def]
        for attempt in range(1, _START_ATTEMPTS + 1):
            try:
                return start()
            except StackError:
                if attempt == _START_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    def restart_clickhouse(self, pause_s: float = 0.0) -> StackInfo:
        """Stop ClickHouse, wait ``pause_s``, start it again on the same ports and data."""
        info = self.read()
        if info is None:
            raise StackError("the stack is not up")
        process.stop(info.clickhouse_pid, grace_s=30.0)
        time.sleep(pause_s)
        pid = clickhouse.start(self.folder, info.clickhouse_port, info.clickhouse_http_port)
        info = StackInfo(**{**asdict(info), "clickhouse_pid": pid})
        self.state_path.write_text(json.dumps(asdict(info), indent=2) + "\n")
        return info

    def down(self) -> bool:
        """Stop whatever the state file names; True if something was running."""
        info = self.read()
        if info is None:
            return False
        was_running = process.is_alive(info.broker_pid) or process.is_alive(info.clickhouse_pid)
        process.stop(info.clickhouse_pid, grace_s=30.0)
        process.stop(info.broker_pid)
        self.state_path.unlink(missing_ok=True)
        return was_running

    def status(self) -> dict[str, object]:
        info = self.read()
        if info is None:
            return {"folder": str(self.folder), "state": "down"}
        checks: dict[str, object] = {"folder": str(self.folder), **asdict(info)}
        for name, check in (
            ("broker", lambda: broker.probe(info.bootstrap)),
            ("clickhouse", lambda: clickhouse.probe(self.folder, info.clickhouse_port)),
        ):
            try:
                check()
                checks[name] = "ready"
            except Exception as exc:  # status reports, it does not fail
                checks[name] = f"not answering: {exc!r}"
        ready = checks["broker"] == checks["clickhouse"] == "ready"
        checks["state"] = "up" if ready else "degraded"
        return checks
