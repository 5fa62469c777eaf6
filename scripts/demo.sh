#!/usr/bin/env bash
# make demo / make demo-stop: a demo cluster with pg_ark loaded.
#
# The cluster lives in $ARK_DEMO_DIR (default /tmp/pg_ark-demo), runs as the
# unprivileged test user when started by root, and listens on a Unix socket in
# that directory and on 127.0.0.1:$ARK_DEMO_PORT. `start` stays in the
# foreground and stops the cluster cleanly on Ctrl-C; `stop` stops it from
# another terminal.
set -euo pipefail
cmd=${1:?usage: demo.sh start|stop [pg_config]}
PG_CONFIG=${2:-/var/cache/pg_ark/pg/17/bin/pg_config}
DIR=${ARK_DEMO_DIR:-/tmp/pg_ark-demo}
PORT=${ARK_DEMO_PORT:-54329}
USER_=${ARK_TEST_USER:-pgark}
bindir=$("$PG_CONFIG" --bindir)

as_user() {
  if [ "$(id -u)" = 0 ]; then runuser -u "$USER_" -- "$@"; else "$@"; fi
}
pg_ctl() { as_user "$bindir/pg_ctl" -D "$DIR/data" "$@"; }

stop() {
  if [ -f "$DIR/data/postmaster.pid" ]; then
    echo "stopping the demo cluster"
    pg_ctl -w -m fast stop >/dev/null
    echo "demo cluster stopped"
  else
    echo "no demo cluster is running in $DIR"
  fi
}

case "$cmd" in
  stop) stop; exit 0 ;;
  start) ;;
  *) echo "usage: demo.sh start|stop" >&2; exit 2 ;;
esac

if [ -f "$DIR/data/postmaster.pid" ]; then
  echo "a demo cluster is already running in $DIR (make demo-stop stops it)" >&2
  exit 1
fi
mkdir -p "$DIR"
[ "$(id -u)" = 0 ] && chown "$USER_" "$DIR"
if [ ! -d "$DIR/data" ]; then
  as_user "$bindir/initdb" -D "$DIR/data" -U postgres -A trust -E UTF8 --locale=C >/dev/null
  cat >>"$DIR/data/postgresql.conf" <<CONF
# pg_ark demo
shared_preload_libraries = 'pg_ark'
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$DIR'
CONF
fi
pg_ctl -w -l "$DIR/server.log" start >/dev/null
trap 'echo; stop; exit 0' INT TERM
psql=("$bindir/psql" -h "$DIR" -p "$PORT" -U postgres -X -q)
"${psql[@]}" -c "CREATE EXTENSION IF NOT EXISTS pg_ark" >/dev/null
cat <<MSG

pg_ark demo cluster is running (PostgreSQL $("$PG_CONFIG" --version | awk '{print $2}'), pg_ark $("${psql[@]}" -Atc 'SELECT ark.version()')).

  connect:   $bindir/psql -h $DIR -p $PORT -U postgres
  try:       SELECT ark.version();
             SELECT pid, backend_type FROM pg_stat_activity WHERE backend_type = 'pg_ark scheduler';
  log:       $DIR/server.log

Ctrl-C here, or 'make demo-stop' in another terminal, stops it.
MSG
# Wait while the cluster runs; demo-stop from elsewhere ends the wait too.
while [ -f "$DIR/data/postmaster.pid" ]; do sleep 1; done
echo "demo cluster stopped"
