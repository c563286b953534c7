#!/usr/bin/env bash
# Makes sure PostgreSQL server binaries exist (initdb, pg_ctl); installs them with apt-get
# where that is possible. A DATABASE_URL means the user brings a server: nothing to do.
set -euo pipefail
[ -n "${DATABASE_URL:-}" ] && exit 0
have() { command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; }
have && exit 0
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "PostgreSQL server binaries not found: installing Debian's postgresql package…"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  have && exit 0
fi
echo "PostgreSQL server binaries (initdb, pg_ctl) not found and could not be installed here." >&2
echo "Install them (Debian/Ubuntu: sudo apt-get install postgresql; Fedora: dnf install postgresql-server;" >&2
echo "macOS: brew install postgresql@15) or set DATABASE_URL to a server you have." >&2
exit 1
