//! The encryption layer of a repository: a [`Storage`] over the backend
//! that encrypts every object but the metadata [`layout::stored_in_clear`]
//! names, and decrypts and authenticates every one it reads. Everything
//! above it (WAL, backups, manifests, dumps) is written and read as in a
//! clear repository; compression happens above, so data is compressed and
//! then encrypted, never the other way round.
//!
//! # An encrypted object (envelope format version 3)
//!
//! ```text
//! offset  size  field
//!      0     8  magic "PGARK\0\0\3"
//!      8     1  flags: 1 = also encrypted to the writing server's own key
//!      9     1  length n of the data key's id
//!     10     n  the data key's id, ASCII ("age:" and 16 hex digits)
//!   (flag 1)    1 byte m, then m bytes: the server key's id
//!    ...   ...  an age file (X25519, to the data key) whose plaintext is
//!               the line "pg_ark-object <key>\n" and then the object as a
//!               clear repository stores it (for WAL and backups a version 2
//!               envelope: compressed payload and BLAKE3 trailer)
//! end-96    32  MAC: BLAKE3 keyed with a key derived from the data key's
//!               secret half, of the BLAKE3 of every byte before it
//! end-64    24  keyed digest: BLAKE3 keyed with the archiver's digest key,
//!               of the inner envelope's BLAKE3 trailer
//! end-40     8  the digest key's id (BLAKE3 keyed with it, of a constant);
//!               these 32 bytes are zeros when the writer had no digest key
//!               or the object is no envelope
//! end-32    32  BLAKE3 of every byte before it
//! ```
//!
//! - The last digest covers only ciphertext: `pg_ark verify` checks every
//!   stored byte with it without any key, and it reveals nothing of the
//!   plaintext. Every read checks it too, besides age's own authentication
//!   of each 64 KiB chunk and the inner envelope's digest of the content.
//! - The keyed digest lets the archive module tell "the same segment again"
//!   (success) from "other content under the same name" (refused) without
//!   the private key: it recomputes the digest of the offered file with its
//!   digest key, a random 32-byte secret kept in the server's data
//!   directory (`pg_ark/archive_digest.key`, never copied into a backup).
//!   Without that key the digest says nothing; with it, one learns only
//!   whether a stored segment equals a segment one already holds.
//! - The plaintext names the object: a stored object moved under another
//!   key fails.
//! - age has no sender authentication: anyone who reads a key object's
//!   public half can encrypt to the data key. The MAC binds an object to
//!   its data key: its key is derived from the data key's secret half,
//!   which the writer held when it made the key (and keeps, while it writes
//!   with it, only in memory) and a reader unwraps. So an object cannot be
//!   planted under an *existing* data key. It does not make an object
//!   pg_ark's: whoever knows a recipient (public by design) and can write to
//!   the bucket can make a data key of their own, wrap it to the
//!   recipients, and write objects under it. Against a writer to the
//!   bucket, the defence is the write-once repository of issue 25 (reading
//!   as of a time), not encryption. (The server reading its own manifests
//!   with its own key checks no MAC: only it holds that key's public half.)
//!
//! # The server's own key, for manifests
//!
//! An incremental backup reads its parent's manifest. So that a server
//! without an identity still takes incrementals, manifests (and only
//! they: paths, sizes and digests of files, no table data) are encrypted
//! to the writing server's own X25519 key as well, kept in its data
//! directory (`pg_ark/manifest.key`, mode 0600, never in a backup). Whoever
//! holds that key and the bucket can read manifests, not data.
//!
//! # Data keys
//!
//! A writer generates a data key (an X25519 pair, `crypto::DataKey`) when
//! it first writes, wraps its secret half to the recipients into a key
//! object at `keys/<id>/000001`, and keeps only the public half. A job (a
//! backup, a dump) opens the repository afresh, so each gets its own data
//! key; the archiver keeps one for at most [`WRITE_KEY_LIFETIME`] (a span of
//! WAL) and opens a new one when the recipients change. Rotation (`pg_ark
//! rekey`) adds key objects of the next generation; no data object is ever
//! rewritten. A reader tries the generations newest first with its
//! identities.
use super::{
    decrypt_object, encrypt_object, CryptoError, DataKey, Identities, KeyObject, Recipients,
    WriteKey,
};
use crate::repo::layout;
use crate::storage::{ObjectInfo, PutMode, Storage, StorageError};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The magic of an encrypted object.
pub const MAGIC: [u8; 8] = *b"PGARK\0\0\x03";
/// The magic prefix of every pg_ark envelope (any version).
const ENVELOPE_PREFIX: &[u8; 7] = b"PGARK\0\0";
/// The MAC, the keyed digest and the ciphertext digest.
const TAIL: usize = 96;
/// The context of the MAC key's derivation from a data key.
const MAC_CONTEXT: &str = "pg_ark 2026-12 object MAC key v1";

/// The MAC key of data key `k`.
fn mac_key(k: &DataKey) -> [u8; 32] {
    use age::secrecy::ExposeSecret;
    blake3::derive_key(MAC_CONTEXT, k.to_text().expose_secret().as_bytes())
}
/// How long a writer encrypts to one data key.
pub const WRITE_KEY_LIFETIME: Duration = Duration::from_secs(3600);
/// The context of the digest key's derivation.
const DIGEST_CONTEXT: &str = "pg_ark 2026-12 archive digest key v1";

/// The keys a repository is opened with.
#[derive(Clone, Default)]
pub struct Keys {
    /// Whom new data keys are wrapped to (writers).
    pub recipients: Option<Recipients>,
    /// What opens key objects (restores, drills, deep verification).
    pub identities: Option<Arc<Identities>>,
    /// The archiver's digest key (see the module documentation).
    pub digest_key: Option<[u8; 32]>,
    /// The server's own key, which manifests are encrypted to as well.
    pub server_key: Option<Arc<DataKey>>,
}

/// Where a server keeps the digest key and its own key, in its state
/// folder (`$PGDATA/pg_ark`).
pub const DIGEST_KEY_FILE: &str = "archive_digest.key";
pub const SERVER_KEY_FILE: &str = "manifest.key";

impl Keys {
    /// A writing server's keys: with recipients set, the digest key and
    /// its own key from `state_dir`, made there on first use.
    pub fn with_server_state(mut self, state_dir: &std::path::Path) -> std::io::Result<Keys> {
        if self.recipients.is_some() {
            self.digest_key = Some(load_or_create_digest_key(&state_dir.join(DIGEST_KEY_FILE))?);
            self.server_key = Some(Arc::new(load_or_create_server_key(
                &state_dir.join(SERVER_KEY_FILE),
            )?));
        }
        Ok(self)
    }
}

/// The storage of an encrypted repository.
pub struct EncryptedStorage {
    inner: Box<dyn Storage>,
    keys: Keys,
    /// The data key being written to, with its MAC key.
    writing: Mutex<Option<(WriteKey, [u8; 32], Instant)>>,
    opened: Mutex<HashMap<String, Arc<DataKey>>>,
}

/// An encrypted object's header: the ids of the keys it is encrypted to.
struct Header {
    data_key: String,
    server_key: Option<String>,
}

/// What a stored WAL object holds, compared with an offered file's content
/// (see [`EncryptedStorage::compare`]).
#[derive(Debug)]
pub enum Compared {
    Same,
    Differs,
    /// Its stored bytes fail their digest, or it is no encrypted object.
    Damaged(String),
    /// Decrypted with an identity: the stored object as a clear repository
    /// holds it, for the caller to compare.
    Decrypted(Vec<u8>),
}

fn encryption_error(e: CryptoError) -> StorageError {
    // A storage stream that broke off while age read it is the storage's
    // failure, perhaps transient, not the encryption's.
    if let CryptoError::Io { source, .. } = &e {
        if let Some(s) = StorageError::of_io(source) {
            if s.is_transient() {
                return StorageError::Unavailable {
                    location: String::new(),
                    message: s.to_string(),
                };
            }
        }
    }
    StorageError::Encryption(Box::new(e))
}

/// The error a read of a decrypting stream failed with, as a storage
/// error: the encryption's own (damage, a wrong key) or the storage's.
fn read_error(key: &str, location: &str, e: std::io::Error) -> StorageError {
    if e.get_ref().is_some_and(|i| i.is::<CryptoError>()) {
        if let Some(Ok(c)) = e.into_inner().map(|i| i.downcast::<CryptoError>()) {
            return encryption_error(*c);
        }
        return StorageError::Backend {
            location: location.into(),
            message: format!("object \"{key}\" could not be read"),
        };
    }
    if let Some(s) = StorageError::of_io(&e) {
        if s.is_transient() {
            return StorageError::Unavailable {
                location: location.into(),
                message: s.to_string(),
            };
        }
    }
    StorageError::Io {
        op: "read",
        key: key.into(),
        location: location.into(),
        source: e,
    }
}

impl EncryptedStorage {
    pub fn new(inner: Box<dyn Storage>, keys: Keys) -> EncryptedStorage {
        EncryptedStorage {
            inner,
            keys,
            writing: Mutex::new(None),
            opened: Mutex::new(HashMap::new()),
        }
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Whether objects can be decrypted (an identity was given).
    pub fn can_decrypt(&self) -> bool {
        self.keys.identities.is_some()
    }

    /// The data key new objects are encrypted to: made (and its key object
    /// stored) on first use, replaced after [`WRITE_KEY_LIFETIME`].
    fn write_key(&self, what: &str) -> Result<(WriteKey, [u8; 32]), StorageError> {
        let mut w = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((k, mac, since)) = w.as_ref() {
            if since.elapsed() < WRITE_KEY_LIFETIME {
                return Ok((k.clone(), *mac));
            }
        }
        let Some(to) = &self.keys.recipients else {
            return Err(encryption_error(CryptoError::RecipientsNeeded {
                what: format!("object \"{what}\""),
            }));
        };
        let key = DataKey::generate();
        let object = key.wrap(to).map_err(encryption_error)?;
        let body = serde_json::to_vec_pretty(&object).map_err(|e| StorageError::Backend {
            location: self.location(),
            message: format!("could not write a key object: {e}"),
        })?;
        let at = format!("{}{:06}", layout::key_objects(&key.id()), 1);
        self.inner.put(&at, &body, PutMode::Create)?;
        let k = key.write_key();
        let mac = mac_key(&key);
        // The secret half goes here.
        drop(key);
        *w = Some((k.clone(), mac, Instant::now()));
        Ok((k, mac))
    }

    /// Data key `id`, unwrapped from its newest key object an identity
    /// opens (cached).
    fn data_key(&self, id: &str, what: &str) -> Result<Arc<DataKey>, StorageError> {
        if let Some(k) = self
            .opened
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
        {
            return Ok(k.clone());
        }
        let dir = layout::key_objects(id);
        let mut objects = self.inner.list(&dir)?;
        objects.reverse();
        if objects.is_empty() {
            return Err(encryption_error(CryptoError::NoKeyObject {
                what: format!("object \"{what}\""),
                key: id.into(),
                dir,
            }));
        }
        let mut first_error = None;
        let mut needs = Vec::new();
        for o in &objects {
            // The repository out of reach is that, not a bad key object.
            let bytes = match self.inner.get(&o.key) {
                Ok(b) => Ok(b),
                Err(e) if e.is_transient() => return Err(e),
                Err(e) => Err(e.to_string()),
            };
            let ko: KeyObject =
                match bytes.and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string())) {
                    Ok(k) => k,
                    Err(reason) => {
                        first_error.get_or_insert(CryptoError::BadKeyObject {
                            what: format!("key object \"{}\"", o.key),
                            reason,
                        });
                        continue;
                    }
                };
            if ko.key_id != id {
                first_error.get_or_insert(CryptoError::BadKeyObject {
                    what: format!("key object \"{}\"", o.key),
                    reason: format!("it holds key {}, not {id}", ko.key_id),
                });
                continue;
            }
            for f in &ko.wrapped_to {
                if !needs.contains(f) {
                    needs.push(f.clone());
                }
            }
            let Some(ids) = &self.keys.identities else {
                continue;
            };
            match ko.unwrap(&format!("key object \"{}\"", o.key), ids) {
                Ok(k) => {
                    let k = Arc::new(k);
                    self.opened
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(id.to_string(), k.clone());
                    return Ok(k);
                }
                Err(CryptoError::NoMatchingIdentity { .. }) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        let Some(ids) = &self.keys.identities else {
            return Err(encryption_error(CryptoError::IdentityNeeded {
                what: format!("object \"{what}\""),
                key: id.into(),
                needs,
            }));
        };
        Err(encryption_error(first_error.unwrap_or(
            CryptoError::NoMatchingIdentity {
                what: format!("object \"{what}\" (data key {id})"),
                needs,
                have: ids.fingerprints(),
            },
        )))
    }

    /// Read an encrypted object's header from `raw`: the data key's id,
    /// the server key's when there is one, and the header's bytes.
    fn header(key: &str, raw: &mut dyn Read) -> Result<(Header, Vec<u8>), StorageError> {
        let mut head = vec![0u8; 10];
        let not = |reason: &str| {
            encryption_error(CryptoError::NotEncrypted {
                what: format!("object \"{key}\""),
                reason: reason.into(),
            })
        };
        if let Err(e) = raw.read_exact(&mut head) {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                return Err(not("it is shorter than the header of an encrypted object"));
            }
            return Err(read_error(key, "", e));
        }
        if head[..8] != MAGIC {
            if &head[..7] == ENVELOPE_PREFIX {
                return Err(not(
                    "it is a pg_ark object stored in the clear, in an encrypted repository",
                ));
            }
            return Err(not("it does not start as a pg_ark object"));
        }
        let flags = head[8];
        let bad = |reason: &str| {
            encryption_error(CryptoError::Tampered {
                what: format!("object \"{key}\""),
                reason: reason.into(),
            })
        };
        if flags & !1 != 0 {
            return Err(bad("its header has unknown flags"));
        }
        let read_id =
            |raw: &mut dyn Read, n: usize, head: &mut Vec<u8>| -> Result<String, StorageError> {
                let mut id = vec![0u8; n];
                raw.read_exact(&mut id)
                    .map_err(|e| read_error(key, "", e))?;
                head.extend_from_slice(&id);
                String::from_utf8(id)
                    .ok()
                    .filter(|s| s.starts_with("age:") && s.len() == 20)
                    .ok_or_else(|| bad("its header names no key"))
            };
        let n = usize::from(head[9]);
        let data_key = read_id(raw, n, &mut head)?;
        let mut server_key = None;
        if flags & 1 != 0 {
            let mut m = [0u8; 1];
            raw.read_exact(&mut m).map_err(|e| read_error(key, "", e))?;
            head.push(m[0]);
            server_key = Some(read_id(raw, usize::from(m[0]), &mut head)?);
        }
        Ok((
            Header {
                data_key,
                server_key,
            },
            head,
        ))
    }

    /// Decrypt object `key` as it streams from `raw`.
    fn open_reader<'a>(
        &self,
        key: &str,
        mut raw: Box<dyn Read + Send + 'a>,
    ) -> Result<Box<dyn Read + Send + 'a>, StorageError> {
        let (h, head) = Self::header(key, &mut raw)?;
        // What this server wrote to its own key (a manifest, a drill
        // record) it opens with that key, without an identity and without
        // the MAC (only it holds that key's public half); anything else
        // needs the data key, and its MAC is checked.
        let own = match (&h.server_key, &self.keys.server_key) {
            (Some(id), Some(k))
                if *id == k.id() && !self.can_decrypt() && layout::read_back_by_writer(key) =>
            {
                Some(k.clone())
            }
            _ => None,
        };
        let (data_key, mac) = match own {
            Some(k) => (k, None),
            None => {
                let k = self.data_key(&h.data_key, key)?;
                let mac = mac_key(&k);
                (k, Some(mac))
            }
        };
        let mut hasher = blake3::Hasher::new();
        hasher.update(&head);
        let held = TailHeld {
            inner: raw,
            hasher,
            held: Vec::with_capacity(TAIL + (64 << 10)),
            scratch: vec![0u8; 64 << 10],
            eof: false,
            what: key.to_string(),
            mac,
        };
        let r = decrypt_object(&data_key, key, held).map_err(|e| match e {
            // After pg_ark's header, anything but an age file is damage.
            CryptoError::NotEncrypted { what, reason } => CryptoError::Tampered { what, reason },
            e => e,
        });
        let r = r.map_err(encryption_error)?;
        Ok(Box::new(r))
    }

    /// Compare stored WAL object `key` with content whose BLAKE3 is
    /// `content`, without decrypting when the digest key allows it.
    pub fn compare(&self, key: &str, content: &[u8; 32]) -> Result<Compared, StorageError> {
        let raw = self.inner.get(key)?;
        if let Err(reason) = check_ciphertext(&raw) {
            if raw.starts_with(ENVELOPE_PREFIX) && !raw.starts_with(&MAGIC) {
                return Err(encryption_error(CryptoError::NotEncrypted {
                    what: format!("object \"{key}\""),
                    reason: "it is a pg_ark object stored in the clear, in an encrypted repository"
                        .into(),
                }));
            }
            return Ok(Compared::Damaged(reason));
        }
        let keyed = &raw[raw.len() - 64..raw.len() - 32];
        if let Some(dk) = &self.keys.digest_key {
            // Written with this digest key (the same server's data
            // directory): the digests tell. Another key's digest says
            // nothing, and only the content can tell.
            let ours = keyed_digest(dk, content);
            if keyed[24..] == ours[24..] {
                return Ok(if keyed == ours {
                    Compared::Same
                } else {
                    Compared::Differs
                });
            }
        }
        if self.can_decrypt() {
            return self.decrypted(key, raw);
        }
        let (h, _) = Self::header(key, &mut &raw[..])?;
        Err(encryption_error(CryptoError::IdentityNeeded {
            what: format!(
                "comparing the offered file with stored object \"{key}\", written without this server's digest key,"
            ),
            key: h.data_key,
            needs: Vec::new(),
        }))
    }

    fn decrypted(&self, key: &str, raw: Vec<u8>) -> Result<Compared, StorageError> {
        let mut out = Vec::new();
        self.open_reader(key, Box::new(std::io::Cursor::new(raw)))?
            .read_to_end(&mut out)
            .map_err(|e| read_error(key, &self.location(), e))?;
        Ok(Compared::Decrypted(out))
    }

    /// Object `key` as stored, not decrypted.
    pub fn get_stored(&self, key: &str) -> Result<Vec<u8>, StorageError> {
        self.inner.get(key)
    }

    /// Check stored object `key`'s bytes against their digest, without any
    /// key: `Ok(Err(reason))` when they fail it. Returns the data key's id.
    pub fn check_stored(&self, key: &str) -> Result<Result<String, String>, StorageError> {
        if !self.encrypts(key) {
            return Ok(Err(format!("object \"{key}\" is stored in the clear")));
        }
        let mut raw = self.inner.get_reader(key)?;
        let (header, head) = match Self::header(key, &mut raw) {
            Ok(h) => h,
            Err(StorageError::Encryption(e)) => return Ok(Err(e.to_string())),
            Err(e) => return Err(e),
        };
        let mut h = blake3::Hasher::new();
        h.update(&head);
        let mut tail = Vec::with_capacity(TAIL * 2);
        let mut buf = vec![0u8; 256 << 10];
        loop {
            let n = match raw.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(read_error(key, &self.location(), e)),
            };
            tail.extend_from_slice(&buf[..n]);
            if tail.len() > 32 {
                let give = tail.len() - 32;
                h.update(&tail[..give]);
                tail.drain(..give);
            }
        }
        if tail.len() < 32 || h.finalize().as_bytes()[..] != tail[..] {
            return Ok(Err(format!(
                "object \"{key}\": its stored bytes differ from their digest"
            )));
        }
        Ok(Ok(header.data_key))
    }

    fn encrypts(&self, key: &str) -> bool {
        !layout::stored_in_clear(key)
    }

    fn encrypt_stream(
        &self,
        key: &str,
        body: &mut dyn Read,
        mode: PutMode,
    ) -> Result<u64, StorageError> {
        let (wk, mac) = self.write_key(key)?;
        let server = match &self.keys.server_key {
            Some(k) if layout::read_back_by_writer(key) => Some(k.write_key()),
            _ => None,
        };
        // The keyed digest is for the archiver's comparison: WAL only.
        let digest_key = self.keys.digest_key.filter(|_| layout::is_wal(key));
        let mut r = EncryptReader::new(&wk, mac, server.as_ref(), key, body, digest_key)
            .map_err(|e| read_error(key, &self.location(), e))?;
        self.inner.put_stream(key, &mut r, mode)
    }
}

/// What [`EncryptedStorage::rekey`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rekeyed {
    /// Data keys in the repository.
    pub keys: usize,
    /// Key objects written (a new generation each).
    pub written: usize,
    /// Data keys whose newest generation was already wrapped to the new
    /// recipients (an earlier, interrupted run).
    pub already: usize,
    /// Older generations removed (`remove_old`).
    pub removed: usize,
    /// Older generations S3 Object Lock still retains (`remove_old`): left
    /// for a later run.
    pub retained: usize,
}

impl EncryptedStorage {
    /// Every data key's key objects, by folder: the numbered generations,
    /// oldest first (anything else in a folder is ignored, never deleted).
    fn key_folders(
        &self,
    ) -> Result<std::collections::BTreeMap<String, Vec<(u64, String)>>, StorageError> {
        let mut dirs: std::collections::BTreeMap<String, Vec<(u64, String)>> = Default::default();
        for o in self.inner.list(layout::KEYS)? {
            let Some((dir, name)) = o.key.rsplit_once('/') else {
                continue;
            };
            if name.len() != 6 || !name.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let Ok(generation) = name.parse::<u64>() else {
                continue;
            };
            dirs.entry(format!("{dir}/"))
                .or_default()
                .push((generation, o.key));
        }
        for gens in dirs.values_mut() {
            gens.sort();
        }
        Ok(dirs)
    }

    fn read_key_object(&self, key: &str) -> Result<KeyObject, StorageError> {
        let b = self.inner.get(key)?;
        serde_json::from_slice(&b).map_err(|e| {
            encryption_error(CryptoError::BadKeyObject {
                what: format!("key object \"{key}\""),
                reason: e.to_string(),
            })
        })
    }

    /// Rotation: wrap every data key to `to` in a key object of the next
    /// generation, unwrapping it with this storage's identities. No data
    /// object is touched. A key whose newest generation is already wrapped
    /// to exactly `to` is skipped, so an interrupted run is resumed by
    /// running it again; the repository is listed again until a pass finds
    /// nothing to do, so keys made while it runs are wrapped too (change
    /// every server's recipients first, or they keep making keys for the
    /// old ones).
    ///
    /// With `remove_old`, the older generations are deleted once every
    /// key's newest generation is wrapped to `to` *and* opens with the
    /// identities given: so it is run with the new identity, after the
    /// rotation, and a mistyped recipients file never leaves data that
    /// nobody can read. `progress` is told each key as it is done.
    pub fn rekey(
        &self,
        to: &Recipients,
        remove_old: bool,
        progress: &mut dyn FnMut(usize, usize, &str),
    ) -> Result<Rekeyed, StorageError> {
        let Some(ids) = &self.keys.identities else {
            return Err(encryption_error(CryptoError::IdentityNeeded {
                what: "rekeying the repository".into(),
                key: "(every data key)".into(),
                needs: Vec::new(),
            }));
        };
        let want = to.fingerprints();
        let mut done = Rekeyed::default();
        let mut seen = std::collections::HashSet::new();
        let mut settled = false;
        for _pass in 0..5 {
            let dirs = self.key_folders()?;
            let total = dirs.len();
            let mut wrote = false;
            for (n, (dir, gens)) in dirs.iter().enumerate() {
                let Some((newest, newest_key)) = gens.last() else {
                    continue;
                };
                let top = self.read_key_object(newest_key)?;
                let first_time = seen.insert(dir.clone());
                if top.wrapped_to == want {
                    if first_time {
                        done.already += 1;
                        progress(n + 1, total, &top.key_id);
                    }
                    continue;
                }
                // The newest generation the identities open.
                let mut opened = None;
                let mut last_error = None;
                for (_, g) in gens.iter().rev() {
                    let ko = self.read_key_object(g)?;
                    match ko.rewrap(&format!("key object \"{g}\""), ids, to) {
                        Ok(k) => {
                            opened = Some(k);
                            break;
                        }
                        Err(e) => last_error = Some(e),
                    }
                }
                let Some(next) = opened else {
                    return Err(encryption_error(last_error.unwrap_or(
                        CryptoError::NoKeyObject {
                            what: "rekeying".into(),
                            key: top.key_id.clone(),
                            dir: dir.clone(),
                        },
                    )));
                };
                let body = serde_json::to_vec_pretty(&next).map_err(|e| StorageError::Backend {
                    location: self.location(),
                    message: format!("could not write a key object: {e}"),
                })?;
                self.inner
                    .put(&format!("{dir}{:06}", newest + 1), &body, PutMode::Create)?;
                done.written += 1;
                wrote = true;
                progress(n + 1, total, &next.key_id);
            }
            if !wrote {
                settled = true;
                break;
            }
        }
        if !settled {
            return Err(StorageError::Backend {
                location: self.location(),
                message: "new data keys kept appearing while rekeying: change every server's \
                          recipients file to the new recipients first, then run pg_ark rekey again"
                    .into(),
            });
        }
        done.keys = seen.len();
        if remove_old {
            let dirs = self.key_folders()?;
            // First prove that the identities open every newest generation.
            for gens in dirs.values() {
                let Some((_, newest_key)) = gens.last() else {
                    continue;
                };
                let ko = self.read_key_object(newest_key)?;
                if ko.wrapped_to != want {
                    return Err(StorageError::Backend {
                        location: self.location(),
                        message: format!(
                            "key object \"{newest_key}\" is not wrapped to the new recipients; nothing was removed"
                        ),
                    });
                }
                ko.unwrap(&format!("key object \"{newest_key}\""), ids)
                    .map_err(|e| match e {
                        CryptoError::NoMatchingIdentity { what, needs, have } => {
                            encryption_error(CryptoError::NoMatchingIdentity {
                                what: format!(
                                    "{what} (nothing was removed: --remove-old needs an identity of the new recipients, to prove they open every key)"
                                ),
                                needs,
                                have,
                            })
                        }
                        e => encryption_error(e),
                    })?;
            }
            let now = crate::logical::now_epoch();
            for gens in dirs.values() {
                for (_, key) in gens.iter().take(gens.len().saturating_sub(1)) {
                    // Under Object Lock, an old generation stays until its
                    // lock ends (rekey --remove-old then, again).
                    match crate::storage::delete_unless_retained(self.inner.as_ref(), key, now)? {
                        None => done.removed += 1,
                        Some(_) => done.retained += 1,
                    }
                }
            }
        }
        self.opened
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        Ok(done)
    }
}

/// Whether `raw` holds an encrypted object whose bytes match their digest.
fn check_ciphertext(raw: &[u8]) -> Result<(), String> {
    if !raw.starts_with(&MAGIC) {
        return Err("it is not an encrypted pg_ark object".into());
    }
    if raw.len() < 10 + TAIL {
        return Err("it is shorter than an encrypted object".into());
    }
    let (body, digest) = raw.split_at(raw.len() - 32);
    if blake3::hash(body).as_bytes()[..] != digest[..] {
        return Err("its stored bytes differ from their digest".into());
    }
    Ok(())
}

/// The keyed digest of content whose BLAKE3 is `content`: 24 bytes of
/// BLAKE3 keyed with the digest key, then 8 that name the digest key (so a
/// digest written with another key is told apart from other content).
pub fn keyed_digest(digest_key: &[u8; 32], content: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out[..24].copy_from_slice(&blake3::keyed_hash(digest_key, content).as_bytes()[..24]);
    let id = blake3::keyed_hash(digest_key, b"pg_ark digest key id");
    out[24..].copy_from_slice(&id.as_bytes()[..8]);
    out
}

/// The digest key in `path` (the archiver's, in its data directory):
/// derived from a random secret written there on first use, readable by
/// the server's OS user alone.
pub fn load_or_create_digest_key(path: &std::path::Path) -> std::io::Result<[u8; 32]> {
    let secret = load_or_create(path, || {
        let mut s = [0u8; 32];
        getrandom(&mut s)?;
        Ok(s.to_vec())
    })?;
    if secret.len() != 32 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "{} holds {} bytes, not a 32-byte key",
                path.display(),
                secret.len()
            ),
        ));
    }
    Ok(blake3::derive_key(DIGEST_CONTEXT, &secret))
}

/// The server's own key in `path`, made there on first use.
pub fn load_or_create_server_key(path: &std::path::Path) -> std::io::Result<DataKey> {
    use age::secrecy::ExposeSecret;
    let text = load_or_create(path, || {
        Ok(DataKey::generate()
            .to_text()
            .expose_secret()
            .as_bytes()
            .to_vec())
    })?;
    DataKey::from_text(&String::from_utf8_lossy(&text)).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} holds no age identity", path.display()),
        )
    })
}

/// The secret in `path`; made by `make`, written durably with mode 0600,
/// when there is none (a racing process's secret wins).
fn load_or_create(
    path: &std::path::Path,
    make: impl Fn() -> std::io::Result<Vec<u8>>,
) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::read(path) {
        Ok(s) => return Ok(s),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let secret = make()?;
    let mut nonce = [0u8; 8];
    getrandom(&mut nonce)?;
    let tmp = path.with_extension(format!(
        "tmp.{}.{}",
        std::process::id(),
        u64::from_le_bytes(nonce)
    ));
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&secret)?;
        f.sync_all()?;
    }
    // Another process may have made one first: keep theirs.
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    std::fs::read(path)
}

fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

impl Storage for EncryptedStorage {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn get(&self, key: &str) -> Result<Vec<u8>, StorageError> {
        let raw = self.inner.get(key)?;
        if !self.encrypts(key) {
            return Ok(raw);
        }
        let mut out = Vec::with_capacity(raw.len());
        // The reader borrows the stored bytes (no copy of the object).
        let mut reader = match self.open_reader(key, Box::new(&raw[..])) {
            Ok(r) => r,
            // A changed header can name a key that does not exist: when no
            // key opens it, its bytes against their digest tell damage apart.
            Err(StorageError::Encryption(e)) if e.needs_a_key() => {
                if let Err(reason) = check_ciphertext(&raw) {
                    return Err(encryption_error(CryptoError::Tampered {
                        what: format!("object \"{key}\""),
                        reason,
                    }));
                }
                return Err(StorageError::Encryption(e));
            }
            Err(e) => return Err(e),
        };
        reader
            .read_to_end(&mut out)
            .map_err(|e| read_error(key, &self.location(), e))?;
        Ok(out)
    }

    fn get_reader<'a>(&'a self, key: &str) -> Result<Box<dyn Read + Send + 'a>, StorageError> {
        let raw = self.inner.get_reader(key)?;
        if !self.encrypts(key) {
            return Ok(raw);
        }
        self.open_reader(key, raw)
    }

    fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StorageError> {
        self.inner.head(key)
    }

    fn put(&self, key: &str, data: &[u8], mode: PutMode) -> Result<(), StorageError> {
        if !self.encrypts(key) {
            return self.inner.put(key, data, mode);
        }
        self.encrypt_stream(key, &mut &data[..], mode).map(drop)
    }

    fn put_stream(
        &self,
        key: &str,
        body: &mut dyn Read,
        mode: PutMode,
    ) -> Result<u64, StorageError> {
        if !self.encrypts(key) {
            return self.inner.put_stream(key, body, mode);
        }
        self.encrypt_stream(key, body, mode)
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        self.inner.list(prefix)
    }

    fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.inner.delete(key)
    }

    fn remove_stale_temporaries(&self, prefix: &str) -> Result<usize, StorageError> {
        self.inner.remove_stale_temporaries(prefix)
    }

    fn retained_until(&self, key: &str) -> Result<Option<i64>, StorageError> {
        self.inner.retained_until(key)
    }

    fn lock_state(&self, key: &str) -> Result<Option<(String, Option<i64>)>, StorageError> {
        self.inner.lock_state(key)
    }

    fn hidden(&self, key: &str) -> Result<bool, StorageError> {
        self.inner.hidden(key)
    }

    fn lock_period(&self) -> Option<i64> {
        self.inner.lock_period()
    }

    fn extend_lock(&self, key: &str, until: i64) -> Result<bool, StorageError> {
        self.inner.extend_lock(key, until)
    }
}

/// The shared buffer an age writer writes into, drained by the reader.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// An object's encrypted form, as a reader over its plaintext (what
/// `put_stream` takes): the header, the age file, then the tail. Every
/// byte is hashed as it is produced.
struct EncryptReader<'b> {
    src: &'b mut dyn Read,
    writer: Option<super::ObjectWriter<Sink>>,
    sink: Sink,
    out: Vec<u8>,
    pos: usize,
    hasher: blake3::Hasher,
    mac: [u8; 32],
    /// The plaintext's first bytes (is it an envelope?) and last 32.
    first: Vec<u8>,
    last: Vec<u8>,
    digest_key: Option<[u8; 32]>,
    scratch: Vec<u8>,
    done: bool,
}

impl<'b> EncryptReader<'b> {
    fn new(
        key: &WriteKey,
        mac: [u8; 32],
        server: Option<&WriteKey>,
        name: &str,
        src: &'b mut dyn Read,
        digest_key: Option<[u8; 32]>,
    ) -> std::io::Result<EncryptReader<'b>> {
        let sink = Sink::default();
        let writer = match server {
            Some(s) => encrypt_object(&key.and(s), name, sink.clone())?,
            None => encrypt_object(key, name, sink.clone())?,
        };
        let len = |id: &str| u8::try_from(id.len()).map_err(std::io::Error::other);
        let mut out = Vec::with_capacity(256 << 10);
        out.extend_from_slice(&MAGIC);
        out.push(u8::from(server.is_some()));
        out.push(len(key.id())?);
        out.extend_from_slice(key.id().as_bytes());
        if let Some(s) = server {
            out.push(len(s.id())?);
            out.extend_from_slice(s.id().as_bytes());
        }
        let mut hasher = blake3::Hasher::new();
        hasher.update(&out);
        Ok(EncryptReader {
            src,
            writer: Some(writer),
            sink,
            out,
            pos: 0,
            hasher,
            mac,
            first: Vec::with_capacity(8),
            last: Vec::with_capacity(64),
            digest_key,
            scratch: vec![0u8; 256 << 10],
            done: false,
        })
    }

    /// Move what the age writer produced into `out`, hashed.
    fn take_sink(&mut self) {
        let mut s = self.sink.0.lock().unwrap_or_else(|p| p.into_inner());
        self.out.clear();
        self.pos = 0;
        std::mem::swap(&mut self.out, &mut s);
        drop(s);
        self.hasher.update(&self.out);
    }

    /// Refill `out`; false at the very end.
    fn refill(&mut self) -> std::io::Result<bool> {
        loop {
            if self.done {
                return Ok(false);
            }
            let n = match self.src.read(&mut self.scratch) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n > 0 {
                let Some(w) = self.writer.as_mut() else {
                    return Ok(false);
                };
                let chunk = &self.scratch[..n];
                if self.first.len() < 8 {
                    let k = (8 - self.first.len()).min(n);
                    self.first.extend_from_slice(&chunk[..k]);
                }
                self.last.extend_from_slice(&chunk[n.saturating_sub(32)..]);
                if self.last.len() > 32 {
                    self.last.drain(..self.last.len() - 32);
                }
                w.write_all(chunk)?;
                self.take_sink();
                if !self.out.is_empty() {
                    return Ok(true);
                }
                continue;
            }
            // The end: the last chunk, then the tail.
            if let Some(w) = self.writer.take() {
                w.finish()?;
            }
            self.take_sink();
            let body = self.hasher.clone().finalize();
            let mac = blake3::keyed_hash(&self.mac, body.as_bytes());
            let keyed = match (&self.digest_key, self.last.len() == 32) {
                (Some(dk), true)
                    if self.first.len() == 8
                        && self.first[..7] == ENVELOPE_PREFIX[..]
                        && self.first[7] == crate::repo::envelope::VERSION =>
                {
                    let mut c = [0u8; 32];
                    c.copy_from_slice(&self.last);
                    keyed_digest(dk, &c)
                }
                _ => [0u8; 32],
            };
            let mut tail = Vec::with_capacity(TAIL);
            tail.extend_from_slice(mac.as_bytes());
            tail.extend_from_slice(&keyed);
            self.hasher.update(&tail);
            tail.extend_from_slice(self.hasher.finalize().as_bytes());
            self.out.extend_from_slice(&tail);
            self.done = true;
            return Ok(true);
        }
    }
}

impl Read for EncryptReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos >= self.out.len() {
            if !self.refill()? {
                return Ok(0);
            }
        }
        let n = (self.out.len() - self.pos).min(buf.len());
        buf[..n].copy_from_slice(&self.out[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// The age file of a stored object: everything but the last [`TAIL`]
/// bytes, which are held back and checked at the end: the MAC (when the
/// reader has the data key) and the ciphertext digest, the BLAKE3 of every
/// byte before it.
struct TailHeld<'a> {
    inner: Box<dyn Read + Send + 'a>,
    hasher: blake3::Hasher,
    held: Vec<u8>,
    scratch: Vec<u8>,
    eof: bool,
    what: String,
    mac: Option<[u8; 32]>,
}

impl TailHeld<'_> {
    fn tail_error(&self, reason: &str) -> std::io::Error {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            CryptoError::Tampered {
                what: format!("object \"{}\"", self.what),
                reason: reason.into(),
            },
        )
    }
}

impl Read for TailHeld<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if self.held.len() > TAIL {
                let n = (self.held.len() - TAIL).min(out.len());
                out[..n].copy_from_slice(&self.held[..n]);
                self.hasher.update(&self.held[..n]);
                self.held.drain(..n);
                return Ok(n);
            }
            if self.eof {
                return Ok(0);
            }
            let n = match self.inner.read(&mut self.scratch) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                self.eof = true;
                if self.held.len() != TAIL {
                    return Err(self.tail_error("it is cut short"));
                }
                if let Some(key) = &self.mac {
                    let body = self.hasher.clone().finalize();
                    let want = blake3::keyed_hash(key, body.as_bytes());
                    // blake3::Hash compares in constant time.
                    if want
                        != blake3::Hash::from_slice(&self.held[..32])
                            .map_err(std::io::Error::other)?
                    {
                        return Err(self.tail_error(
                            "its MAC does not match: it was not written with its data key",
                        ));
                    }
                }
                self.hasher.update(&self.held[..64]);
                if self.hasher.finalize().as_bytes()[..] != self.held[64..] {
                    return Err(self.tail_error("its stored bytes differ from their digest"));
                }
                return Ok(0);
            }
            self.held.extend_from_slice(&self.scratch[..n]);
        }
    }
}

#[cfg(test)]
mod tests;
