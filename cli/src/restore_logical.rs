//! `pg_ark restore-logical`: restore a logical dump from the repository
//! into a database of a running server, with pg_restore (or psql for a
//! plain dump), each run with an argument vector, never a shell.
//!
//! Every object of the dump is checked against the SHA-256 its descriptor
//! records before anything is restored. `--if-empty` is for init scripts:
//! it restores only into a database with no user tables (creating it if it
//! does not exist) and otherwise exits 0 with a message. Without it, a
//! database that is not empty is refused unless `--clean` is given.
use crate::progress::{self, Mode};
use crate::repo_opts::RepoOpts;
use crate::restore::open_cluster;
use crate::Failure;
use indicatif::ProgressBar;
use pg_ark_core::logical::{conninfo_quote, list_logical_backups, DumpFormat, LogicalBackupInfo};
use pg_ark_core::process::{Env, Program, ProgramError, Stderr, Stdout};
use pg_ark_core::repo::envelope;
use pg_ark_core::restore::plan::human_bytes;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    repo: RepoOpts,
    /// The database whose dump to restore, and to restore into
    #[arg(long, value_name = "NAME")]
    database: String,
    /// Restore into this database instead [default: --database]
    #[arg(long, value_name = "NAME")]
    into: Option<String>,
    /// The dump's label [default: the newest complete dump of the database]
    #[arg(long, value_name = "LABEL")]
    dump: Option<String>,
    /// Restore only into a database with no user tables (created if
    /// absent); otherwise exit 0 and say so
    #[arg(long)]
    if_empty: bool,
    /// Drop the database's objects before recreating them (pg_restore --clean --if-exists)
    #[arg(long)]
    clean: bool,
    /// Do not restore ownership (pg_restore --no-owner)
    #[arg(long)]
    no_owner: bool,
    /// pg_restore jobs (custom and directory dumps)
    #[arg(long, default_value_t = 1, value_name = "N")]
    jobs: u32,
    /// The cluster whose dump to restore, when the repository holds several
    #[arg(long, value_name = "ID")]
    system_identifier: Option<u64>,
    /// Directory of pg_restore and psql [default: PATH]
    #[arg(long, value_name = "DIR")]
    pg_bin: Option<PathBuf>,
    /// Server host or socket directory (libpq's PGHOST otherwise)
    #[arg(long, short = 'h', value_name = "HOST")]
    host: Option<String>,
    /// Server port (PGPORT otherwise)
    #[arg(long, short = 'p', value_name = "PORT")]
    port: Option<u16>,
    /// Role to connect as (PGUSER otherwise)
    #[arg(long, short = 'U', value_name = "ROLE")]
    username: Option<String>,
    /// Where the dump is downloaded before pg_restore reads it
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// No progress output
    #[arg(long, short)]
    quiet: bool,
}

impl Args {
    fn program(&self, name: &str) -> PathBuf {
        self.pg_bin
            .as_ref()
            .map(|d| d.join(name))
            .unwrap_or_else(|| PathBuf::from(name))
    }

    /// A libpq program with the connection options and `-d <db>`: the
    /// clean environment and libpq's variables (`PGHOST`, `PGPASSWORD`,
    /// ... are the user's way to connect). It may ask for a password on
    /// the terminal, and Ctrl-C stops it with pg_ark.
    fn command(&self, name: &str, db: &str) -> Program {
        let mut c = Program::new(self.program(name))
            .env_policy(Env::clean().libpq())
            .terminal();
        if let Some(h) = &self.host {
            c = c.args(["-h", h]);
        }
        if let Some(p) = self.port {
            c = c.args(["-p", &p.to_string()]);
        }
        if let Some(u) = &self.username {
            c = c.args(["-U", u]);
        }
        // A conninfo, so that a database name is never read as one.
        c.arg("-d").arg(format!("dbname={}", conninfo_quote(db)))
    }
}

/// Run `program` to its end; its failure as the CLI reports it.
fn run_program(program: Program, what: impl FnOnce() -> String) -> Result<String, Failure> {
    match program.run(&AtomicBool::new(false)) {
        Ok(done) => Ok(done.stdout_text()),
        Err(pg_ark_core::Error::Program(ProgramError::Failed { status, stderr, .. })) => {
            Err(Failure::Message(format!(
                "{} failed ({status}){}",
                what(),
                if stderr.is_empty() {
                    String::new()
                } else {
                    format!(": {stderr}")
                }
            )))
        }
        Err(e) => Err(e.into()),
    }
}

/// Run psql on `db` with `script` on stdin and `vars` as psql variables
/// (used as :'name' and :"name", so every value is quoted by psql itself).
fn psql(a: &Args, db: &str, vars: &[(&str, &str)], script: &str) -> Result<String, Failure> {
    let mut program = a
        .command("psql", db)
        .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"]);
    for (k, v) in vars {
        program = program.arg("-v").arg(format!("{k}={v}"));
    }
    let program = program
        .args(["-f", "-"])
        .stdin_bytes(script.as_bytes())
        .stdout(Stdout::Capture);
    run_program(program, || format!("psql on database \"{db}\""))
}

/// Download the dump's objects into `dir`, each checked, and show it
/// (one step per object: an object is fetched whole).
fn download(
    cluster: &pg_ark_core::repo::ClusterRepo,
    d: &LogicalBackupInfo,
    dir: &Path,
    mode: Mode,
) -> Result<PathBuf, Failure> {
    let begun = Instant::now();
    let total: u64 = d.files.iter().map(|f| f.bytes).sum();
    let objects = |n: usize| format!("object {n} of {}", d.files.len());
    let bar = (mode == Mode::Bar).then(|| progress::bar(total, progress::DOWNLOAD, objects(1)));
    let r = download_into(cluster, d, dir, bar.as_ref());
    if let Some(b) = bar {
        match r {
            Ok(_) => {
                b.set_message(format!("{} object(s)", d.files.len()));
                progress::finish_with(&b, progress::DOWNLOAD_DONE);
            }
            Err(_) => b.abandon(),
        }
    } else if mode == Mode::Lines && r.is_ok() {
        progress::line(&format!(
            "downloaded dump \"{}\": {} object(s), {}, in {:.1} s",
            d.label,
            d.files.len(),
            human_bytes(total),
            begun.elapsed().as_secs_f64()
        ));
    }
    r
}

fn download_into(
    cluster: &pg_ark_core::repo::ClusterRepo,
    d: &LogicalBackupInfo,
    dir: &Path,
    bar: Option<&ProgressBar>,
) -> Result<PathBuf, Failure> {
    let target = match d.format {
        DumpFormat::Directory => dir.join("dump.dir"),
        _ => dir.join("dump"),
    };
    if d.format == DumpFormat::Directory {
        std::fs::create_dir(&target)
            .map_err(|e| Failure::Message(format!("{}: {e}", target.display())))?;
    }
    for (n, f) in d.files.iter().enumerate() {
        if let Some(b) = bar {
            b.set_message(format!("object {} of {}", n + 1, d.files.len()));
        }
        let data = cluster
            .storage()
            .get(&f.key)
            .map_err(pg_ark_core::Error::from)?;
        let digest = envelope::hex(&envelope::sha256(&data));
        // An encrypted repository records no plaintext digest: its objects
        // are authenticated as they are decrypted. A clear one must.
        let unrecorded = f.sha256.is_empty() && cluster.encryption().is_some();
        if data.len() as u64 != f.bytes || (digest != f.sha256 && !unrecorded) {
            return Err(Failure::Message(format!(
                "object \"{}\" of dump \"{}\" is corrupt: {} bytes with SHA-256 {digest}, the descriptor records {} bytes with {}",
                f.key,
                d.label,
                data.len(),
                f.bytes,
                f.sha256
            )));
        }
        let path = if d.format == DumpFormat::Directory {
            let name = f
                .key
                .strip_prefix(&format!("{}/", d.data_key))
                .filter(|n| !n.is_empty() && !n.contains('/') && *n != "." && *n != "..")
                .ok_or_else(|| {
                    Failure::Message(format!(
                        "object \"{}\" lies outside the dump's folder \"{}\"",
                        f.key, d.data_key
                    ))
                })?;
            target.join(name)
        } else {
            target.clone()
        };
        // Only the owner may read it; a name already there is an error.
        let mut file = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| Failure::Message(format!("{}: {e}", path.display())))?
        };
        file.write_all(&data)
            .map_err(|e| Failure::Message(format!("{}: {e}", path.display())))?;
        if let Some(b) = bar {
            b.inc(f.bytes);
        }
    }
    Ok(target)
}

pub fn run(a: &Args) -> Result<(), Failure> {
    let cluster = open_cluster(&a.repo, a.system_identifier)?;
    let dumps = list_logical_backups(&cluster, Some(&a.database))?;
    let dump = match &a.dump {
        Some(label) => dumps.iter().find(|d| &d.label == label).ok_or_else(|| {
            Failure::Message(format!(
                "database \"{}\" has no complete dump labelled \"{label}\" in {}",
                a.database,
                cluster.location()
            ))
        })?,
        None => dumps.last().ok_or_else(|| {
            Failure::Message(format!(
                "database \"{}\" has no complete logical dump in {}",
                a.database,
                cluster.location()
            ))
        })?,
    };
    let db = a.into.as_deref().unwrap_or(&a.database);
    let exists = psql(
        a,
        "postgres",
        &[("db", db)],
        "SELECT count(*) FROM pg_database WHERE datname = :'db';\n",
    )? == "1";
    if !exists {
        if !a.if_empty {
            return Err(Failure::Message(format!(
                "database \"{db}\" does not exist; create it, or pass --if-empty to create it"
            )));
        }
        psql(a, "postgres", &[("db", db)], "CREATE DATABASE :\"db\";\n")?;
        eprintln!("pg_ark: created database \"{db}\"");
    }
    let tables: u64 = psql(
        a,
        db,
        &[],
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE c.relkind IN ('r', 'p', 'm', 'f')
            AND n.nspname NOT IN ('pg_catalog', 'information_schema')
            AND n.nspname NOT LIKE 'pg\\_toast%';\n",
    )?
    .parse()
    .unwrap_or(0);
    if tables > 0 {
        if a.if_empty {
            println!(
                "database \"{db}\" already has {tables} table(s): nothing restored (--if-empty)"
            );
            return Ok(());
        }
        if !a.clean {
            return Err(Failure::Message(format!(
                "database \"{db}\" is not empty ({tables} table(s)); pass --clean to replace its objects, or restore into another database with --into"
            )));
        }
    }
    if a.clean && dump.format == DumpFormat::Plain {
        return Err(Failure::Message(format!(
            "dump \"{}\" is a plain SQL script, which cannot drop what it would recreate: --clean needs a custom or directory dump (restore into an empty database instead, or use --into)",
            dump.label
        )));
    }
    let work = tempfile_dir(a.work_dir.as_deref())?;
    let path = download(&cluster, dump, work.path(), Mode::of_stderr(a.quiet))?;
    eprintln!(
        "pg_ark: restoring dump \"{}\" of database \"{}\" ({}, {} bytes, finished {}) into \"{db}\"",
        dump.label,
        dump.database,
        dump.format.as_str(),
        dump.bytes,
        dump.finished_at
    );
    // No bar over the restore program: it writes to the terminal itself,
    // and may ask for a password there. Its output goes where pg_ark's
    // goes; standard error also into the message when it fails.
    let program = match dump.format {
        DumpFormat::Plain => a
            .command("psql", db)
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-f"])
            .arg(&path),
        _ => {
            let mut c = a.command("pg_restore", db).args([
                "--exit-on-error",
                "-j",
                &a.jobs.max(1).to_string(),
            ]);
            if a.clean {
                c = c.args(["--clean", "--if-exists"]);
            }
            if a.no_owner {
                c = c.arg("--no-owner");
            }
            c.arg(&path)
        }
    };
    run_program(program.stdout(Stdout::Inherit).stderr(Stderr::Tee), || {
        format!("the restore of dump \"{}\" into \"{db}\"", dump.label)
    })?;
    println!(
        "restored dump \"{}\" of database \"{}\" into \"{db}\"",
        dump.label, dump.database
    );
    Ok(())
}

/// A scratch directory removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A new directory only its owner can use (mode 0700, created here: an
/// existing directory or link of that name is an error, never reused).
fn tempfile_dir(base: Option<&Path>) -> Result<Scratch, Failure> {
    use std::hash::{BuildHasher, Hasher};
    use std::os::unix::fs::DirBuilderExt;
    let base = base
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    let dir = base.join(format!(
        "pg_ark-restore-{}-{:016x}",
        std::process::id(),
        h.finish()
    ));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| Failure::Message(format!("{}: {e}", dir.display())))?;
    Ok(Scratch(dir))
}
