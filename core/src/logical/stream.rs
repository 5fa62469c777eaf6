//! Streaming a dump into the repository: standard output, or the files of a
//! directory-format dump.
use super::*;
use crate::process::{Program, ProgramError, Running, Stdout};
use crate::repo::envelope::hex;
use crate::storage::{PutMode, Storage};
use crate::Error;
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::ChildStdout;
use std::sync::atomic::Ordering;

/// The dump process's standard output as a reader: at end of output the
/// process is waited for, and its failure becomes the read's error.
struct ProcessOutput<'a> {
    stdout: ChildStdout,
    process: &'a mut Running,
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
                Ok(_) => self.eof = true,
                Err(f) => return Err(io::Error::other(dump_error(f, self.database).to_string())),
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
            return Err(io::Error::other(cancelled(self.database).to_string()));
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

/// Run `program` and stream its standard output into `key`
/// (`PutMode::Create`), with no local copy. The object is stored only if
/// the program exits with status 0 and was not cancelled; otherwise nothing
/// is left under `key` and the error carries the program's exit status and
/// the end of its standard error. `database` names the dump in messages.
pub fn stream_command_output(
    storage: &dyn Storage,
    key: &str,
    program: Program,
    database: &str,
    control: &DumpControl,
) -> Result<StreamedDump, Error> {
    let mut process = program
        .stdout(Stdout::Pipe)
        .spawn(Some(control.cancel.clone()))?;
    let Some(stdout) = process.take_stdout() else {
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
            Ok(_) => Ok(streamed),
            Err(f) => {
                // Not reached through put_stream (it reads to the end), but
                // never keep the output of a failed run.
                let _ = storage.delete(key);
                Err(dump_error(f, database))
            }
        },
        Err(e) => {
            // The process's own failure, if it ended first, is the cause;
            // otherwise the cancel, or the storage's error.
            let ended_first = process.outcome();
            let _ = process.finish(true);
            match ended_first {
                Some(Err(f)) => Err(dump_error(f, database)),
                _ if control.is_cancelled() => Err(cancelled(database)),
                _ => Err(e.into()),
            }
        }
    }
}

/// Run `program`, which writes a dump into a directory, to its end.
fn run_to_completion(program: Program, database: &str, control: &DumpControl) -> Result<(), Error> {
    let mut process = program
        .stdout(Stdout::Null)
        .spawn(Some(control.cancel.clone()))?;
    process
        .finish(false)
        .map(|_| ())
        .map_err(|f| dump_error(f, database))
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
    program: Program,
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
    run_to_completion(program, &req.database, control)?;
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
            return Err(cancelled(&req.database));
        }
        // What the dump holds, not what the repository stores (an
        // encrypted object is longer).
        stored?;
        let bytes = reader.bytes;
        files.push(LogicalFile {
            key,
            bytes,
            sha256: reader.sha256_hex(),
        });
    }
    Ok(files)
}

/// The error of a dump whose pg_dump did not succeed.
pub(crate) fn dump_error(e: ProgramError, database: &str) -> Error {
    match e {
        ProgramError::Cancelled { .. } => cancelled(database),
        other => Error::DumpFailed {
            database: database.into(),
            detail: other.detail(),
        },
    }
}

pub(crate) fn cancelled(database: &str) -> Error {
    Error::DumpCancelled {
        database: database.into(),
    }
}
