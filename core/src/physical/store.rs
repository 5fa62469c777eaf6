//! Storing a backup's files: one object per file, small files in bundles,
//! block-level increments, on worker threads with signals blocked.
use super::*;

/// The key of `path` (relative to the data directory) in backup `prefix`.
pub fn data_key(prefix: &str, path: &str) -> String {
    let encoded: Vec<String> = path.split('/').map(encode_component).collect();
    format!("{prefix}/data/{}", encoded.join("/"))
}

/// Progress and cancellation shared with the caller.
#[derive(Debug, Default)]
pub struct Progress {
    pub bytes_done: AtomicU64,
    pub bytes_total: AtomicU64,
    pub cancel: AtomicBool,
}

/// How files are stored.
#[derive(Debug, Clone, Copy)]
pub struct StoreOptions {
    pub compression: Compression,
    pub level: i32,
    /// Reading threads.
    pub threads: usize,
    /// Files stored whole and smaller than this are bundled, many to one
    /// object of up to [`BUNDLE_BYTES`] (0: every file its own object).
    pub bundle_below: u64,
}

/// The default of [`StoreOptions::bundle_below`].
pub const BUNDLE_FILES_BELOW: u64 = 64 * 1024;
/// Content of one bundle object, at most (a file is never split).
pub const BUNDLE_BYTES: u64 = 4 * 1024 * 1024;
/// A bundle holds at most this many files, so that many empty or tiny
/// files (a million empty tables) still spread over the threads, and a
/// restore's units stay small.
pub const BUNDLE_MEMBERS: usize = 1024;

/// One piece of work of [`store_files`].
enum Work {
    File(usize),
    Bundle(usize, Vec<usize>),
}

/// Store `files` of `pgdata` under `prefix` on `opts.threads` threads. Returns
/// the manifest entries in the order of `files`. The first error stops the
/// others; the caller removes what was stored.
#[allow(clippy::too_many_arguments)]
pub fn store_files(
    cluster: &ClusterRepo,
    prefix: &str,
    pgdata: &Path,
    files: &[SourceFile],
    opts: StoreOptions,
    basis: Option<&Basis>,
    pages: Option<&PageCheck>,
    progress: &Progress,
) -> Result<Vec<ManifestFile>, Error> {
    let StoreOptions {
        compression,
        level,
        threads,
        bundle_below,
    } = opts;
    progress
        .bytes_total
        .store(files.iter().map(|f| f.size).sum(), Ordering::Relaxed);
    // pg_control is copied last, after every other file is stored.
    let (last, rest): (Vec<usize>, Vec<usize>) =
        (0..files.len()).partition(|&i| files[i].path == "global/pg_control");
    let next = AtomicU64::new(0);
    // Per file: None = not stored (yet), Some(None) = vanished meanwhile.
    let mut results: Vec<Option<Option<ManifestFile>>> = vec![None; files.len()];
    // The files WAL summaries leave as they were: the parent's, whole,
    // never opened (no work to hand out).
    if let Some(b) = basis.filter(|b| b.summary.is_some()) {
        for &i in &rest {
            let f = &files[i];
            if b.unchanged_by_summary(&f.path, f.size) {
                results[i] = Some(Some(super::unchanged_entry(f.path.clone(), f.size)));
                progress.bytes_done.fetch_add(f.size, Ordering::Relaxed);
            }
        }
    }
    let done: Vec<bool> = results.iter().map(Option::is_some).collect();
    let results = Mutex::new(results);
    let failure: Mutex<Option<Error>> = Mutex::new(None);
    // Small files stored whole go into bundles, in name order.
    let by_block = |f: &SourceFile| basis.is_some_and(|b| b.by_block(&f.path, f.size));
    let mut work: Vec<Work> = Vec::new();
    let mut bundle: Vec<usize> = Vec::new();
    let mut bundle_bytes = 0;
    for &i in rest.iter().filter(|&&i| !done[i]) {
        let f = &files[i];
        if f.size < bundle_below && !by_block(f) {
            if (bundle_bytes + f.size > BUNDLE_BYTES || bundle.len() == BUNDLE_MEMBERS)
                && !bundle.is_empty()
            {
                work.push(Work::Bundle(work.len(), std::mem::take(&mut bundle)));
                bundle_bytes = 0;
            }
            bundle.push(i);
            bundle_bytes += f.size;
        } else {
            work.push(Work::File(i));
        }
    }
    if !bundle.is_empty() {
        work.push(Work::Bundle(work.len(), bundle));
    }
    let store_bundle = |n: usize, members: &[usize]| -> Result<(), Error> {
        let stored = store_bundle(
            cluster,
            prefix,
            pgdata,
            n,
            members.iter().map(|&i| &files[i]),
            (compression, level),
            pages,
        )?;
        let mut r = results.lock().unwrap_or_else(|p| p.into_inner());
        for (&i, entry) in members.iter().zip(stored) {
            progress
                .bytes_done
                .fetch_add(files[i].size, Ordering::Relaxed);
            r[i] = Some(entry);
        }
        Ok(())
    };
    let store_one = |i: usize| -> Result<(), Error> {
        let f = &files[i];
        let parent_len = basis.and_then(|b| {
            b.parent_len(&f.path, f.size)
                .filter(|_| b.by_block(&f.path, f.size))
                .map(|len| {
                    let changed = match (&b.summary, increment::rel_fork(&f.path)) {
                        (Some(summary), Some((fork, segment))) => {
                            increment::Changed::Listed(summary.get(&fork), segment)
                        }
                        _ => increment::Changed::PageLsn(b.reference_lsn),
                    };
                    (len, changed)
                })
        });
        let entry = match parent_len {
            Some((len, changed)) => increment::store_increment(
                cluster,
                prefix,
                pgdata,
                f,
                len,
                changed,
                (compression, level),
                pages.filter(|_| checksum::is_checksummed(&f.path)),
            )?,
            None => store_file(
                cluster,
                prefix,
                pgdata,
                f,
                (compression, level),
                pages.filter(|_| checksum::is_checksummed(&f.path)),
            )?,
        };
        progress.bytes_done.fetch_add(f.size, Ordering::Relaxed);
        results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(entry);
        Ok(())
    };
    let failed = |e: Error| {
        let mut slot = failure.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(e);
        }
        progress.cancel.store(true, Ordering::SeqCst);
    };
    crate::threads::with_signals_blocked(|| {
        std::thread::scope(|s| {
            for _ in 0..threads.max(1) {
                s.spawn(|| loop {
                    if progress.cancel.load(Ordering::SeqCst) {
                        return;
                    }
                    let n = next.fetch_add(1, Ordering::SeqCst) as usize;
                    let Some(item) = work.get(n) else {
                        return;
                    };
                    let done = match item {
                        Work::File(i) => store_one(*i),
                        Work::Bundle(n, members) => store_bundle(*n, members),
                    };
                    if let Err(e) = done {
                        failed(e);
                        return;
                    }
                });
            }
        })
    });
    if let Some(e) = failure.lock().unwrap_or_else(|p| p.into_inner()).take() {
        return Err(e);
    }
    if progress.cancel.load(Ordering::SeqCst) {
        return Err(Error::Unsupported {
            what: "the backup was cancelled".into(),
        });
    }
    for i in last {
        store_one(i)?;
    }
    let stored = results.into_inner().unwrap_or_else(|p| p.into_inner());
    let mut out = Vec::new();
    for (e, f) in stored.into_iter().zip(files) {
        match e {
            Some(Some(entry)) => out.push(entry),
            Some(None) => {}
            None => {
                return Err(Error::Unsupported {
                    what: format!("\"{}\" was not stored", f.path),
                })
            }
        }
    }
    Ok(out)
}

/// Exactly `left` bytes of `inner`: if the file ends early (truncated
/// while it is read) the rest is zeros, as PostgreSQL's base backup pads;
/// bytes beyond `left` (extended meanwhile) are not read. WAL replay from
/// the backup's start repairs both.
pub(crate) struct Padded<R> {
    pub(crate) inner: R,
    pub(crate) left: u64,
    pub(crate) ended: bool,
}

impl<R: std::io::Read> std::io::Read for Padded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let want = usize::try_from(self.left)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        if want == 0 {
            return Ok(0);
        }
        let n = if self.ended {
            0
        } else {
            self.inner.read(&mut buf[..want])?
        };
        let n = if n == 0 {
            self.ended = true;
            buf[..want].fill(0);
            want
        } else {
            n
        };
        self.left -= n as u64;
        Ok(n)
    }
}

/// Store one file, streamed (never held whole in memory). `None`: the file
/// was removed while the backup ran (a dropped relation), which WAL replay
/// accounts for, so it is left out.
fn store_file(
    cluster: &ClusterRepo,
    prefix: &str,
    pgdata: &Path,
    f: &SourceFile,
    (compression, level): (Compression, i32),
    pages: Option<&PageCheck>,
) -> Result<Option<ManifestFile>, Error> {
    let path = pgdata.join(&f.path);
    let key = data_key(prefix, &f.path);
    let file = match fs::File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("open", &path, e)),
    };
    let len = file.metadata().map_err(|e| io_err("stat", &path, e))?.len();
    let reader = Padded {
        inner: &file,
        left: len,
        ended: false,
    };
    let reader: Box<dyn std::io::Read + '_> = match pages {
        Some(check) => Box::new(checksum::Checking {
            inner: reader,
            file: &file,
            path: &f.path,
            check,
            page: Vec::with_capacity(BLOCK as usize),
            block: 0,
        }),
        None => Box::new(reader),
    };
    let (stored, digest) = seal_and_put(cluster, &key, reader, len, (compression, level), &path)?;
    Ok(Some(ManifestFile {
        path: f.path.clone(),
        size: len,
        blake3: envelope::hex(&digest),
        key,
        stored,
        blocks: None,
        offset: None,
    }))
}

/// Seal the `len` bytes `reader` yields (read from `path`) into the
/// write-once object `key`: (bytes stored, BLAKE3 of the content).
pub(super) fn seal_and_put<'a>(
    cluster: &ClusterRepo,
    key: &str,
    reader: impl std::io::Read + 'a,
    len: u64,
    (compression, level): (Compression, i32),
    path: &Path,
) -> Result<(u64, [u8; 32]), Error> {
    let mut sealed = envelope::SealReader::new(reader, len, compression, level)
        .map_err(|e| io_err("read", path, e))?;
    let stored = cluster
        .storage()
        .put_stream(key, &mut sealed, PutMode::Create)?;
    let digest = sealed.content_digest().ok_or_else(|| Error::Unsupported {
        what: format!("\"{}\" was not read to its end", path.display()),
    })?;
    Ok((stored, digest))
}

/// Store small files whole in one bundle object, `<prefix>/bundle/<n>`:
/// each is read whole (a file removed meanwhile is left out: `None`), the
/// contents are concatenated and sealed as one envelope, and each entry
/// records its offset and its own BLAKE3.
fn store_bundle<'a>(
    cluster: &ClusterRepo,
    prefix: &str,
    pgdata: &Path,
    n: usize,
    members: impl Iterator<Item = &'a SourceFile>,
    (compression, level): (Compression, i32),
    pages: Option<&PageCheck>,
) -> Result<Vec<Option<ManifestFile>>, Error> {
    let key = format!("{prefix}/bundle/{n:06}");
    let mut content = Vec::new();
    let mut entries = Vec::new();
    for f in members {
        let path = pgdata.join(&f.path);
        let mut file = match fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                entries.push(None);
                continue;
            }
            Err(e) => return Err(io_err("open", &path, e)),
        };
        let start = content.len();
        std::io::Read::read_to_end(&mut file, &mut content)
            .map_err(|e| io_err("read", &path, e))?;
        let data = &content[start..];
        if let Some(check) = pages.filter(|_| checksum::is_checksummed(&f.path)) {
            for (block, page) in data.chunks(BLOCK as usize).enumerate() {
                check.check(&file, &f.path, block as u64, page);
            }
        }
        entries.push(Some(ManifestFile {
            path: f.path.clone(),
            size: data.len() as u64,
            blake3: envelope::hex(&DigestKind::Blake3.of(data)),
            key: key.clone(),
            stored: 0,
            blocks: None,
            offset: Some(start as u64),
        }));
    }
    if content.is_empty() && entries.iter().all(Option::is_none) {
        return Ok(entries);
    }
    let sealed = envelope::seal(&content, compression, level).map_err(|e| Error::LocalIo {
        op: "seal",
        path: key.clone(),
        source: e,
    })?;
    cluster.storage().put(&key, &sealed, PutMode::Create)?;
    // Each file's share of the stored bytes, by size (the rest to the last).
    let total = sealed.len() as u64;
    let content_len = (content.len() as u64).max(1);
    let mut given = 0;
    let last = entries.iter().rposition(Option::is_some);
    for (i, e) in entries.iter_mut().enumerate() {
        if let Some(e) = e {
            e.stored = if Some(i) == last {
                total - given
            } else {
                total * e.size / content_len
            };
            given += e.stored;
        }
    }
    Ok(entries)
}

/// Store a small file made by the backup itself (`backup_label`).
pub fn store_bytes(
    cluster: &ClusterRepo,
    prefix: &str,
    path: &str,
    content: &[u8],
) -> Result<ManifestFile, Error> {
    let key = data_key(prefix, path);
    let sealed = envelope::seal(content, Compression::None, 0).map_err(|e| Error::LocalIo {
        op: "seal",
        path: path.into(),
        source: e,
    })?;
    cluster.storage().put(&key, &sealed, PutMode::Create)?;
    Ok(ManifestFile {
        path: path.into(),
        size: content.len() as u64,
        blake3: envelope::hex(&DigestKind::Blake3.of(content)),
        key,
        stored: sealed.len() as u64,
        blocks: None,
        offset: None,
    })
}
