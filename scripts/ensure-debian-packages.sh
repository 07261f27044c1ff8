#!/usr/bin/env bash
# ensure-debian-packages.sh COMMAND PACKAGE...: install Debian PACKAGEs unless COMMAND is
# already on the PATH (or, for a COMMAND with a slash, unless that file exists). `make setup` uses it for clickhouse-server (the local stack runs the
# server itself; the package's own service is not started), `make test` for chromium (the
# HTML statement is rendered in it headless) and for promtool (the alerting rules are tested).
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 COMMAND PACKAGE..." >&2
  exit 2
fi
command_name=$1
shift
if [[ "$command_name" == */* ]]; then
  [ -e "$command_name" ] && exit 0
elif command -v "$command_name" >/dev/null 2>&1; then
  exit 0
fi
cmd="apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $*"
if [ "$(id -u)" -eq 0 ]; then
  echo "installing $* (Debian packages)..." >&2
  bash -c "$cmd"
elif command -v sudo >/dev/null 2>&1; then
  echo "installing $* with sudo..." >&2
  sudo bash -c "$cmd"
else
  echo "$command_name is missing; as root run: $cmd" >&2
  exit 1
fi
