//! Physical backups: pg_ark against pg_basebackup, same cluster, same run.
//!
//! Workload (issue 10): pgbench at scale ARK_BENCH_SCALE (default 50, about
//! 770 MB), a full backup, pgbench changing about 5% of the accounts'
//! pages, an incremental. Reported, wall time and stored bytes of:
//!
//! - pg_ark `full` and `incremental` (each `ark.wait(ark.backup(..))`, so
//!   the time includes the checkpoint and the wait for the stop segment's
//!   archiving), and the job worker's peak RSS (VmHWM, sampled);
//! - `pg_basebackup -Ft --compress=client-zstd:1` full, and on 17+
//!   `pg_basebackup --incremental` against it (`summarize_wal = on`), also
//!   zstd 1;
//! - the "backup to a temporary directory, then copy into the repository"
//!   approach of the shell scripts pg_ark replaces: plain `pg_basebackup`
//!   into a temporary directory, then `cp -r` into the repository.
//!
//! Goals: pg_ark's full at least 1.5x faster than pg_basebackup tar+zstd;
//! its incremental stores at most what the zstd-compressed `pg_basebackup
//! --incremental` stores, in at most a third of pg_ark's full time; the job
//! worker below 256 MiB RSS. The run prints each verdict; it fails only if a
//! backup fails.
//!
//! Run: `make bench` (both benchmarks) or `make bench-physical`, with
//! pg_ark installed in PG_CONFIG's PostgreSQL.
use pg_ark_tests::{bench_options, dir_size, peak_rss_kib, temp_dir, verdict, Cluster};
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1_048_576.0
}

/// Run one pg_ark backup job; returns (seconds, result, peak RSS KiB).
fn ark_backup(c: &mut postgres::Client, kind: &str) -> (f64, Value, u64) {
    let started = Instant::now();
    let id: i64 = c
        .query_one("SELECT ark.backup($1)", &[&kind])
        .unwrap()
        .get(0);
    let mut rss = 0;
    loop {
        let row = c
            .query_one(
                "SELECT state, coalesce(worker_pid, 0), result::text, last_error
                   FROM ark.jobs WHERE id = $1",
                &[&id],
            )
            .unwrap();
        let state: String = row.get(0);
        let pid: i32 = row.get(1);
        if pid > 0 {
            rss = rss.max(peak_rss_kib(pid).unwrap_or(0));
        }
        match state.as_str() {
            "succeeded" => {
                let result: String = row.get(2);
                return (
                    started.elapsed().as_secs_f64(),
                    serde_json::from_str(&result).unwrap(),
                    rss,
                );
            }
            "failed" | "cancelled" | "retrying" => {
                let e: Option<String> = row.get(3);
                panic!("pg_ark {kind} backup {state}: {e:?}");
            }
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn pg_basebackup(cluster: &Cluster, args: &[&str], dest: &Path) -> f64 {
    let started = Instant::now();
    let out = Command::new(cluster.install.bin("pg_basebackup"))
        .arg("-h")
        .arg(&cluster.sockdir)
        .arg("-p")
        .arg(cluster.port.to_string())
        .args(["-U", "postgres", "--checkpoint=fast", "-X", "none", "-D"])
        .arg(dest)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pg_basebackup {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    started.elapsed().as_secs_f64()
}

fn main() {
    let scale: u32 = std::env::var("ARK_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let repo = temp_dir("ark-bench-repo-");
    let major = pg_ark_tests::PgInstall::from_env().major;
    let cluster = Cluster::start_with(bench_options(repo.path()));
    let mut c = cluster.client();
    c.batch_execute("CREATE EXTENSION pg_ark").unwrap();
    eprintln!("pgbench -i -s {scale} ...");
    cluster.pgbench(&["-i", "-s", &scale.to_string(), "-q"]);
    c.batch_execute("VACUUM ANALYZE").unwrap();
    c.batch_execute("CHECKPOINT").unwrap();
    let db_bytes: i64 = c
        .query_one(
            "SELECT sum(pg_database_size(oid))::int8 FROM pg_database",
            &[],
        )
        .unwrap()
        .get(0);
    let accounts_pages: i64 = c
        .query_one("SELECT pg_relation_size('pgbench_accounts') / 8192", &[])
        .unwrap()
        .get(0);
    eprintln!("databases: {:.0} MiB", mib(db_bytes as u64));

    // Fulls, at the same state of the data.
    let (ark_full_s, ark_full, ark_full_rss) = ark_backup(&mut c, "full");
    let work = temp_dir("ark-bench-bb-");
    let bb_full = work.path().join("full");
    let bb_full_s = pg_basebackup(&cluster, &["-Ft", "--compress=client-zstd:1"], &bb_full);
    let bb_full_bytes = dir_size(&bb_full);
    let seed_tmp = work.path().join("tmp-plain");
    let seed_repo = work.path().join("repo-copy");
    let t = Instant::now();
    pg_basebackup(&cluster, &[], &seed_tmp);
    let st = Command::new("cp")
        .arg("-r")
        .arg(&seed_tmp)
        .arg(&seed_repo)
        .status()
        .unwrap();
    assert!(st.success());
    let seed_s = t.elapsed().as_secs_f64();
    let seed_bytes = dir_size(&seed_repo);
    let _ = std::fs::remove_dir_all(&seed_tmp);

    // About 5% of the accounts' pages change: one random account per
    // transaction, two clients.
    let per_client = (accounts_pages as f64 * 0.05 / 2.0).ceil() as u64;
    eprintln!("pgbench: 2 x {per_client} transactions ...");
    cluster.pgbench(&["-n", "-c", "2", "-t", &per_client.to_string()]);
    c.batch_execute("CHECKPOINT").unwrap();

    let (ark_inc_s, ark_inc, ark_inc_rss) = ark_backup(&mut c, "incremental");
    assert_eq!(ark_inc["kind"], "incremental", "{ark_inc}");
    let bb_inc = if major >= 17 {
        // The server waits for its WAL summarizer to cover the changes.
        let dest = work.path().join("incr");
        let manifest = bb_full.join("backup_manifest");
        let s = pg_basebackup(
            &cluster,
            &[
                "-Ft",
                "--compress=client-zstd:1",
                &format!("--incremental={}", manifest.display()),
            ],
            &dest,
        );
        Some((s, dir_size(&dest)))
    } else {
        None
    };

    let stored = |v: &Value| v["stored_bytes"].as_u64().unwrap_or(0);
    let rss = ark_full_rss.max(ark_inc_rss);
    println!();
    println!(
        "Physical backups, PostgreSQL {major}, pgbench scale {scale} ({:.0} MiB of databases), then 2 x {per_client} pgbench transactions (about 5% of pgbench_accounts' {accounts_pages} pages)",
        mib(db_bytes as u64)
    );
    println!();
    println!("| backup | wall time | stored |");
    println!("| --- | ---: | ---: |");
    println!(
        "| pg_ark full | {ark_full_s:.2} s | {:.1} MiB |",
        mib(stored(&ark_full))
    );
    println!(
        "| pg_basebackup -Ft --compress=client-zstd:1 | {bb_full_s:.2} s | {:.1} MiB |",
        mib(bb_full_bytes)
    );
    println!(
        "| pg_basebackup to a temporary directory, then cp -r into the repository | {seed_s:.2} s | {:.1} MiB |",
        mib(seed_bytes)
    );
    println!(
        "| pg_ark incremental | {ark_inc_s:.2} s | {:.1} MiB |",
        mib(stored(&ark_inc))
    );
    match bb_inc {
        Some((s, bytes)) => println!(
            "| pg_basebackup --incremental, client-zstd:1 | {s:.2} s | {:.1} MiB |",
            mib(bytes)
        ),
        None => println!("| pg_basebackup --incremental | (needs PostgreSQL 17) | |"),
    }
    println!();
    println!("pg_ark full, seconds per phase: {}", ark_full["seconds"]);
    println!(
        "pg_ark incremental, seconds per phase: {}",
        ark_inc["seconds"]
    );
    println!(
        "pg_ark incremental changed blocks from: {}",
        ark_inc["changes_from"]
    );
    let latency: f64 = c
        .query_one(
            "SELECT extract(epoch FROM max(started_at - created_at))::float8 FROM ark.jobs",
            &[],
        )
        .unwrap()
        .get(0);
    println!("longest wait of a job in the queue: {latency:.2} s");
    println!("job worker peak RSS: {:.1} MiB", rss as f64 / 1024.0);
    println!();
    let speedup = bb_full_s / ark_full_s;
    println!(
        "goal full >= 1.5x faster than pg_basebackup tar+zstd: {speedup:.2}x, {}",
        verdict(speedup >= 1.5)
    );
    if let Some((_, bytes)) = bb_inc {
        println!(
            "goal incremental stored <= pg_basebackup --incremental (zstd): {:.1} vs {:.1} MiB, {}",
            mib(stored(&ark_inc)),
            mib(bytes),
            verdict(stored(&ark_inc) <= bytes)
        );
    }
    println!(
        "goal incremental time <= 1/3 of pg_ark's full: {:.2} s vs {:.2} s ({:.2}), {}",
        ark_inc_s,
        ark_full_s,
        ark_inc_s / ark_full_s,
        verdict(ark_inc_s * 3.0 <= ark_full_s)
    );
    println!(
        "goal job worker RSS < 256 MiB: {:.1} MiB, {}",
        rss as f64 / 1024.0,
        verdict(rss < 256 * 1024)
    );
}
