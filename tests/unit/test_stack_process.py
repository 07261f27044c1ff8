"""How the stack tells a server's process is gone (stack/process.py), without servers."""

from __future__ import annotations

import os
import signal
import subprocess
import time

from stack import process


def test_a_killed_server_another_process_has_not_reaped_counts_as_gone():
    """A replica restarted by one process (its parent) and stopped by another stays a
    zombie until the parent reaps it; stopping must not wait for that for ever (``meter
    stack down`` once hung on a replica the test process had restarted)."""
    parent = subprocess.Popen(
        ["sh", "-c", "sleep 30 & echo $!; exec sleep 60"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert process.is_alive(child)
        os.kill(child, signal.SIGKILL)  # its parent (now `sleep 60`) never reaps it
        deadline = time.monotonic() + 5
        while process.is_alive(child):
            assert time.monotonic() < deadline, "a zombie counted as alive"
            time.sleep(0.05)
        process.kill(child)  # returns at once on what is gone
    finally:
        parent.kill()
        parent.wait()
