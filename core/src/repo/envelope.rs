//! The envelope every stored file is wrapped in: a header, the (possibly
//! compressed) payload, and in format version 2 a trailer.
//!
//! ```text
//! version 2 (written by this pg_ark)       version 1 (still read)
//! offset size  field                      offset size  field
//!      0    8  magic "PGARK\0\0\2"             0    8  magic "PGARK\0\0\1"
//!      8    1  compression code                8    1  compression code
//!      9    1  digest algorithm (2 BLAKE3)     9    7  reserved, zero
//!     10    6  reserved, zero                 16    8  original length (LE)
//!     16    8  original length (LE)           24   32  SHA-256 of the original
//!     24  ...  payload                        56  ...  payload
//!  end-32   32  digest of the original
//! ```
//!
//! Version 2 puts the digest *after* the payload, so that a file is read
//! once, hashed and compressed as it streams into storage ([`SealReader`]),
//! with a bounded buffer instead of whole copies of the segment; and it uses
//! BLAKE3, which costs far less CPU per byte than SHA-256. Version 1
//! objects stay readable.
//!
//! A reader never trusts a payload: it decompresses to the recorded length
//! and checks the digest of the result before handing any byte on. The
//! digest of the original also lets an archiver tell "the same file again"
//! (success) from "a different file under the same name" (refused).
use super::compress::Compression;
use sha2::{Digest as _, Sha256};
use std::fmt;
use std::io::{self, Read};

pub const MAGIC_PREFIX: [u8; 7] = *b"PGARK\0\0";
/// The format version this pg_ark writes, and the newest it reads.
pub const VERSION: u8 = 2;
/// Header length of format version 1.
pub const HEADER_LEN: usize = 56;
/// Header and trailer lengths of format version 2.
pub const HEADER_LEN_V2: usize = 24;
pub const TRAILER_LEN: usize = 32;
/// The input of one zstd frame in a streamed object.
const ZSTD_CHUNK: usize = 1 << 20;

/// The digest algorithm of an object's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestKind {
    Sha256,
    Blake3,
}

impl DigestKind {
    fn code(self) -> u8 {
        match self {
            DigestKind::Sha256 => 1,
            DigestKind::Blake3 => 2,
        }
    }

    fn from_code(code: u8) -> Option<DigestKind> {
        match code {
            1 => Some(DigestKind::Sha256),
            2 => Some(DigestKind::Blake3),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DigestKind::Sha256 => "SHA-256",
            DigestKind::Blake3 => "BLAKE3",
        }
    }

    /// The digest of `data` by this algorithm.
    pub fn of(self, data: &[u8]) -> [u8; 32] {
        match self {
            DigestKind::Sha256 => sha256(data),
            DigestKind::Blake3 => *blake3::hash(data).as_bytes(),
        }
    }
}

/// A digest with its algorithm, shown as `BLAKE3 <hex>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentDigest {
    pub kind: DigestKind,
    pub bytes: [u8; 32],
}

impl fmt::Display for ContentDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind.name(), hex(&self.bytes))
    }
}

/// The decoded header (and, for version 2, trailer) of a stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub version: u8,
    pub compression: Compression,
    pub original_len: u64,
    pub digest: ContentDigest,
}

impl Header {
    /// Whether `data` has the content this header records (same length and
    /// digest, by the header's own algorithm).
    pub fn matches(&self, data: &[u8]) -> bool {
        self.original_len == data.len() as u64 && self.digest.kind.of(data) == self.digest.bytes
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("not a pg_ark object (bad magic)")]
    BadMagic,
    #[error("pg_ark object format version {0} is newer than this pg_ark understands ({VERSION})")]
    UnsupportedVersion(u8),
    #[error("object is truncated ({0} bytes, header needs {1})")]
    Truncated(usize, usize),
    #[error("unknown compression code {0}")]
    UnknownCompression(u8),
    #[error("unknown digest algorithm code {0}")]
    UnknownDigest(u8),
    #[error("payload does not decompress: {0}")]
    Corrupt(String),
    #[error("checksum mismatch: content has {actual}, header records {expected}")]
    ChecksumMismatch { expected: String, actual: String },
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

pub fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 15)]));
    }
    s
}

/// The digest new objects record for `data`.
pub fn digest(data: &[u8]) -> ContentDigest {
    ContentDigest {
        kind: DigestKind::Blake3,
        bytes: DigestKind::Blake3.of(data),
    }
}

fn header_v2(compression: Compression, original_len: u64) -> [u8; HEADER_LEN_V2] {
    let mut h = [0u8; HEADER_LEN_V2];
    h[..7].copy_from_slice(&MAGIC_PREFIX);
    h[7] = VERSION;
    h[8] = compression.code();
    h[9] = DigestKind::Blake3.code();
    h[16..24].copy_from_slice(&original_len.to_le_bytes());
    h
}

/// Wrap `data` (format version 2): header, compressed payload, digest.
pub fn seal(data: &[u8], compression: Compression, level: i32) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    SealReader::new(data, data.len() as u64, compression, level)?.read_to_end(&mut out)?;
    Ok(out)
}

/// Wrap `data` as format version 1 (SHA-256 in the header), as pg_ark wrote
/// before version 2; kept so that tests prove old objects stay readable.
pub fn seal_v1(data: &[u8], compression: Compression, level: i32) -> io::Result<Vec<u8>> {
    let payload = compression.compress(data, level)?;
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&MAGIC_PREFIX);
    out.push(1);
    out.push(compression.code());
    out.extend_from_slice(&[0u8; 7]);
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    out.extend_from_slice(&sha256(data));
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Counts and hashes what passes; fails if the source is not exactly the
/// announced length (a file that changed while it was read).
struct Hashing<R> {
    inner: R,
    hasher: blake3::Hasher,
    seen: u64,
    expected: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.seen += n as u64;
        if self.seen > self.expected || (n == 0 && !buf.is_empty() && self.seen != self.expected) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the file changed while it was read: {} bytes expected, {}{} read",
                    self.expected,
                    if self.seen > self.expected {
                        "at least "
                    } else {
                        ""
                    },
                    self.seen
                ),
            ));
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[allow(clippy::large_enum_variant)] // one per push, on the pushing thread's stack
enum Payload<'a> {
    None(Hashing<Box<dyn Read + 'a>>),
    /// zstd in frames of [`ZSTD_CHUNK`] bytes each, one after the other in
    /// the payload (a zstd stream may hold several frames): each frame is
    /// compressed in one call from a contiguous buffer, which costs less
    /// CPU than zstd's streaming mode, with memory bounded by the chunk.
    Zstd {
        source: Hashing<Box<dyn Read + 'a>>,
        compressor: Box<zstd::bulk::Compressor<'static>>,
        input: Vec<u8>,
        out: io::Cursor<Vec<u8>>,
        frames: u64,
        eof: bool,
    },
    Gzip(Box<flate2::read::GzEncoder<Hashing<Box<dyn Read + 'a>>>>),
    /// lz4's block format needs the whole input: compressed on first read.
    Lz4 {
        source: Option<Hashing<Box<dyn Read + 'a>>>,
        packed: io::Cursor<Vec<u8>>,
        hasher: Option<blake3::Hasher>,
    },
}

/// A stored object (format version 2) produced as a stream: the header,
/// the payload compressed as `source` is read, then the digest of what was
/// read. Memory stays bounded by the compressor's buffers (except lz4,
/// whose block format needs the whole input). If `source` fails or is not
/// exactly `len` bytes, the reader fails and the object must not be stored.
pub struct SealReader<'a> {
    header: io::Cursor<[u8; HEADER_LEN_V2]>,
    payload: Payload<'a>,
    trailer: Option<io::Cursor<[u8; TRAILER_LEN]>>,
    done: bool,
}

impl<'a> SealReader<'a> {
    pub fn new(
        source: impl Read + 'a,
        len: u64,
        compression: Compression,
        level: i32,
    ) -> io::Result<SealReader<'a>> {
        let hashing = Hashing {
            inner: Box::new(source) as Box<dyn Read + 'a>,
            hasher: blake3::Hasher::new(),
            seen: 0,
            expected: len,
        };
        let level = if level == 0 {
            compression.default_level()
        } else {
            level
        };
        let payload = match compression {
            Compression::None => Payload::None(hashing),
            Compression::Zstd => Payload::Zstd {
                source: hashing,
                compressor: Box::new(zstd::bulk::Compressor::new(level)?),
                input: Vec::with_capacity(ZSTD_CHUNK),
                out: io::Cursor::new(Vec::with_capacity(zstd::zstd_safe::compress_bound(
                    ZSTD_CHUNK,
                ))),
                frames: 0,
                eof: false,
            },
            Compression::Gzip => Payload::Gzip(Box::new(flate2::read::GzEncoder::new(
                hashing,
                flate2::Compression::new(level.clamp(1, 9) as u32),
            ))),
            Compression::Lz4 => Payload::Lz4 {
                source: Some(hashing),
                packed: io::Cursor::new(Vec::new()),
                hasher: None,
            },
        };
        Ok(SealReader {
            header: io::Cursor::new(header_v2(compression, len)),
            payload,
            trailer: None,
            done: false,
        })
    }

    /// The digest of the content, once the whole object has been read.
    pub fn content_digest(&self) -> Option<[u8; 32]> {
        self.trailer.as_ref().map(|t| *t.get_ref())
    }

    fn read_payload(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.payload {
            Payload::None(r) => r.read(buf),
            Payload::Zstd {
                source,
                compressor,
                input,
                out,
                frames,
                eof,
            } => loop {
                let n = out.read(buf)?;
                if n > 0 || *eof {
                    return Ok(n);
                }
                input.clear();
                let got = source.by_ref().take(ZSTD_CHUNK as u64).read_to_end(input)?;
                if got == 0 && *frames > 0 {
                    *eof = true;
                    continue;
                }
                // An empty source still gets one (empty) frame.
                let mut packed = std::mem::take(out.get_mut());
                compressor.compress_to_buffer(input.as_slice(), &mut packed)?;
                *out = io::Cursor::new(packed);
                *frames += 1;
                if got < ZSTD_CHUNK {
                    *eof = out.get_ref().is_empty();
                }
            },
            Payload::Gzip(r) => r.read(buf),
            Payload::Lz4 {
                source,
                packed,
                hasher,
            } => {
                if let Some(mut src) = source.take() {
                    let mut all = Vec::new();
                    src.read_to_end(&mut all)?;
                    packed
                        .get_mut()
                        .clone_from(&lz4_flex::block::compress(&all));
                    *hasher = Some(src.hasher);
                }
                packed.read(buf)
            }
        }
    }

    fn digest(&self) -> [u8; 32] {
        let h = match &self.payload {
            Payload::None(r) => &r.hasher,
            Payload::Zstd { source, .. } => &source.hasher,
            Payload::Gzip(r) => &r.get_ref().hasher,
            Payload::Lz4 { hasher, source, .. } => match (hasher, source) {
                (Some(h), _) => h,
                (None, Some(s)) => &s.hasher,
                (None, None) => unreachable!("lz4 keeps its hasher"),
            },
        };
        *h.finalize().as_bytes()
    }
}

impl Read for SealReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() || self.done {
            return Ok(0);
        }
        let n = self.header.read(buf)?;
        if n > 0 {
            return Ok(n);
        }
        if self.trailer.is_none() {
            let n = self.read_payload(buf)?;
            if n > 0 {
                return Ok(n);
            }
            self.trailer = Some(io::Cursor::new(self.digest()));
        }
        let n = match &mut self.trailer {
            Some(t) => t.read(buf)?,
            None => 0,
        };
        if n == 0 {
            self.done = true;
        }
        Ok(n)
    }
}

/// Read the header (and trailer) of a whole stored object.
pub fn header(obj: &[u8]) -> Result<Header, EnvelopeError> {
    Ok(split(obj)?.0)
}

/// The header and the payload of a whole stored object.
fn split(obj: &[u8]) -> Result<(Header, &[u8]), EnvelopeError> {
    if obj.len() < 8 {
        return Err(EnvelopeError::Truncated(obj.len(), HEADER_LEN_V2));
    }
    if obj[..7] != MAGIC_PREFIX {
        return Err(EnvelopeError::BadMagic);
    }
    let version = obj[7];
    let need = match version {
        1 => HEADER_LEN,
        2 => HEADER_LEN_V2 + TRAILER_LEN,
        _ => return Err(EnvelopeError::UnsupportedVersion(version)),
    };
    if obj.len() < need {
        return Err(EnvelopeError::Truncated(obj.len(), need));
    }
    let compression =
        Compression::from_code(obj[8]).ok_or(EnvelopeError::UnknownCompression(obj[8]))?;
    let mut len = [0u8; 8];
    len.copy_from_slice(&obj[16..24]);
    let mut bytes = [0u8; 32];
    let (kind, payload) = if version == 1 {
        bytes.copy_from_slice(&obj[24..56]);
        (DigestKind::Sha256, &obj[HEADER_LEN..])
    } else {
        let kind = DigestKind::from_code(obj[9]).ok_or(EnvelopeError::UnknownDigest(obj[9]))?;
        let end = obj.len() - TRAILER_LEN;
        bytes.copy_from_slice(&obj[end..]);
        (kind, &obj[HEADER_LEN_V2..end])
    };
    Ok((
        Header {
            version,
            compression,
            original_len: u64::from_le_bytes(len),
            digest: ContentDigest { kind, bytes },
        },
        payload,
    ))
}

/// Unwrap a stored object: decompress and verify. Never returns unverified bytes.
pub fn open(obj: &[u8]) -> Result<(Header, Vec<u8>), EnvelopeError> {
    let (h, payload) = split(obj)?;
    let len = usize::try_from(h.original_len)
        .map_err(|_| EnvelopeError::Corrupt("length overflow".into()))?;
    let data = h
        .compression
        .decompress(payload, len)
        .map_err(|e| EnvelopeError::Corrupt(e.to_string()))?;
    let actual = h.digest.kind.of(&data);
    if actual != h.digest.bytes {
        return Err(EnvelopeError::ChecksumMismatch {
            expected: h.digest.to_string(),
            actual: ContentDigest {
                kind: h.digest.kind,
                bytes: actual,
            }
            .to_string(),
        });
    }
    Ok((h, data))
}

/// Withholds the last [`TRAILER_LEN`] bytes of a stream: what it yields is
/// the payload; at the end, `trailer` holds the digest.
struct Held<'a> {
    inner: Box<dyn Read + Send + 'a>,
    pending: Vec<u8>,
    start: usize,
    eof: bool,
    trailer: Option<[u8; TRAILER_LEN]>,
}

impl Read for Held<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let avail = self.pending.len() - self.start;
            if avail > TRAILER_LEN {
                let n = (avail - TRAILER_LEN).min(buf.len());
                buf[..n].copy_from_slice(&self.pending[self.start..self.start + n]);
                self.start += n;
                return Ok(n);
            }
            if self.eof {
                if self.trailer.is_none() {
                    let t: [u8; TRAILER_LEN] =
                        self.pending[self.start..].try_into().map_err(|_| {
                            io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "object is truncated: no digest at its end",
                            )
                        })?;
                    self.trailer = Some(t);
                }
                return Ok(0);
            }
            self.pending.drain(..self.start);
            self.start = 0;
            let mut chunk = [0u8; 64 * 1024];
            let n = self.inner.read(&mut chunk)?;
            if n == 0 {
                self.eof = true;
            } else {
                self.pending.extend_from_slice(&chunk[..n]);
            }
        }
    }
}

enum Stage<'a> {
    /// Opened whole (format version 1, or lz4, whose block format needs
    /// the whole input) and already verified.
    Whole(io::Cursor<Vec<u8>>),
    Plain(Held<'a>),
    Zstd(Box<zstd::stream::read::Decoder<'static, io::BufReader<Held<'a>>>>),
    Gzip(Box<flate2::read::GzDecoder<Held<'a>>>),
}

enum StreamHasher {
    Sha256(Sha256),
    Blake3(Box<blake3::Hasher>),
}

/// A stored object read as a stream ([`open_stream`]): its content,
/// decompressed as it is read, with the length and digest checked when the
/// end is reached. A mismatch, or a payload that does not decompress, is an
/// error of the read that reaches the end (`InvalidData`): whatever was
/// read before it must be thrown away.
pub struct OpenStream<'a> {
    stage: Stage<'a>,
    hasher: StreamHasher,
    kind: DigestKind,
    seen: u64,
    expected: u64,
    done: bool,
    /// The content's digest, once the end was reached and it matched.
    verified: Option<ContentDigest>,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl<'a> OpenStream<'a> {
    fn held(&mut self) -> Option<&mut Held<'a>> {
        Some(match &mut self.stage {
            Stage::Whole(_) => return None,
            Stage::Plain(h) => h,
            Stage::Zstd(d) => d.get_mut().get_mut(),
            Stage::Gzip(d) => d.get_mut(),
        })
    }

    fn finish(&mut self) -> io::Result<()> {
        self.done = true;
        if matches!(self.stage, Stage::Whole(_)) {
            return Ok(());
        }
        // The decompressor may stop before its input's end: drain it, so
        // the trailer is read.
        let mut rest = [0u8; 256];
        let trailer = loop {
            let Some(h) = self.held() else { return Ok(()) };
            if let Some(t) = h.trailer {
                break t;
            }
            if h.read(&mut rest)? > 0 {
                return Err(invalid("data after the compressed payload".into()));
            }
        };
        if self.seen != self.expected {
            return Err(invalid(format!(
                "the content has {} bytes, the header records {}",
                self.seen, self.expected
            )));
        }
        let actual: [u8; 32] =
            match std::mem::replace(&mut self.hasher, StreamHasher::Sha256(Sha256::new())) {
                StreamHasher::Sha256(h) => h.finalize().into(),
                StreamHasher::Blake3(h) => *h.finalize().as_bytes(),
            };
        if actual != trailer {
            return Err(invalid(format!(
                "checksum mismatch: content has {}, the object records {}",
                ContentDigest {
                    kind: self.kind,
                    bytes: actual
                },
                ContentDigest {
                    kind: self.kind,
                    bytes: trailer
                }
            )));
        }
        self.verified = Some(ContentDigest {
            kind: self.kind,
            bytes: actual,
        });
        Ok(())
    }

    /// Whether the content is streamed and checked against a BLAKE3 digest
    /// (then [`OpenStream::verified_digest`] gives it at the end).
    pub fn is_blake3_stream(&self) -> bool {
        !matches!(self.stage, Stage::Whole(_)) && self.kind == DigestKind::Blake3
    }

    /// The digest of the whole content, once it has all been read and
    /// checked (`None` before, and for objects opened whole).
    pub fn verified_digest(&self) -> Option<ContentDigest> {
        self.verified
    }
}

impl Read for OpenStream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        let n = match &mut self.stage {
            Stage::Whole(c) => c.read(buf)?,
            Stage::Plain(h) => h.read(buf)?,
            Stage::Zstd(d) => d
                .read(buf)
                .map_err(|e| invalid(format!("payload does not decompress: {e}")))?,
            Stage::Gzip(d) => d
                .read(buf)
                .map_err(|e| invalid(format!("payload does not decompress: {e}")))?,
        };
        if n == 0 {
            self.finish()?;
            return Ok(0);
        }
        if !matches!(self.stage, Stage::Whole(_)) {
            match &mut self.hasher {
                StreamHasher::Sha256(h) => h.update(&buf[..n]),
                StreamHasher::Blake3(h) => {
                    h.update(&buf[..n]);
                }
            }
            self.seen += n as u64;
            if self.seen > self.expected {
                return Err(invalid(format!(
                    "the content is longer than the {} bytes the header records",
                    self.expected
                )));
            }
        }
        Ok(n)
    }
}

/// Open a stored object from a stream, without holding it in memory
/// (except format version 1 and lz4 objects, which are read whole): the
/// header is checked now, the content as it is read (see [`OpenStream`]).
pub fn open_stream<'a>(mut r: Box<dyn Read + Send + 'a>) -> Result<OpenStream<'a>, EnvelopeError> {
    let mut head = [0u8; HEADER_LEN_V2];
    let mut got = 0;
    while got < HEADER_LEN_V2 {
        match r.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(EnvelopeError::Corrupt(e.to_string())),
        }
    }
    let whole =
        |head: &[u8], mut r: Box<dyn Read + Send + 'a>| -> Result<OpenStream<'a>, EnvelopeError> {
            let mut all = head.to_vec();
            r.read_to_end(&mut all)
                .map_err(|e| EnvelopeError::Corrupt(e.to_string()))?;
            let (h, data) = open(&all)?;
            Ok(OpenStream {
                stage: Stage::Whole(io::Cursor::new(data)),
                hasher: StreamHasher::Sha256(Sha256::new()),
                kind: h.digest.kind,
                seen: 0,
                expected: h.original_len,
                done: false,
                verified: None,
            })
        };
    if got < 8 || head[..7] != MAGIC_PREFIX || head[7] != 2 || got < HEADER_LEN_V2 {
        return whole(&head[..got], r);
    }
    let compression =
        Compression::from_code(head[8]).ok_or(EnvelopeError::UnknownCompression(head[8]))?;
    let kind = DigestKind::from_code(head[9]).ok_or(EnvelopeError::UnknownDigest(head[9]))?;
    if compression == Compression::Lz4 {
        return whole(&head, r);
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&head[16..24]);
    let held = Held {
        inner: r,
        pending: Vec::new(),
        start: 0,
        eof: false,
        trailer: None,
    };
    let stage = match compression {
        Compression::None => Stage::Plain(held),
        Compression::Zstd => Stage::Zstd(Box::new(
            zstd::stream::read::Decoder::new(held)
                .map_err(|e| EnvelopeError::Corrupt(e.to_string()))?,
        )),
        Compression::Gzip => Stage::Gzip(Box::new(flate2::read::GzDecoder::new(held))),
        Compression::Lz4 => return Err(EnvelopeError::UnknownCompression(head[8])),
    };
    Ok(OpenStream {
        stage,
        hasher: match kind {
            DigestKind::Sha256 => StreamHasher::Sha256(Sha256::new()),
            DigestKind::Blake3 => StreamHasher::Blake3(Box::new(blake3::Hasher::new())),
        },
        kind,
        seen: 0,
        expected: u64::from_le_bytes(len),
        done: false,
        verified: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_stream(obj: Vec<u8>) -> io::Result<Vec<u8>> {
        let mut s =
            open_stream(Box::new(io::Cursor::new(obj))).map_err(|e| invalid(e.to_string()))?;
        let mut out = Vec::new();
        s.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn a_stream_opens_every_kind_of_object_and_catches_every_fault() {
        let data: Vec<u8> = (0..300_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for c in Compression::ALL {
            let mut sealed = Vec::new();
            SealReader::new(&data[..], data.len() as u64, c, 0)
                .unwrap()
                .read_to_end(&mut sealed)
                .unwrap();
            assert_eq!(read_stream(sealed.clone()).unwrap(), data, "{c}");
            // A flipped byte in the payload, the digest, or a cut object.
            let mut bad = sealed.clone();
            let mid = HEADER_LEN_V2 + (bad.len() - HEADER_LEN_V2 - TRAILER_LEN) / 2;
            bad[mid] ^= 0x20;
            assert!(read_stream(bad).is_err(), "{c}: payload");
            let mut bad = sealed.clone();
            let last = bad.len() - 1;
            bad[last] ^= 1;
            assert!(read_stream(bad).is_err(), "{c}: digest");
            let cut = sealed[..sealed.len() - 100].to_vec();
            assert!(read_stream(cut).is_err(), "{c}: truncated");
        }
        // Format version 1 too.
        let v1 = seal_v1(&data, Compression::Zstd, 1).unwrap();
        assert_eq!(read_stream(v1).unwrap(), data);
    }

    #[test]
    fn seal_and_open_round_trip_for_every_compression() {
        let data: Vec<u8> = b"WAL-like content "
            .iter()
            .cycle()
            .take(100_000)
            .copied()
            .collect();
        for c in Compression::ALL {
            let obj = seal(&data, c, 0).unwrap();
            let h = header(&obj).unwrap();
            assert_eq!((h.compression, h.original_len), (c, data.len() as u64));
            assert_eq!(h.digest, digest(&data));
            assert_eq!(h.version, VERSION);
            let (_, back) = open(&obj).unwrap();
            assert_eq!(back, data);
        }
    }

    #[test]
    fn corruption_is_detected() {
        let data = vec![7u8; 10_000];
        let mut obj = seal(&data, Compression::None, 0).unwrap();
        obj[HEADER_LEN_V2 + 5] ^= 1;
        assert!(matches!(
            open(&obj),
            Err(EnvelopeError::ChecksumMismatch { .. })
        ));

        let obj = seal(&data, Compression::Zstd, 0).unwrap();
        let mut bad = obj.clone();
        let last = bad.len() - TRAILER_LEN - 3;
        bad[last] ^= 0xff;
        assert!(open(&bad).is_err(), "a damaged zstd payload must fail");
        assert_eq!(open(&obj[..20]), Err(EnvelopeError::Truncated(20, 56)));
        let mut digest_flipped = obj.clone();
        let end = digest_flipped.len() - 1;
        digest_flipped[end] ^= 1;
        assert!(matches!(
            open(&digest_flipped),
            Err(EnvelopeError::ChecksumMismatch { .. })
        ));
        assert_eq!(
            open(b"hello world, this is not an envelope at all......................"),
            Err(EnvelopeError::BadMagic)
        );
        let mut future = obj.clone();
        future[7] = 3;
        assert_eq!(open(&future), Err(EnvelopeError::UnsupportedVersion(3)));
        let mut odd = obj.clone();
        odd[9] = 9;
        assert_eq!(open(&odd), Err(EnvelopeError::UnknownDigest(9)));
    }

    /// Objects written before format version 2 (SHA-256 in the header)
    /// stay readable and verified, for every compression.
    #[test]
    fn version_1_objects_stay_readable() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        for c in Compression::ALL {
            let old = seal_v1(&data, c, 0).unwrap();
            let h = header(&old).unwrap();
            assert_eq!((h.version, h.digest.kind), (1, DigestKind::Sha256));
            assert_eq!(h.digest.bytes, sha256(&data));
            assert!(h.matches(&data));
            assert_eq!(open(&old).unwrap().1, data);
            let mut bad = old.clone();
            bad[HEADER_LEN + 10] ^= 1;
            assert!(open(&bad).is_err(), "{c:?}");
        }
    }

    /// The streaming sealer reads in small pieces and produces exactly what
    /// `seal` does; a source shorter or longer than announced, or one that
    /// fails, makes the reader fail.
    #[test]
    fn streaming_seal_checks_its_source() {
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = self.0.len().min(buf.len()).min(777);
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i / 7 % 256) as u8).collect();
        for c in Compression::ALL {
            let mut streamed = Vec::new();
            SealReader::new(Trickle(&data), data.len() as u64, c, 0)
                .unwrap()
                .read_to_end(&mut streamed)
                .unwrap();
            let (h, back) = open(&streamed).unwrap();
            assert_eq!(back, data, "{c}");
            assert_eq!(h.digest, digest(&data), "{c}");
            for wrong in [data.len() as u64 - 1, data.len() as u64 + 1] {
                let mut out = Vec::new();
                let e = SealReader::new(Trickle(&data), wrong, c, 0)
                    .unwrap()
                    .read_to_end(&mut out)
                    .unwrap_err();
                assert!(
                    e.to_string().contains("changed while it was read"),
                    "{c}: {e}"
                );
            }
        }
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("disk on fire"))
            }
        }
        let mut out = Vec::new();
        assert!(SealReader::new(Failing, 10, Compression::Zstd, 0)
            .unwrap()
            .read_to_end(&mut out)
            .is_err());
    }
}
