#!/usr/bin/env bash
# A private PostgreSQL for the tests (tests/postgres_*.rs), sourced by
# .ci/run: installs the server if missing, creates a throwaway cluster
# owned by the `postgres` user (the server refuses to run as root), starts
# it on a free loopback port with TLS (a self-signed certificate) and
# exports
#   RAMPART_TEST_POSTGRES=postgres://postgres@127.0.0.1:PORT/postgres
#   RAMPART_TEST_POSTGRES_CTL="pg_ctl -D DATA" (as the postgres user; the
#     restart tests stop and start the server with it)
#   RAMPART_TEST_POSTGRES_CA=the CA that signed the server's certificate
#     (for 127.0.0.1), when openssl is at hand
# The cluster is stopped when the sourcing shell exits (an EXIT trap), or
# with `rampart_postgres_stop`.
#
# Usable by hand too:  source .ci/postgres.sh   (then cargo test --test postgres_fleet)

rampart_postgres_start() {
  local bin
  bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)"
  if [ -z "$bin" ] && command -v initdb >/dev/null; then
    bin="$(dirname "$(readlink -f "$(command -v initdb)")")"
  fi
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
  # TLS: a throwaway CA and a certificate for 127.0.0.1 signed by it, so
  # the tests can connect with sslmode=require, verify-ca and verify-full.
  if command -v openssl >/dev/null; then
    if (
      cd "$dir" &&
        openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=rampart test CA" \
          -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
          -keyout ca.key -out ca.crt &&
        openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout data/server.key -out server.csr &&
        printf "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n" >server.ext &&
        openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
          -extfile server.ext -out data/server.crt &&
        chmod 0600 data/server.key ca.key &&
        chmod 0644 ca.crt
    ) >"$dir/openssl.log" 2>&1; then
      [ "$(id -u)" = 0 ] && chown postgres:postgres "$dir/data/server.key" "$dir/data/server.crt"
      printf "ssl = on\n" >>"$dir/data/postgresql.conf"
      export RAMPART_TEST_POSTGRES_CA="$dir/ca.crt"
    else
      cat "$dir/openssl.log" >&2
    fi
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
  unset RAMPART_TEST_POSTGRES RAMPART_TEST_POSTGRES_CTL RAMPART_TEST_POSTGRES_DIR RAMPART_TEST_POSTGRES_CA
}

if [ -z "${RAMPART_TEST_POSTGRES:-}" ]; then
  rampart_postgres_start
  trap rampart_postgres_stop EXIT
fi
