"""The local ClickHouse server: Debian's ``clickhouse-server`` with a project-owned config."""

from __future__ import annotations

import logging
import os
import shutil
from importlib import resources
from pathlib import Path

from clickhouse_driver import Client

from meter.errors import StackError
from stack import process

INSTALL_HINT = "apt-get install -y clickhouse-server clickhouse-client   (or: make setup)"
# Connection-refused tracebacks while the server boots are expected, not news.
logging.getLogger("clickhouse_driver.connection").setLevel(logging.CRITICAL)

FINANCE_USER = "finance"
FINANCE_PASSWORD = "finance-readonly"  # loopback-only local stack; production sets its own


def server_binary() -> str:
    override = os.environ.get("METER_CLICKHOUSE_BIN")
    found = override or shutil.which("clickhouse-server") or shutil.which("clickhouse")
    if not found:
        raise StackError(f"ClickHouse server is not installed; install it with: {INSTALL_HINT}")
    return found


def _render(template: str, **values: object) -> str:
    text = resources.files("stack").joinpath("templates", template).read_text("utf-8")
    for key, value in values.items():
        text = text.replace("{" + key + "}", str(value))
    return text


def write_config(folder: Path, tcp_port: int, http_port: int) -> Path:
    data_dir = folder / "clickhouse"
    for sub in ("tmp", "user_files", "format_schemas"):
        (data_dir / sub).mkdir(parents=True, exist_ok=True)
    users = folder / "clickhouse-users.xml"
    users.write_text(_render("clickhouse-users.xml", finance_password=FINANCE_PASSWORD))
    config = folder / "clickhouse-config.xml"
    config.write_text(
        _render(
            "clickhouse-config.xml",
            log_dir=folder,
            data_dir=data_dir,
            tcp_port=tcp_port,
            http_port=http_port,
            users_config=users,
        )
    )
    return config


def probe(port: int) -> None:
    client = Client("127.0.0.1", port=port, connect_timeout=2, send_receive_timeout=5)
    try:
        if client.execute("SELECT 1") != [(1,)]:
            raise StackError("ClickHouse answered SELECT 1 with something else")
    finally:
        client.disconnect()


def start(folder: Path, tcp_port: int, http_port: int, timeout_s: float = 60.0) -> int:
    binary = server_binary()
    config = write_config(folder, tcp_port, http_port)
    argv = [binary] if binary.endswith("clickhouse-server") else [binary, "server"]
    argv.append(f"--config-file={config}")
    log = folder / "clickhouse-stdout.log"
    pid = process.spawn(argv, log)
    process.wait_ready(
        "clickhouse-server",
        pid,
        lambda: probe(tcp_port),
        folder / "clickhouse-server.err.log",
        timeout_s,
    )
    return pid
