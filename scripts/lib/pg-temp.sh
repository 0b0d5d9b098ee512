# Sourced helper: gives tests a Postgres (DATABASE_URL, or a throwaway local cluster).
# shellcheck shell=bash
#
#   source scripts/lib/pg-temp.sh
#   trap pg_temp_stop EXIT
#   pg_temp_start          # exports DATABASE_URL
#
# The URL's user must be allowed to CREATE DATABASE: the Rust tests make one per test.

_PG_TEMP_DIR=""
_PG_TEMP_BIN=""

# Runs a command as the `postgres` OS user when we are root (initdb refuses root).
_pg_temp_as_owner() {
  if [[ $(id -u) -eq 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

# Directory holding initdb and pg_ctl: PATH first, then the highest /usr/lib/postgresql/*/bin.
_pg_temp_find_bin() {
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    dirname "$(readlink -f "$(command -v pg_ctl)")"
    return 0
  fi
  local dir
  dir=$(printf "%s\n" /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  if [[ -n $dir && -x $dir/initdb && -x $dir/pg_ctl ]]; then
    echo "$dir"
    return 0
  fi
  return 1
}

pg_temp_start() {
  if [[ -n ${DATABASE_URL:-} ]]; then
    echo "pg-temp: using DATABASE_URL from the environment"
    export DATABASE_URL
    return 0
  fi

  if ! _PG_TEMP_BIN=$(_pg_temp_find_bin); then
    cat >&2 <<'EOF'
pg-temp: ERROR: no Postgres for the tests.
  Either set DATABASE_URL=postgres://USER:PASSWORD@HOST:PORT/DB pointing at a server
  where USER may CREATE DATABASE, or install the server binaries (initdb, pg_ctl):
    apt-get install -y postgresql
EOF
    return 1
  fi
  if [[ $(id -u) -eq 0 ]] && ! id postgres >/dev/null 2>&1; then
    echo "pg-temp: ERROR: running as root but there is no 'postgres' OS user to run initdb as;" \
      "create one (useradd --system postgres) or set DATABASE_URL." >&2
    return 1
  fi

  local port
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  _PG_TEMP_DIR=$(mktemp -d /tmp/agentry-pg.XXXXXX)
  if [[ $(id -u) -eq 0 ]]; then
    chown postgres: "$_PG_TEMP_DIR"
  fi

  # Tests trade durability for speed; PG_TEMP_DURABLE=1 keeps Postgres' defaults (fsync,
  # synchronous_commit, full_page_writes on), for benchmarks against durable peers.
  local durability="-F -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
  [[ ${PG_TEMP_DURABLE:-0} == 1 ]] && durability=""
  # PG_TEMP_OPTIONS: more server settings, e.g.
  # "-c shared_preload_libraries=pg_stat_statements" to see a benchmark's statements.
  durability="$durability ${PG_TEMP_OPTIONS:-}"

  echo "pg-temp: starting a throwaway cluster ($_PG_TEMP_BIN) in $_PG_TEMP_DIR on port $port"
  if ! _pg_temp_as_owner "$_PG_TEMP_BIN/initdb" -D "$_PG_TEMP_DIR/data" --auth=trust -U postgres \
    --no-sync -E UTF8 --no-locale >"$_PG_TEMP_DIR/initdb.log" 2>&1; then
    echo "pg-temp: ERROR: initdb failed:" >&2
    cat "$_PG_TEMP_DIR/initdb.log" >&2
    return 1
  fi
  if ! _pg_temp_as_owner "$_PG_TEMP_BIN/pg_ctl" -D "$_PG_TEMP_DIR/data" -l "$_PG_TEMP_DIR/server.log" -w -t 60 \
    -o "$durability -c max_connections=300 \
-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$_PG_TEMP_DIR" \
    start >/dev/null; then
    echo "pg-temp: ERROR: the server did not start; its log:" >&2
    tail -n 30 "$_PG_TEMP_DIR/server.log" >&2 || true
    return 1
  fi

  # pg_ctl -w already waited; pg_isready double-checks over TCP when it is there.
  local isready="$_PG_TEMP_BIN/pg_isready" i
  [[ -x $isready ]] || isready=$(command -v pg_isready || echo true)
  for ((i = 0; i < 60; i++)); do
    if "$isready" -q -h 127.0.0.1 -p "$port" -U postgres; then
      export DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
      echo "pg-temp: ready at $DATABASE_URL"
      return 0
    fi
    sleep 0.5
  done
  echo "pg-temp: ERROR: the server is not accepting connections after 30 s; its log:" >&2
  tail -n 30 "$_PG_TEMP_DIR/server.log" >&2 || true
  return 1
}

# Stops and removes the cluster pg_temp_start made (no-op otherwise); safe to call twice.
pg_temp_stop() {
  [[ -n ${_PG_TEMP_DIR:-} ]] || return 0
  if [[ -f $_PG_TEMP_DIR/data/postmaster.pid ]]; then
    _pg_temp_as_owner "$_PG_TEMP_BIN/pg_ctl" -D "$_PG_TEMP_DIR/data" -m immediate stop >/dev/null 2>&1 || true
  fi
  rm -rf "$_PG_TEMP_DIR"
  _PG_TEMP_DIR=""
  unset DATABASE_URL
}
