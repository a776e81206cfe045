#!/usr/bin/env bash
# Runs every test, after making sure the outside tools some of them drive are here:
#   Postfix's smtp-sink (a real MTA), headless Chromium (the dashboard in a browser), openssl (DKIM
#   keys, made as an operator makes them), sqlite3, SpamAssassin (the shipped emails' scores), axe-core
#   and Lighthouse (the public pages' accessibility, from npm, under target/tools), schemathesis and openapi-spec-validator (the API
#   against its OpenAPI document; in a Python venv under target/tools), and, when
#   OWNLIST_TEST_DATABASE_URL is set, PostgreSQL running and psql.
# As root on Debian or Ubuntu it installs what is missing; elsewhere it stops at once with the
# exact command to run. Extra arguments go to `cargo test` (a test name, say).
#
#   ./test.sh                                                   # SQLite
#   OWNLIST_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test ./test.sh   # and PostgreSQL
set -euo pipefail
cd "$(dirname "$0")"
export DEBIAN_FRONTEND=noninteractive

packages=()
command -v smtp-sink >/dev/null 2>&1 || packages+=(postfix)
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || packages+=(chromium)
command -v openssl >/dev/null 2>&1 || packages+=(openssl)
command -v sqlite3 >/dev/null 2>&1 || packages+=(sqlite3)
command -v spamassassin >/dev/null 2>&1 || packages+=(spamassassin)
python_tools=target/tools
if [ ! -x "$python_tools/bin/schemathesis" ] || [ ! -x "$python_tools/bin/openapi-spec-validator" ]; then
  command -v python3 >/dev/null 2>&1 || packages+=(python3)
  python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || packages+=(python3-venv)
fi
if [ -n "${OWNLIST_TEST_DATABASE_URL:-}" ]; then
  command -v psql >/dev/null 2>&1 || packages+=(postgresql-client)
  case "$OWNLIST_TEST_DATABASE_URL" in
    *@127.0.0.1:*|*@localhost:*|*@localhost/*|*@127.0.0.1/*)
      command -v pg_ctlcluster >/dev/null 2>&1 || packages+=(postgresql) ;;
  esac
fi

if [ "${#packages[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing ${packages[*]}"
    # Postfix asks how it should be set up: it only has to be installed, not run.
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    apt-get update -qq
    apt-get install -y -qq "${packages[@]}" >/dev/null
  else
    echo "test.sh: the tests need ${packages[*]}; install them first:" >&2
    echo "  sudo apt-get install -y ${packages[*]}" >&2
    exit 2
  fi
fi

if [ ! -x "$python_tools/bin/schemathesis" ] || [ ! -x "$python_tools/bin/openapi-spec-validator" ]; then
  echo "== installing schemathesis and openapi-spec-validator in $python_tools"
  rm -rf "$python_tools"
  python3 -m venv "$python_tools"
  "$python_tools/bin/pip" install -q --disable-pip-version-check \
    "schemathesis==4.32.5" "openapi-spec-validator==0.9.0"
fi

# axe-core and Lighthouse (the rules the public pages are held to), from the npm registry.
axe=target/tools/node_modules/axe-core/axe.min.js
lighthouse=target/tools/node_modules/.bin/lighthouse
if [ ! -f "$axe" ] || [ ! -x "$lighthouse" ]; then
  if ! command -v npm >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      apt-get install -y -qq npm >/dev/null
    else
      echo "test.sh: the tests need npm (for axe-core); install it first: sudo apt-get install -y npm" >&2
      exit 2
    fi
  fi
  echo "== installing axe-core and Lighthouse in target/tools"
  mkdir -p target/tools
  npm install --prefix target/tools --no-audit --no-fund --silent "axe-core@4.14.1" "lighthouse@12.8.2" >/dev/null
fi

if [ -n "${OWNLIST_TEST_DATABASE_URL:-}" ] && command -v pg_isready >/dev/null 2>&1; then
  pg_host=$(sed -E 's#^[a-z]+://([^@/]*@)?([^:/?]+).*#\2#' <<<"$OWNLIST_TEST_DATABASE_URL")
  pg_port=$(sed -nE 's#^[a-z]+://([^@/]*@)?[^:/?]+:([0-9]+).*#\2#p' <<<"$OWNLIST_TEST_DATABASE_URL")
  pg_port=${pg_port:-5432}
  if ! pg_isready -q -h "$pg_host" -p "$pg_port" && command -v pg_ctlcluster >/dev/null 2>&1; then
    echo "== starting PostgreSQL"
    for version in $(ls /etc/postgresql 2>/dev/null); do
      pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    done
    for _ in $(seq 1 30); do
      pg_isready -q -h "$pg_host" -p "$pg_port" && break
      sleep 1
    done
  fi
  pg_isready -h "$pg_host" -p "$pg_port" || {
    echo "test.sh: PostgreSQL does not answer at $pg_host:$pg_port (OWNLIST_TEST_DATABASE_URL)" >&2
    exit 2
  }
fi

# Every tool is here: a test that finds one missing fails instead of skipping.
export OWNLIST_TEST_REQUIRE_TOOLS=1
exec cargo test --workspace --locked --no-fail-fast "$@"
