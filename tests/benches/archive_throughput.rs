//! Archive throughput: how fast a backlog of ready WAL segments drains into
//! a local repository, for three archivers in the same run:
//!
//! - pg_ark (`archive_library = 'pg_ark'`, zstd, push-ahead workers);
//! - `archive_command = 'test ! -f DIR/%f && cp %p DIR/%f'`;
//! - contrib basic_archive.
//!
//! One backlog is made once (table inserts of mixed random and repetitive
//! text, with archiving not configured so every segment stays `.ready`), the
//! stopped cluster is copied once per archiver, and each copy is started with
//! its archiver; the clock runs until no `.ready` file is left.
//!
//! Run: `make bench` (or `cargo bench -p pg_ark_tests --bench
//! archive_throughput`), with pg_ark installed. ARK_BENCH_SEGMENTS sets the
//! backlog (default 64, at least 60); ARK_BENCH_LEVEL and ARK_BENCH_WORKERS
//! set pg_ark's compression level and push workers (default 0, meaning
//! zstd 1, and 4: pg_ark's own defaults); ARK_BENCH_COMPRESSION picks
//! another algorithm (lz4, gzip, none) for comparison. This is a benchmark, not a test: it
//! reports numbers and fails only if an archiver does not drain at all.
use pg_ark_tests::{give_to_test_user, temp_dir, Cluster, ClusterOptions};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn ready_count(data: &Path) -> usize {
    std::fs::read_dir(data.join("pg_wal/archive_status"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".ready"))
                .count()
        })
        .unwrap_or(0)
}

fn dir_size(p: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let m = match e.metadata() {
                Ok(m) => m,
                Err(_) => continue,
            };
            total += if m.is_dir() {
                dir_size(&e.path())
            } else {
                m.len()
            };
        }
    }
    total
}

/// Make the backlog: returns the stopped cluster's temp dir, data dir, and
/// the number of ready segments.
fn make_backlog(segments: usize) -> (tempfile::TempDir, PathBuf, usize) {
    let mut src = Cluster::start_with(
        ClusterOptions::default()
            .set("archive_mode", "on")
            .set("archive_library", "''")
            .set("archive_command", "''")
            .set("max_wal_size", "'4GB'")
            .set("checkpoint_timeout", "'1h'"),
    );
    let mut c = src.client();
    c.batch_execute("CREATE TABLE t (id bigint, r text, rep text)")
        .unwrap();
    let mut i = 0i64;
    while ready_count(&src.data) < segments {
        // Mixed content: random hex (incompressible-ish) beside repetitive text.
        c.execute(
            "INSERT INTO t SELECT g, md5(random()::text) || md5(random()::text),
                    repeat('order shipped to warehouse ' || (g % 13), (1 + g % 5)::int)
               FROM generate_series($1::bigint, $1::bigint + 19999) g",
            &[&i],
        )
        .unwrap();
        i += 20000;
        if i % 200_000 == 0 {
            c.batch_execute("SELECT pg_switch_wal()").unwrap();
        }
    }
    c.batch_execute("SELECT pg_switch_wal()").unwrap();
    drop(c);
    assert!(src.stop("fast").status.success());
    let n = ready_count(&src.data);
    // Keep the data dir: move it out of the cluster's temp dir.
    let keep = temp_dir("ark-bench-src-");
    let data = keep.path().join("data");
    let st = Command::new("cp")
        .arg("-a")
        .arg(&src.data)
        .arg(&data)
        .status()
        .unwrap();
    assert!(st.success());
    (keep, data, n)
}

struct Run {
    name: &'static str,
    /// From `pg_ctl start` until no `.ready` file is left.
    seconds: f64,
    /// From the first file archived until the last: the archiver's own rate,
    /// without server start-up.
    steady_seconds: f64,
    stored_bytes: u64,
}

fn drain(
    name: &'static str,
    backlog: &Path,
    settings: ClusterOptions,
    target: &Path,
    n: usize,
) -> Run {
    let dir = temp_dir("ark-bench-");
    let data = dir.path().join("data");
    assert!(Command::new("cp")
        .arg("-a")
        .arg(backlog)
        .arg(&data)
        .status()
        .unwrap()
        .success());
    give_to_test_user(&data);
    // Write the copy out first, so that no archiver pays for its writeback.
    assert!(Command::new("sync").status().unwrap().success());
    let start = Instant::now();
    let cluster = Cluster::start_from_backup(dir, data, settings);
    let mut first_done: Option<Instant> = None;
    loop {
        let left = ready_count(&cluster.data);
        if left < n && first_done.is_none() {
            first_done = Some(Instant::now());
        }
        if left == 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(900),
            "{name} did not drain {n} segments"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let seconds = start.elapsed().as_secs_f64();
    let steady_seconds = first_done.map_or(seconds, |t| t.elapsed().as_secs_f64());
    let archived: i64 = cluster
        .client()
        .query_one("SELECT archived_count FROM pg_stat_archiver", &[])
        .unwrap()
        .get(0);
    assert!(archived as usize >= n, "{name}: {archived} archived of {n}");
    Run {
        name,
        seconds,
        steady_seconds,
        stored_bytes: dir_size(target),
    }
}

fn main() {
    let segments: usize = std::env::var("ARK_BENCH_SEGMENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
        .max(60);
    println!("archive throughput: making a backlog of {segments} segments ...");
    let t = Instant::now();
    let (_keep, backlog, n) = make_backlog(segments);
    println!(
        "backlog: {n} ready segments ({:.1} MiB of WAL) made in {:.1}s",
        n as f64 * 16.0,
        t.elapsed().as_secs_f64()
    );

    let base = |lib: &str| {
        ClusterOptions::default()
            .set("archive_mode", "on")
            .set("archive_library", lib)
    };
    let mut runs = Vec::new();

    let repo = temp_dir("ark-bench-repo-");
    let mut ark = base("'pg_ark'")
        .set(
            "ark.repository",
            &format!("'file://{}'", repo.path().display()),
        )
        .set(
            "ark.compression",
            &format!(
                "'{}'",
                std::env::var("ARK_BENCH_COMPRESSION").unwrap_or_else(|_| "zstd".into())
            ),
        );
    // pg_ark's own defaults unless asked otherwise.
    for (env, setting) in [
        ("ARK_BENCH_LEVEL", "ark.compression_level"),
        ("ARK_BENCH_WORKERS", "ark.archive_push_workers"),
    ] {
        if let Ok(v) = std::env::var(env) {
            ark = ark.set(setting, &v);
        }
    }
    runs.push(drain("pg_ark (zstd)", &backlog, ark, repo.path(), n));
    let cpdir = temp_dir("ark-bench-cp-");
    runs.push(drain(
        "archive_command cp",
        &backlog,
        base("''").set(
            "archive_command",
            &format!("'test ! -f {0}/%f && cp %p {0}/%f'", cpdir.path().display()),
        ),
        cpdir.path(),
        n,
    ));
    let badir = temp_dir("ark-bench-ba-");
    runs.push(drain(
        "basic_archive",
        &backlog,
        base("'basic_archive'").set(
            "basic_archive.archive_directory",
            &format!("'{}'", badir.path().display()),
        ),
        badir.path(),
        n,
    ));

    println!();
    println!(
        "{:<20} {:>9} {:>12} {:>12} {:>14}",
        "archiver", "seconds", "segments/s", "steady seg/s", "stored MiB"
    );
    // Steady rate: the n-1 files archived after the first one, over the time
    // from the first to the last.
    let steady = |r: &Run| (n - 1) as f64 / r.steady_seconds;
    for r in &runs {
        println!(
            "{:<20} {:>9.2} {:>12.1} {:>12.1} {:>14.1}",
            r.name,
            r.seconds,
            n as f64 / r.seconds,
            steady(r),
            r.stored_bytes as f64 / 1048576.0
        );
    }
    let find = |name: &str| runs.iter().find(|r| r.name.starts_with(name));
    let (Some(ark), Some(cp), Some(ba)) = (find("pg_ark"), find("archive_command"), find("basic"))
    else {
        unreachable!("all three archivers ran");
    };
    println!();
    println!(
        "pg_ark vs basic_archive: {:.2}x wall, {:.2}x steady   (goal: at least 2x)",
        ba.seconds / ark.seconds,
        steady(ark) / steady(ba)
    );
    println!(
        "pg_ark vs cp:            {:.2}x wall, {:.2}x steady",
        cp.seconds / ark.seconds,
        steady(ark) / steady(cp)
    );
}
