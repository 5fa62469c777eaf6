#!/usr/bin/env bash
# Build the library of a past pg_ark release for one PostgreSQL major, for the
# upgrade test (tests/upgrade.rs): the test runs a cluster on that release's
# own library (dynamic_library_path puts it before $libdir), lets it write its
# catalog and a repository, then moves the cluster to the installed library
# and runs ALTER EXTENSION pg_ark UPDATE.
#
#   scripts/old-release.sh /path/to/pg_config [version]   (default 0.1.0)
#
# The source is the release's commit in this checkout's history (a shallow
# clone lacks it: git fetch --unshallow). The library goes to
# $ARK_CACHE/releases/pg_ark-<version>/<major>/pg_ark.so, built once: with the
# dependencies `make install` built in the same CARGO_TARGET_DIR (the release
# has the same Cargo.lock), only the release's two crates compile.
set -euo pipefail
PG_CONFIG=${1:?usage: old-release.sh /path/to/pg_config [version]}
VERSION=${2:-0.1.0}
ARK_CACHE=${ARK_CACHE:-/var/cache/pg_ark}
export PATH="$HOME/.cargo/bin:$PATH"
cd "$(dirname "$0")/.."

# The commit of each release (its tag v<version> may not be fetched).
case "$VERSION" in
  0.1.0) commit=e98d52224f3885c4707b01c247213dcf9691ccc9 ;;
  *) echo "old-release: no commit is known for pg_ark $VERSION" >&2; exit 1 ;;
esac

[ -x "$PG_CONFIG" ] || { echo "old-release: $PG_CONFIG is not an executable pg_config (run make setup)" >&2; exit 1; }
major=$("$PG_CONFIG" --version | awk '{print $2}' | cut -d. -f1)
out="$ARK_CACHE/releases/pg_ark-$VERSION/$major"
if [ -f "$out/pg_ark.so" ]; then
  echo "== pg_ark $VERSION's library for PostgreSQL $major: $out/pg_ark.so"
  exit 0
fi

# The source, extracted once (a fixed place, so that a second major reuses
# the first one's build of everything but the PostgreSQL bindings).
src="$ARK_CACHE/src/pg_ark-$VERSION"
if [ ! -f "$src/.pg_ark-extracted" ]; then
  # A shallow clone lacks it: fetch it from where the clone came from.
  git cat-file -e "$commit^{commit}" 2>/dev/null ||
    git fetch -q --depth=1 origin "$commit" 2>/dev/null ||
    git fetch -q --unshallow 2>/dev/null || true
  git cat-file -e "$commit^{commit}" 2>/dev/null || {
    echo "old-release: commit $commit (pg_ark $VERSION) is not in this checkout's history; run git fetch --unshallow" >&2
    exit 1
  }
  rm -rf "$src"
  mkdir -p "$src"
  git archive "$commit" | tar -x -C "$src"
  echo "$commit" >"$src/.pg_ark-extracted"
fi

echo "== building pg_ark $VERSION's library for PostgreSQL $major (commit ${commit:0:7})"
pkg=$(mktemp -d)
# The extension is a cdylib of a path package: cargo names its output
# without a hash (release/deps/libpg_ark.so, release/libpg_ark.so), so this
# release's build overwrites the current one's while the current one's
# fingerprint still says fresh, and a later `make install` would copy this
# release's library. Removing those outputs makes the next build of the
# current pg_ark link its own again (cargo rebuilds a missing output).
target=${CARGO_TARGET_DIR:-$src/target}
forget_outputs() {
  rm -f "$target/release/deps/libpg_ark.so" "$target/release/libpg_ark.so" \
        "$target/release/deps/pg_ark.d" "$target/release/libpg_ark.d"
}
trap 'rm -rf "$pkg"; forget_outputs' EXIT
(cd "$src" && cargo pgrx package --pg-config "$PG_CONFIG" --no-default-features --features "pg$major" --out-dir "$pkg")
built="$pkg$("$PG_CONFIG" --pkglibdir)/pg_ark.so"
[ -f "$built" ] || { echo "old-release: cargo pgrx package made no $built" >&2; exit 1; }
# The kept install script (sql/) must be the one the release generates.
generated="$pkg$("$PG_CONFIG" --sharedir)/extension/pg_ark--$VERSION.sql"
if ! diff -q <(sed -n '/^\/\* <begin connected objects> \*\//,$p' "sql/pg_ark--$VERSION.sql") "$generated" >/dev/null; then
  echo "old-release: sql/pg_ark--$VERSION.sql differs from the install script pg_ark $VERSION generates ($generated)" >&2
  exit 1
fi
mkdir -p "$out"
install -m 0755 "$built" "$out/pg_ark.so.tmp"
mv "$out/pg_ark.so.tmp" "$out/pg_ark.so"
echo "== pg_ark $VERSION's library for PostgreSQL $major: $out/pg_ark.so"
