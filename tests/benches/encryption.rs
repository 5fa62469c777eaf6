//! What encryption costs (issue 24): an encrypted repository against a
//! clear one, same machine, same run, same inputs, the two alternating.
//!
//! 1. Archive CPU per segment: real WAL segments (a backlog of table
//!    inserts, mixed random and repetitive text) pushed one by one through
//!    `ClusterRepo::push_wal_file` (the archive module's path: read, hash,
//!    zstd 1, and for the encrypted repository the age layer, then a
//!    durable write) into a fresh local repository; this process's CPU
//!    time (user and system) per segment. Goal: encrypted at most 1.15x.
//! 2. A full backup (`ark.backup('full')`, pgbench scale ARK_BENCH_SCALE,
//!    default 100) into each repository, and `pg_ark restore` of it (the
//!    encrypted one with `--identity-file`): wall time. Goal: encrypted at
//!    most 1.1x for each.
//!
//! Medians of ARK_BENCH_RUNS (default 3; at least 5 for the archive CPU,
//! whose rounds are short). Beside them, the floor: age alone encrypting
//! the same compressed segments in memory. Keys come from `age-keygen`.
//! Run: `make bench-encryption` (or `make bench`), with pg_ark installed.
//! This is a benchmark, not a test: it reports numbers and fails only if a
//! step fails.
use pg_ark_core::crypto::layer::Keys;
use pg_ark_core::repo::compress::Compression;
use pg_ark_core::repo::config::{EncryptionFiles, FLAGS};
use pg_ark_core::repo::Repository;
use pg_ark_core::storage::local::LocalStorage;
use pg_ark_tests::{
    bench_options, median, pg_ark, temp_dir, verdict, wait_job, Cluster, ClusterOptions,
};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// This process's CPU seconds so far (user plus system).
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

fn settle() {
    assert!(Command::new("sync").status().unwrap().success());
}

/// An identity file from `age-keygen` (owned by the test user, mode 600)
/// and a recipients file with its public key.
fn keys(dir: &Path) -> (PathBuf, PathBuf) {
    let (identity, recipient) = pg_ark_tests::age_keygen(dir, "bench.key");
    let recipients = dir.join("recipients");
    std::fs::write(&recipients, format!("{recipient}\n")).unwrap();
    std::fs::set_permissions(
        &recipients,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    (identity, recipients)
}

/// Real WAL segments: a stopped cluster whose pg_wal holds `n` full
/// segments of inserts. Returns its dir (kept alive), the segments, its
/// system identifier and major.
fn wal_segments(n: usize) -> (Cluster, Vec<(String, PathBuf)>) {
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
    let ready = |data: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(data.join("pg_wal/archive_status"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_string_lossy()
                    .strip_suffix(".ready")
                    .map(str::to_string)
            })
            .filter(|n| n.len() == 24)
            .collect();
        v.sort();
        v
    };
    let mut i = 0i64;
    while ready(&src.data).len() < n {
        c.execute(
            "INSERT INTO t SELECT g, md5(random()::text) || md5(random()::text),
                    repeat('order shipped to warehouse ' || (g % 13), (1 + g % 5)::int)
               FROM generate_series($1::bigint, $1::bigint + 19999) g",
            &[&i],
        )
        .unwrap();
        i += 20000;
    }
    drop(c);
    assert!(src.stop("fast").status.success());
    let names = ready(&src.data);
    let segs = names
        .into_iter()
        .take(n)
        .map(|name| {
            let p = src.data.join("pg_wal").join(&name);
            (name, p)
        })
        .collect();
    (src, segs)
}

/// Push every segment into a fresh repository opened with `keys`; CPU
/// seconds per segment and the bytes stored.
fn push_all(segs: &[(String, PathBuf)], sysid: u64, major: u32, keys: &Keys) -> (f64, u64) {
    let dir = temp_dir("ark-bench-enc-");
    let repo = std::sync::Arc::new(
        Repository::open_with(
            Box::new(LocalStorage::open(dir.path()).unwrap()),
            true,
            keys,
        )
        .unwrap(),
    );
    let size = pg_ark_core::wal::SegmentSize::DEFAULT;
    let cluster = repo.attach(sysid, major, size).unwrap();
    let before = cpu_seconds();
    let mut stored = 0;
    for (name, path) in segs {
        match cluster
            .push_wal_file(name, path, Compression::Zstd, 1)
            .unwrap()
        {
            pg_ark_core::repo::PushOutcome::Stored { stored_bytes } => stored += stored_bytes,
            other => panic!("{name}: {other:?}"),
        }
    }
    ((cpu_seconds() - before) / segs.len() as f64, stored)
}

/// Point the cluster at `url` (with `recipients`, or none) and wait until
/// the archiver has opened it.
fn switch_to(cluster: &Cluster, c: &mut postgres::Client, url: &str, recipients: Option<&Path>) {
    c.batch_execute(&format!("ALTER SYSTEM SET ark.repository = '{url}'"))
        .unwrap();
    let r = recipients
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    c.batch_execute(&format!(
        "ALTER SYSTEM SET ark.encryption_recipients_file = '{r}'"
    ))
    .unwrap();
    c.batch_execute("SELECT pg_reload_conf()").unwrap();
    // The archiver's last "opened" line names it (it reopens only when a
    // setting changed, so the line may be older than the switch).
    const OPENED: &str = "pg_ark archiver opened repository ";
    pg_ark_tests::wait_until(&format!("{OPENED}{url}"), Duration::from_secs(120), || {
        c.batch_execute("CREATE TABLE IF NOT EXISTS tick (i int); INSERT INTO tick VALUES (1); SELECT pg_switch_wal()")
            .unwrap();
        let log = cluster.log();
        log.rfind(OPENED)
            .and_then(|at| log[at + OPENED.len()..].lines().next())
            .is_some_and(|l| l.trim_end() == url)
    });
}

fn main() {
    let runs = env_usize("ARK_BENCH_RUNS", 3).max(1);
    let segments = env_usize("ARK_BENCH_SEGMENTS", 40).max(4);
    let scale = env_usize("ARK_BENCH_SCALE", 100).max(1);
    let keydir = temp_dir("ark-bench-keys-");
    let (identity, recipients) = keys(keydir.path());
    let files = EncryptionFiles {
        recipients_file: Some(recipients.clone()),
        identity_file: None,
    };
    let state = temp_dir("ark-bench-state-");
    let enc_keys = files
        .keys(&FLAGS, None)
        .unwrap()
        .with_server_state(state.path())
        .unwrap();

    // 1. Archive CPU per segment.
    let (src, segs) = wal_segments(segments);
    let sysid = src.system_identifier_from_control();
    let major = src.install.major;
    let (mut clear_cpu, mut enc_cpu) = (Vec::new(), Vec::new());
    let (mut clear_bytes, mut enc_bytes) = (0, 0);
    // Warm the page cache with the segments once.
    push_all(&segs, sysid, major, &Keys::default());
    // More rounds than the backups: each is short, and CPU time is noisy.
    for _ in 0..runs.max(5) {
        let (c, b) = push_all(&segs, sysid, major, &Keys::default());
        clear_cpu.push(c);
        clear_bytes = b;
        let (c, b) = push_all(&segs, sysid, major, &enc_keys);
        enc_cpu.push(c);
        enc_bytes = b;
    }
    // The floor: age alone encrypting the same compressed envelopes, in
    // memory, per segment (what the layer cannot do without).
    let sealed: Vec<Vec<u8>> = segs
        .iter()
        .map(|(_, p)| {
            pg_ark_core::repo::envelope::seal(&std::fs::read(p).unwrap(), Compression::Zstd, 1)
                .unwrap()
        })
        .collect();
    let key = pg_ark_core::crypto::DataKey::generate().write_key();
    let mut age_cpu = Vec::new();
    for _ in 0..runs {
        let before = cpu_seconds();
        for (s, (name, _)) in sealed.iter().zip(&segs) {
            let mut out = Vec::with_capacity(s.len() + 4096);
            let mut w = pg_ark_core::crypto::encrypt_object(&key, name, &mut out).unwrap();
            std::io::Write::write_all(&mut w, s).unwrap();
            w.finish().unwrap();
        }
        age_cpu.push((cpu_seconds() - before) / segs.len() as f64);
    }
    let sealed_bytes: usize = sealed.iter().map(Vec::len).sum();
    drop(src);
    let (cc, ec, ac) = (median(clear_cpu), median(enc_cpu), median(age_cpu));

    // 2. A full backup and its restore.
    let clear_repo = temp_dir("ark-bench-clear-");
    let enc_repo = temp_dir("ark-bench-encrepo-");
    let cluster = Cluster::start_with(bench_options(clear_repo.path()));
    cluster.pgbench(&["-i", "-q", "-s", &scale.to_string()]);
    let mut c = cluster.client();
    c.batch_execute("CREATE EXTENSION pg_ark").unwrap();
    let (mut full, mut restore) = ([Vec::new(), Vec::new()], [Vec::new(), Vec::new()]);
    for _ in 0..runs {
        for (i, (repo, rec)) in [
            (clear_repo.path(), None),
            (enc_repo.path(), Some(recipients.as_path())),
        ]
        .into_iter()
        .enumerate()
        {
            let url = format!("file://{}", repo.display());
            switch_to(&cluster, &mut c, &url, rec);
            settle();
            let t = Instant::now();
            let done = wait_job(&mut c, "full", r#"{"max_attempts": 1}"#);
            full[i].push(t.elapsed().as_secs_f64());
            assert_eq!(done["state"], "succeeded", "{done}");
            let id = done["result"]["backup_id"].as_str().unwrap().to_string();
            let seg: String = c
                .query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])
                .unwrap()
                .get(0);
            cluster.wait_archived(&seg, Duration::from_secs(300));
            let out = temp_dir("ark-bench-restored-");
            let data = out.path().join("data");
            let mut args = vec![
                "restore".to_string(),
                "--repo".into(),
                url.clone(),
                "--pgdata".into(),
                data.display().to_string(),
                "--backup".into(),
                id,
                "--quiet".into(),
            ];
            if rec.is_some() {
                args.extend(["--identity-file".into(), identity.display().to_string()]);
            }
            settle();
            let t = Instant::now();
            let (ok, so, se) = pg_ark(&args.iter().map(String::as_str).collect::<Vec<_>>());
            restore[i].push(t.elapsed().as_secs_f64());
            assert!(ok, "{so}{se}");
        }
    }
    let m = |v: &Vec<f64>| median(v.clone());
    let rows = [
        (
            "archive CPU per segment",
            cc * 1000.0,
            ec * 1000.0,
            "ms",
            1.15,
        ),
        ("full backup", m(&full[0]), m(&full[1]), "s", 1.1),
        ("restore", m(&restore[0]), m(&restore[1]), "s", 1.1),
    ];
    println!();
    println!(
        "## Encryption, measured (medians of {runs}; {segments} WAL segments; pgbench scale {scale})"
    );
    println!();
    println!("| step | clear | encrypted | ratio | goal | |");
    println!("| --- | ---: | ---: | ---: | ---: | --- |");
    for (step, clear, enc, unit, goal) in rows {
        let ratio = enc / clear;
        println!(
            "| {step} | {clear:.2} {unit} | {enc:.2} {unit} | {ratio:.3}x | at most {goal}x | {} |",
            verdict(ratio <= goal)
        );
    }
    println!();
    println!(
        "Stored WAL: clear {:.1} MiB, encrypted {:.1} MiB ({} segments).",
        clear_bytes as f64 / 1_048_576.0,
        enc_bytes as f64 / 1_048_576.0,
        segments
    );
    println!(
        "The floor: age alone encrypting the same compressed segments in memory costs {:.2} ms per segment ({:.0} MB/s on one core); the layer's whole extra cost is {:.2} ms.",
        ac * 1000.0,
        sealed_bytes as f64 / segs.len() as f64 / ac / 1e6,
        (ec - cc) * 1000.0
    );
}
