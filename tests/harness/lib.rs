//! The integration-test harness: real PostgreSQL clusters and a real
//! S3-compatible server, each in its own temp dir, on its own free port.
//!
//! - `PgInstall` is the PostgreSQL installation under test, named by
//!   `ARK_PG_CONFIG` (default: the primary major, 17, in the setup cache).
//!   pg_ark must already be installed into it (`make install`).
//! - `Cluster` is an initdb'd cluster with pg_ark in
//!   `shared_preload_libraries` (unless asked otherwise) and the settings the
//!   test asks for. It is stopped immediately when dropped, even when the
//!   test panics, and its server log is printed then to help the reader.
//! - `S3Server` is an `s3s-fs` process on loopback with one bucket.
//! - `MotoServer` is a `moto_server` process on loopback, for versioning
//!   and Object Lock, with a bucket that has it and one that has not.
//!
//! Tests run as root here, and initdb/pg_ctl refuse root, so every server
//! command runs as the unprivileged user `ARK_TEST_USER` (default `pgark`)
//! that `make setup` creates.
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::chown;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use postgres;

/// Default PostgreSQL installation: the primary major, built by `make setup`.
pub const DEFAULT_PG_CONFIG: &str = "/var/cache/pg_ark/pg/17/bin/pg_config";

/// A PostgreSQL installation, found through its pg_config.
#[derive(Debug, Clone)]
pub struct PgInstall {
    pub pg_config: PathBuf,
    pub bindir: PathBuf,
    pub pkglibdir: PathBuf,
    pub major: u32,
}

impl PgInstall {
    /// The installation named by `ARK_PG_CONFIG`, or the default one.
    pub fn from_env() -> &'static PgInstall {
        static INSTALL: OnceLock<PgInstall> = OnceLock::new();
        INSTALL.get_or_init(|| {
            let pg_config = std::env::var_os("ARK_PG_CONFIG")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_PG_CONFIG));
            PgInstall::new(&pg_config)
        })
    }

    pub fn new(pg_config: &Path) -> PgInstall {
        let q = |flag: &str| -> String {
            let out = Command::new(pg_config)
                .arg(flag)
                .output()
                .unwrap_or_else(|e| {
                    panic!("cannot run {}: {e} (run `make setup`)", pg_config.display())
                });
            assert!(
                out.status.success(),
                "{} {flag} failed",
                pg_config.display()
            );
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        let version = q("--version"); // "PostgreSQL 17.11 (Debian ...)"
        let major = version
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.split('.').next())
            .and_then(|m| m.parse().ok())
            .unwrap_or_else(|| panic!("cannot parse PostgreSQL version from {version:?}"));
        PgInstall {
            pg_config: pg_config.to_path_buf(),
            bindir: PathBuf::from(q("--bindir")),
            pkglibdir: PathBuf::from(q("--pkglibdir")),
            major,
        }
    }

    pub fn bin(&self, name: &str) -> PathBuf {
        self.bindir.join(name)
    }

    /// `pg_regress` as installed with PGXS.
    pub fn pg_regress(&self) -> PathBuf {
        self.pkglibdir.join("pgxs/src/test/regress/pg_regress")
    }
}

/// The OS user that test clusters run as when the tests run as root.
fn test_user() -> Option<(u32, u32)> {
    static USER: OnceLock<Option<(u32, u32)>> = OnceLock::new();
    *USER.get_or_init(|| {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return None;
        }
        let name = std::env::var("ARK_TEST_USER").unwrap_or_else(|_| "pgark".into());
        let passwd = fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
        let entry = passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.first() == Some(&name.as_str()))
            .unwrap_or_else(|| panic!("OS user {name:?} is missing: run `make setup`"));
        Some((
            entry[2].parse().expect("uid"),
            entry[3].parse().expect("gid"),
        ))
    })
}

/// A command that runs as the test user when we are root.
pub fn server_command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new(program);
    if let Some((uid, gid)) = test_user() {
        cmd.uid(uid).gid(gid);
    }
    cmd.env_remove("PGDATA")
        .env_remove("PGPORT")
        .env_remove("PGHOST");
    cmd
}

/// Give a path to the test user, so the server can write there.
pub fn give_to_test_user(path: &Path) {
    if let Some((uid, gid)) = test_user() {
        chown(path, Some(uid), Some(gid))
            .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    }
}

/// A cluster that archives with pg_ark into the local repository `repo`.
pub fn archiving(repo: &Path) -> ClusterOptions {
    ClusterOptions::default()
        .set("archive_mode", "on")
        .set("archive_library", "'pg_ark'")
        .set("ark.repository", &format!("'file://{}'", repo.display()))
}

/// The median of a benchmark's rounds (NaN for none).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// How a benchmark prints a goal's outcome.
pub fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}

/// A benchmark's cluster: [`archiving`] into `repo`, room for big WAL
/// between checkpoints, 512 MB of shared buffers, and WAL summaries on 17
/// and later (for incrementals against them).
pub fn bench_options(repo: &Path) -> ClusterOptions {
    let opts = archiving(repo)
        .set("max_wal_size", "'8GB'")
        .set("checkpoint_timeout", "'1h'")
        .set("shared_buffers", "'512MB'");
    if PgInstall::from_env().major >= 17 {
        opts.set("summarize_wal", "on")
    } else {
        opts
    }
}

/// Run the installed `pg_ark` CLI with `args` (as root, like an
/// operator); returns (success, stdout, stderr).
pub fn pg_ark(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(PgInstall::from_env().bin("pg_ark"))
        .args(args)
        .env_remove("PGDATA")
        .output()
        .expect("run pg_ark");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Insert row `id` into `pitr (id int, xid xid8 DEFAULT pg_current_xact_id())`
/// in its own transaction; then (the time just after its commit, in UTC
/// with its zone; the WAL insert LSN after it; its xid).
pub fn commit_row(c: &mut postgres::Client, id: i32) -> (String, String, String) {
    let xid: String = c
        .query_one(
            "INSERT INTO pitr (id) VALUES ($1) RETURNING xid::text",
            &[&id],
        )
        .expect("insert into pitr")
        .get(0);
    let row = c
        .query_one(
            "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00',
                    pg_current_wal_insert_lsn()::text",
            &[],
        )
        .expect("the time and LSN after the commit");
    (row.get(0), row.get(1), xid)
}

/// Run `ark.wait(ark.backup(kind, options))` and return the job's document.
pub fn wait_job(c: &mut postgres::Client, kind: &str, options: &str) -> serde_json::Value {
    let doc: String = c
        .query_one(
            "SELECT ark.wait(ark.backup($1, $2::text::jsonb), '5 min')::text",
            &[&kind, &options],
        )
        .expect("ark.wait(ark.backup(...))")
        .get(0);
    serde_json::from_str(&doc).expect("a job document")
}

/// Row count and digest of each pgbench table.
pub fn pgbench_digest(c: &mut postgres::Client) -> Vec<(String, i64, String)> {
    [
        "pgbench_accounts",
        "pgbench_branches",
        "pgbench_tellers",
        "pgbench_history",
    ]
    .iter()
    .map(|t| {
        let row = c
            .query_one(
                &format!(
                    "SELECT count(*), coalesce(md5(string_agg(x::text, ',' ORDER BY x::text)), '')
                           FROM {t} x"
                ),
                &[],
            )
            .unwrap();
        (t.to_string(), row.get(0), row.get(1))
    })
    .collect()
}

/// `restore_command` fetching WAL with `pg_ark wal-get` from the local
/// repository in `repo`.
pub fn wal_get_command(repo: &Path) -> String {
    format!(
        "{} wal-get --repo file://{} %f %p",
        PgInstall::from_env().bin("pg_ark").display(),
        repo.display()
    )
}

/// Bytes of every file below `p` (for benchmarks).
pub fn dir_size(p: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = fs::read_dir(p) {
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            total += if m.is_dir() {
                dir_size(&e.path())
            } else {
                m.len()
            };
        }
    }
    total
}

/// Peak resident set of a process (VmHWM), in KiB.
pub fn peak_rss_kib(pid: i32) -> Option<u64> {
    pg_ark_core::memory::of_pid(u32::try_from(pid).ok()?).map(|m| m.hwm_kib)
}

/// The local repository in `dir`, opened read-only as the CLI would.
pub fn open_repo(dir: &Path) -> std::sync::Arc<pg_ark_core::repo::Repository> {
    std::sync::Arc::new(
        pg_ark_core::repo::Repository::open(
            Box::new(
                pg_ark_core::storage::local::LocalStorage::open(dir).expect("open the repository"),
            ),
            false,
        )
        .expect("open the repository"),
    )
}

/// Give a whole tree to the test user (a data directory restored by the
/// test process).
pub fn give_tree_to_test_user(path: &Path) {
    give_to_test_user(path);
    if path.is_dir() && !path.is_symlink() {
        for entry in fs::read_dir(path).expect("list a restored tree") {
            give_tree_to_test_user(&entry.expect("a directory entry").path());
        }
    }
}

/// A fresh temp dir under /tmp (short paths: socket names are limited to
/// 107 bytes), owned by the test user.
pub fn temp_dir(prefix: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .expect("create temp dir");
    give_to_test_user(dir.path());
    dir
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

fn run_ok(cmd: &mut Command, what: &str) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    if !out.status.success() {
        panic!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// Poll `cond` every 100 ms until it holds; panic with `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How a cluster is set up.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Put pg_ark in `shared_preload_libraries` (default true).
    pub preload: bool,
    /// Extra `postgresql.conf` lines, as (name, value) pairs; values are
    /// written as given, so quote strings: `("archive_mode", "'on'")`.
    pub settings: Vec<(String, String)>,
    /// `initdb --data-checksums` (default: initdb's own default).
    pub checksums: bool,
    /// `initdb --wal-segsize` in MiB (default: initdb's, 16).
    pub wal_segsize_mb: Option<u32>,
    /// `pg_resetwal -l` after initdb: the first WAL segment the cluster
    /// writes (to start near the end of a log id, say).
    pub first_wal_segment: Option<String>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            preload: true,
            settings: Vec::new(),
            checksums: false,
            wal_segsize_mb: None,
            first_wal_segment: None,
        }
    }
}

impl ClusterOptions {
    pub fn set(mut self, name: &str, value: &str) -> Self {
        self.settings.push((name.to_string(), value.to_string()));
        self
    }
    pub fn with_checksums(mut self) -> Self {
        self.checksums = true;
        self
    }
    pub fn without_preload(mut self) -> Self {
        self.preload = false;
        self
    }
    pub fn wal_segsize_mb(mut self, mb: u32) -> Self {
        self.wal_segsize_mb = Some(mb);
        self
    }
    pub fn first_wal_segment(mut self, name: &str) -> Self {
        self.first_wal_segment = Some(name.to_string());
        self
    }
}

/// A running PostgreSQL cluster in a temp dir.
pub struct Cluster {
    pub install: &'static PgInstall,
    pub data: PathBuf,
    pub sockdir: PathBuf,
    pub port: u16,
    pub logfile: PathBuf,
    running: bool,
    // Last, so it is removed after the server is stopped.
    dir: tempfile::TempDir,
}

impl Cluster {
    /// A cluster with pg_ark preloaded and default settings.
    pub fn start() -> Cluster {
        Cluster::start_with(ClusterOptions::default())
    }

    pub fn start_with(opts: ClusterOptions) -> Cluster {
        let install = PgInstall::from_env();
        let dir = temp_dir("ark-");
        let data = dir.path().join("data");
        run_ok(
            server_command(install.bin("initdb"))
                .args([
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",
                ])
                .args(opts.checksums.then_some("--data-checksums"))
                .args(opts.wal_segsize_mb.map(|mb| format!("--wal-segsize={mb}")))
                .arg("-D")
                .arg(&data),
            "initdb",
        );
        if let Some(seg) = &opts.first_wal_segment {
            run_ok(
                server_command(install.bin("pg_resetwal"))
                    .args(["-l", seg, "-D"])
                    .arg(&data),
                "pg_resetwal",
            );
        }
        Cluster::configure_and_start(dir, data, &opts)
    }

    /// Start a cluster from a base backup of another one: `pg_basebackup`
    /// output in `backup`, which must live in `dir` (a `temp_dir`). The
    /// primary's harness settings are overridden with this cluster's own.
    pub fn start_from_backup(
        dir: tempfile::TempDir,
        backup: PathBuf,
        opts: ClusterOptions,
    ) -> Cluster {
        let _ = fs::remove_file(backup.join("postmaster.pid"));
        Cluster::configure_and_start(dir, backup, &opts)
    }

    /// Put `recovery.signal` in `backup`; the settings of a recovery with
    /// `restore_command` (and no archiving of its own).
    fn prepare_recovery(backup: &Path, restore_command: &str) -> ClusterOptions {
        let signal = backup.join("recovery.signal");
        fs::write(&signal, "").expect("write recovery.signal");
        give_to_test_user(&signal);
        ClusterOptions::default()
            .set("archive_mode", "off")
            .set("restore_command", &format!("'{restore_command}'"))
    }

    /// Recover a cluster from `backup` (see `base_backup`) with
    /// `restore_command`, and wait until recovery has ended and it accepts
    /// writes.
    pub fn recover_from_backup(
        dir: tempfile::TempDir,
        backup: PathBuf,
        restore_command: &str,
    ) -> Cluster {
        let opts = Cluster::prepare_recovery(&backup, restore_command);
        let cluster = Cluster::start_from_backup(dir, backup, opts);
        wait_until("recovery to end", Duration::from_secs(120), || {
            postgres::Client::connect(&cluster.connstr("postgres"), postgres::NoTls)
                .ok()
                .and_then(|mut c| c.query_one("SELECT NOT pg_is_in_recovery()", &[]).ok())
                .is_some_and(|r| r.get::<_, bool>(0))
        });
        cluster
    }

    /// Start a data directory that pg_ark's restore routine rebuilt in
    /// `data` (inside `dir`): recovery with `restore_command` to the
    /// backup's consistent point, then promotion (a new timeline). Returns
    /// once it accepts writes. `also_own` are further trees (tablespace
    /// locations) to give to the test user.
    pub fn recover_restored(
        dir: tempfile::TempDir,
        data: PathBuf,
        restore_command: &str,
        also_own: &[&Path],
    ) -> Cluster {
        let auto = data.join("postgresql.auto.conf");
        let mut conf = fs::read_to_string(&auto).unwrap_or_default();
        conf += "recovery_target = 'immediate'\nrecovery_target_action = 'promote'\n";
        fs::write(&auto, conf).expect("write postgresql.auto.conf");
        give_tree_to_test_user(&data);
        for p in also_own {
            give_tree_to_test_user(p);
        }
        Cluster::recover_from_backup(dir, data, restore_command)
    }

    /// Start a data directory that `pg_ark restore` prepared in `data`
    /// (inside `dir`), with its own recovery settings, on a free port; wait
    /// until recovery has ended and it accepts writes. `also_own` are
    /// further trees (tablespace locations) to give to the test user.
    pub fn start_restored(dir: tempfile::TempDir, data: PathBuf, also_own: &[&Path]) -> Cluster {
        let _ = fs::remove_file(data.join("postmaster.pid"));
        give_tree_to_test_user(&data);
        for p in also_own {
            give_tree_to_test_user(p);
        }
        let cluster = Cluster::configure_and_start(dir, data, &ClusterOptions::default());
        wait_until("recovery to end", Duration::from_secs(120), || {
            postgres::Client::connect(&cluster.connstr("postgres"), postgres::NoTls)
                .ok()
                .and_then(|mut c| c.query_one("SELECT NOT pg_is_in_recovery()", &[]).ok())
                .is_some_and(|r| r.get::<_, bool>(0))
        });
        cluster
    }

    /// Take charge of a server something else started in `data` (inside
    /// `dir`): its port and socket directory come from `postmaster.pid`,
    /// its log is `log`. It is stopped when dropped.
    pub fn adopt(dir: tempfile::TempDir, data: PathBuf, log: PathBuf) -> Cluster {
        let pid = fs::read_to_string(data.join("postmaster.pid")).expect("read postmaster.pid");
        let lines: Vec<&str> = pid.lines().collect();
        Cluster {
            install: PgInstall::from_env(),
            port: lines
                .get(3)
                .and_then(|p| p.trim().parse().ok())
                .expect("port in postmaster.pid"),
            sockdir: PathBuf::from(lines.get(4).map(|s| s.trim()).unwrap_or("/tmp")),
            data,
            logfile: log,
            running: true,
            dir,
        }
    }

    /// Stop the archiver with SIGSTOP (files stay `.ready` until
    /// [`Cluster::resume`]); returns its PID.
    pub fn pause_archiver(&self, c: &mut postgres::Client) -> i32 {
        let pid: i32 = c
            .query_one(
                "SELECT pid FROM pg_stat_activity WHERE backend_type = 'archiver'",
                &[],
            )
            .expect("the archiver's pid")
            .get(0);
        // SAFETY: a signal to a process of the test's own cluster.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
        pid
    }

    /// Stop one of the cluster's processes with SIGSTOP until
    /// [`Cluster::resume`].
    pub fn pause(pid: i32) {
        // SAFETY: a signal to a process of the test's own cluster.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    }

    /// Let a process stopped by [`Cluster::pause_archiver`] go on.
    pub fn resume(pid: i32) {
        // SAFETY: as above.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    }

    /// Run pgbench against this cluster's `postgres` database with `args`.
    pub fn pgbench(&self, args: &[&str]) {
        let out = Command::new(self.install.bin("pgbench"))
            .arg("-h")
            .arg(&self.sockdir)
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", "postgres"])
            .args(args)
            .arg("postgres")
            .output()
            .expect("run pgbench");
        assert!(
            out.status.success(),
            "pgbench {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Start recovery of `backup` (see `base_backup`) with `restore_command`
    /// and return as soon as the server listens, without waiting for the
    /// recovery's end: for tests of a recovery that must stop.
    pub fn start_recovery_from_backup(
        dir: tempfile::TempDir,
        backup: PathBuf,
        restore_command: &str,
    ) -> Cluster {
        let opts = Cluster::prepare_recovery(&backup, restore_command);
        let _ = fs::remove_file(backup.join("postmaster.pid"));
        let mut cluster = Cluster {
            install: PgInstall::from_env(),
            data: backup,
            sockdir: dir.path().to_path_buf(),
            port: 0,
            logfile: dir.path().join("server.log"),
            running: false,
            dir,
        };
        cluster.write_conf(&opts);
        for _ in 0..5 {
            cluster.port = free_port();
            cluster.write_port();
            let mark = cluster.log_mark();
            run_ok(
                server_command(cluster.install.bin("pg_ctl"))
                    .arg("-D")
                    .arg(&cluster.data)
                    .arg("-l")
                    .arg(&cluster.logfile)
                    .args(["-W", "start"]),
                "pg_ctl start -W",
            );
            cluster.running = true;
            let mut taken = false;
            wait_until("the server to listen", Duration::from_secs(120), || {
                let log = fs::read(&cluster.logfile).unwrap_or_default();
                let tail =
                    String::from_utf8_lossy(log.get(mark..).unwrap_or_default()).into_owned();
                taken = tail.contains("Address already in use");
                taken || tail.contains("listening on Unix socket")
            });
            if !taken {
                return cluster;
            }
            // A parallel test took the port first: the server exits.
            cluster.running = false;
            wait_until(
                "the server that found its port taken to exit",
                Duration::from_secs(60),
                || !cluster.data.join("postmaster.pid").exists(),
            );
        }
        panic!("no free port for the recovering server");
    }

    /// Write `postgresql.conf` for a data dir in `dir` and start it.
    fn configure_and_start(
        dir: tempfile::TempDir,
        data: PathBuf,
        opts: &ClusterOptions,
    ) -> Cluster {
        let cluster = Cluster {
            install: PgInstall::from_env(),
            data,
            sockdir: dir.path().to_path_buf(),
            port: 0,
            logfile: dir.path().join("server.log"),
            running: false,
            dir,
        };
        cluster.write_conf(opts);
        cluster.start_on_free_port()
    }

    /// Insert some rows into table `t (id int, v text)` and switch to a new
    /// WAL segment; returns the name of the segment switched from.
    pub fn write_and_switch_wal(c: &mut postgres::Client, i: i32) -> String {
        c.execute(
            "INSERT INTO t SELECT g, md5((g * $1)::text) || repeat('x', g % 100) FROM generate_series(1, 2000) g",
            &[&i],
        )
        .expect("insert");
        c.query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])
            .expect("pg_switch_wal")
            .get(0)
    }

    /// Wait until `pg_stat_archiver` reports `name` (or a later file) archived.
    pub fn wait_archived(&self, name: &str, timeout: Duration) {
        wait_until(&format!("{name} archived"), timeout, || {
            let last: Option<String> = self
                .client()
                .query_one("SELECT last_archived_wal FROM pg_stat_archiver", &[])
                .expect("pg_stat_archiver")
                .get(0);
            last.is_some_and(|l| l.as_str() >= name)
        });
    }

    fn start_on_free_port(mut self) -> Cluster {
        // A port can be taken between free_port() and the server's bind by
        // a parallel test; try again with another one.
        for attempt in 0..5 {
            self.port = free_port();
            self.write_port();
            match self.try_start() {
                Ok(()) => return self,
                Err(log) if log.contains("Address already in use") && attempt < 4 => continue,
                Err(log) => panic!("PostgreSQL did not start:\n{log}"),
            }
        }
        unreachable!()
    }

    fn write_conf(&self, opts: &ClusterOptions) {
        let mut conf = String::from("\n# pg_ark test harness\n");
        conf += "listen_addresses = '127.0.0.1'\n";
        conf += &format!("unix_socket_directories = '{}'\n", self.sockdir.display());
        conf += "log_line_prefix = '%m [%p] %b: '\n";
        conf += "include_if_exists = 'harness_port.conf'\n";
        if opts.preload {
            conf += "shared_preload_libraries = 'pg_ark'\n";
        }
        for (k, v) in &opts.settings {
            conf += &format!("{k} = {v}\n");
        }
        let path = self.data.join("postgresql.conf");
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open postgresql.conf");
        f.write_all(conf.as_bytes()).expect("write postgresql.conf");
    }

    fn write_port(&self) {
        let path = self.data.join("harness_port.conf");
        fs::write(&path, format!("port = {}\n", self.port)).expect("write port");
        give_to_test_user(&path);
    }

    fn try_start(&mut self) -> Result<(), String> {
        let out = server_command(self.install.bin("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&self.logfile)
            .args(["-w", "-t", "60", "start"])
            .output()
            .expect("run pg_ctl start");
        if out.status.success() {
            self.running = true;
            Ok(())
        } else {
            Err(format!(
                "{}{}\n--- server log ---\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.log()
            ))
        }
    }

    /// Start a stopped cluster again.
    pub fn restart_stopped(&mut self) {
        assert!(!self.running, "cluster is running");
        self.try_start()
            .unwrap_or_else(|log| panic!("PostgreSQL did not start again:\n{log}"));
    }

    /// `pg_ctl stop -m <mode>`; returns pg_ctl's output.
    pub fn stop(&mut self, mode: &str) -> Output {
        let out = server_command(self.install.bin("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-w", "-t", "60", "-m", mode, "stop"])
            .output()
            .expect("run pg_ctl stop");
        if out.status.success() {
            self.running = false;
        }
        out
    }

    /// `pg_ctl stop -m <mode>`, calling `during` while pg_ctl runs (for a
    /// test that must act between the shutdown request and the end).
    pub fn stop_while(&mut self, mode: &str, during: impl FnOnce(&Cluster)) -> Output {
        let child = server_command(self.install.bin("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-w", "-t", "60", "-m", mode, "stop"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run pg_ctl stop");
        during(self);
        let out = child.wait_with_output().expect("wait for pg_ctl stop");
        if out.status.success() {
            self.running = false;
        }
        out
    }

    /// Connection string for database `db` over the cluster's socket.
    pub fn connstr(&self, db: &str) -> String {
        format!(
            "host={} port={} user=postgres dbname={db}",
            self.sockdir.display(),
            self.port
        )
    }

    /// Connection string for database `db` as role `user`.
    pub fn connstr_as(&self, db: &str, user: &str) -> String {
        format!(
            "host={} port={} user={user} dbname={db}",
            self.sockdir.display(),
            self.port
        )
    }

    /// A client session on database `postgres` as role `user` (trust
    /// authentication: the role needs LOGIN).
    pub fn client_as(&self, user: &str) -> postgres::Client {
        let conn = self.connstr_as("postgres", user);
        postgres::Client::connect(&conn, postgres::NoTls)
            .unwrap_or_else(|e| panic!("connect to {conn}: {e}"))
    }

    /// A client session on database `postgres`.
    pub fn client(&self) -> postgres::Client {
        self.client_on("postgres")
    }

    pub fn client_on(&self, db: &str) -> postgres::Client {
        postgres::Client::connect(&self.connstr(db), postgres::NoTls)
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.connstr(db)))
    }

    /// The whole server log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.logfile).unwrap_or_default()
    }

    /// Wait until the server log contains `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) {
        wait_until(&format!("{needle:?} in the server log"), timeout, || {
            self.log().contains(needle)
        });
    }

    /// Where the server log ends now; `wait_for_log_after` looks only at
    /// what is written after such a mark.
    pub fn log_mark(&self) -> usize {
        fs::metadata(&self.logfile)
            .map(|m| m.len() as usize)
            .unwrap_or(0)
    }

    /// Wait until `needle` appears in the server log after `mark`; returns
    /// the mark just past it.
    pub fn wait_for_log_after(&self, mark: usize, needle: &str, timeout: Duration) -> usize {
        let mut found = 0;
        wait_until(
            &format!("{needle:?} in the server log after byte {mark}"),
            timeout,
            || {
                let log = fs::read(&self.logfile).unwrap_or_default();
                let tail = String::from_utf8_lossy(log.get(mark..).unwrap_or_default());
                match tail.find(needle) {
                    Some(at) => {
                        found = mark + at + needle.len();
                        true
                    }
                    None => false,
                }
            },
        );
        found
    }

    /// After a process of this cluster was killed (`mark` taken before the
    /// kill): wait for the postmaster's crash restart to have happened, that
    /// is every old backend terminated and the server reinitialized and ready
    /// again, then return a session that has answered a query. A connection
    /// accepted before the postmaster noticed the kill would be closed under
    /// the test, so none is trusted before that.
    pub fn wait_crash_restart(&self, mark: usize, timeout: Duration) -> postgres::Client {
        let at = self.wait_for_log_after(
            mark,
            "all server processes terminated; reinitializing",
            timeout,
        );
        self.wait_for_log_after(
            at,
            "database system is ready to accept connections",
            timeout,
        );
        self.client_when_ready(timeout)
    }

    /// A session that has answered `SELECT 1`, retrying connections that
    /// are refused or closed while the server is (re)starting.
    pub fn client_when_ready(&self, timeout: Duration) -> postgres::Client {
        let mut client = None;
        wait_until("a session that answers", timeout, || {
            client = postgres::Client::connect(&self.connstr("postgres"), postgres::NoTls)
                .ok()
                .filter(|c: &postgres::Client| !c.is_closed())
                .and_then(|mut c| c.simple_query("SELECT 1").ok().map(|_| c));
            client.is_some()
        });
        client.expect("a session")
    }

    /// PID of the postmaster.
    pub fn postmaster_pid(&self) -> i32 {
        let pidfile =
            fs::read_to_string(self.data.join("postmaster.pid")).expect("read postmaster.pid");
        pidfile
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .expect("pid in postmaster.pid")
    }

    /// `pg_basebackup` of this cluster into `<new temp dir>/data`, as the
    /// test user, without WAL (`-X none`): recovery must fetch it from the
    /// archive. Returns the temp dir and the backup's path.
    pub fn base_backup(&self) -> (tempfile::TempDir, PathBuf) {
        let dir = temp_dir("ark-bb-");
        let data = dir.path().join("data");
        run_ok(
            server_command(self.install.bin("pg_basebackup"))
                .arg("-h")
                .arg(&self.sockdir)
                .args([
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "postgres",
                    "-X",
                    "none",
                    "-c",
                    "fast",
                    "-D",
                ])
                .arg(&data),
            "pg_basebackup",
        );
        (dir, data)
    }

    /// The cluster's system identifier.
    pub fn system_identifier(&self) -> u64 {
        let mut c = self.client();
        let v: String = c
            .query_one(
                "SELECT system_identifier::text FROM pg_control_system()",
                &[],
            )
            .expect("pg_control_system()")
            .get(0);
        v.parse().expect("system identifier")
    }

    /// The system identifier from `global/pg_control`, which also works
    /// while the cluster is stopped.
    pub fn system_identifier_from_control(&self) -> u64 {
        pg_ark_core::pgdata::system_identifier(&self.data).expect("read pg_control")
    }

    /// The temp dir holding this cluster; tests may put their own files there.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Run pg_regress against this cluster with the tests in `inputdir`
    /// (`sql/NAME.sql`, `expected/NAME.out`). Returns the diffs on failure.
    pub fn pg_regress(&self, inputdir: &Path, tests: &[&str]) -> Result<(), String> {
        let outdir = temp_dir("ark-regress-");
        let out = Command::new(self.install.pg_regress())
            .arg(format!("--host={}", self.sockdir.display()))
            .arg(format!("--port={}", self.port))
            .arg("--user=postgres")
            .arg("--dbname=ark_regress")
            .arg(format!("--bindir={}", self.install.bindir.display()))
            .arg(format!("--inputdir={}", inputdir.display()))
            .arg(format!("--outputdir={}", outdir.path().display()))
            .args(tests)
            .output()
            .expect("run pg_regress");
        if out.status.success() {
            return Ok(());
        }
        let diffs = fs::read_to_string(outdir.path().join("regression.diffs")).unwrap_or_default();
        // Keep the results for the reader: a new test's expected output is
        // made by reviewing and copying its result.
        let kept = std::env::temp_dir().join(format!("ark-regress-results-{}", std::process::id()));
        let _ = fs::remove_dir_all(&kept);
        let _ = fs::rename(outdir.path().join("results"), &kept);
        Err(format!(
            "pg_regress failed (results kept in {}):\n{}{}\n{diffs}",
            kept.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("--- server log of the failed test (last 60 lines) ---");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
        if self.running || self.data.join("postmaster.pid").exists() {
            let pid = fs::read_to_string(self.data.join("postmaster.pid"))
                .ok()
                .and_then(|p| p.lines().next().and_then(|l| l.trim().parse::<i32>().ok()));
            let _ = self.stop("immediate");
            // pg_ctl returns once postmaster.pid is gone, which the
            // postmaster removes just before it exits: wait for the exit, so
            // the directory is removed after the server is really gone.
            if let Some(pid) = pid {
                let start = Instant::now();
                while process_running(pid) && start.elapsed() < Duration::from_secs(60) {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }
}

/// Whether process `pid` exists and is not a zombie.
pub fn process_running(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X'))
    })
}

/// A real S3-compatible server (`s3s-fs`) on a free loopback port, with one
/// bucket. Killed when dropped.
pub struct S3Server {
    pub port: u16,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
    child: Option<Child>,
    // Last, so it is removed after the server is stopped.
    root: tempfile::TempDir,
}

impl S3Server {
    pub fn start() -> S3Server {
        let root = tempfile::Builder::new()
            .prefix("ark-s3-")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let bucket = "ark-test".to_string();
        fs::create_dir(root.path().join(&bucket)).expect("create bucket dir");
        let mut s = S3Server {
            port: 0,
            bucket,
            access_key: "ark-access".into(),
            secret_key: "ark-secret-key-for-tests".into(),
            child: None,
            root,
        };
        for _ in 0..5 {
            s.port = free_port();
            if s.spawn() {
                return s;
            }
        }
        panic!("s3s-fs did not start");
    }

    fn binary() -> PathBuf {
        if let Some(p) = std::env::var_os("ARK_S3S_FS") {
            return PathBuf::from(p);
        }
        let home_bin = PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
            .join(".cargo/bin/s3s-fs");
        if home_bin.exists() {
            home_bin
        } else {
            PathBuf::from("s3s-fs")
        }
    }

    /// Start the process on `self.port`; true once it accepts connections.
    fn spawn(&mut self) -> bool {
        let mut child = Command::new(Self::binary())
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--access-key",
                &self.access_key,
                "--secret-key",
                &self.secret_key,
            ])
            .arg(self.root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start s3s-fs ({}): {e} (run `make setup`)",
                    Self::binary().display()
                )
            });
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            if let Ok(Some(_)) = child.try_wait() {
                return false; // exited: most likely the port was taken
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                self.child = Some(child);
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// A file in `dir` with this server's keys in AWS's credentials format,
    /// owned by the test user with mode 0600 (pg_ark refuses wider), for
    /// `--s3-credentials-file`: readable by a restored server too.
    pub fn credentials_file(&self, dir: &Path) -> PathBuf {
        write_credentials_file(dir, &self.access_key, &self.secret_key)
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stop the process (the data stays), as a crash or outage would.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start it again on the same port with the same data.
    pub fn restart(&mut self) {
        self.stop();
        assert!(self.spawn(), "s3s-fs did not restart on port {}", self.port);
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Where the server keeps the bucket's objects on disk.
    pub fn bucket_dir(&self) -> PathBuf {
        self.root.path().join(&self.bucket)
    }

    /// A plain HTTP request to the server; returns the status line and body.
    pub fn http(&self, method: &str, path: &str) -> (String, String) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to s3s-fs");
        s.set_read_timeout(Some(Duration::from_secs(10))).ok();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
            self.port
        )
        .expect("send request");
        let mut resp = String::new();
        s.read_to_string(&mut resp).ok();
        let status = resp.lines().next().unwrap_or_default().to_string();
        let body = resp
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `dir/credentials` with these keys in AWS's credentials format, owned by
/// the test user with mode 0600.
fn write_credentials_file(dir: &Path, access_key: &str, secret_key: &str) -> PathBuf {
    let file = dir.join("credentials");
    fs::write(
        &file,
        format!(
            "[default]\naws_access_key_id = {access_key}\naws_secret_access_key = {secret_key}\n"
        ),
    )
    .expect("write the credentials file");
    give_to_test_user(&file);
    fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod the credentials file");
    file
}

/// A real moto server (`moto_server`, moto 5.2.1) on a free loopback port:
/// S3 with versioning and Object Lock, which it enforces (a locked version's
/// delete is refused), for the tests s3s-fs cannot serve. Its buckets:
/// `bucket`, created with Object Lock (which turns versioning on), and
/// `plain_bucket`, created without. moto keeps everything in memory (a
/// restart loses it, so there is no `restart`), accepts any keys and checks
/// no permissions, so only compliance mode can be tested with it. Killed
/// when dropped.
pub struct MotoServer {
    pub port: u16,
    pub bucket: String,
    pub plain_bucket: String,
    pub access_key: String,
    pub secret_key: String,
    child: Option<Child>,
    /// The server's output (a line per request), for a start that failed.
    log: Option<tempfile::NamedTempFile>,
}

impl MotoServer {
    /// Start it and create both buckets.
    pub fn start() -> MotoServer {
        let mut s = MotoServer {
            port: 0,
            bucket: "ark-test".into(),
            plain_bucket: "ark-plain".into(),
            access_key: "ark-access".into(),
            secret_key: "ark-secret-key-for-tests".into(),
            child: None,
            log: None,
        };
        for _ in 0..5 {
            s.port = free_port();
            if s.spawn() {
                let (bucket, plain) = (s.bucket.clone(), s.plain_bucket.clone());
                s.create_bucket(&bucket, true);
                s.create_bucket(&plain, false);
                return s;
            }
        }
        let said = s
            .log
            .as_ref()
            .and_then(|l| fs::read_to_string(l.path()).ok())
            .unwrap_or_default();
        panic!("moto's server did not start; it said:\n{said}");
    }

    /// The server's command: `ARK_MOTO_SERVER` as it is, else moto's
    /// `moto_server` through `harness/moto_server.py`, which makes two of
    /// its answers readable by aws-sdk-s3 (see that file), with the
    /// `python3` of `PATH`, the one `make setup` installed moto for.
    fn command() -> Command {
        match std::env::var_os("ARK_MOTO_SERVER") {
            Some(binary) => Command::new(binary),
            None => {
                let mut c = Command::new("python3");
                c.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("harness/moto_server.py"));
                c
            }
        }
    }

    /// Start the process on `self.port`; true once it answers HTTP.
    fn spawn(&mut self) -> bool {
        let log = tempfile::NamedTempFile::new().expect("a temporary file for the server's log");
        let stderr = log.reopen().expect("open the server's log");
        self.log = Some(log);
        let mut command = Self::command();
        let mut child = command
            .args(["-H", "127.0.0.1", "-p", &self.port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start moto's server ({command:?}): {e} (run `make setup`, which \
                     installs moto[server] 5.2.1 with pip, or set ARK_MOTO_SERVER)"
                )
            });
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            if let Ok(Some(_)) = child.try_wait() {
                return false; // exited: most likely the port was taken
            }
            // Listening is not enough: wait for an answer to a request.
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && self.http("GET", "/", &[], "").0.starts_with("HTTP/1.1 200")
            {
                self.child = Some(child);
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// Create bucket `name`, with Object Lock (and so versioning) or
    /// without (plain: no versioning either). moto needs no signature here.
    pub fn create_bucket(&self, name: &str, object_lock: bool) {
        let headers: &[(&str, &str)] = if object_lock {
            &[("x-amz-bucket-object-lock-enabled", "true")]
        } else {
            &[]
        };
        let (status, body) = self.http("PUT", &format!("/{name}"), headers, "");
        assert!(
            status.starts_with("HTTP/1.1 200"),
            "create bucket {name}: {status}\n{body}"
        );
    }

    /// A file in `dir` with this server's keys (see
    /// [`S3Server::credentials_file`]).
    pub fn credentials_file(&self, dir: &Path) -> PathBuf {
        write_credentials_file(dir, &self.access_key, &self.secret_key)
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// A plain HTTP request with `headers` and `body` (unsigned: moto
    /// accepts it for buckets and their configuration); returns the status
    /// line and the body.
    pub fn http(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (String, String) {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return (String::new(), String::new());
        };
        s.set_read_timeout(Some(Duration::from_secs(10))).ok();
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.port,
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(body);
        if s.write_all(req.as_bytes()).is_err() {
            return (String::new(), String::new());
        }
        let mut resp = String::new();
        s.read_to_string(&mut resp).ok();
        let status = resp.lines().next().unwrap_or_default().to_string();
        let body = resp
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Row count and digest of `table` (a trusted name), in a stable order.
pub fn rows_digest(c: &mut postgres::Client, table: &str) -> (i64, String) {
    let r = c
        .query_one(
            &format!(
                "SELECT count(*), coalesce(md5(string_agg(x::text, ',' ORDER BY x::text)), '') FROM {table} x"
            ),
            &[],
        )
        .unwrap_or_else(|e| panic!("digest of {table}: {e}"));
    (r.get(0), r.get(1))
}

/// What PostgreSQL's `pg_visibility` says of a table: an oracle pg_ark did
/// not write. Needs `CREATE EXTENSION pg_visibility` in the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Visibility {
    /// Pages of the main fork the map covers.
    pub pages: i64,
    /// Digest of every page's (all_visible, all_frozen) bits, in order.
    pub map: String,
    /// Tuples on pages the map marks all-visible that are not
    /// (`pg_check_visible`): 0 in any sound cluster.
    pub not_visible: i64,
    /// Tuples on pages the map marks all-frozen that are not
    /// (`pg_check_frozen`): 0 in any sound cluster.
    pub not_frozen: i64,
}

pub fn visibility(c: &mut postgres::Client, table: &str) -> Visibility {
    let r = c
        .query_one(
            "SELECT (SELECT count(*) FROM pg_visibility_map($1::text::regclass)),
                    (SELECT coalesce(md5(string_agg(format('%s:%s:%s', blkno, all_visible, all_frozen), ',' ORDER BY blkno)), '')
                       FROM pg_visibility_map($1::text::regclass)),
                    (SELECT count(*) FROM pg_check_visible($1::text::regclass)),
                    (SELECT count(*) FROM pg_check_frozen($1::text::regclass))",
            &[&table],
        )
        .unwrap_or_else(|e| panic!("pg_visibility of {table}: {e}"));
    Visibility {
        pages: r.get(0),
        map: r.get(1),
        not_visible: r.get(2),
        not_frozen: r.get(3),
    }
}

/// `count(*)` of `table` by an index-only scan (asserted from the plan),
/// which trusts the visibility map: a stale map shows deleted rows here.
pub fn index_only_count(c: &mut postgres::Client, table: &str) -> i64 {
    c.batch_execute("SET enable_seqscan = off; SET enable_bitmapscan = off")
        .expect("planner settings");
    let plan: String = c
        .query(&format!("EXPLAIN SELECT count(*) FROM {table}"), &[])
        .expect("explain")
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(plan.contains("Index Only Scan"), "{plan}");
    let n: i64 = c
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .expect("count")
        .get(0);
    c.batch_execute("RESET enable_seqscan; RESET enable_bitmapscan")
        .expect("planner settings");
    n
}

/// `pg_ark restore --repo file://REPO --pgdata <a new directory>/data
/// --quiet ARGS`, each tablespace of `oids` mapped into the new directory
/// (`--tablespace-map OID=DIR`); then start it (`pg_ark restore`'s recovery
/// settings, `restore_command` = `pg_ark wal-get`) and wait until it accepts
/// writes. Returns it and what `pg_ark restore` printed.
pub fn restore_and_start(repo: &Path, args: &[&str], oids: &[String]) -> (Cluster, String) {
    let dir = temp_dir("ark-restored-");
    let data = dir.path().join("data");
    let url = format!("file://{}", repo.display());
    let maps: Vec<(PathBuf, String)> = oids
        .iter()
        .map(|oid| {
            let to = dir.path().join(format!("ts-{oid}"));
            let arg = format!("{oid}={}", to.display());
            (to, arg)
        })
        .collect();
    let pgdata = data.display().to_string();
    let mut all = vec!["restore", "--repo", &url, "--pgdata", &pgdata, "--quiet"];
    all.extend_from_slice(args);
    for (_, arg) in &maps {
        all.extend(["--tablespace-map", arg.as_str()]);
    }
    let (ok, out, err) = pg_ark(&all);
    assert!(ok, "pg_ark {all:?}:\n{out}{err}");
    let own: Vec<&Path> = maps.iter().map(|(p, _)| p.as_path()).collect();
    (Cluster::start_restored(dir, data, &own), out)
}

/// An age key pair made by Debian's `age-keygen` in `dir`: the identity
/// file (owned by the test user, mode 600, so a restored server's
/// `pg_ark wal-get` reads it) and its recipient (`age1...`).
pub fn age_keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let identity = dir.join(name);
    let out = Command::new("age-keygen")
        .arg("-o")
        .arg(&identity)
        .output()
        .expect("run age-keygen (make setup installs age)");
    assert!(out.status.success(), "{out:?}");
    let out = Command::new("age-keygen")
        .arg("-y")
        .arg(&identity)
        .output()
        .expect("run age-keygen -y");
    assert!(out.status.success(), "{out:?}");
    let recipient = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(recipient.starts_with("age1"), "{recipient}");
    give_to_test_user(&identity);
    fs::set_permissions(
        &identity,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("chmod the identity file");
    (identity, recipient)
}
