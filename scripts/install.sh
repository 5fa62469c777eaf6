#!/usr/bin/env bash
# Build pg_ark (extension and CLI) in release mode and install both into the
# PostgreSQL installation of the given pg_config, the way users install it:
# the library into pkglibdir, control and SQL into sharedir/extension, and
# the pg_ark CLI into bindir.
set -euo pipefail
PG_CONFIG=${1:?usage: install.sh /path/to/pg_config}
export PATH="$HOME/.cargo/bin:$PATH"
cd "$(dirname "$0")/.."

[ -x "$PG_CONFIG" ] || { echo "install: $PG_CONFIG is not an executable pg_config (run make setup)" >&2; exit 1; }
major=$("$PG_CONFIG" --version | awk '{print $2}' | cut -d. -f1)
case "$major" in
  15|17|18) ;;
  *) echo "install: PostgreSQL $major is not supported (15, 17 and 18 are)" >&2; exit 1 ;;
esac
bindir=$("$PG_CONFIG" --bindir)
echo "== installing pg_ark into PostgreSQL $major ($bindir)"
cargo pgrx install --release --pg-config "$PG_CONFIG" --no-default-features --features "pg$major"
# cargo-pgrx generates the current version's install script and copies the
# upgrade scripts (sql/pg_ark--X--Y.sql); the install scripts of past
# releases (sql/pg_ark--X.sql), which CREATE EXTENSION pg_ark VERSION 'X'
# runs before ALTER EXTENSION pg_ark UPDATE, are installed here.
extdir="$("$PG_CONFIG" --sharedir)/extension"
current=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
for script in sql/pg_ark--*.sql; do
  name=$(basename "$script")
  case "$name" in
    pg_ark--*--*) ;;
    "pg_ark--$current.sql")
      echo "install: $script would replace the generated script of the current version $current" >&2; exit 1 ;;
    *) install -m 0644 "$script" "$extdir/$name" ;;
  esac
done
# The CLI is built with the link flag cargo-pgrx gives the extension: Rust
# flags are part of every crate's build hash, so with the same flag (and the
# features core/Cargo.toml aligns) the CLI reuses the extension's build of
# the whole dependency tree instead of compiling it again.
cargo --config "target.'cfg(all(target_family = \"unix\", not(target_os = \"macos\")))'.rustflags = [\"-C\", \"link-arg=-Wl,--no-gc-sections\"]" \
  build --release --locked -p pg_ark_cli
target=${CARGO_TARGET_DIR:-target}
install -m 0755 "$target/release/pg_ark" "$bindir/pg_ark"
echo "== installed: $("$bindir/pg_ark" --version) in $bindir"
