"""The local ClickHouse server: Debian's ``clickhouse-server`` with a project-owned config."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import shutil
import time
from importlib import resources
from pathlib import Path

from clickhouse_driver import Client
from clickhouse_driver.errors import ServerException

from stack import process
from stack.errors import StackError

INSTALL_HINT = "apt-get install -y clickhouse-server clickhouse-client   (or: make setup)"
# Connection-refused tracebacks while the server boots are expected, not news.
logging.getLogger("clickhouse_driver.connection").setLevel(logging.CRITICAL)

FINANCE_USER = "finance"
FINANCE_PASSWORD = "finance-readonly"  # loopback-only local stack; production sets its own
# The databases finance may read on the local stack (the demo's and the default one); others
# are added by allow_finance (a test's database, say), listed in this file of the folder.
FINANCE_DATABASES = ("demo", "gpu_meter")
_FINANCE_LIST = "clickhouse-finance-databases.txt"
_DATABASE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


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


def write_config(folder: Path, tcp_port: int, http_port: int, extra_config: str = "") -> Path:
    data_dir = folder / "clickhouse"
    for sub in ("tmp", "user_files", "format_schemas"):
        (data_dir / sub).mkdir(parents=True, exist_ok=True)
    users = write_users(folder)
    config = folder / "clickhouse-config.xml"
    config.write_text(
        _render(
            "clickhouse-config.xml",
            log_dir=folder,
            data_dir=data_dir,
            tcp_port=tcp_port,
            http_port=http_port,
            users_config=users,
            extra_config=extra_config,
        )
    )
    return config


PASSWORD_FILE = "clickhouse-default-password"


def stack_password(folder: Path) -> str:
    """The pipeline's own user's password on the stack in ``folder``, as ``meter stack up``
    wrote it; every command that uses the running stack reads it from there."""
    try:
        return (folder / PASSWORD_FILE).read_text().strip()
    except FileNotFoundError as exc:
        raise StackError(
            f"{folder / PASSWORD_FILE} is missing, so the stack's ClickHouse password is "
            "unknown: restart the stack (meter stack down, then meter stack up)"
        ) from exc


def default_password(folder: Path) -> str:
    """The pipeline's own user's password on this stack: generated when the stack is first
    started, kept in the stack folder readable by its owner only."""
    path = folder / PASSWORD_FILE
    if path.exists():
        return stack_password(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    password = secrets.token_urlsafe(24)
    with os.fdopen(fd, "w") as handle:
        handle.write(password + "\n")
    return password


def write_users(folder: Path) -> Path:
    """users.xml with the pipeline's password and finance's databases; the server reloads
    it by itself when it changes."""
    listed = folder / _FINANCE_LIST
    names = [*FINANCE_DATABASES, *(listed.read_text().split() if listed.exists() else [])]
    allowed = "".join(f"<database>{name}</database>" for name in dict.fromkeys(names))
    users = folder / "clickhouse-users.xml"
    before = users.stat().st_mtime if users.exists() else None
    digest = hashlib.sha256(default_password(folder).encode()).hexdigest()
    text = _render(
        "clickhouse-users.xml",
        finance_password=FINANCE_PASSWORD,
        finance_databases=allowed,
        default_password_sha256=digest,
    )
    tmp = users.with_suffix(".xml.tmp")
    tmp.write_text(text)
    tmp.replace(users)
    if before is not None and int(users.stat().st_mtime) <= int(before):
        # The server sees a change by its modification time in whole seconds: a rewrite
        # within the second of the last one would never be reloaded.
        os.utime(users, (int(before) + 1, int(before) + 1))
    return users


def allow_finance(folder: Path, port: int, database: str, timeout_s: float = 30.0) -> None:
    """Let finance read ``database`` (which must exist), and wait until the server has
    reloaded its users and finance can."""
    if not _DATABASE_NAME.fullmatch(database):
        raise StackError(f"database name {database!r} is not a plain identifier")
    listed = folder / _FINANCE_LIST
    known = listed.read_text().split() if listed.exists() else []
    if database not in known:
        listed.write_text("\n".join([*known, database]) + "\n")
        write_users(folder)
    deadline = time.monotonic() + timeout_s
    while True:
        client = Client(
            "127.0.0.1",
            port=port,
            user=FINANCE_USER,
            password=FINANCE_PASSWORD,
            database=database,
            connect_timeout=2,
            send_receive_timeout=5,
        )
        try:
            client.execute("SELECT 1")
            return
        except (ServerException, EOFError) as exc:  # refused at the handshake: EOF
            if time.monotonic() > deadline:
                raise StackError(
                    f"finance still cannot read {database} after {timeout_s:.0f} s: {exc}"
                ) from exc
            time.sleep(0.25)
        finally:
            client.disconnect()


def probe(folder: Path, port: int) -> None:
    client = Client(
        "127.0.0.1",
        port=port,
        password=stack_password(folder),
        connect_timeout=2,
        send_receive_timeout=5,
    )
    try:
        if client.execute("SELECT 1") != [(1,)]:
            raise StackError("ClickHouse answered SELECT 1 with something else")
    finally:
        client.disconnect()


def start(
    folder: Path, tcp_port: int, http_port: int, timeout_s: float = 60.0, extra_config: str = ""
) -> int:
    """Start a server on the ports; ``extra_config`` is XML added to its config (a
    replica's ZooKeeper, macros and cluster, stack/cluster.py)."""
    binary = server_binary()
    config = write_config(folder, tcp_port, http_port, extra_config)
    argv = [binary] if binary.endswith("clickhouse-server") else [binary, "server"]
    argv.append(f"--config-file={config}")
    log = folder / "clickhouse-stdout.log"
    pid = process.spawn(argv, log)
    process.wait_ready(
        "clickhouse-server",
        pid,
        lambda: probe(folder, tcp_port),
        folder / "clickhouse-server.err.log",
        timeout_s,
    )
    return pid
