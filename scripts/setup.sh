#!/usr/bin/env bash
# pg_ark machine setup: everything the build and the tests need, installed by the
# project itself. Safe to run again: every step checks whether its work is
# already done and skips it if so.
#
#   - Debian packages (compilers, PostgreSQL 15 from bookworm, libraries);
#   - PostgreSQL 17 (from trixie's source package) and 18 (from sid's) built
#     into $ARK_CACHE/pg/<major>, outside the checkout, and reused when present;
#   - cargo-pgrx =0.18.1 and `cargo pgrx init` for 15, 17 and 18;
#   - s3s-fs, the S3-compatible server the tests run on loopback;
#   - the unprivileged OS user that test clusters run as (initdb refuses root).
set -euo pipefail

ARK_CACHE=${ARK_CACHE:-/var/cache/pg_ark}
ARK_TEST_USER=${ARK_TEST_USER:-pgark}
PGRX_VERSION=0.18.1
# Bump when build_pg changes, so cached builds of an older recipe are redone.
PG_BUILD_RECIPE=2
S3S_FS_VERSION=${S3S_FS_VERSION:-0.14.1}
JOBS=$(nproc)
export PATH="$HOME/.cargo/bin:$PATH"

log() { printf '[setup %(%H:%M:%S)T] %s\n' -1 "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# ---------------------------------------------------------------- packages
PKGS=(build-essential bison flex pkg-config dpkg-dev ca-certificates
      libreadline-dev zlib1g-dev libssl-dev libicu-dev liblz4-dev libzstd-dev
      libclang-dev clang perl sudo
      postgresql-15 postgresql-server-dev-15 postgresql-client-15)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# deb-src entries for the newer majors' source packages (source only: no
# binary package from trixie or sid is ever installed on bookworm).
SRC_LIST=/etc/apt/sources.list.d/pg_ark-src.sources
if [ ! -f "$SRC_LIST" ]; then
  as_root tee "$SRC_LIST" >/dev/null <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: trixie sid
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  need_update=1
fi
if [ ${#missing[@]} -gt 0 ] || [ -n "${need_update:-}" ] || [ ! -d /var/lib/apt/lists/partial ]; then
  log "apt-get update"
  as_root apt-get update -qq
fi
if [ ${#missing[@]} -gt 0 ]; then
  log "installing: ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/tmp/pg_ark-apt.log 2>&1 || { tail -40 /tmp/pg_ark-apt.log; exit 1; }
fi
# Debian's postgresql-common would start a cluster on 5432 for the packaged
# server; tests never use it, so keep it from holding a port.
if command -v pg_lsclusters >/dev/null && pg_lsclusters -h 2>/dev/null | grep -q online; then
  pg_lsclusters -h | awk '$4=="online"{print $1, $2}' | while read -r v c; do
    as_root pg_ctlcluster "$v" "$c" stop || true
  done
fi

# ---------------------------------------------------- PostgreSQL 17 and 18
build_pg() {
  local major=$1 suite=$2 prefix="$ARK_CACHE/pg/$1"
  if [ -x "$prefix/bin/pg_config" ] && [ "$(cat "$prefix/.pg_ark-complete" 2>/dev/null)" = "$PG_BUILD_RECIPE" ]; then
    log "PostgreSQL $major: cached at $prefix"
    return
  fi
  log "PostgreSQL $major: fetching Debian source package (postgresql-$major/$suite)"
  local work="$ARK_CACHE/src/$major"
  rm -rf "$work" && mkdir -p "$work"
  (cd "$work" && apt-get source -qq -o APT::Sandbox::User=root "postgresql-$major/$suite" >/dev/null)
  local srcdir
  srcdir=$(find "$work" -maxdepth 1 -mindepth 1 -type d -name "postgresql-$major-*" | head -1)
  [ -n "$srcdir" ] || { echo "setup: source of postgresql-$major not found in $work" >&2; exit 1; }
  # Debian's 50-per-version-dirs.patch hard-codes pkglibdir to
  # /usr/lib/postgresql/<major>/lib, outside our prefix. Keep Debian's other
  # patches, but restore upstream's rule so the build lives under $prefix.
  sed -i 's|^override pkglibdir := /usr/lib/postgresql/@PG_MAJORVERSION@/lib$|override pkglibdir := $(pkglibdir)/postgresql|' \
    "$srcdir/src/Makefile.global.in"
  grep -q '^override pkglibdir := $(pkglibdir)/postgresql$' "$srcdir/src/Makefile.global.in" \
    || { echo "setup: could not restore pkglibdir in postgresql-$major" >&2; exit 1; }
  log "PostgreSQL $major: building in $srcdir"
  rm -rf "$prefix"
  (
    cd "$srcdir"
    ./configure --quiet --prefix="$prefix" --with-openssl --with-lz4 --with-zstd \
      --with-icu --enable-debug CFLAGS="-O2 -g" >"$work/configure.log" 2>&1 \
      || { tail -50 "$work/configure.log"; exit 1; }
    make -s -j"$JOBS" >"$work/make.log" 2>&1 || { tail -50 "$work/make.log"; exit 1; }
    make -s install >"$work/install.log" 2>&1
    # contrib modules the tests and benchmarks compare against
    for m in basic_archive pg_walinspect; do
      make -s -C "contrib/$m" install >>"$work/install.log" 2>&1
    done
  )
  echo "$PG_BUILD_RECIPE" >"$prefix/.pg_ark-complete"
  rm -rf "$work"
  log "PostgreSQL $major: installed at $prefix"
}
as_root mkdir -p "$ARK_CACHE/pg" "$ARK_CACHE/src"
build_pg 17 trixie
build_pg 18 sid

# ------------------------------------------------------------- cargo-pgrx
if ! cargo pgrx --version 2>/dev/null | grep -q "$PGRX_VERSION"; then
  log "installing cargo-pgrx $PGRX_VERSION"
  cargo install --locked --quiet cargo-pgrx --version "=$PGRX_VERSION"
fi
PG15_CONFIG=/usr/lib/postgresql/15/bin/pg_config
want="pg15 = \"$PG15_CONFIG\""
if ! grep -qF "$want" "$HOME/.pgrx/config.toml" 2>/dev/null \
   || ! grep -qF "$ARK_CACHE/pg/17/bin/pg_config" "$HOME/.pgrx/config.toml" \
   || ! grep -qF "$ARK_CACHE/pg/18/bin/pg_config" "$HOME/.pgrx/config.toml"; then
  log "cargo pgrx init"
  cargo pgrx init --pg15 "$PG15_CONFIG" --pg17 "$ARK_CACHE/pg/17/bin/pg_config" \
    --pg18 "$ARK_CACHE/pg/18/bin/pg_config"
fi

# ------------------------------------------------------- S3 test server
if ! command -v s3s-fs >/dev/null; then
  log "installing s3s-fs $S3S_FS_VERSION"
  cargo install --locked --quiet s3s-fs --version "=$S3S_FS_VERSION" --features binary
fi

# ------------------------------------------------------ test cluster user
if ! id "$ARK_TEST_USER" >/dev/null 2>&1; then
  log "creating OS user $ARK_TEST_USER"
  as_root useradd --system --create-home --shell /bin/bash "$ARK_TEST_USER"
fi

log "setup complete"
