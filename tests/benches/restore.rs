//! Restores: pg_ark against pg_combinebackup, and WAL replay from S3 with
//! and without prefetch, same machine, same run.
//!
//! 1. The physical-backup benchmark's workload (pgbench scale 50, a full,
//!    about 5% of the accounts' pages changed by pgbench, an incremental),
//!    backed up by pg_ark and by `pg_basebackup` (plain format, then
//!    `--incremental` against it, `summarize_wal = on`). Timed: wall time
//!    to a startable data directory, `pg_ark restore` of the incremental
//!    (download from the repository, decompression and checks included,
//!    default `--jobs` and `--jobs 1`) against `pg_combinebackup` of the
//!    two plain directories (no download or decompression at all: the
//!    most favourable case for it). Goal: pg_ark at most half of
//!    pg_combinebackup's time.
//! 2. 200 switched WAL segments archived into S3 (s3s-fs on loopback), a
//!    restore of the full before them, and the recovery's time to replay
//!    them through `pg_ark wal-get`: adaptive prefetch (the default), a
//!    fixed depth of 4, and none.
//!
//! Run: `make bench-restore` (or `make bench`), with pg_ark installed in
//! PG_CONFIG's PostgreSQL (17 or later: pg_combinebackup);
//! `ARK_BENCH_ONLY=restore` or `=replay` runs one part.
use pg_ark_tests::{
    bench_options, dir_size, pg_ark, temp_dir, wait_job, Cluster, ClusterOptions, S3Server,
};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1_048_576.0
}

fn pg_basebackup(cluster: &Cluster, args: &[&str], dest: &Path) {
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
}

fn backup_id(c: &mut postgres::Client, kind: &str) -> String {
    let done = wait_job(c, kind, r#"{"max_attempts": 1}"#);
    assert_eq!(done["state"], "succeeded", "{done}");
    done["result"]["backup_id"].as_str().unwrap().to_string()
}

/// Flush what earlier steps left dirty, so a timed step does not pay for
/// the write-back of the one before.
fn settle() {
    let st = Command::new("sync").status().unwrap();
    assert!(st.success());
}

/// [`settle`], then drop the page cache (root only): nothing of the
/// inputs is cached, as on the day a restore is needed. Returns whether it
/// could.
fn go_cold() -> bool {
    settle();
    std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

/// CPU seconds (user, system) of the children that have ended.
fn children_cpu() -> (f64, f64) {
    // SAFETY: getrusage fills the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) };
    let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (s(u.ru_utime), s(u.ru_stime))
}

/// Time `pg_ark restore` of `id` into a new directory with `extra` options
/// (`cold`: page cache dropped first; `None` if that needs root).
fn ark_restore(repo: &Path, id: &str, extra: &[&str], cold: bool) -> Option<(f64, u64)> {
    let dir = temp_dir("ark-bench-restore-");
    let data = dir.path().join("data");
    let url = format!("file://{}", repo.display());
    let mut args = vec![
        "restore",
        "--repo",
        &url,
        "--pgdata",
        data.to_str().unwrap(),
        "--backup",
        id,
        "--immediate",
        "--archive-off",
        "--quiet",
    ];
    args.extend_from_slice(extra);
    if cold {
        if !go_cold() {
            return None;
        }
    } else {
        settle();
    }
    let cpu = children_cpu();
    let t = Instant::now();
    let (ok, out, err) = pg_ark(&args);
    let s = t.elapsed().as_secs_f64();
    assert!(ok, "{out}{err}");
    let after = children_cpu();
    eprintln!(
        "pg_ark restore {extra:?} (cold {cold}): {s:.2} s wall, {:.2} s user, {:.2} s system",
        after.0 - cpu.0,
        after.1 - cpu.1
    );
    Some((s, dir_size(&data)))
}

fn restore_vs_combinebackup() {
    let scale: u32 = std::env::var("ARK_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let repo = temp_dir("ark-bench-repo-");
    // Only on 17 and later (pg_combinebackup): WAL summaries are on.
    let mut cluster = Cluster::start_with(bench_options(repo.path()));
    let mut c = cluster.client();
    c.batch_execute("CREATE EXTENSION pg_ark").unwrap();
    eprintln!("pgbench -i -s {scale} ...");
    cluster.pgbench(&["-i", "-s", &scale.to_string(), "-q"]);
    c.batch_execute("VACUUM ANALYZE").unwrap();
    c.batch_execute("CHECKPOINT").unwrap();
    let accounts_pages: i64 = c
        .query_one("SELECT pg_relation_size('pgbench_accounts') / 8192", &[])
        .unwrap()
        .get(0);
    backup_id(&mut c, "full");
    let work = temp_dir("ark-bench-bb-");
    let bb_full = work.path().join("full");
    pg_basebackup(&cluster, &[], &bb_full);
    let per_client = (accounts_pages as f64 * 0.05 / 2.0).ceil() as u64;
    eprintln!("pgbench: 2 x {per_client} transactions ...");
    cluster.pgbench(&["-n", "-c", "2", "-t", &per_client.to_string()]);
    c.batch_execute("CHECKPOINT").unwrap();
    let inc = backup_id(&mut c, "incremental");
    let bb_inc = work.path().join("incr");
    let manifest = bb_full.join("backup_manifest");
    pg_basebackup(
        &cluster,
        &[&format!("--incremental={}", manifest.display())],
        &bb_inc,
    );
    // Some WAL after pg_basebackup's own switch, so this one switches.
    c.batch_execute("CREATE TABLE bench_mark (); DROP TABLE bench_mark")
        .unwrap();
    let seg: String = c
        .query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])
        .unwrap()
        .get(0);
    cluster.wait_archived(&seg, std::time::Duration::from_secs(120));
    drop(c);
    // Restores happen with the server down: time them so, for both tools.
    assert!(cluster.stop("fast").status.success());

    // pg_combinebackup of the plain directories (on local disk).
    let combine = |cold: bool| -> Option<f64> {
        let combined = work.path().join("combined");
        let _ = std::fs::remove_dir_all(&combined);
        if cold {
            if !go_cold() {
                return None;
            }
        } else {
            settle();
        }
        let cpu = children_cpu();
        let t = Instant::now();
        let out = Command::new(cluster.install.bin("pg_combinebackup"))
            .arg(&bb_full)
            .arg(&bb_inc)
            .arg("-o")
            .arg(&combined)
            .output()
            .unwrap();
        let secs = t.elapsed().as_secs_f64();
        assert!(
            out.status.success(),
            "pg_combinebackup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let after = children_cpu();
        eprintln!(
            "pg_combinebackup (cold {cold}): {secs:.2} s wall, {:.2} s user, {:.2} s system",
            after.0 - cpu.0,
            after.1 - cpu.1
        );
        Some(secs)
    };
    let combine_s = combine(false).unwrap_or(f64::NAN);
    let combined_bytes = dir_size(&work.path().join("combined"));
    if std::env::var_os("ARK_BENCH_KEEP").is_some() {
        // For profiling by hand: the repository stays.
        println!(
            "repository kept at {} (backup {inc})",
            repo.path().display()
        );
        std::mem::forget(repo);
        return;
    }
    let (ark_s, ark_bytes) = ark_restore(repo.path(), &inc, &[], false).unwrap_or((f64::NAN, 0));
    let (ark1_s, _) =
        ark_restore(repo.path(), &inc, &["--jobs", "1"], false).unwrap_or((f64::NAN, 0));
    let cold_combine = combine(true);
    let cold_ark = ark_restore(repo.path(), &inc, &[], true);
    let cold = match (cold_ark, cold_combine) {
        (Some((a, _)), Some(b)) => Some((a, b)),
        _ => None,
    };
    println!();
    println!(
        "Restore of full + incremental (pgbench scale {scale}), to a startable data directory:"
    );
    println!();
    println!("| restore | wall time | data directory |");
    println!("| --- | ---: | ---: |");
    println!(
        "| pg_ark restore (from the repository: download, zstd, BLAKE3 checks) | {ark_s:.2} s | {:.1} MiB |",
        mib(ark_bytes)
    );
    println!("| pg_ark restore --jobs 1 | {ark1_s:.2} s | |");
    println!(
        "| pg_combinebackup of two plain pg_basebackup directories on local disk | {combine_s:.2} s | {:.1} MiB |",
        mib(combined_bytes)
    );
    match cold {
        Some((a, b)) => {
            println!("| pg_ark restore, page cache dropped first | {a:.2} s | |");
            println!("| pg_combinebackup, page cache dropped first | {b:.2} s | |");
        }
        None => println!("| cold runs (page cache dropped) | need root | |"),
    }
    println!();
    let ratio = ark_s / combine_s;
    println!(
        "goal pg_ark <= 1/2 of pg_combinebackup (cache warm): {ark_s:.2} s vs {combine_s:.2} s ({ratio:.2}), {}",
        if ratio <= 0.5 { "met" } else { "NOT met" }
    );
    if let Some((a, b)) = cold {
        println!(
            "goal pg_ark <= 1/2 of pg_combinebackup (cache cold): {a:.2} s vs {b:.2} s ({:.2}), {}",
            a / b,
            if a / b <= 0.5 { "met" } else { "NOT met" }
        );
    }
}

fn replay_from_s3() {
    let segments: u32 = std::env::var("ARK_BENCH_SEGMENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let s3 = S3Server::start();
    let cluster = Cluster::start_with(
        ClusterOptions::default()
            .set("archive_mode", "on")
            .set("archive_library", "'pg_ark'")
            .set("ark.repository", &format!("'s3://{}/replay'", s3.bucket))
            .set("ark.s3_endpoint", &format!("'{}'", s3.endpoint()))
            .set("ark.s3_force_path_style", "on")
            .set("ark.s3_access_key_id", &format!("'{}'", s3.access_key))
            .set("ark.s3_secret_access_key", &format!("'{}'", s3.secret_key))
            .set("max_wal_size", "'8GB'"),
    );
    let mut c = cluster.client();
    c.batch_execute("CREATE EXTENSION pg_ark; CREATE TABLE t (id int, v text)")
        .unwrap();
    let full = backup_id(&mut c, "full");
    eprintln!("{segments} segments into S3 ...");
    let mut last = String::new();
    for i in 0..segments {
        c.execute(
            "INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 2000) g",
            &[],
        )
        .unwrap();
        let _ = i;
        last = c
            .query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])
            .unwrap()
            .get(0);
    }
    cluster.wait_archived(&last, std::time::Duration::from_secs(600));
    let rows: i64 = c.query_one("SELECT count(*) FROM t", &[]).unwrap().get(0);
    let keys = temp_dir("ark-bench-keys-");
    let file = s3.credentials_file(keys.path());
    let url = format!("s3://{}/replay", s3.bucket);
    let endpoint = s3.endpoint();
    let mut results = Vec::new();
    for (what, extra) in [
        ("adaptive prefetch (default: 4, doubling up to 32)", ""),
        (
            "fixed prefetch of 4 segments",
            " --prefetch 4 --prefetch-max 4",
        ),
        ("no prefetch (one round trip per segment)", " --prefetch 1"),
    ] {
        let dir = temp_dir("ark-bench-replay-");
        let data = dir.path().join("data");
        let (ok, out, err) = pg_ark(&[
            "restore",
            "--repo",
            &url,
            "--s3-endpoint",
            &endpoint,
            "--s3-path-style",
            "--s3-credentials-file",
            file.to_str().unwrap(),
            "--pgdata",
            data.to_str().unwrap(),
            "--backup",
            &full,
            "--archive-off",
            "--quiet",
        ]);
        assert!(ok, "{out}{err}");
        let auto = data.join("postgresql.auto.conf");
        let conf = std::fs::read_to_string(&auto).unwrap();
        let conf = conf.replace(" wal-get ", &format!(" wal-get{extra} "));
        std::fs::write(&auto, conf).unwrap();
        let t = Instant::now();
        let restored = Cluster::start_restored(dir, data, &[]);
        let secs = t.elapsed().as_secs_f64();
        let got: i64 = restored
            .client()
            .query_one("SELECT count(*) FROM t", &[])
            .unwrap()
            .get(0);
        assert_eq!(got, rows, "{what}");
        results.push((what, secs));
    }
    println!();
    println!("Recovery of {segments} archived segments from S3 (s3s-fs on loopback), start to promotion:");
    println!();
    println!("| restore_command | recovery |");
    println!("| --- | ---: |");
    for (what, secs) in &results {
        println!(
            "| pg_ark wal-get, {what} | {secs:.1} s ({:.1} segments/s) |",
            f64::from(segments) / secs
        );
    }
}

fn main() {
    // ARK_BENCH_ONLY=restore or =replay runs one part.
    let only = std::env::var("ARK_BENCH_ONLY").unwrap_or_default();
    if only != "replay" {
        if pg_ark_tests::PgInstall::from_env().major < 17 {
            eprintln!("pg_combinebackup needs PostgreSQL 17 or later; only the replay part runs");
        } else {
            restore_vs_combinebackup();
        }
    }
    if only != "restore" {
        replay_from_s3();
    }
}
