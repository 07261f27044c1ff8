"""Real headless Chromium (Debian's ``chromium``) for the tests that look at a page: a
screenshot a person can open (kept under the test artifacts folder) and the DOM as the
browser built it."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).parents[1]
ARTIFACTS = Path(os.environ.get("METER_TEST_ARTIFACTS", ROOT / "test-artifacts"))
WIDTH, HEIGHT = 900, 1500
# What a root, offline machine needs (the background services' connections are refused).
QUIET_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
_FLAGS = ["--headless", *QUIET_FLAGS, "--hide-scrollbars", f"--window-size={WIDTH},{HEIGHT}"]


def render(page: Path, name: str | None = None) -> tuple[Path, str]:
    """A screenshot of ``page`` (PNG, checked not blank) and its rendered DOM."""
    browser = shutil.which("chromium")
    assert browser, "chromium is missing: apt-get install -y chromium (make test does it)"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    png = ARTIFACTS / f"{name or page.stem}.png"
    with tempfile.TemporaryDirectory() as profile:
        run = [browser, *_FLAGS, f"--user-data-dir={profile}"]
        shot = subprocess.run(
            [*run, f"--screenshot={png}", page.as_uri()],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert shot.returncode == 0 and png.exists(), shot.stderr[-2000:]
        dom = subprocess.run(
            [*run, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120
        ).stdout
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", data[16:24]) == (WIDTH, HEIGHT)
    assert len(data) > 20_000, "a blank page compresses to almost nothing"
    return png, dom
