#!/usr/bin/env bash
# A private PostgreSQL for the tests (tests/postgres_*.rs), sourced by
# .ci/run: installs the server if missing, creates a throwaway cluster
# owned by the `postgres` user (the server refuses to run as root), starts
# it on a free loopback port with TLS (a self-signed certificate) and
# exports
#   RAMPART_TEST_POSTGRES=postgres://postgres@127.0.0.1:PORT/postgres
#   RAMPART_TEST_POSTGRES_CTL="pg_ctl -D DATA" (as the postgres user; the
#     restart tests stop and start the server with it)
# The cluster is stopped when the sourcing shell exits (an EXIT trap), or
# with `rampart_postgres_stop`.
#
# Usable by hand too:  source .ci/postgres.sh   (then cargo test --test postgres_fleet)

rampart_postgres_start() {
  local bin
  bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)"
  if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql >/dev/null
    bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)"
  fi
  id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
  local as_pg=()
  [ "$(id -u)" = 0 ] && as_pg=(runuser -u postgres --)

  local dir port
  dir="$(mktemp -d /tmp/rampart-pg.XXXXXX)"
  chmod 0755 "$dir"
  mkdir -p "$dir/data" "$dir/sock"
  [ "$(id -u)" = 0 ] && chown -R postgres:postgres "$dir"
  "${as_pg[@]}" "$bin/initdb" -D "$dir/data" -U postgres --auth=trust --no-sync -E UTF8 >"$dir/initdb.log" 2>&1 || {
    cat "$dir/initdb.log" >&2
    return 1
  }
  # A self-signed certificate, so the tests can connect with sslmode=require.
  if command -v openssl >/dev/null; then
    "${as_pg[@]}" openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=127.0.0.1" \
      -keyout "$dir/data/server.key" -out "$dir/data/server.crt" >/dev/null 2>&1 &&
      "${as_pg[@]}" chmod 0600 "$dir/data/server.key" &&
      printf "ssl = on\n" >>"$dir/data/postgresql.conf"
  fi
  port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir/sock'
max_connections = 300
fsync = off
synchronous_commit = off
full_page_writes = off
CONF
  "${as_pg[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null || {
    cat "$dir/server.log" >&2
    return 1
  }
  export RAMPART_TEST_POSTGRES="postgres://postgres@127.0.0.1:$port/postgres"
  export RAMPART_TEST_POSTGRES_CTL="${as_pg[*]} $bin/pg_ctl -D $dir/data -l $dir/server.log"
  export RAMPART_TEST_POSTGRES_DIR="$dir"
  echo "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port ($dir)"
}

rampart_postgres_stop() {
  [ -n "${RAMPART_TEST_POSTGRES_CTL:-}" ] || return 0
  $RAMPART_TEST_POSTGRES_CTL -m immediate stop >/dev/null 2>&1 || true
  rm -rf "${RAMPART_TEST_POSTGRES_DIR:?}"
  unset RAMPART_TEST_POSTGRES RAMPART_TEST_POSTGRES_CTL RAMPART_TEST_POSTGRES_DIR
}

if [ -z "${RAMPART_TEST_POSTGRES:-}" ]; then
  rampart_postgres_start
  trap rampart_postgres_stop EXIT
fi
