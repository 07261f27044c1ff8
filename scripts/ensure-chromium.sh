#!/usr/bin/env bash
# Install Debian's chromium if it is missing: the statement tests render the HTML statement
# in it (headless) and keep the PNG as a test artifact. Only `make test` needs it.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
cmd="apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium"
if [ "$(id -u)" -eq 0 ]; then
  echo "installing chromium (Debian package)..." >&2
  bash -c "$cmd"
elif command -v sudo >/dev/null 2>&1; then
  echo "installing chromium with sudo..." >&2
  sudo bash -c "$cmd"
else
  echo "chromium is missing; as root run: $cmd" >&2
  exit 1
fi
