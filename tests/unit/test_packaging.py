"""The image and the wheel hold every package: a package added to the source but not to
``pyproject.toml`` or the Dockerfile makes an install that fails (``package directory …
does not exist``) or an image that cannot import it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).parents[2]


def _source_packages() -> set[str]:
    return {
        str(init.parent.relative_to(ROOT)).replace("/", ".")
        for init in ROOT.glob("*/**/__init__.py")
        if init.parts[len(ROOT.parts)] not in ("tests", ".venv", "docker")
    }


def test_pyproject_lists_every_package_of_the_source():
    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    assert listed == _source_packages()


def test_the_image_copies_every_top_level_package():
    copied = set(re.findall(r"^COPY (\S+) \1$", (ROOT / "docker/Dockerfile").read_text(), re.M))
    assert {name.split(".")[0] for name in _source_packages()} <= copied
