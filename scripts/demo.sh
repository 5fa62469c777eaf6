#!/usr/bin/env bash
# make demo / make demo-stop / make demo-check: pg_ark's whole story, from a
# fresh cluster to a point-in-time restore, printed step by step (a heading,
# the exact SQL or command, its output).
#
#   demo.sh start [pg_config]   the story, then leaves the demo cluster and the
#                               restored one running until Ctrl-C
#   demo.sh stop  [pg_config]   stops both from another terminal
#
# The demo lives in $ARK_DEMO_DIR (default /tmp/pg_ark-demo): the cluster in
# data/, its repository in repo/, the restored cluster in restored/. The demo
# cluster listens on a Unix socket in that directory and on
# 127.0.0.1:$ARK_DEMO_PORT (default 54329), the restored one on the next
# port; the demo cluster's HTTP endpoint (/health, /metrics, the dashboard)
# on 127.0.0.1:$ARK_DEMO_HTTP_PORT (default the demo port + 10). Both run as the unprivileged test user ($ARK_TEST_USER, default
# pgark) when started by root: initdb and pg_ctl refuse root.
#
# ARK_DEMO_EXIT=1 runs the story and exits instead of waiting: 0 only if
# every step succeeded and the restored cluster holds exactly the data of the
# chosen moment, after stopping every cluster it started (and removing the
# directory when it passed). Any failing step exits non-zero, with the step,
# the reason and the server log's tail.
set -euo pipefail
cmd=${1:?usage: demo.sh start|stop [pg_config]}
PG_CONFIG=${2:-/var/cache/pg_ark/pg/17/bin/pg_config}
DIR=${ARK_DEMO_DIR:-/tmp/pg_ark-demo}
DIR=${DIR%/}
PORT=${ARK_DEMO_PORT:-54329}
RPORT=$((PORT + 1))
# The HTTP endpoint (ark.http_listen): /health, /metrics and the dashboard.
HTTP_PORT=${ARK_DEMO_HTTP_PORT:-$((PORT + 10))}
USER_=${ARK_TEST_USER:-pgark}
EXIT_AFTER=${ARK_DEMO_EXIT:-0}
DATA=$DIR/data
REPO=$DIR/repo
RESTORED=$DIR/restored
MARK=$DIR/.pg_ark-demo

case "$DIR" in
  /?*) ;;
  *) echo "demo: ARK_DEMO_DIR must be an absolute path other than / (it is \"$DIR\")" >&2; exit 2 ;;
esac
bindir=$("$PG_CONFIG" --bindir)
pgversion=$("$PG_CONFIG" --version | awk '{print $2}')
major=${pgversion%%.*}

as_user() {
  if [ "$(id -u)" = 0 ]; then runuser -u "$USER_" -- "$@"; else "$@"; fi
}
pg_ctl_on() { local d=$1; shift; as_user "$bindir/pg_ctl" -D "$d" "$@"; }
# A server runs in $1 (pg_ctl status, so a postmaster.pid left by a crash
# does not count).
running() { [ -f "$1/postmaster.pid" ] && pg_ctl_on "$1" status >/dev/null 2>&1; }

stop_one() { # data dir, name
  if running "$1"; then
    echo "stopping the $2 cluster"
    pg_ctl_on "$1" -w -m fast stop >/dev/null
    echo "$2 cluster stopped"
    return 0
  fi
  return 1
}

case "$cmd" in
  stop)
    stopped=0
    stop_one "$RESTORED" restored && stopped=1
    stop_one "$DATA" demo && stopped=1
    [ "$stopped" = 1 ] || echo "no demo cluster is running in $DIR"
    exit 0 ;;
  start) ;;
  *) echo "usage: demo.sh start|stop [pg_config]" >&2; exit 2 ;;
esac

# ---------------------------------------------------------------- printing
if [ -t 1 ]; then B=$'\e[1m'; D=$'\e[2m'; G=$'\e[32m'; RED=$'\e[31m'; N=$'\e[0m'; else B= D= G= RED= N=; fi
stepno=0
STEP="setting up"
step() {
  stepno=$((stepno + 1))
  STEP="$stepno. $*"
  printf '\n%s==== %s ====%s\n' "$B" "$STEP" "$N"
}
say() { printf '%s\n' "$@"; }
# A command line as one would type it.
show_cmd() { # [--as user] args...
  local who="" out="" a
  if [ "$1" = --as ]; then who=" ${D}(as $2)${N}"; shift 2; fi
  for a in "$@"; do
    if [[ "$a" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then out+="$a "; else out+="'${a//\'/\'\\\'\'}' "; fi
  done
  printf '%s$ %s%s%s\n' "$B" "${out% }" "$N" "$who"
}
show_sql() { # prompt, sql
  printf '%s\n' "$2" | sed "1s|^|$B$1=# |; 2,\$s|^|$1-# |; \$s|\$|$N|"
}
DIED=0
die() {
  DIED=1
  printf '\n%sFAILED%s at step "%s": %s\n' "$RED$B" "$N" "$STEP" "$*" >&2
  exit 1
}

# ------------------------------------------------------------------ running
# No pager: the story is printed, not paged, on a terminal too.
psql_demo=("$bindir/psql" -X -v ON_ERROR_STOP=1 -P pager=off -h "$DIR" -p "$PORT" -U postgres -d postgres)
psql_restored=("$bindir/psql" -X -v ON_ERROR_STOP=1 -P pager=off -h "$DIR" -p "$RPORT" -U postgres -d postgres)
# SQL on the demo cluster, shown and run, with psql's own output.
sql() { show_sql postgres "$1"; "${psql_demo[@]}" -c "$1"; }
# SQL whose one value is shown and kept in $VALUE.
sql_value() { # [restored] sql
  local p=("${psql_demo[@]}") prompt=postgres
  if [ "$1" = restored ]; then p=("${psql_restored[@]}"); prompt=restored; shift; fi
  show_sql "$prompt" "$1"
  VALUE=$("${p[@]}" -At -c "$1")
  printf '%s\n' "$VALUE"
}
run() { show_cmd "$@"; "$@"; }
run_as_user() { # [-q: discard the command's standard output] args...
  local quiet=0
  if [ "$1" = -q ]; then quiet=1; shift; fi
  if [ "$(id -u)" = 0 ]; then show_cmd --as "$USER_" "$@"; else show_cmd "$@"; fi
  if [ "$quiet" = 1 ]; then as_user "$@" >/dev/null; else as_user "$@"; fi
}
# pgbench against the demo cluster.
pgbench_demo() { run pgbench -h "$DIR" -p "$PORT" -U postgres "$@" postgres; }
# Queue a backup, wait for its job, and print the job's final state.
backup() { # kind [options]
  local opts=""
  [ $# -lt 2 ] || opts=", '$2'"
  sql_value "SELECT ark.backup('$1'$opts);"
  local id=$VALUE
  sql_value "SELECT jsonb_pretty(ark.wait($id, '5 min'));"
  grep -q '^    "state": "succeeded",$' <<<"$VALUE" || die "the $1 backup (job $id) did not succeed"
}
# What the check compares: the pgbench data and the marker rows.
FINGERPRINT="SELECT (SELECT sum(abalance) FROM pgbench_accounts) AS sum_abalance,
       (SELECT count(*) FROM pgbench_accounts) AS accounts,
       (SELECT count(*) FROM pgbench_history) AS history,
       (SELECT string_agg(note, ', ' ORDER BY id) FROM demo_marker) AS markers;"

# Poll (every 0.2 s, up to $1 s) until the command "${@:2}" succeeds;
# false after that.
poll() {
  local deadline=$((SECONDS + $1))
  until "${@:2}"; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}

# The archiver has reported segment $1 (or a later file) archived.
archived() {
  [ "$("${psql_demo[@]}" -At -c "SELECT coalesce(last_archived_wal, '') COLLATE \"C\" >= '$1' FROM pg_stat_archiver")" = t ]
}
# The restored cluster runs and its recovery has ended.
promoted() {
  running "$RESTORED" || die "the restored cluster stopped during recovery"
  [ "$("${psql_restored[@]}" -At -c 'SELECT pg_is_in_recovery()' 2>/dev/null)" = f ]
}

STARTED_DEMO=0
STARTED_RESTORED=0
WAITING=0
INTERRUPTED=0
log_tail() {
  local f
  for f in "$DIR/server.log" "$DIR/restored.log"; do
    if [ -f "$f" ]; then
      printf '\n--- last 40 lines of %s ---\n' "$f" >&2
      tail -n 40 "$f" >&2
    fi
  done
}
stop_started() {
  [ "$STARTED_RESTORED" = 1 ] && { stop_one "$RESTORED" restored || true; }
  [ "$STARTED_DEMO" = 1 ] && { stop_one "$DATA" demo || true; }
  STARTED_DEMO=0 STARTED_RESTORED=0
}
on_exit() {
  local rc=$?
  trap - EXIT INT TERM
  if [ "$rc" != 0 ]; then
    if [ "$INTERRUPTED" = 0 ] && [ "$DIED" = 0 ]; then
      printf '\n%sFAILED%s at step "%s": the last command above failed (exit %s)\n' "$RED$B" "$N" "$STEP" "$rc" >&2
    fi
    [ "$INTERRUPTED" = 0 ] && log_tail
    stop_started
    local what=failed
    [ "$INTERRUPTED" = 0 ] || what=interrupted
    printf '\n%sdemo %s%s (exit %s); what it made is kept in %s\n' "$RED$B" "$what" "$N" "$rc" "$DIR" >&2
  else
    stop_started
  fi
  exit "$rc"
}
on_signal() {
  trap - INT TERM
  echo
  if [ "$WAITING" = 1 ]; then stop_started; exit 0; fi
  INTERRUPTED=1
  echo "interrupted at step \"$STEP\"" >&2
  exit 130
}
# ------------------------------------------------------------- fresh start
for d in "$DATA" "$RESTORED"; do
  if running "$d"; then
    echo "a demo cluster is already running in $d (make demo-stop stops it)" >&2
    exit 1
  fi
done
if [ -e "$DIR" ]; then
  if [ -f "$MARK" ] || [ -f "$DATA/PG_VERSION" ] || [ -z "$(ls -A "$DIR")" ]; then
    echo "removing the previous demo in $DIR"
    rm -rf "$DIR"
  else
    echo "demo: $DIR exists and is not a pg_ark demo; remove it or set ARK_DEMO_DIR" >&2
    exit 1
  fi
fi
mkdir -p "$DIR"
touch "$MARK"
[ "$(id -u)" = 0 ] && chown "$USER_" "$DIR"
# The servers run as the test user, who may not be able to enter the
# caller's working directory.
cd "$DIR"
export PATH="$bindir:$PATH"
T0=$SECONDS
trap on_exit EXIT
trap on_signal INT TERM

say "${B}pg_ark demo${N}: from an empty directory to a point-in-time restore."
say "PostgreSQL $pgversion in $bindir (first in PATH below); everything in $DIR."

# ------------------------------------------------------------------ the story
step "A cluster with pg_ark"
run_as_user -q initdb -D "$DATA" -U postgres -A trust -E UTF8 --locale=C --no-sync
say "initdb done; these lines go into $DATA/postgresql.conf:"
conf="# pg_ark demo
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$DIR'
shared_preload_libraries = 'pg_ark'     # the scheduler, the job workers
archive_mode = on                        # every WAL file goes to the repository,
archive_library = 'pg_ark'               # through pg_ark's archive module
ark.repository = 'file://$REPO'
ark.work_directory = '$DIR/work'         # staging and restore drills' scratch clusters
wal_level = replica                      # the default; physical backups need it
ark.scheduler_naptime = 1s               # so the demo's jobs start at once (default 10s)
ark.http_listen = '127.0.0.1:$HTTP_PORT'   # /health, /metrics and the dashboard"
if [ "$major" -ge 17 ]; then
  conf+="
summarize_wal = on                       # incremental backups read the changed blocks from WAL summaries"
fi
printf '%s\n' "$conf" | tee -a "$DATA/postgresql.conf" | sed 's/^/    /'
run_as_user -q pg_ctl -D "$DATA" -l "$DIR/server.log" -w start
STARTED_DEMO=1
say "started (log: $DIR/server.log)"
sql "CREATE EXTENSION pg_ark;"
sql "SELECT ark.version();"
sql "SELECT pid, backend_type, datname FROM pg_stat_activity WHERE backend_type = 'pg_ark scheduler';"

step "Sample data and schedules"
pgbench_demo -i -q -s 5
sql "SELECT ark.schedule('nightly-full', '0 3 * * *', 'full');"
sql "SELECT ark.schedule('hourly-incr', '0 * * * *', 'incremental');"
sql "SELECT ark.schedule('nightly-dump', '30 3 * * *', 'logical', '{\"database\": \"postgres\"}');"
sql "SELECT ark.schedule('weekly-drill', '0 5 * * 0', 'drill', '{\"amcheck\": \"pgbench_accounts\"}');"
sql "SELECT name, cron, kind, options, next_run FROM ark.schedules ORDER BY id;"

step "A full backup now"
say "ark.backup() queues a job and returns its id; ark.wait() waits for it and returns its final state."
backup full

step "Writes, then an incremental backup and a logical dump"
pgbench_demo -n -c 2 -j 2 -t 300
backup incremental
backup logical '{"database": "postgres"}'

step "What pg_ark knows"
sql "SELECT id, kind, state, attempts, schedule_name, finished_at - started_at AS took FROM ark.jobs ORDER BY id;"
sql "SELECT kind, label, database, pg_size_pretty(size_bytes) AS size, pg_size_pretty((info->>'stored_bytes')::bigint) AS stored, info->>'parent' AS parent FROM ark.backups ORDER BY id;"
sql "SELECT chain, backups, incrementals, backup_ids, kinds, verified_ok FROM ark.backup_chains;"
sql_value "SELECT jsonb_pretty(ark.status());"
say "The repository alone tells the same, with no server:"
run_as_user pg_ark info --repo "file://$REPO"

step "Watching from outside: /health, /metrics and the dashboard"
say "ark.http_listen serves them from a worker of its own (off loopback it needs ark.http_token_file)."
say "/health is ark.status(), 200 when healthy or degraded, 503 when failing:"
for _ in $(seq 30); do  # until the worker listens (it does within a second of the start)
  curl -s -o /dev/null "http://127.0.0.1:$HTTP_PORT/health" && break
  sleep 1
done
run curl -sS -o /dev/null -w '%{http_code}\n' "http://127.0.0.1:$HTTP_PORT/health" ||
  die "the HTTP endpoint does not answer on 127.0.0.1:$HTTP_PORT (see $DIR/server.log)"
say "/metrics is Prometheus's text format (a few of its series):"
show_cmd curl -s "http://127.0.0.1:$HTTP_PORT/metrics"
METRICS=$(curl -sS "http://127.0.0.1:$HTTP_PORT/metrics") || die "GET /metrics failed"
printf '%s\n' "$METRICS" | grep -E '^pg_ark_(backup_last_success_timestamp_seconds|backups_kept|jobs_finished_total|archive_segments_archived_total|rpo_seconds|health_status)' | sed 's/^/    /'
printf '%s\n' "$METRICS" | grep -q '^pg_ark_jobs_finished_total{kind="full",outcome="succeeded"} [1-9]' ||
  die "/metrics does not count the full backup that succeeded"
say "The dashboard: http://127.0.0.1:$HTTP_PORT/ (open it in a browser)"

step "The moment T to restore to"
sql "CREATE TABLE demo_marker (id int PRIMARY KEY, note text, at timestamptz DEFAULT clock_timestamp());"
sql "INSERT INTO demo_marker (id, note) VALUES (1, 'before T');"
sql_value "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00';"
T=$VALUE
say "T = $T: the data at T, which the restored cluster must show:"
sql "$FINGERPRINT"
AT_T=$("${psql_demo[@]}" -At -c "$FINGERPRINT")

step "Writes after T"
pgbench_demo -n -c 2 -j 2 -t 300
sql "INSERT INTO demo_marker (id, note) VALUES (2, 'after T');"
sql "$FINGERPRINT"
NOW=$("${psql_demo[@]}" -At -c "$FINGERPRINT")
say "Switch to a new WAL segment, so the one holding these writes is archived:"
sql_value "SELECT pg_walfile_name(pg_switch_wal());"
SEG=$VALUE
show_sql postgres "SELECT last_archived_wal FROM pg_stat_archiver;    -- polled until it reaches $SEG"
poll 120 archived "$SEG" ||
  die "$SEG was not archived within 120 s: $("${psql_demo[@]}" -At -c 'SELECT last_failed_wal, failed_count FROM pg_stat_archiver')"
"${psql_demo[@]}" -c "SELECT last_archived_wal, last_archived_time, failed_count FROM pg_stat_archiver;"

step "The restore plan for T"
say "The same planner as pg_ark restore: which backups, which settings, which WAL, where recovery stops."
show_sql postgres "SELECT * FROM ark.restore_plan(target_time => '$T');"
"${psql_demo[@]}" -A -F ' | ' -c "SELECT * FROM ark.restore_plan(target_time => '$T');"

step "Point-in-time restore into a new directory"
say "pg_ark restore needs no server: the chain that reaches T is rebuilt from the repository alone."
say "--archive-off: this test restore must not archive into the demo's repository."
run_as_user pg_ark restore --repo "file://$REPO" --pgdata "$RESTORED" --target-time "$T" --archive-off
say "What it wrote for recovery (postgresql.auto.conf):"
grep -E '^(restore_command|recovery_target|archive_mode)' "$RESTORED/postgresql.auto.conf" | sed 's/^/    /'
say "Its postgresql.conf is the demo's; it gets its own port:"
printf '%s$ %s%s\n' "$B" "echo 'port = $RPORT' >> $RESTORED/postgresql.auto.conf" "$N"
echo "port = $RPORT" >>"$RESTORED/postgresql.auto.conf"
say "and no HTTP endpoint (the demo's has the port):"
printf '%s$ %s%s\n' "$B" "echo \"ark.http_listen = ''\" >> $RESTORED/postgresql.auto.conf" "$N"
echo "ark.http_listen = ''" >>"$RESTORED/postgresql.auto.conf"
run_as_user -q pg_ctl -D "$RESTORED" -l "$DIR/restored.log" -w start
STARTED_RESTORED=1
say "started (log: $DIR/restored.log); waiting for recovery to reach T and promote:"
show_sql restored "SELECT pg_is_in_recovery();    -- polled until false"
poll 180 promoted ||
  die "the restored cluster did not finish recovery (see its log below)"
"${psql_restored[@]}" -c "SELECT pg_is_in_recovery(), timeline_id FROM pg_control_checkpoint();"
say "Where recovery stopped (its log):"
grep -E 'starting point-in-time recovery|recovery stopping|last completed transaction|selected new timeline|archive recovery complete' "$DIR/restored.log" | sed 's/^/    /' || true

step "Check: the restored cluster holds the data of T"
sql_value restored "$FINGERPRINT"
RESTORED_FP=$VALUE
printf '%-22s %s\n' "recorded at T:" "$AT_T" "restored cluster:" "$RESTORED_FP" "demo cluster now:" "$NOW"
if [ "$RESTORED_FP" = "$AT_T" ] && [ "$RESTORED_FP" != "$NOW" ]; then
  printf '%sPASS%s: the restored cluster has the data of %s, not what was written after it\n' "$G$B" "$N" "$T"
else
  printf '%sFAIL%s: the restored cluster does not hold the data of %s\n' "$RED$B" "$N" "$T"
  die "the point-in-time restore check failed"
fi
say "A test restore must not take the demo's scheduled backups too:"
show_sql restored "SELECT ark.unschedule(name) FROM ark.schedules;"
"${psql_restored[@]}" -c "SELECT ark.unschedule(name) FROM ark.schedules;"

step "A restore drill: pg_ark proves by itself that the newest backup restores"
say "It restores the newest backup into a scratch cluster in ark.work_directory, recovers it"
say "on a free port with no archiving, checks it, records the timings (its RTO) and removes it:"
backup drill '{"amcheck": "pgbench_accounts", "count": ["pgbench_accounts", "pgbench_history"]}'
sql "SELECT jsonb_pretty(ark.status()->'drill');"
say "pg_ark info shows the drill beside the backup:"
run_as_user pg_ark info --repo "file://$REPO"
say "(the story took $((SECONDS - T0)) s)"

if [ "$EXIT_AFTER" = 1 ]; then
  stop_started
  trap - EXIT
  rm -rf "$DIR"
  printf '\n%sdemo passed%s: every step succeeded; clusters stopped, %s removed\n' "$G$B" "$N" "$DIR"
  exit 0
fi

cat <<MSG

${B}Both clusters are running.${N}

  demo cluster:      psql -h $DIR -p $PORT -U postgres     (log: $DIR/server.log)
  restored cluster:  psql -h $DIR -p $RPORT -U postgres     (log: $DIR/restored.log)
  (psql is $bindir/psql)

  dashboard:  http://127.0.0.1:$HTTP_PORT/
  health:     curl -s http://127.0.0.1:$HTTP_PORT/health
  metrics:    curl -s http://127.0.0.1:$HTTP_PORT/metrics

  try:   SELECT * FROM ark.jobs ORDER BY id DESC LIMIT 5;
         SELECT ark.wait(ark.backup('incremental'));
         SELECT * FROM ark.restore_plan();
         $bindir/pg_ark info --repo file://$REPO

Ctrl-C here, or 'make demo-stop' in another terminal, stops both.
MSG
WAITING=1
# Wait while the demo cluster runs; demo-stop from elsewhere ends the wait.
while [ -f "$DATA/postmaster.pid" ]; do sleep 1; done
WAITING=0
stop_one "$RESTORED" restored || true
STARTED_DEMO=0 STARTED_RESTORED=0
echo "demo cluster stopped"
