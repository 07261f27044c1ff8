"""The image's build steps, replayed without a Docker engine on this tree (a clean clone in
CI): every COPY finds its source, `pip install .` installs, the warm-up fills the numba
cache of the installed package (what `meter` runs, not the copy in WORKDIR), and the entry
point answers. What the replay cannot do (the image's own user, its healthcheck) it names;
docker/README.md lists it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]


def test_the_dockerfile_steps_build_an_image_whose_entry_point_runs():
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "rehearse_dockerfile.py")],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    out = done.stdout
    assert "RUN pip install --no-cache-dir .: ok" in out
    assert "ENTRYPOINT ['meter'] --help: ok" in out
    cached = int(out.rsplit("numba cache index files in the installed package: ", 1)[1].split()[0])
    assert cached > 0
    assert "USER meter: NOT APPLIED" in out  # said, not skipped silently
