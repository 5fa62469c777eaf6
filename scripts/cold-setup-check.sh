#!/usr/bin/env bash
# The fresh-machine path, proven without wiping the machine: `make setup`
# with ARK_CACHE (and pgrx's home) pointed at an empty scratch folder, run
# from make (so MAKELEVEL and MAKEFLAGS are set, as they are under
# `make test`), building at least PostgreSQL 17 from its pinned, verified
# source there. Prints the time it took.
#
#   scripts/cold-setup-check.sh            PostgreSQL 17 only (about 5 minutes)
#   ARK_PG_MAJORS="17 18" scripts/...      more majors
#   ARK_COLD_INSTALL=1                     then `make install` into the scratch
#                                          PostgreSQL 17 with an empty build
#                                          cache, timed (what `make demo` does
#                                          after its setup)
#   ARK_COLD_KEEP=1                        keep the scratch folder afterwards
#
# Debian packages, cargo-pgrx and s3s-fs live outside ARK_CACHE and are
# checked, not reinstalled; the OS user likewise.
set -euo pipefail
cd "$(dirname "$0")/.."
majors=${ARK_PG_MAJORS:-17}
scratch=$(mktemp -d /var/tmp/pg_ark-cold.XXXXXX)
cleanup() { [ "${ARK_COLD_KEEP:-0}" = 1 ] || rm -rf "$scratch"; }
trap cleanup EXIT
echo "== cold setup check: ARK_CACHE=$scratch/cache, majors: $majors"
start=$(date +%s)
# An outer make around the Makefile's own setup target: the Makefile's recipe
# runs with MAKELEVEL=2 and a jobserver MAKEFLAGS in its environment, which
# is exactly what broke PostgreSQL's build before.
cat >"$scratch/Makefile" <<MK
check:
	\$(MAKE) -C "$PWD" setup ARK_CACHE="$scratch/cache" ARK_PG_MAJORS="$majors" PGRX_HOME="$scratch/pgrx"
MK
env ARK_PG_MAJORS="$majors" PGRX_HOME="$scratch/pgrx" make -j2 -C "$scratch" check
end=$(date +%s)
for m in $majors; do
  [ "$m" = 15 ] && continue
  pgc="$scratch/cache/pg/$m/bin/pg_config"
  [ -x "$pgc" ] || { echo "cold setup check: no PostgreSQL $m at $pgc" >&2; exit 1; }
  echo "== PostgreSQL $m: $("$pgc" --version), $(grep '^source ' "$scratch/cache/pg/$m/.pg_ark-complete")"
  # The build must be usable: its server runs, as the test user does.
  "$scratch/cache/pg/$m/bin/postgres" --version
done
grep -q "pg17 = \"$scratch/cache/pg/17/bin/pg_config\"" "$scratch/pgrx/config.toml" \
  || { echo "cold setup check: cargo pgrx init did not register the scratch PostgreSQL 17" >&2; exit 1; }
echo "== cold setup check passed in $((end - start)) s"
if [ "${ARK_COLD_INSTALL:-0}" = 1 ]; then
  echo "== cold install: make install into the scratch PostgreSQL 17, CARGO_TARGET_DIR=$scratch/cache/target"
  istart=$(date +%s)
  env ARK_CACHE="$scratch/cache" CARGO_TARGET_DIR="$scratch/cache/target" PGRX_HOME="$scratch/pgrx" \
    make -C "$PWD" install PG_CONFIG="$scratch/cache/pg/17/bin/pg_config"
  "$scratch/cache/pg/17/bin/pg_ark" --version
  echo "== cold install done in $(($(date +%s) - istart)) s (setup $((end - start)) s before it)"
fi
