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
//! Each archiver drains its own copy ARK_BENCH_RUNS times (default 3) and
//! the median is reported. Besides time, the run measures the *machine's*
//! CPU (all processes, from /proc/stat) spent per archived segment, between
//! the first file archived and the last, and compares it with `zstd -1`
//! alone compressing the same segments (also median of the runs); for
//! pg_ark it also reads the archiver's peak RSS (VmHWM).
//!
//! Goals (issue 9): pg_ark's CPU per segment at most 1.25x that of
//! `zstd -1`, a drain at least 2x as fast as basic_archive, and the
//! archiver below 64 MiB RSS with the default workers.
//!
//! Run: `make bench` (or `cargo bench -p pg_ark_tests --bench
//! archive_throughput`), with pg_ark installed. ARK_BENCH_SEGMENTS sets the
//! backlog (default 100, at least 60); ARK_BENCH_LEVEL and ARK_BENCH_WORKERS
//! set pg_ark's compression level and push workers (default 0, meaning
//! zstd 1, and 4: pg_ark's own defaults); ARK_BENCH_COMPRESSION picks
//! another algorithm (lz4, gzip, none) for comparison. This is a benchmark, not a test: it
//! reports numbers and fails only if an archiver does not drain at all.
use pg_ark_tests::{
    dir_size, give_to_test_user, median, peak_rss_kib, temp_dir, Cluster, ClusterOptions,
};
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

/// Busy jiffies of the whole machine (every CPU, every process) so far.
fn machine_busy_jiffies() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0;
    };
    // user nice system idle iowait irq softirq steal ...
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    v.iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4 && *i < 8)
        .map(|(_, x)| x)
        .sum()
}

fn jiffies_to_ms(j: u64) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    j as f64 * 1000.0 / hz
}

/// `zstd -1` alone over the backlog's segments: machine CPU per segment,
/// in ms.
fn zstd_alone(backlog: &Path) -> f64 {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(backlog.join("pg_wal"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.len() == 24 && n.bytes().all(|b| b.is_ascii_hexdigit()))
        })
        .collect();
    segs.sort();
    // Warm the page cache, as the archivers find it.
    for s in &segs {
        let _ = std::fs::read(s);
    }
    let before = machine_busy_jiffies();
    let st = Command::new("zstd")
        .args(["-1", "-q", "-c"])
        .args(&segs)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "zstd -1 failed");
    jiffies_to_ms(machine_busy_jiffies() - before) / segs.len() as f64
}

struct Run {
    name: &'static str,
    /// Machine CPU per archived segment (ms), first file to last.
    cpu_ms: f64,
    /// The archiver process's peak RSS, KiB.
    rss_kib: Option<u64>,
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
    let mut busy_from = 0;
    loop {
        let left = ready_count(&cluster.data);
        if left < n && first_done.is_none() {
            first_done = Some(Instant::now());
            busy_from = machine_busy_jiffies();
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
    let busy = machine_busy_jiffies() - busy_from;
    let seconds = start.elapsed().as_secs_f64();
    let steady_seconds = first_done.map_or(seconds, |t| t.elapsed().as_secs_f64());
    let archived: i64 = cluster
        .client()
        .query_one("SELECT archived_count FROM pg_stat_archiver", &[])
        .unwrap()
        .get(0);
    assert!(archived as usize >= n, "{name}: {archived} archived of {n}");
    let archiver: Option<i32> = cluster
        .client()
        .query_opt(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'archiver'",
            &[],
        )
        .unwrap()
        .map(|r| r.get(0));
    Run {
        name,
        cpu_ms: jiffies_to_ms(busy) / (n - 1) as f64,
        rss_kib: archiver.and_then(peak_rss_kib),
        seconds,
        steady_seconds,
        stored_bytes: dir_size(target),
    }
}

fn main() {
    let segments: usize = std::env::var("ARK_BENCH_SEGMENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100)
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
    let rounds: usize = std::env::var("ARK_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1);
    let zstd_ms = median((0..rounds).map(|_| zstd_alone(&backlog)).collect());

    let mut ark = base("'pg_ark'").set(
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
    for _ in 0..rounds {
        let repo_run = temp_dir("ark-bench-repo-");
        let opts = ark.clone().set(
            "ark.repository",
            &format!("'file://{}'", repo_run.path().display()),
        );
        runs.push(drain("pg_ark (zstd)", &backlog, opts, repo_run.path(), n));
    }
    for _ in 0..rounds {
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
    }
    for _ in 0..rounds {
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
    }

    // Steady rate: the n-1 files archived after the first one, over the time
    // from the first to the last. Each figure is the median of the rounds.
    let steady = |r: &Run| (n - 1) as f64 / r.steady_seconds;
    struct Summary {
        name: &'static str,
        seconds: f64,
        steady: f64,
        cpu_ms: f64,
        rss_kib: Option<u64>,
        stored_mib: f64,
    }
    let mut summary = Vec::new();
    for name in ["pg_ark (zstd)", "archive_command cp", "basic_archive"] {
        let of: Vec<&Run> = runs.iter().filter(|r| r.name == name).collect();
        let med = |f: &dyn Fn(&Run) -> f64| median(of.iter().map(|r| f(r)).collect());
        summary.push(Summary {
            name,
            seconds: med(&|r| r.seconds),
            steady: med(&|r| steady(r)),
            cpu_ms: med(&|r| r.cpu_ms),
            rss_kib: of.iter().filter_map(|r| r.rss_kib).max(),
            stored_mib: med(&|r| r.stored_bytes as f64 / 1048576.0),
        });
    }
    println!();
    println!("median of {rounds} runs each, {n} segments");
    println!(
        "{:<20} {:>9} {:>12} {:>12} {:>12} {:>12} {:>11}",
        "archiver", "seconds", "segments/s", "steady seg/s", "CPU ms/seg", "stored MiB", "peak RSS"
    );
    for r in &summary {
        println!(
            "{:<20} {:>9.2} {:>12.1} {:>12.1} {:>12.1} {:>12.1} {:>11}",
            r.name,
            r.seconds,
            n as f64 / r.seconds,
            r.steady,
            r.cpu_ms,
            r.stored_mib,
            r.rss_kib
                .map_or("-".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
        );
    }
    println!(
        "{:<20} {:>9} {:>12} {:>12} {:>12.1}",
        "zstd -1 alone", "", "", "", zstd_ms
    );
    let (ark, cp, ba) = (&summary[0], &summary[1], &summary[2]);
    println!();
    println!(
        "pg_ark CPU per segment vs zstd -1 alone: {:.2}x   (goal: at most 1.25x)",
        ark.cpu_ms / zstd_ms
    );
    println!(
        "pg_ark vs basic_archive: {:.2}x wall, {:.2}x steady   (goal: at least 2x)",
        ba.seconds / ark.seconds,
        ark.steady / ba.steady
    );
    println!(
        "pg_ark vs cp:            {:.2}x wall, {:.2}x steady",
        cp.seconds / ark.seconds,
        ark.steady / cp.steady
    );
    if let Some(k) = ark.rss_kib {
        println!(
            "pg_ark archiver peak RSS: {:.1} MiB   (goal: below 64 MiB)",
            k as f64 / 1024.0
        );
    }
}
