//! Records that change, kept write-once: numbered generations.
//!
//! No repository object is ever overwritten (a bucket under S3 Object Lock
//! keeps every version for its whole lock period, and an overwrite there
//! is indistinguishable from tampering; see `storage::write_once`). A
//! record that changes, the catalog index or a backup's last restore
//! drill, is therefore a folder of generations: each change is a new
//! checksummed pair (`info.rs`) under `<folder><seq>`, `seq` twelve digits
//! from 1, so keys sort in order. The newest generation whose checksum
//! holds wins; the damaged ones it passed are reported, never skipped in
//! silence. Older generations go with [`prune`], and an object still
//! locked stays until a later run.
use super::info::{self, InfoError};
use crate::storage::{Storage, StorageError};
use serde_json::Value;

/// The key of generation `seq` in `folder` (which ends with `/`).
pub fn key(folder: &str, seq: u64) -> String {
    format!("{folder}{seq:012}")
}

/// The generation numbers in `folder`, oldest first, from either copy of
/// each pair (a primary lost, its copy is still a generation).
pub fn list(storage: &dyn Storage, folder: &str) -> Result<Vec<u64>, StorageError> {
    let mut seqs: Vec<u64> = storage
        .list(folder)?
        .iter()
        .filter_map(|o| {
            let name = o.key.strip_prefix(folder)?;
            let name = name.strip_suffix(".copy").unwrap_or(name);
            // Twelve digits, more past 10^12 (one name per number).
            let seq: u64 = name.parse().ok()?;
            (name.bytes().all(|b| b.is_ascii_digit()) && format!("{seq:012}") == name)
                .then_some(seq)
        })
        .collect();
    seqs.sort_unstable();
    seqs.dedup();
    Ok(seqs)
}

/// Write `payload` as the next generation in `folder`; returns its number.
/// A writer racing another takes the number after the one it lost.
pub fn save_next(storage: &dyn Storage, folder: &str, payload: &Value) -> Result<u64, InfoError> {
    let mut seq = list(storage, folder)?.last().copied().unwrap_or(0) + 1;
    let mut tries = 0;
    loop {
        match info::save(storage, &key(folder, seq), payload) {
            Err(InfoError::Storage(StorageError::AlreadyExists { .. })) if tries < 16 => {
                seq += 1;
                tries += 1;
            }
            r => return r.map(|()| seq),
        }
    }
}

/// The newest intact generation, and what was passed over to reach it.
#[derive(Debug, Clone, PartialEq)]
pub struct Newest {
    pub seq: u64,
    pub value: Value,
    /// Newer generations that failed their checksum or `accept`: (key, why).
    pub passed_over: Vec<(String, String)>,
}

/// The newest generation in `folder` that is intact and that `accept`
/// takes (for example, a format this pg_ark reads); `Ok(None)` when no
/// generation is there. No intact one among several is an error naming
/// each. A storage out of reach, or an encrypted object without its key,
/// is that error as it is.
pub fn load_newest(
    storage: &dyn Storage,
    folder: &str,
    accept: impl Fn(&Value) -> Result<(), String>,
) -> Result<Option<Newest>, InfoError> {
    let seqs = list(storage, folder)?;
    let mut passed_over = Vec::new();
    for &seq in seqs.iter().rev() {
        let k = key(folder, seq);
        let why = match info::load(storage, &k) {
            Ok(Some(value)) => match accept(&value) {
                Ok(()) => {
                    return Ok(Some(Newest {
                        seq,
                        value,
                        passed_over,
                    }))
                }
                Err(why) => why,
            },
            Ok(None) => "missing".into(),
            Err(e @ InfoError::Damaged { .. }) => e.to_string(),
            Err(e) => return Err(e),
        };
        passed_over.push((k, why));
    }
    match passed_over.is_empty() {
        true => Ok(None),
        false => Err(InfoError::Damaged {
            key: folder.trim_end_matches('/').to_string(),
            primary: format!("no intact generation among {}", seqs.len()),
            copy: passed_over
                .iter()
                .map(|(k, why)| format!("{k}: {why}"))
                .collect::<Vec<_>>()
                .join("; "),
        }),
    }
}

/// Remove all but the newest `keep` generations of `folder`, oldest
/// first. The first one S3 Object Lock still retains ends the run (those
/// after it were written, and locked, later): they go in a later run.
/// Returns how many generations are left behind that way.
pub fn prune(storage: &dyn Storage, folder: &str, keep: usize) -> Result<usize, StorageError> {
    let seqs = list(storage, folder)?;
    let old = &seqs[..seqs.len().saturating_sub(keep)];
    let now = crate::logical::now_epoch();
    for (i, &seq) in old.iter().enumerate() {
        let k = key(folder, seq);
        for key in [format!("{k}.copy"), k] {
            if crate::storage::delete_unless_retained(storage, &key, now)?.is_some() {
                return Ok(old.len() - i);
            }
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::local::LocalStorage;
    use crate::storage::PutMode;
    use serde_json::json;

    #[test]
    fn newest_intact_generation_wins_and_damage_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::open(dir.path()).unwrap();
        let f = "c/drill/";
        assert_eq!(load_newest(&s, f, |_| Ok(())).unwrap(), None);
        for n in 1..=3 {
            assert_eq!(save_next(&s, f, &json!({"n": n})).unwrap(), n);
        }
        let got = load_newest(&s, f, |_| Ok(())).unwrap().unwrap();
        assert_eq!((got.seq, &got.value), (3, &json!({"n": 3})));
        assert!(got.passed_over.is_empty());

        // The newest damaged in both copies: the one before it, reported.
        for k in [key(f, 3), format!("{}.copy", key(f, 3))] {
            s.delete(&k).unwrap();
            s.put(&k, b"garbage", PutMode::Create).unwrap();
        }
        let got = load_newest(&s, f, |_| Ok(())).unwrap().unwrap();
        assert_eq!((got.seq, &got.value), (2, &json!({"n": 2})));
        assert_eq!(got.passed_over.len(), 1);
        assert!(got.passed_over[0].0.ends_with("000000000003"));
        assert!(got.passed_over[0].1.contains("damaged"), "{got:?}");

        // One not accepted is passed over too, with the reason.
        let got = load_newest(&s, f, |v| match v["n"] == 2 {
            true => Err("too new".into()),
            false => Ok(()),
        })
        .unwrap()
        .unwrap();
        assert_eq!(got.seq, 1);
        assert_eq!(got.passed_over[1].1, "too new");

        // A primary lost: its copy still counts; the next save is 4.
        s.delete(&key(f, 2)).unwrap();
        assert_eq!(list(&s, f).unwrap(), vec![1, 2, 3]);
        assert_eq!(save_next(&s, f, &json!({"n": 4})).unwrap(), 4);

        // Past twelve digits, still one generation each.
        s.put(&key(f, 1_000_000_000_000), b"x", PutMode::Create)
            .unwrap();
        assert_eq!(list(&s, f).unwrap().last(), Some(&1_000_000_000_000));
        s.put(&format!("{f}0000000000005"), b"x", PutMode::Create)
            .unwrap();
        assert!(!list(&s, f).unwrap().contains(&5));
        s.delete(&key(f, 1_000_000_000_000)).unwrap();
        s.delete(&format!("{f}0000000000005")).unwrap();

        // Pruning keeps the newest two.
        assert_eq!(prune(&s, f, 2).unwrap(), 0);
        assert_eq!(list(&s, f).unwrap(), vec![3, 4]);

        // None intact at all: an error that names each generation.
        for k in [key(f, 4), format!("{}.copy", key(f, 4))] {
            s.delete(&k).unwrap();
            s.put(&k, b"{}", PutMode::Create).unwrap();
        }
        let e = load_newest(&s, f, |_| Ok(())).unwrap_err().to_string();
        assert!(
            e.contains("000000000003") && e.contains("000000000004"),
            "{e}"
        );
    }
}
