//! The envelope every stored file is wrapped in: a fixed header, then the
//! (possibly compressed) payload.
//!
//! ```text
//! offset size  field
//!      0    8  magic "PGARK\0\0\1" (format version 1 in the last byte)
//!      8    1  compression code (see Compression::code)
//!      9    7  reserved, zero
//!     16    8  original length, little-endian u64
//!     24   32  SHA-256 of the original (uncompressed) content
//!     56  ...  payload
//! ```
//!
//! A reader never trusts a payload: it decompresses to the recorded length
//! and checks the SHA-256 of the result before handing any byte on. The
//! checksum of the original also lets an archiver tell "the same file again"
//! (success) from "a different file under the same name" (refused) by
//! reading only the header of the stored object.
use super::compress::Compression;
use sha2::{Digest, Sha256};

pub const MAGIC: [u8; 8] = *b"PGARK\0\0\x01";
pub const HEADER_LEN: usize = 56;

/// The decoded header of a stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub compression: Compression,
    pub original_len: u64,
    pub sha256: [u8; 32],
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("not a pg_ark object (bad magic)")]
    BadMagic,
    #[error("pg_ark object format version {0} is newer than this pg_ark understands (1)")]
    UnsupportedVersion(u8),
    #[error("object is truncated ({0} bytes, header needs {HEADER_LEN})")]
    Truncated(usize),
    #[error("unknown compression code {0}")]
    UnknownCompression(u8),
    #[error("payload does not decompress: {0}")]
    Corrupt(String),
    #[error("checksum mismatch: content has SHA-256 {actual}, header records {expected}")]
    ChecksumMismatch { expected: String, actual: String },
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Wrap `data`: compress it and prepend the header.
pub fn seal(data: &[u8], compression: Compression, level: i32) -> std::io::Result<Vec<u8>> {
    let payload = compression.compress(data, level)?;
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&MAGIC);
    out.push(compression.code());
    out.extend_from_slice(&[0u8; 7]);
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    out.extend_from_slice(&sha256(data));
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Read the header of a stored object (only its first HEADER_LEN bytes are needed).
pub fn header(obj: &[u8]) -> Result<Header, EnvelopeError> {
    if obj.len() < HEADER_LEN {
        if obj.len() >= 8 && obj[..7] != MAGIC[..7] {
            return Err(EnvelopeError::BadMagic);
        }
        return Err(EnvelopeError::Truncated(obj.len()));
    }
    if obj[..7] != MAGIC[..7] {
        return Err(EnvelopeError::BadMagic);
    }
    if obj[7] != MAGIC[7] {
        return Err(EnvelopeError::UnsupportedVersion(obj[7]));
    }
    let compression =
        Compression::from_code(obj[8]).ok_or(EnvelopeError::UnknownCompression(obj[8]))?;
    let mut len = [0u8; 8];
    len.copy_from_slice(&obj[16..24]);
    let mut sha = [0u8; 32];
    sha.copy_from_slice(&obj[24..56]);
    Ok(Header {
        compression,
        original_len: u64::from_le_bytes(len),
        sha256: sha,
    })
}

/// Unwrap a stored object: decompress and verify. Never returns unverified bytes.
pub fn open(obj: &[u8]) -> Result<(Header, Vec<u8>), EnvelopeError> {
    let h = header(obj)?;
    let len = usize::try_from(h.original_len)
        .map_err(|_| EnvelopeError::Corrupt("length overflow".into()))?;
    let data = h
        .compression
        .decompress(&obj[HEADER_LEN..], len)
        .map_err(|e| EnvelopeError::Corrupt(e.to_string()))?;
    let actual = sha256(&data);
    if actual != h.sha256 {
        return Err(EnvelopeError::ChecksumMismatch {
            expected: hex(&h.sha256),
            actual: hex(&actual),
        });
    }
    Ok((h, data))
}

#[cfg(test)]
mod tests {
    use super::*;

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
            assert_eq!(h.sha256, sha256(&data));
            let (_, back) = open(&obj).unwrap();
            assert_eq!(back, data);
        }
    }

    #[test]
    fn corruption_is_detected() {
        let data = vec![7u8; 10_000];
        let mut obj = seal(&data, Compression::None, 0).unwrap();
        obj[HEADER_LEN + 5] ^= 1;
        assert!(matches!(
            open(&obj),
            Err(EnvelopeError::ChecksumMismatch { .. })
        ));

        let obj = seal(&data, Compression::Zstd, 0).unwrap();
        let mut bad = obj.clone();
        let last = bad.len() - 3;
        bad[last] ^= 0xff;
        assert!(open(&bad).is_err(), "a damaged zstd payload must fail");
        assert_eq!(open(&obj[..20]), Err(EnvelopeError::Truncated(20)));
        assert_eq!(
            open(b"hello world, this is not an envelope at all......................"),
            Err(EnvelopeError::BadMagic)
        );
        let mut future = obj.clone();
        future[7] = 2;
        assert_eq!(open(&future), Err(EnvelopeError::UnsupportedVersion(2)));
    }
}
