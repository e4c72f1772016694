#!/usr/bin/env bash
# Runs a command with RLHF_TEST_PG_URL pointing at a throwaway PostgreSQL cluster on a
# free local port, and removes the cluster afterwards. If RLHF_TEST_PG_URL is already
# set, or no PostgreSQL server binaries are installed, the command runs as it is (the
# PostgreSQL tests then skip, except under CI=true where they fail).
set -euo pipefail

if [[ -n "${RLHF_TEST_PG_URL:-}" ]]; then exec "$@"; fi

pg_bin=""
for candidate in /usr/lib/postgresql/*/bin; do
  [[ -x "$candidate/initdb" ]] && pg_bin="$candidate"
done
if [[ -z "$pg_bin" ]]; then
  echo "with_postgres: no PostgreSQL server found (apt-get install postgresql); running without it." >&2
  exec "$@"
fi

# PostgreSQL refuses to run as root: run the server as the postgres user when we are root.
as_owner=()
if [[ $(id -u) -eq 0 ]]; then as_owner=(runuser -u postgres --); fi

data_dir=$(mktemp -d /tmp/prefloop-pg.XXXXXX)
chmod 755 "$data_dir"
if [[ $(id -u) -eq 0 ]]; then chown postgres "$data_dir"; fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

cleanup() {
  "${as_owner[@]}" "$pg_bin/pg_ctl" -D "$data_dir/db" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$data_dir"
}
trap cleanup EXIT

"${as_owner[@]}" "$pg_bin/initdb" -D "$data_dir/db" -U prefloop --auth=trust -E UTF8 >/dev/null
"${as_owner[@]}" "$pg_bin/pg_ctl" -D "$data_dir/db" -l "$data_dir/server.log" -w \
  -o "-p $port -k $data_dir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start >/dev/null
"$pg_bin/createdb" -h 127.0.0.1 -p "$port" -U prefloop prefloop_test

export RLHF_TEST_PG_URL="postgresql+psycopg://prefloop@127.0.0.1:$port/prefloop_test"
echo "with_postgres: throwaway PostgreSQL at $RLHF_TEST_PG_URL" >&2
"$@"
