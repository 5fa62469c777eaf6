//! A child's output read on a thread of its own (so no pipe ever fills and
//! blocks it), into a bounded buffer: the head of standard output (what a
//! caller parses), or the tail of standard error (what a message shows).
use super::{lock, spawn_thread};
use std::io::{self, Read, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// How long to wait for the end of a stream after the program exited: a
/// process it left behind may still hold it.
const STREAM_WAIT: Duration = Duration::from_secs(2);

/// Which part of a stream is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Keep {
    /// The first `limit` bytes.
    Head,
    /// The last `limit` bytes.
    Tail,
}

#[derive(Default)]
struct Buffer {
    bytes: Vec<u8>,
    /// Some bytes were dropped.
    truncated: bool,
    /// The stream has ended (or could not be read further).
    done: bool,
}

/// A stream being read by its thread.
#[derive(Clone)]
pub(super) struct Sink(Arc<(Mutex<Buffer>, Condvar)>);

impl Sink {
    /// Read `stream` to its end on a thread, keeping `keep` of at most
    /// `limit` bytes; with `tee`, every chunk is also written to pg_ark's
    /// own standard error as it comes.
    pub(super) fn read(
        mut stream: impl Read + Send + 'static,
        keep: Keep,
        limit: usize,
        tee: bool,
    ) -> io::Result<Sink> {
        let sink = Sink(Arc::default());
        let filler = sink.clone();
        spawn_thread("pg_ark-child-output", move || {
            let mut chunk = [0u8; 8192];
            loop {
                match stream.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => {
                        if tee {
                            let _ = io::stderr().lock().write_all(&chunk[..n]);
                        }
                        filler.push(&chunk[..n], keep, limit);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
            lock(&(filler.0).0).done = true;
            (filler.0).1.notify_all();
        })?;
        Ok(sink)
    }

    fn push(&self, data: &[u8], keep: Keep, limit: usize) {
        let mut b = lock(&(self.0).0);
        match keep {
            Keep::Head => {
                let room = limit.saturating_sub(b.bytes.len());
                b.bytes.extend_from_slice(&data[..data.len().min(room)]);
                if data.len() > room {
                    b.truncated = true;
                }
            }
            Keep::Tail => {
                b.bytes.extend_from_slice(data);
                // Trimmed in steps of `limit`, not at every chunk.
                if b.bytes.len() > 2 * limit {
                    let cut = b.bytes.len() - limit;
                    b.bytes.drain(..cut);
                    b.truncated = true;
                }
            }
        }
    }

    /// The buffer once the stream ended, or [`STREAM_WAIT`] passed.
    fn settled(&self) -> MutexGuard<'_, Buffer> {
        let (mutex, cond) = &*self.0;
        let guard = lock(mutex);
        match cond.wait_timeout_while(guard, STREAM_WAIT, |b| !b.done) {
            Ok((g, _)) => g,
            Err(poisoned) => poisoned.into_inner().0,
        }
    }

    /// What was kept of a [`Keep::Head`] stream, and whether more came.
    pub(super) fn head(&self) -> (Vec<u8>, bool) {
        let b = self.settled();
        (b.bytes.clone(), b.truncated)
    }

    /// The last `limit` bytes of a [`Keep::Tail`] stream as text, trimmed,
    /// with `...` in front when earlier bytes were dropped.
    pub(super) fn tail_text(&self, limit: usize) -> String {
        let b = self.settled();
        let start = b.bytes.len().saturating_sub(limit);
        let text = String::from_utf8_lossy(&b.bytes[start..]);
        let text = text.trim();
        if (b.truncated || start > 0) && !text.is_empty() {
            format!("...{text}")
        } else {
            text.to_string()
        }
    }
}
