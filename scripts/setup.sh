#!/usr/bin/env bash
# pg_ark machine setup: everything the build and the tests need, installed by the
# project itself. Safe to run again: every step checks whether its work is
# already done and skips it if so.
#
#   - Debian packages (compilers, PostgreSQL 15 from bookworm, libraries);
#   - PostgreSQL 17 and 18 built from pinned Debian source packages (checked
#     against the SHA-256 recorded below) into $ARK_CACHE/pg/<major>, outside
#     the checkout, and reused when present;
#   - cargo-pgrx =0.18.1 and `cargo pgrx init` for the majors set up;
#   - s3s-fs, the S3-compatible server the tests run on loopback, and moto
#     (pip, for python3), the one with versioning and Object Lock;
#   - the tools the `pgbackrest`, `barman` and `pg_basebackup` job kinds run:
#     Debian bookworm's pgBackRest (2.45, which reads PostgreSQL up to 15) and
#     Barman from PyPI, in a virtual environment of Debian's python3 under
#     $ARK_CACHE/barman that the test clusters' OS user can run;
#   - the unprivileged OS user that test clusters run as (initdb refuses root).
#
# ARK_PG_MAJORS picks the majors (default "15 17 18", what `make test` needs;
# `make demo` asks for "17" only). ARK_SETUP_S3=0 skips the S3 test servers.
# ARK_SETUP_TOOLS=0 skips pgBackRest and Barman. ARK_SETUP_BENCH=1 (`make
# bench`) adds the zstd command (the compression limit a full backup meets).
set -euo pipefail

# Nothing here is part of the caller's make: PostgreSQL's Makefile.global
# generates its headers only at MAKELEVEL 0, and an inherited MAKEFLAGS
# (jobserver file descriptors, -s, -k) changes how every sub-make behaves.
unset MAKELEVEL MAKEFLAGS MFLAGS MAKEOVERRIDES GNUMAKEFLAGS

ARK_CACHE=${ARK_CACHE:-/var/cache/pg_ark}
ARK_TEST_USER=${ARK_TEST_USER:-pgark}
ARK_PG_MAJORS=${ARK_PG_MAJORS:-15 17 18}
ARK_SETUP_S3=${ARK_SETUP_S3:-1}
ARK_SETUP_BENCH=${ARK_SETUP_BENCH:-0}
ARK_SETUP_TOOLS=${ARK_SETUP_TOOLS:-1}
PGRX_VERSION=0.18.1
# Bump when build_pg changes, so cached builds of an older recipe are redone.
PG_BUILD_RECIPE=4
S3S_FS_VERSION=0.14.1
MOTO_VERSION=5.2.1
BARMAN_VERSION=3.19.1
PSYCOPG2_VERSION=2.9.13
DATEUTIL_VERSION=4.0.0
DEBIAN_POOL=${ARK_DEBIAN_POOL:-http://deb.debian.org/debian/pool/main/p}
JOBS=$(nproc)
export PATH="$HOME/.cargo/bin:$PATH"

log() { printf '[setup %(%H:%M:%S)T] %s\n' -1 "$*"; }
die() { printf 'setup: %s\n' "$*" >&2; exit 1; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
wants() { [[ " $ARK_PG_MAJORS " == *" $1 "* ]]; }
for m in $ARK_PG_MAJORS; do
  case "$m" in 15|17|18) ;; *) die "ARK_PG_MAJORS: PostgreSQL $m is not supported (15, 17 and 18 are)";; esac
done

# The exact source packages built, with the SHA-256 of every file. A build
# never starts from a file whose checksum does not match. To move to a new
# point release: download its three files, check them against the Sources
# index (apt-cache showsrc), and record them here.
#   major  version  suite-for-fallback
PG_PIN_17="17.11-0+deb13u1 trixie"
PG_FILES_17="
postgresql-17_17.11-0+deb13u1.dsc bf148ae423a982707c3f60672c3a072ef62b701bd9f5df847d9f4b8c9b3e3b18
postgresql-17_17.11.orig.tar.bz2 dd27f2b3c59e73ed14aa3324901242bf69a032a6347805f274e6260322d42979
postgresql-17_17.11-0+deb13u1.debian.tar.xz 82851f4dfeb372c99b94b412e2e3046a8eee7771098e42ac1fa234bef2611cbd
"
PG_PIN_18="18.6-3 sid"
PG_FILES_18="
postgresql-18_18.6-3.dsc a4254c4548ebeea683832de193460ee8a9f1271418e884803b44ded1aead1776
postgresql-18_18.6.orig.tar.bz2 555610c24d53e4316da5b7d3fc25c279d96856d5e0e23ee308c328c5fa881d9f
postgresql-18_18.6-3.debian.tar.xz 5efd00aa59930757931d13e3b2a343b5ac983fdf646a54a3b96caa30cb40512b
"

# ---------------------------------------------------------------- packages
# prometheus brings promtool, which checks /metrics; chromium loads the
# dashboard headless (tests/http.rs); make demo reads them with curl; age
# (the reference command line) reads what pg_ark encrypts (core/src/crypto).
PKGS=(build-essential bison flex pkg-config dpkg-dev ca-certificates
      libreadline-dev zlib1g-dev libssl-dev libicu-dev liblz4-dev libzstd-dev
      libclang-dev clang perl sudo
      prometheus chromium curl age)
wants 15 && PKGS+=(postgresql-15 postgresql-server-dev-15 postgresql-client-15)
[ "$ARK_SETUP_BENCH" = 1 ] && PKGS+=(pgbackrest zstd)
[ "$ARK_SETUP_TOOLS" = 1 ] && PKGS+=(pgbackrest python3-venv)
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
    "${missing[@]}" >/tmp/pg_ark-apt.log 2>&1 || {
      tail -40 /tmp/pg_ark-apt.log
      for p in "${missing[@]}"; do
        apt-cache policy "$p" 2>/dev/null | grep -q 'Candidate: [^(]' || echo "setup: Debian package $p is not available from the configured sources" >&2
      done
      die "apt-get install failed (log: /tmp/pg_ark-apt.log)"
    }
fi
# Debian's postgresql-common would start a cluster on 5432 for the packaged
# server; tests never use it, so keep it from holding a port.
if command -v pg_lsclusters >/dev/null && pg_lsclusters -h 2>/dev/null | grep -q online; then
  pg_lsclusters -h | awk '$4=="online"{print $1, $2}' | while read -r v c; do
    as_root pg_ctlcluster "$v" "$c" stop || true
  done
fi

# ---------------------------------------------------- PostgreSQL 17 and 18
# fetch_pinned MAJOR DIR: the pinned files into DIR (a download cache in
# $ARK_CACHE/dist is reused), each checked against its recorded SHA-256.
# Prints the .dsc path; returns 1, after saying which file failed and why,
# when one cannot be had.
fetch_pinned() {
  local major=$1 dir=$2 files_var="PG_FILES_$1" name sum dsc=""
  mkdir -p "$dir"
  while read -r name sum; do
    [ -n "$name" ] || continue
    if [ -f "$dir/$name" ] && echo "$sum  $dir/$name" | sha256sum -c --status; then
      :
    else
      rm -f "$dir/$name"
      local url="$DEBIAN_POOL/postgresql-$major/$name" out
      # apt's own download client, which checks the hash it is given.
      if ! out=$(/usr/lib/apt/apt-helper -o APT::Sandbox::User=root download-file "$url" "$dir/$name.part" "SHA256:$sum" 2>&1); then
        rm -f "$dir/$name.part"
        echo "setup: could not download $name ($url):" >&2
        printf '%s\n' "$out" | grep -E '^(E|W):' | grep -v unsandboxed | sed 's/^/  /' >&2
        return 1
      fi
      mv "$dir/$name.part" "$dir/$name"
    fi
    if ! echo "$sum  $dir/$name" | sha256sum -c --status; then
      echo "setup: $name: SHA-256 $(sha256sum "$dir/$name" | cut -d' ' -f1) is not the pinned $sum" >&2
      rm -f "$dir/$name"
      return 1
    fi
    case "$name" in *.dsc) dsc="$dir/$name";; esac
  done <<<"${!files_var}"
  echo "$dsc"
}

# fetch_index MAJOR SUITE DIR: the source package the Sources index names now,
# through apt-get source, which checks every file against the signed index.
fetch_index() {
  local major=$1 suite=$2 dir=$3 out
  rm -rf "$dir" && mkdir -p "$dir"
  if ! out=$(cd "$dir" && apt-get source --download-only -qq -o APT::Sandbox::User=root "postgresql-$major/$suite" 2>&1); then
    echo "setup: apt-get source postgresql-$major/$suite failed:" >&2
    printf '%s\n' "$out" | sed 's/^/  /' >&2
    return 1
  fi
  ls "$dir"/postgresql-"$major"_*.dsc 2>/dev/null | head -1
}

build_pg() {
  local major=$1 prefix="$ARK_CACHE/pg/$1" pin_var="PG_PIN_$1"
  local version suite
  read -r version suite <<<"${!pin_var}"
  if [ -x "$prefix/bin/pg_config" ] && grep -qx "recipe $PG_BUILD_RECIPE" "$prefix/.pg_ark-complete" 2>/dev/null; then
    log "PostgreSQL $major: cached at $prefix ($(grep '^source ' "$prefix/.pg_ark-complete" | cut -d' ' -f2))"
    return
  fi
  local dist="$ARK_CACHE/dist/postgresql-$major" dsc
  log "PostgreSQL $major: fetching the pinned source package $version"
  if ! dsc=$(fetch_pinned "$major" "$dist/$version"); then
    log "PostgreSQL $major: the pinned $version cannot be had; trying the version the $suite index names"
    dsc=$(fetch_index "$major" "$suite" "$dist/index") \
      || die "no verified source of PostgreSQL $major: neither the pinned $version nor $suite's current version could be downloaded (see above)"
  fi
  [ -n "$dsc" ] && [ -f "$dsc" ] || die "PostgreSQL $major: no .dsc among the downloaded files"
  local work="$ARK_CACHE/src/$major" srcdir
  rm -rf "$work" && mkdir -p "$work"
  srcdir="$work/postgresql-$major"
  # dpkg-source checks every file against the checksums the .dsc lists, then
  # applies Debian's patches.
  dpkg-source --no-copy -x "$dsc" "$srcdir" >"$work/extract.log" 2>&1 \
    || { tail -20 "$work/extract.log" >&2; die "PostgreSQL $major: could not unpack $(basename "$dsc")"; }
  # Debian's 50-per-version-dirs.patch hard-codes pkglibdir to
  # /usr/lib/postgresql/<major>/lib, outside our prefix. Keep Debian's other
  # patches, but restore upstream's rule so the build lives under $prefix.
  sed -i 's|^override pkglibdir := /usr/lib/postgresql/@PG_MAJORVERSION@/lib$|override pkglibdir := $(pkglibdir)/postgresql|' \
    "$srcdir/src/Makefile.global.in"
  grep -q '^override pkglibdir := $(pkglibdir)/postgresql$' "$srcdir/src/Makefile.global.in" \
    || die "could not restore pkglibdir in postgresql-$major"
  log "PostgreSQL $major: building $(basename "$dsc" .dsc) in $srcdir"
  rm -rf "$prefix"
  (
    cd "$srcdir"
    ./configure --quiet --prefix="$prefix" --with-openssl --with-lz4 --with-zstd \
      --with-icu --enable-debug CFLAGS="-O2 -g" >"$work/configure.log" 2>&1 \
      || { tail -50 "$work/configure.log"; exit 1; }
    make -s -j"$JOBS" >"$work/make.log" 2>&1 || { tail -50 "$work/make.log"; exit 1; }
    make -s install >"$work/install.log" 2>&1 || { tail -50 "$work/install.log"; exit 1; }
    # contrib modules the tests, benchmarks and drills use
    for m in basic_archive pg_walinspect amcheck pg_visibility; do
      make -s -C "contrib/$m" -j"$JOBS" install >>"$work/install.log" 2>&1 || { tail -50 "$work/install.log"; exit 1; }
    done
  ) || die "PostgreSQL $major: build failed (logs in $work)"
  printf 'recipe %s\nsource %s\n' "$PG_BUILD_RECIPE" "$(basename "$dsc" .dsc)" >"$prefix/.pg_ark-complete"
  rm -rf "$work"
  log "PostgreSQL $major: installed at $prefix"
}
as_root mkdir -p "$ARK_CACHE/pg" "$ARK_CACHE/src" "$ARK_CACHE/dist"
for m in 17 18; do
  if wants "$m"; then build_pg "$m"; fi
done

# ------------------------------------------------------------- cargo-pgrx
if ! cargo install --list 2>/dev/null | grep -qx "cargo-pgrx v$PGRX_VERSION:"; then
  log "installing cargo-pgrx $PGRX_VERSION"
  cargo install --locked --quiet cargo-pgrx --version "=$PGRX_VERSION"
fi
pg_config_of() { if [ "$1" = 15 ]; then echo /usr/lib/postgresql/15/bin/pg_config; else echo "$ARK_CACHE/pg/$1/bin/pg_config"; fi; }
PGRX_CONFIG=${PGRX_HOME:-$HOME/.pgrx}/config.toml
init_args=() need_init=
for m in $ARK_PG_MAJORS; do
  init_args+=(--pg"$m" "$(pg_config_of "$m")")
  grep -qF "pg$m = \"$(pg_config_of "$m")\"" "$PGRX_CONFIG" 2>/dev/null || need_init=1
done
# Keep the majors a previous setup registered (make demo, then make test).
for m in 15 17 18; do
  if ! wants "$m" && grep -qF "pg$m = \"$(pg_config_of "$m")\"" "$PGRX_CONFIG" 2>/dev/null \
     && [ -x "$(pg_config_of "$m")" ]; then
    init_args+=(--pg"$m" "$(pg_config_of "$m")")
  fi
done
if [ -n "$need_init" ]; then
  log "cargo pgrx init ${init_args[*]}"
  cargo pgrx init "${init_args[@]}" >/dev/null
fi

# ------------------------------------------------------- S3 test server
if [ "$ARK_SETUP_S3" = 1 ] && ! cargo install --list 2>/dev/null | grep -qx "s3s-fs v$S3S_FS_VERSION:"; then
  log "installing s3s-fs $S3S_FS_VERSION"
  cargo install --locked --quiet s3s-fs --version "=$S3S_FS_VERSION" --features binary
fi
# moto: S3 with versioning and Object Lock (tests/harness MotoServer), for the
# python3 of PATH, which the tests run it with.
if [ "$ARK_SETUP_S3" = 1 ] && ! python3 -c "import sys, moto, moto.server; sys.exit(moto.__version__ != '$MOTO_VERSION')" >/dev/null 2>&1; then
  log "installing moto[server] $MOTO_VERSION"
  python3 -m pip install --quiet "moto[server]==$MOTO_VERSION"
  # pyenv makes the shim of a new command (moto_server) on a rehash.
  if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
  python3 -c "import sys, moto, moto.server; sys.exit(moto.__version__ != '$MOTO_VERSION')" \
    || die "moto[server] $MOTO_VERSION is not importable by $(command -v python3) after pip installed it"
  command -v moto_server >/dev/null 2>&1 \
    || log "note: moto_server is not on PATH; the tests run moto with python3 and need only the module"
fi

# Barman, for the barman job kind's tests: PyPI's, in a virtual environment of
# Debian's python3 (not a python under /root, which the test clusters' OS user
# cannot run), with psycopg2's wheel (nothing compiled). tests/harness finds it at
# $ARK_CACHE/barman/bin/barman.
BARMAN_VENV=$ARK_CACHE/barman
if [ "$ARK_SETUP_TOOLS" = 1 ] && ! "$BARMAN_VENV/bin/barman" --version 2>/dev/null | grep -q "^$BARMAN_VERSION "; then
  log "installing barman $BARMAN_VERSION into $BARMAN_VENV"
  rm -rf "$BARMAN_VENV"
  /usr/bin/python3 -m venv "$BARMAN_VENV"
  # Barman asks for psycopg2, which pip would compile; psycopg2-binary's
  # wheel provides the same module, so Barman goes in without its
  # dependencies, after them.
  "$BARMAN_VENV/bin/pip" install --quiet --disable-pip-version-check \
    "psycopg2-binary==$PSYCOPG2_VERSION" "python-dateutil==$DATEUTIL_VERSION"
  "$BARMAN_VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps \
    "barman==$BARMAN_VERSION"
  chmod -R a+rX "$BARMAN_VENV"
  "$BARMAN_VENV/bin/barman" --version 2>/dev/null | grep -q "^$BARMAN_VERSION " \
    || die "barman $BARMAN_VERSION does not run from $BARMAN_VENV after pip installed it"
fi
if [ "$ARK_SETUP_TOOLS" = 1 ]; then
  pgbackrest version | grep -q '^pgBackRest ' || die "pgbackrest does not run"
fi

# ------------------------------------------------------ test cluster user
if ! id "$ARK_TEST_USER" >/dev/null 2>&1; then
  log "creating OS user $ARK_TEST_USER"
  as_root useradd --system --create-home --shell /bin/bash "$ARK_TEST_USER"
fi

log "setup complete"
