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
use super::envelope::{hex, sha256};
use crate::storage::{PutMode, Storage, StorageError};
use serde_json::{json, Value};

#[derive(Debug, thiserror::Error)]
pub enum InfoError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("metadata \"{key}\" is damaged in both copies: {primary}; {copy}")]
    Damaged {
        key: String,
        primary: String,
        copy: String,
    },
}

fn encode(payload: &Value) -> Vec<u8> {
    let canonical = payload.to_string();
    let doc = json!({ "checksum": hex(&sha256(canonical.as_bytes())), "payload": payload });
    let mut text = serde_json::to_vec_pretty(&doc).unwrap_or_else(|_| doc.to_string().into_bytes());
    text.push(b'\n');
    text
}

fn decode(bytes: &[u8]) -> Result<Value, String> {
    let doc: Value = serde_json::from_slice(bytes).map_err(|e| format!("not valid JSON ({e})"))?;
    let expected = doc
        .get("checksum")
        .and_then(Value::as_str)
        .ok_or("no checksum")?;
    let payload = doc.get("payload").ok_or("no payload")?;
    let actual = hex(&sha256(payload.to_string().as_bytes()));
    if actual != expected {
        return Err(format!(
            "checksum mismatch (stored {expected}, computed {actual})"
        ));
    }
    Ok(payload.clone())
}

/// Write both copies. `mode` applies to the primary: `Create` makes the
/// first writer win when two processes initialize the same metadata.
pub fn save(
    storage: &dyn Storage,
    key: &str,
    payload: &Value,
    mode: PutMode,
) -> Result<(), InfoError> {
    let bytes = encode(payload);
    storage.put(key, &bytes, mode)?;
    storage.put(&format!("{key}.copy"), &bytes, PutMode::Overwrite)?;
    Ok(())
}

/// Load the first intact copy; `Ok(None)` when neither copy exists.
pub fn load(storage: &dyn Storage, key: &str) -> Result<Option<Value>, InfoError> {
    let copy_key = format!("{key}.copy");
    let attempt = |k: &str| -> Result<Option<Value>, String> {
        match storage.get(k) {
            Ok(bytes) => decode(&bytes).map(Some),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    };
    let primary = attempt(key);
    if let Ok(Some(v)) = primary {
        return Ok(Some(v));
    }
    let copy = attempt(&copy_key);
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
    use crate::storage::local::LocalStorage;

    #[test]
    fn pair_survives_damage_of_either_copy() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::open(dir.path()).unwrap();
        assert!(load(&s, "x.info").unwrap().is_none());
        let v = json!({"system_identifier": "7312345678901234567", "pg_major": 17});
        save(&s, "x.info", &v, PutMode::Create).unwrap();
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
        let text = String::from_utf8(encode(&v)).unwrap().replace("17", "18");
        assert!(decode(text.as_bytes())
            .unwrap_err()
            .contains("checksum mismatch"));
    }
}
