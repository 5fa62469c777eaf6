//! Streaming a dump into the repository: standard output, or the files of a
//! directory-format dump.
use super::*;
use crate::process::*;
use crate::repo::envelope::hex;
use crate::storage::{PutMode, Storage};
use crate::Error;
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{ChildStdout, Command};
use std::sync::atomic::Ordering;

/// The dump process's standard output as a reader: at end of output the
/// process is waited for, and its failure becomes the read's error.
struct ProcessOutput<'a> {
    stdout: ChildStdout,
    process: &'a mut Process,
    database: &'a str,
    eof: bool,
}

impl Read for ProcessOutput<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.eof {
            return Ok(0);
        }
        let n = self.stdout.read(buf)?;
        if n == 0 && !buf.is_empty() {
            match self.process.finish(false) {
                Ok(()) => self.eof = true,
                Err(f) => return Err(io::Error::other(f.message(self.database))),
            }
        }
        Ok(n)
    }
}

/// A reader that hashes and counts what passes, publishes the count, and
/// fails once the backup is cancelled.
struct Metered<'a, R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
    control: &'a DumpControl,
    database: &'a str,
}

impl<'a, R: Read> Metered<'a, R> {
    fn new(inner: R, control: &'a DumpControl, database: &'a str) -> Self {
        Metered {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
            control,
            database,
        }
    }

    fn sha256_hex(&self) -> String {
        hex(&self.hasher.clone().finalize())
    }
}

impl<R: Read> Read for Metered<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.control.is_cancelled() {
            return Err(io::Error::other(Failure::Cancelled.message(self.database)));
        }
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        self.control.bytes.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// What [`stream_command_output`] stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamedDump {
    pub bytes: u64,
    /// SHA-256 of the stored bytes, hex.
    pub sha256: String,
}

/// Run `cmd` and stream its standard output into `key` (`PutMode::Create`),
/// with no local copy. The object is stored only if the command exits with
/// status 0 and was not cancelled; otherwise nothing is left under `key`
/// and the error carries the command's exit status and the end of its
/// standard error. `database` names the dump in messages.
pub fn stream_command_output(
    storage: &dyn Storage,
    key: &str,
    cmd: Command,
    database: &str,
    control: &DumpControl,
) -> Result<StreamedDump, Error> {
    let program = cmd.get_program().to_string_lossy().to_string();
    let (mut process, stdout) =
        Process::spawn(cmd, true, &control.cancel).map_err(|source| Error::LocalIo {
            op: "run",
            path: program,
            source,
        })?;
    let Some(stdout) = stdout else {
        let _ = process.finish(true);
        return Err(Error::DumpFailed {
            database: database.into(),
            detail: "its standard output could not be captured".into(),
        });
    };
    let output = ProcessOutput {
        stdout,
        process: &mut process,
        database,
        eof: false,
    };
    let mut reader = Metered::new(output, control, database);
    let stored = storage.put_stream(key, &mut reader, PutMode::Create);
    let streamed = StreamedDump {
        bytes: reader.bytes,
        sha256: reader.sha256_hex(),
    };
    drop(reader);
    match stored {
        Ok(_) => match process.finish(false) {
            Ok(()) => Ok(streamed),
            Err(f) => {
                // Not reached through put_stream (it reads to the end), but
                // never keep the output of a failed run.
                let _ = storage.delete(key);
                Err(f.into_error(database))
            }
        },
        Err(e) => {
            // The process's own failure, if it ended first, is the cause;
            // otherwise the cancel, or the storage's error.
            let ended_first = process.outcome();
            let _ = process.finish(true);
            match ended_first {
                Some(Err(f)) => Err(f.into_error(database)),
                _ if control.is_cancelled() => Err(Failure::Cancelled.into_error(database)),
                _ => Err(e.into()),
            }
        }
    }
}

/// Run `cmd`, which writes a dump into a directory, to its end.
fn run_to_completion(cmd: Command, database: &str, control: &DumpControl) -> Result<(), Error> {
    let program = cmd.get_program().to_string_lossy().to_string();
    let (mut process, _) =
        Process::spawn(cmd, false, &control.cancel).map_err(|source| Error::LocalIo {
            op: "run",
            path: program,
            source,
        })?;
    process.finish(false).map_err(|f| f.into_error(database))
}

/// Removes the work directory when dropped.
struct WorkDir<'a>(&'a Path);

impl Drop for WorkDir<'_> {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(self.0);
    }
}

/// Every regular file below `dir`, as (`/`-separated relative name, path),
/// sorted by name.
fn files_below(dir: &Path) -> Result<Vec<(String, PathBuf)>, Error> {
    let io_err = |op, path: &Path, source| Error::LocalIo {
        op,
        path: path.display().to_string(),
        source,
    };
    let mut out = Vec::new();
    let mut stack = vec![(String::new(), dir.to_path_buf())];
    while let Some((rel, path)) = stack.pop() {
        let entries = fs::read_dir(&path).map_err(|e| io_err("list", &path, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| io_err("list", &path, e))?;
            let p = entry.path();
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                return Err(io_err(
                    "upload",
                    &p,
                    io::Error::other("the file name is not UTF-8"),
                ));
            };
            let rel_name = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let ft = entry.file_type().map_err(|e| io_err("stat", &p, e))?;
            if ft.is_dir() {
                stack.push((rel_name, p));
            } else if ft.is_file() {
                out.push((rel_name, p));
            } else {
                return Err(io_err("upload", &p, io::Error::other("not a regular file")));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The directory format: run pg_dump into the work directory, then stream
/// each file into `<data_key>/<name>`. The work directory is removed in
/// every case.
pub(crate) fn dump_directory(
    storage: &dyn Storage,
    data_key: &str,
    cmd: Command,
    req: &DumpRequest,
    control: &DumpControl,
) -> Result<Vec<LogicalFile>, Error> {
    let Some(work) = req.work_dir.as_deref() else {
        return Err(Error::InvalidLogicalRequest {
            reason: "the directory format needs a work directory".into(),
        });
    };
    if fs::symlink_metadata(work).is_ok() {
        return Err(Error::InvalidLogicalRequest {
            reason: format!(
                "the work directory \"{}\" already exists; remove it or choose another",
                work.display()
            ),
        });
    }
    if let Some(parent) = work.parent() {
        fs::create_dir_all(parent).map_err(|source| Error::LocalIo {
            op: "create directory",
            path: parent.display().to_string(),
            source,
        })?;
    }
    let _cleanup = WorkDir(work);
    run_to_completion(cmd, &req.database, control)?;
    let mut files = Vec::new();
    for (name, path) in files_below(work)? {
        let key = format!("{data_key}/{name}");
        let file = fs::File::open(&path).map_err(|source| Error::LocalIo {
            op: "open",
            path: path.display().to_string(),
            source,
        })?;
        let mut reader = Metered::new(file, control, &req.database);
        let stored = storage.put_stream(&key, &mut reader, PutMode::Create);
        if control.is_cancelled() {
            return Err(Failure::Cancelled.into_error(&req.database));
        }
        let bytes = stored?;
        files.push(LogicalFile {
            key,
            bytes,
            sha256: reader.sha256_hex(),
        });
    }
    Ok(files)
}

impl Failure {
    pub(crate) fn into_error(self, database: &str) -> Error {
        match self {
            Failure::Cancelled => Error::DumpCancelled {
                database: database.into(),
            },
            Failure::Failed(detail) => Error::DumpFailed {
                database: database.into(),
                detail,
            },
        }
    }

    pub(crate) fn message(&self, database: &str) -> String {
        self.clone().into_error(database).to_string()
    }
}
