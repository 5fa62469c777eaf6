//! Critical metadata, kept as a checksummed pair of copies.
//!
//! Like pgBackRest's `archive.info`/`backup.info`, every critical metadata
//! object is written twice, `<key>` and `<key>.copy`, each a JSON document
//! carrying the SHA-256 of its own payload:
//!
//! ```json
//! {"checksum": "<sha256 hex of the payload's canonical JSON>", "payload": {...}}
//! ```
//!
//! The loader takes the first copy whose checksum holds, so a torn or damaged
//! write of one copy never loses the metadata. Both copies missing is "no
//! metadata yet"; both present and damaged is an error that names both.
use super::envelope::hex;
use crate::storage::{PutMode, Storage, StorageError};
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum InfoError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("metadata \"{key}\" could not be written as JSON: {reason}")]
    Encode { key: String, reason: String },
    #[error("metadata \"{key}\" is damaged in both copies: {primary}; {copy}")]
    Damaged {
        key: String,
        primary: String,
        copy: String,
    },
}

/// The SHA-256 of `payload`'s canonical (compact) JSON, computed as it is
/// serialized: a manifest of a million files is never held as text too.
fn canonical_sha256(payload: &Value) -> String {
    use sha2::{Digest, Sha256};
    struct Hashing(Sha256);
    impl std::io::Write for Hashing {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.update(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut h = Hashing(Sha256::new());
    // Writing a Value into a hasher cannot fail.
    let _ = serde_json::to_writer(&mut h, payload);
    hex(&h.0.finalize())
}

/// The checksum a stored pair records for `payload`.
pub fn checksum(payload: &Value) -> String {
    canonical_sha256(payload)
}

/// The stored document: `checksum` first, then `payload` (the order
/// `json!` gave it when it built the document as a map).
#[derive(serde::Serialize)]
struct Doc<'a> {
    checksum: String,
    payload: &'a Value,
}

fn encode(payload: &Value) -> Result<Vec<u8>, serde_json::Error> {
    let doc = Doc {
        checksum: canonical_sha256(payload),
        payload,
    };
    let mut text = serde_json::to_vec_pretty(&doc)?;
    text.push(b'\n');
    Ok(text)
}

fn decode(bytes: &[u8]) -> Result<Value, String> {
    let mut doc: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("not valid JSON ({e})"))?;
    let expected = doc
        .get("checksum")
        .and_then(Value::as_str)
        .ok_or("no checksum")?
        .to_string();
    let payload = doc.get_mut("payload").ok_or("no payload")?.take();
    let actual = canonical_sha256(&payload);
    if actual != expected {
        return Err(format!(
            "checksum mismatch (stored {expected}, computed {actual})"
        ));
    }
    Ok(payload)
}

/// Write both copies, each once: no metadata object is ever overwritten
/// (a repository under S3 Object Lock keeps every version, see
/// `storage::write_once`). The primary is created, so the first writer
/// wins when two processes initialize the same metadata
/// ([`StorageError::AlreadyExists`] for the second). The copy is created
/// after it; a copy already there (a retried save whose primary was
/// written, then lost or damaged) is success if it holds the same
/// document, else an `AlreadyExists` error naming it.
pub fn save(storage: &dyn Storage, key: &str, payload: &Value) -> Result<(), InfoError> {
    let bytes = encode(payload).map_err(|e| InfoError::Encode {
        key: key.to_string(),
        reason: e.to_string(),
    })?;
    storage.put(key, &bytes, PutMode::Create)?;
    let copy = format!("{key}.copy");
    match storage.put(&copy, &bytes, PutMode::Create) {
        Err(e @ StorageError::AlreadyExists { .. }) => match storage.get(&copy) {
            Ok(stored) if stored == bytes => Ok(()),
            _ => Err(e.into()),
        },
        r => Ok(r?),
    }
}

/// Load the first intact copy; `Ok(None)` when neither copy exists.
pub fn load(storage: &dyn Storage, key: &str) -> Result<Option<Value>, InfoError> {
    let copy_key = format!("{key}.copy");

    // A repository out of reach, or an encrypted object without the key
    // that opens it, says nothing about damage: that error, as it is.
    let primary = match storage.get(key) {
        Ok(bytes) => decode(&bytes).map(Some),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e @ StorageError::Unavailable { .. }) => return Err(InfoError::Storage(e)),
        Err(StorageError::Encryption(c)) if c.needs_a_key() => {
            return Err(InfoError::Storage(StorageError::Encryption(c)))
        }
        Err(e) => Err(e.to_string()),
    };
    if let Ok(Some(v)) = primary {
        return Ok(Some(v));
    }
    let copy = match storage.get(&copy_key) {
        Ok(bytes) => decode(&bytes).map(Some),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e @ StorageError::Unavailable { .. }) => return Err(InfoError::Storage(e)),
        Err(StorageError::Encryption(c)) if c.needs_a_key() => {
            return Err(InfoError::Storage(StorageError::Encryption(c)))
        }
        Err(e) => Err(e.to_string()),
    };
    match (primary, copy) {
        (_, Ok(Some(v))) => Ok(Some(v)),
        (Ok(None), Ok(None)) => Ok(None),
        (p, c) => Err(InfoError::Damaged {
            key: key.to_string(),
            primary: p.err().unwrap_or_else(|| "missing".into()),
            copy: c.err().unwrap_or_else(|| "missing".into()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The document is byte for byte what the first pg_ark wrote: the
    /// payload's compact JSON hashed, then `{"checksum", "payload"}`
    /// pretty-printed, built as a `json!` map.
    #[test]
    fn the_document_is_written_as_it_always_was() {
        let payload = json!({"format_version": 1, "files": [{"path": "base/1/1259", "size": "8192"}],
                             "name": "é \\ \"q\"", "n": [1, 2.5, null, true]});
        let canonical = payload.to_string();
        let old = json!({"checksum": hex(&super::super::envelope::sha256(canonical.as_bytes())),
                         "payload": payload});
        let mut expected = serde_json::to_vec_pretty(&old).unwrap();
        expected.push(b'\n');
        assert_eq!(encode(&payload).unwrap(), expected);
        assert_eq!(decode(&expected).unwrap(), payload);
    }
    use crate::storage::local::LocalStorage;

    #[test]
    fn pair_survives_damage_of_either_copy() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::open(dir.path()).unwrap();
        assert!(load(&s, "x.info").unwrap().is_none());
        let v = json!({"system_identifier": "7312345678901234567", "pg_major": 17});
        save(&s, "x.info", &v).unwrap();
        assert_eq!(load(&s, "x.info").unwrap(), Some(v.clone()));

        // damage the primary: the copy is used
        s.put(
            "x.info",
            b"{\"checksum\":\"00\",\"payload\":{}}",
            PutMode::Overwrite,
        )
        .unwrap();
        assert_eq!(load(&s, "x.info").unwrap(), Some(v.clone()));
        // primary missing: the copy is used
        s.delete("x.info").unwrap();
        assert_eq!(load(&s, "x.info").unwrap(), Some(v.clone()));
        // both damaged: an error that names both
        s.put("x.info", b"garbage", PutMode::Overwrite).unwrap();
        s.put(
            "x.info.copy",
            b"{\"checksum\":\"00\",\"payload\":{}}",
            PutMode::Overwrite,
        )
        .unwrap();
        let e = load(&s, "x.info").unwrap_err().to_string();
        assert!(
            e.contains("damaged in both copies")
                && e.contains("not valid JSON")
                && e.contains("checksum mismatch"),
            "{e}"
        );
    }

    #[test]
    fn a_changed_payload_fails_its_checksum() {
        let v = json!({"pg_major": 17});
        let text = String::from_utf8(encode(&v).unwrap())
            .unwrap()
            .replace("17", "18");
        assert!(decode(text.as_bytes())
            .unwrap_err()
            .contains("checksum mismatch"));
    }
}
