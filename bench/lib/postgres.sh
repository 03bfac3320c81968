# Sourced by bench suites: installs (if missing) and starts a throwaway PostgreSQL from Debian's
# packages on a free loopback port in a temp dir. Sets PG_BIN, PG_PORT, PG_DIR; pg_stop tears it down.
# Usage: source bench/lib/postgres.sh; pg_start; ...; pg_stop

pg_find_bin() {
  local d
  for d in /usr/lib/postgresql/*/bin; do
    if [ -x "$d/pg_ctl" ] && [ -x "$d/pgbench" ]; then PG_BIN="$d"; return 0; fi
  done
  return 1
}

pg_install() {
  if pg_find_bin; then return 0; fi
  echo "installing postgresql from Debian packages ..." >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql postgresql-contrib) >&2
  pg_find_bin || { echo "postgresql install failed" >&2; return 1; }
}

pg_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Runs a PostgreSQL binary as the postgres user (PostgreSQL refuses to run as root).
pg_as() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_start() {
  pg_install || return 1
  PG_DIR="$(mktemp -d /tmp/kyrodb-bench-pg.XXXXXX)"
  PG_PORT="$(pg_free_port)"
  if [ "$(id -u)" = 0 ]; then chown postgres "$PG_DIR"; fi
  pg_as "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres --auth=trust -E UTF8 >/dev/null
  # Durable like KyroDB's fsync=always: fsync on, synchronous_commit on.
  pg_as "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/log" -w -t 60 start -o \
    "-p $PG_PORT -k $PG_DIR -c listen_addresses=127.0.0.1 -c fsync=on -c synchronous_commit=on \
     -c max_connections=300 -c shared_buffers=512MB -c max_wal_size=4GB" >/dev/null
  echo "postgres $("$PG_BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PG_PORT" >&2
}

pg_psql() {
  "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -q "$@"
}

pg_stop() {
  if [ -n "${PG_DIR:-}" ] && [ -d "$PG_DIR/data" ]; then
    pg_as "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$PG_DIR"
  fi
}
