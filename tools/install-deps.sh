#!/bin/sh
# Installs what zhost needs from Debian (bookworm) packages. The README's install steps and the
# Dockerfile both call this script, so they cannot drift (spec/e2e/test_serve_deploy.py checks it).
#   tools/install-deps.sh build     compilers and -dev packages to build zhost
#   tools/install-deps.sh runtime   shared libraries and tools the zhost binary needs to run
#   tools/install-deps.sh test      build + runtime + what the test suite runs against
#                                   (ClickHouse server, Python 3, jq, headless Chromium)
set -eu
BUILD="build-essential cmake pkg-config liblua5.4-dev lua-cjson-dev libuv1-dev libcurl4-openssl-dev libedit-dev libssl-dev zlib1g-dev libsimdjson-dev"
RUNTIME="ca-certificates liblua5.4-0 lua-cjson libuv1 libcurl4 libedit2 libssl3 zlib1g tzdata curl libsimdjson14"
TEST="clickhouse-server clickhouse-client python3 jq chromium"
case "${1:-}" in
  build) pkgs="$BUILD" ;;
  runtime) pkgs="$RUNTIME" ;;
  test) pkgs="$BUILD $RUNTIME $TEST" ;;
  *) echo "usage: $0 build|runtime|test" >&2; exit 2 ;;
esac
export DEBIAN_FRONTEND=noninteractive
# Nothing to do when every package is already installed (re-runs, offline machines).
# shellcheck disable=SC2086
if dpkg-query -W -f '${Status}\n' $pkgs 2>/dev/null | grep -qv '^install ok installed$' ||
   [ "$(dpkg-query -W -f '${Status}\n' $pkgs 2>/dev/null | wc -l)" -ne "$(echo $pkgs | wc -w)" ]; then
  apt-get update
  # shellcheck disable=SC2086
  apt-get install -y --no-install-recommends $pkgs
fi
# Image builds drop the package lists to stay small; a developer's machine keeps them.
if [ -f /.dockerenv ]; then rm -rf /var/lib/apt/lists/*; fi
