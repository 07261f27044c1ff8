#!/usr/bin/env bash
# Install Debian's clickhouse-server if it is missing (the local stack runs it itself;
# the package's own service is not started).
set -euo pipefail
if command -v clickhouse-server >/dev/null 2>&1; then
  exit 0
fi
cmd="apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clickhouse-server clickhouse-client"
if [ "$(id -u)" -eq 0 ]; then
  echo "installing clickhouse-server (Debian package)..." >&2
  bash -c "$cmd"
elif command -v sudo >/dev/null 2>&1; then
  echo "installing clickhouse-server with sudo..." >&2
  sudo bash -c "$cmd"
else
  echo "clickhouse-server is missing; as root run: $cmd" >&2
  exit 1
fi
