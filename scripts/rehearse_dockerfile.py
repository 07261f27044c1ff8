"""Run docker/Dockerfile's build steps without a Docker engine, the way the image runs them.

The machines this project is built on have the Docker client and no engine, so `docker
build` cannot run. This reads the Dockerfile and replays it into a scratch root: COPY
copies from the build context (the repository, less what .dockerignore excludes) into the
scratch WORKDIR, RUN runs each command there with a fresh virtual environment of the same
Python minor version as the base image standing in for the image's interpreter, and the
ENTRYPOINT is run with --help at the end. What cannot be replayed without an engine is
named in the output, not skipped silently: commands that change the host's users or file
owners (useradd, chown), and USER, which the replay runs as the calling user. `pip
install` keeps pip's cache (the image's --no-cache-dir only keeps the layer small).

Exit status 0 when every step ran; 1 when one failed (its output shown).
Run: .venv/bin/python scripts/rehearse_dockerfile.py [--keep DIR]
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "docker" / "Dockerfile"
# Host-changing commands a replay must not run; the image runs them as root in its layer.
_HOST_ONLY = ("useradd", "groupadd", "chown", "apt-get", "addgroup", "adduser")


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def ignored_patterns(context: Path) -> list[str]:
    path = context / ".dockerignore"
    if not path.exists():
        return []
    lines = [x.strip() for x in path.read_text().splitlines()]
    return [x.rstrip("/") for x in lines if x and not x.startswith("#")]


def is_ignored(relative: str, patterns: list[str]) -> bool:
    parts = relative.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(fnmatch.fnmatch(p, pat) for pat in patterns for p in prefixes) or any(
        fnmatch.fnmatch(part, pat.removeprefix("**/"))
        for pat in patterns
        if pat.startswith("**/")
        for part in parts
    )


def copy(
    context: Path, sources: list[str], destination: str, target: Path, patterns: list[str]
) -> int:
    """COPY src... dst as Docker does it: a directory's contents into dst; a file to dst,
    or into dst when dst ends in / or there are several sources. Returns files copied."""
    into = destination.endswith("/") or len(sources) > 1
    count = 0
    for source in sources:
        origin = context / source
        if not origin.exists():
            raise SystemExit(f"COPY {source}: not in the build context")
        if origin.is_file():
            pairs = [(origin, target / origin.name if into else target)]
        else:
            files = sorted(p for p in origin.rglob("*") if p.is_file())
            pairs = [(f, target / f.relative_to(origin)) for f in files]
        for file, placed in pairs:
            if is_ignored(file.relative_to(context).as_posix(), patterns):
                continue
            placed.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(file, placed)
            count += 1
    return count


def rehearse(scratch: Path, out: list[str]) -> int:
    steps = instructions(DOCKERFILE.read_text())
    patterns = ignored_patterns(ROOT)
    base = dict(steps).get("FROM", "")
    match = re.match(r"python:(\d+\.\d+)", base)
    if not match:
        raise SystemExit(f"FROM {base!r}: the rehearsal knows only python:X.Y images")
    minor = match.group(1)
    python = shutil.which(f"python{minor}")
    if python is None:
        raise SystemExit(f"FROM {base}: python{minor} is not installed here to stand in for it")
    venv = scratch / "venv"
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": str(scratch / "home"),
        "PYTHONDONTWRITEBYTECODE": "",
    }
    (scratch / "home").mkdir()
    workdir = scratch / "root"
    workdir.mkdir()
    entrypoint: list[str] = []
    for word, rest in steps:
        if word == "FROM":
            out.append(f"FROM {rest}: python{minor} in a fresh virtual environment")
        elif word == "WORKDIR":
            workdir = scratch / "root" / rest.lstrip("/")
            workdir.mkdir(parents=True, exist_ok=True)
        elif word == "ENV":
            key, _, value = rest.partition("=")
            env[key.strip()] = value.strip().strip('"').replace("/app", str(workdir))
        elif word == "COPY":
            args = [a for a in shlex.split(rest) if not a.startswith("--")]
            *sources, destination = args
            if destination.startswith("/"):
                target = scratch / "root" / destination.lstrip("/")
            else:
                target = workdir / destination
            files = copy(ROOT, sources, destination, target, patterns)
            out.append(f"COPY {rest}: {files} files")
        elif word == "RUN":
            if rest.split()[0] in _HOST_ONLY:
                out.append(f"RUN {rest}: NOT RUN (changes the host's users or packages)")
                continue
            command = rest.replace("pip install --no-cache-dir", "pip install")
            done = subprocess.run(
                command, shell=True, cwd=workdir, env=env, capture_output=True, text=True
            )
            if done.returncode != 0:
                out.append(f"RUN {rest}: FAILED ({done.returncode})\n{done.stdout[-3000:]}")
                out.append(done.stderr[-3000:])
                return 1
            out.append(f"RUN {rest}: ok {done.stdout.strip()[-200:]}")
        elif word == "USER":
            out.append(f"USER {rest}: NOT APPLIED (the rehearsal runs as {os.getuid()})")
        elif word == "ENTRYPOINT":
            entrypoint = json.loads(rest)
        else:
            out.append(f"{word} {rest}: recorded (needs an engine)")
    if entrypoint:
        done = subprocess.run(
            [*entrypoint, "--help"], cwd=workdir, env=env, capture_output=True, text=True
        )
        if done.returncode != 0:
            out.append(f"ENTRYPOINT {entrypoint} --help: FAILED\n{done.stderr[-2000:]}")
            return 1
        out.append(f"ENTRYPOINT {entrypoint} --help: ok")
    # The warm-up must fill the cache of the code the entry point runs (the installed
    # package), or a container's first start compiles again.
    cached = list((venv / "lib").rglob("*.nbi"))
    out.append(f"numba cache index files in the installed package: {len(cached)}")
    return 0 if cached else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", help="replay into this folder and keep it")
    args = parser.parse_args()
    scratch = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="image-"))
    scratch.mkdir(parents=True, exist_ok=True)
    out: list[str] = []
    try:
        status = rehearse(scratch, out)
    finally:
        print("\n".join(out))
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
