# pg_ark: build, install and test entry points.
#
#   make setup     install everything the build and tests need (safe to re-run)
#   make install   build the extension and the pg_ark CLI (release) and
#                  install both into the PostgreSQL of PG_CONFIG
#   make test      the whole suite, the way CI runs it
#   make demo      pg_ark's story on a demo cluster: schedules, a full and an
#                  incremental backup, a point-in-time restore into a second
#                  cluster, checked; then both stay up (Ctrl-C or make demo-stop)
#   make demo-check  make demo run to its end, exiting with the check's status
#                  and stopping its clusters (part of make test)
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

ARK_CACHE ?= /var/cache/pg_ark
# Build artifacts are a cache too, shared by every checkout on the machine.
export CARGO_TARGET_DIR ?= $(ARK_CACHE)/target
export PATH := $(HOME)/.cargo/bin:$(PATH)

PG15_CONFIG ?= /usr/lib/postgresql/15/bin/pg_config
PG17_CONFIG ?= $(ARK_CACHE)/pg/17/bin/pg_config
PG18_CONFIG ?= $(ARK_CACHE)/pg/18/bin/pg_config
# The primary major is 17.
PG_CONFIG ?= $(PG17_CONFIG)
ARK_TEST_USER ?= pgark

.PHONY: setup setup-demo setup-bench cold-setup-check install install-all test lint unit pgrx-test integration smoke smoke-15 smoke-18 stability random-chains bench bench-archive bench-physical bench-restore bench-files bench-million bench-big bench-http bench-encryption demo demo-stop demo-check clean-cache

# Setup runs outside this make: PostgreSQL's own build must not inherit
# MAKELEVEL or MAKEFLAGS (setup.sh clears them as well).
NOMAKE := env -u MAKELEVEL -u MAKEFLAGS -u MFLAGS -u MAKEOVERRIDES

setup:
	@$(NOMAKE) bash scripts/setup.sh

# What the demo needs only: PostgreSQL 17 and cargo-pgrx.
setup-demo:
	@$(NOMAKE) ARK_PG_MAJORS=17 ARK_SETUP_S3=0 bash scripts/setup.sh

# The fresh-machine path without wiping the machine: setup with ARK_CACHE
# (and pgrx's home) in an empty scratch folder, run from make.
cold-setup-check:
	@bash scripts/cold-setup-check.sh

install:
	@bash scripts/install.sh "$(PG_CONFIG)"

install-all:
	@for pgc in "$(PG15_CONFIG)" "$(PG17_CONFIG)" "$(PG18_CONFIG)"; do \
	  bash scripts/install.sh "$$pgc"; \
	done

# Every cargo step uses the release profile, so dependencies, proc-macros and
# pgrx's bindgen build script are compiled once and shared by all steps.
lint:
	cargo fmt --all --check
	cargo clippy --release --workspace --all-targets --locked -- -D warnings

unit:
	ARK_PG_DUMP=$(ARK_CACHE)/pg/17/bin/pg_dump cargo test --release --locked -p pg_ark_core -p pg_ark_cli

# #[pg_test]s inside a pgrx-managed cluster. initdb refuses root, so pgrx runs
# the server as the test user (through sudo) in a data dir it can write.
pgrx-test:
	cargo pgrx test --release --runas $(ARK_TEST_USER) --pgdata /tmp/ark-pgrx-pgdata pg17

# Integration tests on the primary major: real clusters, a real S3 server.
# The upgrade test runs pg_ark 0.1.0's own library, built once per major
# (scripts/old-release.sh) into $(ARK_CACHE)/releases.
integration:
	ARK_CACHE=$(ARK_CACHE) bash scripts/old-release.sh "$(PG17_CONFIG)"
	ARK_PG_CONFIG=$(PG17_CONFIG) ARK_CACHE=$(ARK_CACHE) cargo test --release --locked -p pg_ark_tests
	@ls $(ARK_CACHE)/screenshots/dashboard-pg17-*.png 2>/dev/null | sed 's/^/dashboard screenshot (tests\/http.rs): /'

# The smoke suite on the other supported majors: the skeleton, archiving
# (15 and 16+ have different archive-module C APIs), the job queue
# (shared memory, dynamic workers), physical backups restored, and restores
# to targets found in the WAL (its record format across majors), and restore
# drills (a scratch cluster of each major, its psql and amcheck), restores
# checked against pg_visibility (trust) and in randomized chains (CI's
# fixed seeds), the privilege rules, and WAL segments of 64 MiB and 1 MiB
# (initdb --wal-segsize) end to end, the upgrade from 0.1.0 (on 0.1.0's
# own library of that major), encrypted repositories end to end, and a
# repository under S3 Object Lock attacked and read as it was (moto), and
# the other tools' job kinds (pgBackRest reads 15 only; Barman and
# pg_basebackup every major).
SMOKE_TESTS := --test tools --test skeleton --test archive --test encryption --test object_lock --test http --test queue --test physical --test restore --test drill --test trust --test random_chain --test privileges --test segsize --test upgrade
smoke:
	@$(MAKE) --no-print-directory smoke-15
	@$(MAKE) --no-print-directory smoke-18

smoke-15:
	ARK_CACHE=$(ARK_CACHE) bash scripts/old-release.sh "$(PG15_CONFIG)"
	ARK_PG_CONFIG=$(PG15_CONFIG) ARK_CACHE=$(ARK_CACHE) cargo test --release --locked -p pg_ark_tests $(SMOKE_TESTS)
	@ls $(ARK_CACHE)/screenshots/dashboard-pg15-*.png 2>/dev/null | sed 's/^/dashboard screenshot (tests\/http.rs): /'

smoke-18:
	ARK_CACHE=$(ARK_CACHE) bash scripts/old-release.sh "$(PG18_CONFIG)"
	ARK_PG_CONFIG=$(PG18_CONFIG) ARK_CACHE=$(ARK_CACHE) cargo test --release --locked -p pg_ark_tests $(SMOKE_TESTS)
	@ls $(ARK_CACHE)/screenshots/dashboard-pg18-*.png 2>/dev/null | sed 's/^/dashboard screenshot (tests\/http.rs): /'

# Randomized chains (tests/random_chain.rs) beyond CI's fixed seeds: ARK_SEEDS
# (comma-separated; default 10 random ones, printed so a failure can be
# replayed with ARK_SEEDS=<seed>), and the relation beyond 1 GiB (ARK_BIG=1;
# ARK_BIG=0 leaves it out), on PG_CONFIG. Not part of make test.
ifeq ($(origin ARK_SEEDS),undefined)
ARK_SEEDS := $(shell for i in 1 2 3 4 5 6 7 8 9 10; do echo $$(( RANDOM * 32768 + RANDOM )); done | paste -sd, -)
endif
ARK_BIG ?= 1
random-chains: install
	@echo "random-chains: ARK_SEEDS=$(ARK_SEEDS) ARK_BIG=$(ARK_BIG) on $(PG_CONFIG)"
	ARK_SEEDS=$(ARK_SEEDS) ARK_BIG=$(ARK_BIG) ARK_PG_CONFIG=$(PG_CONFIG) \
	  cargo test --release --locked -p pg_ark_tests --test random_chain -- --nocapture --test-threads=1 \
	  $(if $(filter 1,$(ARK_BIG)),--include-ignored,)

# Proof of stability: integration and smoke suites ARK_RUNS (5) times in a row.
stability:
	@bash scripts/stability.sh

# pgrx-test installs a test build (with the pg_test feature) into 17, so the
# release builds are installed after it and before the integration tests.
test: setup
	@$(MAKE) --no-print-directory lint
	@$(MAKE) --no-print-directory unit
	@$(MAKE) --no-print-directory pgrx-test
	@$(MAKE) --no-print-directory install-all
	@$(MAKE) --no-print-directory integration
	@$(MAKE) --no-print-directory demo-check
	@$(MAKE) --no-print-directory smoke

# What the benchmarks compare against, besides what the tests need
# (pgBackRest).
setup-bench:
	@$(NOMAKE) ARK_SETUP_BENCH=1 bash scripts/setup.sh

# Benchmarks, each comparing against its baselines in the same run. The
# many-files case runs on 17 (WAL summaries) and on 15 (page LSNs, beside
# pgBackRest, whose Debian build reads PostgreSQL up to 15).
bench: setup-bench install-all
	@$(MAKE) --no-print-directory bench-archive bench-physical bench-restore bench-files bench-http bench-encryption
	@$(MAKE) --no-print-directory bench-files PG_CONFIG=$(PG15_CONFIG)
	@$(MAKE) --no-print-directory bench-big

# Archive throughput: pg_ark vs archive_command cp vs basic_archive.
bench-archive:
	ARK_PG_CONFIG=$(PG_CONFIG) cargo bench --locked -p pg_ark_tests --bench archive_throughput

# Physical backups: pg_ark full and incremental vs pg_basebackup.
bench-physical:
	ARK_PG_CONFIG=$(PG_CONFIG) cargo bench --locked -p pg_ark_tests --bench physical_backup

# Restores: pg_ark restore vs pg_combinebackup; WAL replay from S3 with and
# without prefetch.
bench-restore:
	ARK_PG_CONFIG=$(PG_CONFIG) cargo bench --locked -p pg_ark_tests --bench restore

# Many files (about 81,000), almost nothing changed: full, incremental,
# restore and the tar limit, with phases and peak memory; medians of 3. On
# 15, pgBackRest beside pg_ark when it is installed (make setup-bench).
bench-files:
	ARK_PG_CONFIG=$(PG_CONFIG) cargo bench --locked -p pg_ark_tests --bench many_files

# Encryption's cost: an encrypted repository against a clear one, archive
# CPU per segment, a full backup and its restore (medians of 3).
bench-encryption:
	ARK_PG_CONFIG=$(PG_CONFIG) cargo bench --locked -p pg_ark_tests --bench encryption

# The HTTP endpoint with 10,000 jobs and 1,000 backups in the catalog:
# latency of /health and /metrics, and the worker's memory.
bench-http:
	ARK_PG_CONFIG=$(PG_CONFIG) cargo bench --locked -p pg_ark_tests --bench http

# About a million files: the many-files case with 920,000 more empty
# relation files, one round (not part of make bench: about 15 minutes).
bench-million:
	ARK_BENCH_EXTRA_FILES=920000 ARK_BENCH_RUNS=1 ARK_PG_CONFIG=$(PG_CONFIG) cargo bench --locked -p pg_ark_tests --bench many_files

# Big data: pgbench scale 300 (about 4.5 GB) and nothing else, on 15
# beside pgBackRest: full, incremental, restore and the tar limit, MB/s per
# core; medians of 3 (about 12 minutes).
bench-big:
	ARK_BENCH_SCALE=300 ARK_BENCH_TABLES=0 ARK_PG_CONFIG=$(PG15_CONFIG) cargo bench --locked -p pg_ark_tests --bench many_files

demo: setup-demo
	@bash scripts/install.sh "$(PG17_CONFIG)"
	@bash scripts/demo.sh start "$(PG17_CONFIG)"

demo-stop:
	@bash scripts/demo.sh stop "$(PG_CONFIG)"

# make demo itself, as a new user runs it (setup-demo, the install into 17,
# the script), through to the point-in-time restore check, in its own
# directory and ports (54331 and 54332) so it never meets a demo left running.
DEMO_CHECK_DIR ?= /tmp/pg_ark-demo-check
DEMO_CHECK_PORT ?= 54331
demo-check:
	@ARK_DEMO_EXIT=1 ARK_DEMO_DIR=$(DEMO_CHECK_DIR) ARK_DEMO_PORT=$(DEMO_CHECK_PORT) \
	  $(MAKE) --no-print-directory demo

clean-cache:
	rm -rf "$(CARGO_TARGET_DIR)"
