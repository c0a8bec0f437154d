#!/usr/bin/env bash
# Runs a command with a throwaway PostgreSQL server on 127.0.0.1 and
# ARTIFACTSTORE_TEST_POSTGRES_URL pointing at it; stops and removes it on exit.
#   scripts/with-postgres.sh -- cargo test -p artifactstore-index
set -euo pipefail
[ "${1:-}" = "--" ] && shift

bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
  echo "with-postgres: PostgreSQL server binaries not found (apt-get install postgresql)" >&2
  exit 1
fi
port=${PGPORT_TEST:-55432}
work=$(mktemp -d /tmp/artifactstore-pg.XXXXXX)
as_pg=()
if [ "$(id -u)" = 0 ]; then
  # initdb refuses to run as root.
  id postgres >/dev/null 2>&1 || useradd --system --home-dir "$work" postgres
  chown postgres "$work"
  as_pg=(runuser -u postgres --)
fi
cleanup() {
  "${as_pg[@]}" "$bindir/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

password=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
echo "$password" > "$work/pw" && chmod 600 "$work/pw"
[ "$(id -u)" = 0 ] && chown postgres "$work/pw"
"${as_pg[@]}" "$bindir/initdb" -D "$work/data" -U artifactstore --pwfile="$work/pw" -A scram-sha-256 >"$work/initdb.log" 2>&1 \
  || { cat "$work/initdb.log" >&2; exit 1; }
# The first free port from $port on: a fixed port can be taken (or linger) on a busy machine.
started=
for try_port in $(seq "$port" $((port + 19))); do
  [ -f "$work/server.log" ] && : >"$work/server.log"
  if "${as_pg[@]}" "$bindir/pg_ctl" -D "$work/data" -l "$work/server.log" -w -t 60 \
    -o "-p $try_port -k $work -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start >/dev/null 2>&1; then
    port=$try_port started=1
    break
  fi
  grep -q "Address already in use" "$work/server.log" 2>/dev/null || break
done
[ -n "$started" ] || { cat "$work/server.log" >&2; exit 1; }

export ARTIFACTSTORE_TEST_POSTGRES_URL="postgres://artifactstore:${password}@127.0.0.1:${port}/postgres"
echo "with-postgres: PostgreSQL $("$bindir/postgres" --version | awk '{print $3}') on 127.0.0.1:$port" >&2
"$@"
