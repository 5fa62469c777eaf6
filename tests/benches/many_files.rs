//! Many files (issue 22): what a backup costs when the cluster has tens of
//! thousands of files and almost nothing changed.
//!
//! Workload: pgbench at scale ARK_BENCH_SCALE (default 10) plus
//! ARK_BENCH_TABLES (default 20,000) one-row tables with a primary key,
//! vacuumed (heap, free-space map, visibility map and index: four files
//! each, about 81,000 files in all). Then ARK_BENCH_RUNS (default 3) rounds
//! of: a full; pgbench touching well under 1% of the pages; an incremental;
//! `pg_ark restore` of that incremental (full + incremental) with the
//! server running; `pg_ark verify` of it.
//!
//! ARK_BENCH_EXTRA_FILES (default 0) adds that many files to the cluster
//! without making them one by one through SQL: empty relation files
//! (relfilenodes from 2,000,000 on, numbers no relation of the cluster has)
//! written straight into the `postgres` database's directory, owned by the
//! server's user, as a million empty tables would leave them. PostgreSQL
//! never reads them (and never gives a new relation a number whose file
//! exists); a backup walks, describes, stores and restores each. These are
//! files only, without the catalog rows a million tables would add (several
//! hundred MiB of `pg_class`, `pg_attribute` and `pg_type`), so the figures
//! are a lower bound. With 920,000 of them the cluster has about a million
//! files (`make bench-million`).
//!
//! Reported: the median wall time of each step; the seconds per phase of
//! each round, from the jobs' results; the highest memory of any round, of
//! the job worker (`VmHWM`, and the peak private memory `RssAnon` the worker
//! sampled) and of `pg_ark restore` (sampled every 10 ms). The limit a
//! restore of this tree meets is measured in the same run: the same files
//! (`pg_wal` left out, as a restore leaves it empty) copied by `tar` and
//! synced. The default `ark.retention_full` (2) applies, so a round's full
//! expires the chain of two rounds before.
//!
//! Goals (issue 22): the incremental at most 1/3 of the full's time; peak
//! private memory of the worker and of `pg_ark restore` at most 256 MiB;
//! the restore within 1.5x of the `tar` limit. The run prints each verdict;
//! it fails only if a step fails.
//!
//! On PostgreSQL 15 and older, with pgBackRest installed (`make
//! setup-bench`: Debian bookworm's 2.45, which reads up to 15), each round
//! also takes pgBackRest's full after pg_ark's and its incremental after
//! pg_ark's, and restores its latest backup after pg_ark's restore, with
//! `process-max=2`, `repo1-bundle` (small files bundled, as pg_ark
//! does), `compress-type=zst`, `compress-level=1` and
//! `start-fast`. WAL goes to pg_ark's archive library, so pgBackRest runs
//! with `archive-check=n`: it does not wait for the WAL its backup needs,
//! which pg_ark's times include. Goal there: pg_ark's incremental at most
//! 0.5x pgBackRest's.
//!
//! With ARK_BENCH_TABLES=0 and a large ARK_BENCH_SCALE (`make bench-big`:
//! scale 300, about 4.5 GB), the same steps measure big data: the goals
//! there are a full at least twice pgBackRest's speed and a restore within
//! 1.2x of writing and syncing the same bytes; MB/s per core is printed
//! for every step.
//!
//! Run: `make bench-files`, with pg_ark installed in PG_CONFIG's
//! PostgreSQL (`make bench` runs it on 17 and on 15).
use pg_ark_core::memory::{self, Memory};
use pg_ark_tests::{bench_options, median, server_command, temp_dir, verdict, Cluster};
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn env_u32(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Flush what earlier steps left dirty, so a timed step does not pay for
/// the write-back of the one before.
fn settle() {
    assert!(Command::new("sync").status().unwrap().success());
}

/// One backup job, waited for; (seconds, result).
fn backup(c: &mut postgres::Client, kind: &str) -> (f64, Value) {
    settle();
    let started = Instant::now();
    let doc: String = c
        .query_one(
            "SELECT ark.wait(ark.backup($1, '{\"max_attempts\": 1}'), '1 hour')::text",
            &[&kind],
        )
        .unwrap()
        .get(0);
    let secs = started.elapsed().as_secs_f64();
    let doc: Value = serde_json::from_str(&doc).unwrap();
    assert_eq!(doc["state"], "succeeded", "{doc}");
    assert_eq!(doc["result"]["kind"], kind, "{doc}");
    (secs, doc["result"].clone())
}

/// Run `cmd` to its end, sampling its memory every 10 ms; (seconds, the
/// highest `VmHWM` and `RssAnon` seen).
fn run_sampled(cmd: &mut Command) -> (f64, Memory) {
    let started = Instant::now();
    let mut child = cmd.spawn().unwrap();
    let mut peak = Memory::default();
    loop {
        if let Some(m) = memory::of_pid(child.id()) {
            peak.hwm_kib = peak.hwm_kib.max(m.hwm_kib);
            peak.rss_anon_kib = peak.rss_anon_kib.max(m.rss_anon_kib);
        }
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{cmd:?}: {status}");
            return (started.elapsed().as_secs_f64(), peak);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The files and bytes under the data directory `dir`, `pg_wal` left out.
fn tree_size(dir: &Path) -> (u64, u64) {
    let (mut files, mut bytes) = (0, 0);
    for entry in walk(dir) {
        files += 1;
        bytes += entry;
    }
    (files, bytes)
}

fn walk(dir: &Path) -> Vec<u64> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    let wal = dir.join("pg_wal");
    while let Some(d) = stack.pop() {
        if d == wal {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else {
                out.push(m.len());
            }
        }
    }
    out
}

/// pgBackRest on the same cluster, with its own repository.
struct PgBackRest {
    bin: std::path::PathBuf,
    version: String,
    dir: tempfile::TempDir,
    common: Vec<String>,
}

impl PgBackRest {
    /// `None` when the cluster is newer than 15 or pgBackRest is not
    /// installed (ARK_PGBACKREST, or `pgbackrest` on the PATH).
    fn find(cluster: &Cluster) -> Option<PgBackRest> {
        if cluster.install.major > 15 {
            return None;
        }
        let bin = std::env::var_os("ARK_PGBACKREST")
            .map(Into::into)
            .or_else(|| {
                std::env::var_os("PATH").and_then(|p| {
                    std::env::split_paths(&p)
                        .map(|d| d.join("pgbackrest"))
                        .find(|b| b.is_file())
                })
            })?;
        let out = Command::new(&bin).arg("version").output().ok()?;
        let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let dir = temp_dir("ark-bench-pgbackrest-");
        let conf = dir.path().join("pgbackrest.conf");
        std::fs::write(&conf, "").unwrap();
        pg_ark_tests::give_to_test_user(&conf);
        let d = dir.path().display().to_string();
        let common = vec![
            format!("--config={}", conf.display()),
            "--stanza=bench".into(),
            format!("--repo1-path={d}/repo"),
            format!("--log-path={d}"),
            format!("--lock-path={d}"),
            "--log-level-console=warn".into(),
            "--log-level-file=off".into(),
            format!("--pg1-path={}", cluster.data.display()),
            format!("--pg1-port={}", cluster.port),
            format!("--pg1-socket-path={}", cluster.sockdir.display()),
            "--pg1-user=postgres".into(),
        ];
        let p = PgBackRest {
            bin,
            version,
            dir,
            common,
        };
        p.run(&["stanza-create"]);
        Some(p)
    }

    /// Run one command to its end; its wall time.
    fn run(&self, args: &[&str]) -> f64 {
        self.run_with(&self.common, args)
    }

    fn run_with(&self, common: &[String], args: &[&str]) -> f64 {
        settle();
        let t = Instant::now();
        let out = server_command(&self.bin)
            .args(common)
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pgbackrest {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        t.elapsed().as_secs_f64()
    }

    fn backup(&self, kind: &str) -> f64 {
        self.run(&[
            &format!("--type={kind}"),
            "--process-max=2",
            "--repo1-bundle",
            "--compress-type=zst",
            "--compress-level=1",
            "--repo1-retention-full=99",
            "--start-fast",
            "--archive-check=n",
            "backup",
        ])
    }

    /// Restore the latest backup into `data` (made here, empty).
    fn restore(&self, data: &Path) -> f64 {
        std::fs::create_dir(data).unwrap();
        pg_ark_tests::give_to_test_user(data);
        // The server's own settings are not the restore's.
        let common: Vec<String> = self
            .common
            .iter()
            .filter(|o| !o.starts_with("--pg1-"))
            .cloned()
            .collect();
        self.run_with(
            &common,
            &[
                &format!("--pg1-path={}", data.display()),
                &format!("--spool-path={}", self.dir.path().display()),
                "--process-max=2",
                "--type=immediate",
                "restore",
            ],
        )
    }
}

fn main() {
    let scale = env_u32("ARK_BENCH_SCALE", 10);
    let tables = env_u32("ARK_BENCH_TABLES", 20_000);
    let runs = env_u32("ARK_BENCH_RUNS", 3).max(1);
    let repo = temp_dir("ark-bench-repo-");
    let major = pg_ark_tests::PgInstall::from_env().major;
    let cluster =
        Cluster::start_with(bench_options(repo.path()).set("max_locks_per_transaction", "1024"));
    let mut c = cluster.client();
    c.batch_execute("CREATE EXTENSION pg_ark").unwrap();
    eprintln!("pgbench -i -s {scale}, then {tables} one-row tables ...");
    let extra_note = match env_u32("ARK_BENCH_EXTRA_FILES", 0) {
        0 => String::new(),
        n => format!(" + {n} empty relation files"),
    };
    cluster.pgbench(&["-i", "-s", &scale.to_string(), "-q"]);
    let t = Instant::now();
    c.batch_execute(
        "CREATE FUNCTION make_many(first int, last int) RETURNS void LANGUAGE plpgsql AS $$
         BEGIN
           FOR i IN first..last - 1 LOOP
             EXECUTE format('CREATE TABLE many_%s (id int PRIMARY KEY)', i);
             EXECUTE format('INSERT INTO many_%s VALUES (1)', i);
           END LOOP;
         END $$",
    )
    .unwrap();
    // A thousand tables per transaction.
    for first in (0..tables).step_by(1000) {
        let last = (first + 1000).min(tables);
        c.execute(
            "SELECT make_many($1, $2)",
            &[&(first as i32), &(last as i32)],
        )
        .unwrap();
    }
    c.batch_execute("DROP FUNCTION make_many").unwrap();
    c.batch_execute("VACUUM").unwrap();
    c.batch_execute("CHECKPOINT").unwrap();
    let extra = env_u32("ARK_BENCH_EXTRA_FILES", 0);
    if extra > 0 {
        let oid: u32 = c
            .query_one(
                "SELECT oid FROM pg_database WHERE datname = 'postgres'",
                &[],
            )
            .unwrap()
            .get(0);
        let dir = cluster.data.join("base").join(oid.to_string());
        for n in 0..extra {
            let path = dir.join((2_000_000 + n).to_string());
            std::fs::File::create_new(&path).unwrap();
            pg_ark_tests::give_to_test_user(&path);
        }
    }
    let (files, bytes) = tree_size(&cluster.data);
    eprintln!(
        "{files} files, {:.0} MiB, made in {:.0} s",
        bytes as f64 / 1_048_576.0,
        t.elapsed().as_secs_f64()
    );

    let pgbackrest = PgBackRest::find(&cluster);
    let mut br_full_s = Vec::new();
    let mut br_inc_s = Vec::new();
    let mut br_restore_s = Vec::new();
    let mut full_s = Vec::new();
    let mut inc_s = Vec::new();
    let mut restore_s = Vec::new();
    let mut limit_s = Vec::new();
    // The compression limit a full meets: the same tree through `zstd -1`
    // on every core (when the zstd command is installed).
    let zstd = Command::new("zstd")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut zstd_s = Vec::new();
    let mut worker_anon = 0u64;
    let mut worker_hwm = 0u64;
    let mut restore_mem = Memory::default();
    let mut verify_s = Vec::new();
    let mut verify_mem = Memory::default();
    let mut phases_full = Vec::new();
    let mut phases_inc = Vec::new();
    let mut stored_inc = Vec::new();
    for round in 1..=runs {
        let (s, full) = backup(&mut c, "full");
        full_s.push(s);
        if let Some(p) = &pgbackrest {
            br_full_s.push(p.backup("full"));
        }
        // Well under 1% of the pages: 100 pgbench transactions.
        cluster.pgbench(&["-n", "-c", "2", "-t", "50"]);
        c.batch_execute("CHECKPOINT").unwrap();
        let (s, inc) = backup(&mut c, "incremental");
        inc_s.push(s);
        if let Some(p) = &pgbackrest {
            br_inc_s.push(p.backup("incr"));
        }
        for r in [&full, &inc] {
            worker_anon = worker_anon.max(r["memory"]["rss_anon_peak_kib"].as_u64().unwrap_or(0));
            // Left out where the kernel refuses to reset the peak: 0, shown
            // as "n/a".
            worker_hwm = worker_hwm.max(r["memory"]["hwm_kib"].as_u64().unwrap_or(0));
        }
        stored_inc.push(inc["stored_bytes"].as_u64().unwrap_or(0) as f64);
        phases_full.push(full["seconds"].clone());
        phases_inc.push(inc["seconds"].clone());

        // pg_ark restore of the incremental (its full beneath it).
        let id = inc["backup_id"].as_str().unwrap().to_string();
        let dir = temp_dir("ark-bench-restore-");
        let data = dir.path().join("data");
        let url = format!("file://{}", repo.path().display());
        settle();
        let (s, mem) = run_sampled(
            Command::new(cluster.install.bin("pg_ark"))
                .args(["restore", "--repo", &url, "--pgdata"])
                .arg(&data)
                .args(["--backup", &id, "--immediate", "--archive-off", "--quiet"])
                .env_remove("PGDATA"),
        );
        restore_s.push(s);
        restore_mem.hwm_kib = restore_mem.hwm_kib.max(mem.hwm_kib);
        restore_mem.rss_anon_kib = restore_mem.rss_anon_kib.max(mem.rss_anon_kib);
        let (restored_files, _) = tree_size(&data);
        drop(dir);
        // pg_ark verify of the same backup: every object it relies on read
        // back and checked.
        settle();
        let (s, mem) = run_sampled(
            Command::new(cluster.install.bin("pg_ark"))
                .args(["verify", "--repo", &url, "--backup", &id, "--quiet"])
                .stdout(std::process::Stdio::null()),
        );
        verify_s.push(s);
        verify_mem.hwm_kib = verify_mem.hwm_kib.max(mem.hwm_kib);
        verify_mem.rss_anon_kib = verify_mem.rss_anon_kib.max(mem.rss_anon_kib);
        if let Some(p) = &pgbackrest {
            let dir = temp_dir("ark-bench-restore-");
            br_restore_s.push(p.restore(&dir.path().join("data")));
        }

        // The limit: the same tree copied by tar and synced.
        let limit = temp_dir("ark-bench-tar-");
        settle();
        let t = Instant::now();
        let st = Command::new("sh")
            .arg("-c")
            .arg("tar -C \"$1\" --exclude=./pg_wal -cf - . | tar -C \"$2\" -xf - && sync")
            .arg("sh")
            .arg(&cluster.data)
            .arg(limit.path())
            .status()
            .unwrap();
        assert!(st.success());
        limit_s.push(t.elapsed().as_secs_f64());
        if zstd {
            settle();
            let t = Instant::now();
            let st = Command::new("sh")
                .arg("-c")
                .arg(
                    "tar -C \"$1\" --exclude=./pg_wal -cf - . | zstd -1 -q -T\"$2\" -c > /dev/null",
                )
                .arg("sh")
                .arg(&cluster.data)
                .arg(cores.to_string())
                .status()
                .unwrap();
            assert!(st.success());
            zstd_s.push(t.elapsed().as_secs_f64());
        }
        eprintln!(
            "round {round}: full {:.2} s, incremental {:.2} s, restore {:.2} s ({restored_files} files), tar + sync {:.2} s",
            full_s[round as usize - 1],
            inc_s[round as usize - 1],
            restore_s[round as usize - 1],
            limit_s[round as usize - 1]
        );
    }

    let (full, inc, restore, limit) = (
        median(full_s),
        median(inc_s),
        median(restore_s),
        median(limit_s),
    );
    println!();
    println!(
        "{}, PostgreSQL {major}: pgbench scale {scale} + {tables} one-row tables{extra_note}, {files} files, {:.0} MiB (pg_wal left out); wall times are medians of {runs} rounds, memory the highest of any round",
        if tables == 0 && extra == 0 { "Big data" } else { "Many files" },
        bytes as f64 / 1_048_576.0
    );
    println!();
    let (br_full, br_inc, br_restore) = (median(br_full_s), median(br_inc_s), median(br_restore_s));
    let beside = |v: f64| match &pgbackrest {
        Some(_) => format!(" {v:.2} s |"),
        None => String::new(),
    };
    match &pgbackrest {
        Some(p) => {
            println!("| step | pg_ark | {} |", p.version);
            println!("| --- | ---: | ---: |");
        }
        None => {
            println!("| step | pg_ark |");
            println!("| --- | ---: |");
        }
    }
    println!("| full | {full:.2} s |{}", beside(br_full));
    println!(
        "| incremental (100 pgbench transactions; pg_ark stored {:.1} MiB) | {inc:.2} s |{}",
        median(stored_inc) / 1_048_576.0,
        beside(br_inc)
    );
    println!(
        "| restore (full + incremental) | {restore:.2} s |{}",
        beside(br_restore)
    );
    println!(
        "| pg_ark verify of the incremental (and the full beneath it) | {:.2} s |{}",
        median(verify_s),
        if pgbackrest.is_some() { " |" } else { "" }
    );
    println!(
        "| tar of the same tree, then sync (the limit) | {limit:.2} s |{}",
        if pgbackrest.is_some() { " |" } else { "" }
    );
    if zstd {
        println!(
            "| tar of the same tree through zstd -1 on {cores} threads (the full's compression limit) | {:.2} s |{}",
            median(zstd_s.clone()),
            if pgbackrest.is_some() { " |" } else { "" }
        );
    }
    println!();
    for (what, list) in [("full", &phases_full), ("incremental", &phases_inc)] {
        for (i, p) in list.iter().enumerate() {
            println!("pg_ark {what} round {}, seconds per phase: {p}", i + 1);
        }
    }
    println!(
        "job worker: peak private memory (RssAnon) {:.1} MiB, peak resident set (VmHWM, shared buffers included) {}",
        mib(worker_anon),
        if worker_hwm == 0 {
            "n/a".to_string()
        } else {
            format!("{:.1} MiB", mib(worker_hwm))
        }
    );
    println!(
        "pg_ark restore: peak private memory {:.1} MiB, peak resident set {:.1} MiB",
        mib(restore_mem.rss_anon_kib),
        mib(restore_mem.hwm_kib)
    );
    println!(
        "pg_ark verify: peak private memory {:.1} MiB, peak resident set {:.1} MiB",
        mib(verify_mem.rss_anon_kib),
        mib(verify_mem.hwm_kib)
    );
    println!();
    println!(
        "goal incremental <= 1/3 of the full: {inc:.2} s vs {full:.2} s ({:.2}), {}",
        inc / full,
        verdict(inc * 3.0 <= full)
    );
    if pgbackrest.is_some() {
        println!(
            "goal incremental <= 0.5x pgBackRest's: {inc:.2} s vs {br_inc:.2} s ({:.2}), {}",
            inc / br_inc,
            verdict(inc <= 0.5 * br_inc)
        );
    }
    // Big data (no small tables, no extra files): the restore within 1.2x
    // of writing and syncing the same bytes; otherwise within 1.5x of the
    // same files' tar.
    let big = tables == 0 && extra == 0;
    let bound = if big { 1.2 } else { 1.5 };
    println!(
        "goal restore <= {bound}x tar + sync: {restore:.2} s vs {limit:.2} s ({:.2}), {}",
        restore / limit,
        verdict(restore <= bound * limit)
    );
    if pgbackrest.is_some() {
        println!(
            "goal full at least 2x pgBackRest's speed: {full:.2} s vs {br_full:.2} s ({:.2}x), {}",
            br_full / full,
            verdict(2.0 * full <= br_full)
        );
    }
    let per_core = |secs: f64| bytes as f64 / 1e6 / secs / cores as f64;
    let mut rates = format!(
        "MB/s per core ({cores} cores, {:.0} MB read or written): pg_ark full {:.0}, restore {:.0}",
        bytes as f64 / 1e6,
        per_core(full),
        per_core(restore)
    );
    if pgbackrest.is_some() {
        rates.push_str(&format!(
            "; pgBackRest full {:.0}, restore {:.0}",
            per_core(br_full),
            per_core(br_restore)
        ));
    }
    rates.push_str(&format!("; tar + sync {:.0}", per_core(limit)));
    if zstd {
        rates.push_str(&format!("; tar | zstd -1 {:.0}", per_core(median(zstd_s))));
    }
    println!("{rates}");
    println!(
        "goal private memory <= 256 MiB: worker {:.1} MiB, restore {:.1} MiB, {}",
        mib(worker_anon),
        mib(restore_mem.rss_anon_kib),
        verdict(worker_anon <= 256 * 1024 && restore_mem.rss_anon_kib <= 256 * 1024)
    );
}
