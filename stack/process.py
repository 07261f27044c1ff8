"""Starting, watching and stopping one detached server process."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from stack.errors import StackError


def free_port() -> int:
    """A loopback port nobody listens on right now (the caller binds it soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def spawn(argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None) -> int:
    """Start ``argv`` in its own session, output appended to ``log_path``; returns the pid.

    Its own session so that ``meter stack up`` can return while the servers keep running,
    and so that a Ctrl-C in the caller's terminal does not reach them.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            cwd=log_path.parent,
        )
    return proc.pid


def is_alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)  # reap it if it is our exited child
        if waited == pid:
            return False
    except ChildProcessError:
        pass  # not our child (started by an earlier `meter stack up`)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    """Exited, waiting to be reaped by a parent that is not us (a server one process
    restarted and another stopped): it holds no port and no file, so it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] == "Z"


def stop(pid: int, grace_s: float = 15.0) -> None:
    """SIGTERM, wait up to ``grace_s`` for a clean exit, then SIGKILL."""
    if not is_alive(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not is_alive(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    while is_alive(pid):
        time.sleep(0.05)


def kill(pid: int) -> None:
    """SIGKILL, as a crash or a lost machine ends a process; returns once it is gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    while is_alive(pid):
        time.sleep(0.05)


def wait_ready(
    name: str,
    pid: int,
    probe: Callable[[], None],
    log_path: Path,
    timeout_s: float,
) -> None:
    """Call ``probe`` until it returns without raising, the process dies, or time runs out."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if not is_alive(pid):
            raise StackError(f"{name} exited during start-up; log tail:\n{log_tail(log_path)}")
        try:
            probe()
            return
        except Exception as exc:  # any failure of the probe means "not ready yet"
            last_error = exc
        time.sleep(0.1)
    stop(pid)
    raise StackError(
        f"{name} not ready after {timeout_s:.0f} s ({last_error!r}); log tail:\n"
        f"{log_tail(log_path)}"
    )


def log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"
