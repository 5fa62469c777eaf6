//! Keys for encrypted repositories (issue 24), in the `age` format: the
//! pieces the repository's encryption is built from, before it is wired
//! into the stores.
//!
//! The design, so that rotation never rewrites a data object and the
//! server never needs a private key to write:
//! - The user's keys are age X25519 keys. *Recipients* (public keys, `age1…`)
//!   are what the server encrypts to; *identities* (`AGE-SECRET-KEY-1…`,
//!   optionally in a passphrase-protected age file) are what restores,
//!   drills and deep verification decrypt with.
//! - Data objects are not encrypted to the user's recipients directly. Each
//!   backup (and each span of WAL) gets a **data key**: an X25519 key pair
//!   the server generates. Data objects are age files encrypted to the data
//!   key's public half. The secret half is wrapped, itself as an age file
//!   encrypted to the user's recipients, into a small **key object**, and
//!   then forgotten.
//! - A restore unwraps the key object with the user's identity, then reads
//!   the data objects with the data key. Rotation (`pg_ark rekey`) writes
//!   new key objects that wrap the same data keys to new recipients; the
//!   data objects are never rewritten.
//! - Everything is the `age` format and the reviewed `age` crate: no
//!   construction of pg_ark's own. A key object's `wrapped` field is an age
//!   file, and so is a data object's payload, so the standard `age` command
//!   line can read both as a last resort.
//! - age headers do not name their recipients, so a key object records the
//!   fingerprints of the recipients it was wrapped to, and an error can say
//!   which key an object needs.
//! - A data key's id is the fingerprint of its public half: a key object
//!   whose wrapped key does not match its id is refused, so a key object
//!   cannot be swapped for another.
//! - A key object's `recipient`, `key_id` and `wrapped_to` are not
//!   authenticated by anything but the wrapped key a restore checks them
//!   against. So a writer encrypts only to a [`DataKey`] it generated and
//!   kept, never to a recipient read back from the repository (whoever can
//!   write there could put their own key in it).
//! - Anyone can encrypt to a data key's public half, so each object's
//!   plaintext starts with a line naming the object (`pg_ark-object
//!   <name>`), checked on read: an object cannot be replaced by another
//!   encrypted to the same key, or moved under another name.
use age::secrecy::{ExposeSecret, SecretString};
use age::x25519;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::str::FromStr;

/// The format of key objects this pg_ark writes and reads.
pub const KEY_OBJECT_FORMAT: u32 = 1;

/// What can go wrong with keys, each error naming what it is about and
/// never containing a secret.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("the recipients file has no recipient (age1... public keys, one per line)")]
    NoRecipients,
    #[error(
        "line {line} of the recipients file is not an age X25519 recipient (age1...): {reason}"
    )]
    BadRecipient { line: usize, reason: String },
    #[error("the identity file has no identity (AGE-SECRET-KEY-1... lines)")]
    NoIdentities,
    #[error("line {line} of the identity file is not an age X25519 identity")]
    BadIdentity { line: usize },
    #[error(
        "the identity file is protected by a passphrase; give it (PG_ARK_IDENTITY_PASSPHRASE)"
    )]
    PassphraseNeeded,
    #[error("the identity file could not be opened with the passphrase given: {reason}")]
    WrongPassphrase { reason: String },
    #[error("{what} needs one of the keys {needs:?}; the identities given are {have:?}")]
    NoMatchingIdentity {
        what: String,
        needs: Vec<String>,
        have: Vec<String>,
    },
    #[error("{what} failed authentication: it was changed or damaged ({reason})")]
    Tampered { what: String, reason: String },
    #[error("{what} is not encrypted (not an age file): {reason}")]
    NotEncrypted { what: String, reason: String },
    #[error("{what} is encrypted to data key {key}, and no identity was given to open it (its key objects are wrapped to {needs:?})")]
    IdentityNeeded {
        what: String,
        key: String,
        needs: Vec<String>,
    },
    #[error(
        "{what} is encrypted to data key {key}, which has no key object in the repository ({dir})"
    )]
    NoKeyObject {
        what: String,
        key: String,
        dir: String,
    },
    #[error("the repository is encrypted, and no recipients are set to encrypt {what} to")]
    RecipientsNeeded { what: String },
    #[error("{what} is not a pg_ark key object: {reason}")]
    BadKeyObject { what: String, reason: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl CryptoError {
    /// Whether it is a key that is missing (an identity, a matching one, a
    /// key object, recipients), not damage.
    pub fn needs_a_key(&self) -> bool {
        matches!(
            self,
            CryptoError::IdentityNeeded { .. }
                | CryptoError::NoMatchingIdentity { .. }
                | CryptoError::NoKeyObject { .. }
                | CryptoError::RecipientsNeeded { .. }
                | CryptoError::PassphraseNeeded
        )
    }
}

/// What the user can do about `e`.
pub fn hint(e: &CryptoError) -> Option<String> {
    Some(match e {
        CryptoError::IdentityNeeded { .. } => {
            "Give an identity file holding one of the keys named: \
             ark.encryption_identity_file on the server, --identity-file or PG_ARK_IDENTITY_FILE \
             for pg_ark."
                .into()
        }
        CryptoError::NoMatchingIdentity { .. } => "Use an identity file holding one of the keys \
             named (the escrow key will do). After pg_ark rekey, the new identity opens old \
             backups too."
            .into(),
        CryptoError::Tampered { .. } => "Do not use this object: it was changed or damaged after \
             pg_ark wrote it. Check the storage, and who can write to the repository."
            .into(),
        CryptoError::NotEncrypted { .. } => {
            "An encrypted repository holds only encrypted objects: \
             this one was put there by something else than pg_ark."
                .into()
        }
        CryptoError::RecipientsNeeded { .. } => "Set ark.encryption_recipients_file (pg_ark: \
             --recipients-file) to the file of the repository's recipients (age1... public keys)."
            .into(),
        CryptoError::NoKeyObject { .. } => "The data key's key objects were removed: restore them \
             from a copy of the repository. Without one, what the key encrypts cannot be read."
            .into(),
        CryptoError::PassphraseNeeded | CryptoError::WrongPassphrase { .. } => {
            "Set PG_ARK_IDENTITY_PASSPHRASE in the environment of the process that opens the \
             identity file."
                .into()
        }
        _ => return None,
    })
}

/// The fingerprint pg_ark shows for an age X25519 recipient: `age:` and the
/// first 16 hex digits of the SHA-256 of its `age1…` form. It names a key
/// without being one.
pub fn fingerprint(r: &x25519::Recipient) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(r.to_string().as_bytes());
    let hex: String = d.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("age:{hex}")
}

fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
}

/// The recipients the server encrypts to (`ark.encryption_recipients_file`).
#[derive(Clone)]
pub struct Recipients {
    list: Vec<x25519::Recipient>,
}

impl Recipients {
    /// A recipients file: `age1…` public keys, one per line; `#` comments
    /// and blank lines are skipped.
    pub fn parse(text: &str) -> Result<Recipients, CryptoError> {
        let mut list = Vec::new();
        for (line, l) in lines(text) {
            let r = x25519::Recipient::from_str(l).map_err(|reason| CryptoError::BadRecipient {
                line,
                reason: reason.to_string(),
            })?;
            list.push(r);
        }
        if list.is_empty() {
            return Err(CryptoError::NoRecipients);
        }
        Ok(Recipients { list })
    }

    /// Their fingerprints, in the file's order.
    pub fn fingerprints(&self) -> Vec<String> {
        self.list.iter().map(fingerprint).collect()
    }
}

/// The identities that decrypt (`ark.encryption_identity_file`, the CLI's
/// `--identity`).
pub struct Identities {
    list: Vec<x25519::Identity>,
}

impl Identities {
    /// An identity file: `AGE-SECRET-KEY-1…` lines (what `age-keygen`
    /// writes; comments and blank lines skipped), or such a file encrypted
    /// with a passphrase by `age -p`, binary or armored, opened with
    /// `passphrase`.
    pub fn parse(bytes: &[u8], passphrase: Option<&str>) -> Result<Identities, CryptoError> {
        let armored = bytes.starts_with(b"-----BEGIN AGE ENCRYPTED FILE-----");
        let binary = bytes.starts_with(b"age-encryption.org/");
        // The identities' text is wiped when dropped.
        let text: SecretString = if armored || binary {
            let Some(pass) = passphrase else {
                return Err(CryptoError::PassphraseNeeded);
            };
            let wrong = |reason: String| CryptoError::WrongPassphrase { reason };
            let reader = age::armor::ArmoredReader::new(bytes);
            let decryptor = age::Decryptor::new(reader).map_err(|e| wrong(e.to_string()))?;
            let mut id = age::scrypt::Identity::new(SecretString::from(pass.to_string()));
            // Work factors up to 2^20 (about 1 GiB of memory for scrypt on
            // the host that opens it); `age -p` uses 2^18.
            id.set_max_work_factor(20);
            let mut plain = String::new();
            let read = decryptor
                .decrypt(std::iter::once(&id as &dyn age::Identity))
                .map_err(|e| wrong(e.to_string()))?
                .read_to_string(&mut plain);
            let plain = SecretString::from(plain);
            read.map_err(|e| wrong(e.to_string()))?;
            plain
        } else {
            SecretString::from(String::from_utf8_lossy(bytes).into_owned())
        };
        let mut list = Vec::new();
        for (line, l) in lines(text.expose_secret()) {
            list.push(
                x25519::Identity::from_str(l).map_err(|_| CryptoError::BadIdentity { line })?,
            );
        }
        if list.is_empty() {
            return Err(CryptoError::NoIdentities);
        }
        Ok(Identities { list })
    }

    /// The fingerprints of their public halves.
    pub fn fingerprints(&self) -> Vec<String> {
        self.list
            .iter()
            .map(|i| fingerprint(&i.to_public()))
            .collect()
    }

    fn as_dyn(&self) -> impl Iterator<Item = &dyn age::Identity> {
        self.list.iter().map(|i| i as &dyn age::Identity)
    }
}

/// A data key: the X25519 key pair data objects are encrypted to. Its id is
/// its public half's fingerprint.
pub struct DataKey {
    identity: x25519::Identity,
}

impl DataKey {
    /// A new, random data key.
    pub fn generate() -> DataKey {
        DataKey {
            identity: x25519::Identity::generate(),
        }
    }

    /// The public half, which the server encrypts data objects to.
    pub fn recipient(&self) -> x25519::Recipient {
        self.identity.to_public()
    }

    /// The key's id (its public half's fingerprint).
    pub fn id(&self) -> String {
        fingerprint(&self.recipient())
    }

    /// A key object holding this key, wrapped to `to`.
    pub fn wrap(&self, to: &Recipients) -> Result<KeyObject, CryptoError> {
        let secret = self.identity.to_string();
        let wrapped = encrypt_bytes(
            to.list.iter().map(|r| r as &dyn age::Recipient),
            secret.expose_secret().as_bytes(),
        )
        .map_err(|source| CryptoError::Io {
            what: format!("wrapping data key {}", self.id()),
            source,
        })?;
        use base64::Engine;
        Ok(KeyObject {
            format: KEY_OBJECT_FORMAT,
            key_id: self.id(),
            recipient: self.recipient().to_string(),
            wrapped_to: to.fingerprints(),
            wrapped: base64::engine::general_purpose::STANDARD.encode(wrapped),
        })
    }
}

fn encrypt_bytes<'a>(
    to: impl Iterator<Item = &'a dyn age::Recipient>,
    plain: &[u8],
) -> std::io::Result<Vec<u8>> {
    let enc = age::Encryptor::with_recipients(to).map_err(std::io::Error::other)?;
    let mut out = Vec::new();
    let mut w = enc.wrap_output(&mut out)?;
    w.write_all(plain)?;
    w.finish()?;
    Ok(out)
}

/// A data key wrapped to the user's recipients: a small JSON object stored
/// beside what the key encrypts. `recipient` (the data key's public half)
/// lets a server encrypt more data to the same key without unwrapping it;
/// `wrapped` is an age file (base64) whose plaintext is the data key's
/// `AGE-SECRET-KEY-1…` line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyObject {
    pub format: u32,
    pub key_id: String,
    pub recipient: String,
    /// Fingerprints of the recipients `wrapped` was encrypted to.
    pub wrapped_to: Vec<String>,
    pub wrapped: String,
}

impl KeyObject {
    /// The data key, unwrapped with `ids`. `what` names the key object in
    /// errors.
    pub fn unwrap(&self, what: &str, ids: &Identities) -> Result<DataKey, CryptoError> {
        let bad = |reason: String| CryptoError::BadKeyObject {
            what: what.to_string(),
            reason,
        };
        if self.format != KEY_OBJECT_FORMAT {
            return Err(bad(format!(
                "format {} (this pg_ark reads format {KEY_OBJECT_FORMAT})",
                self.format
            )));
        }
        use base64::Engine;
        let wrapped = base64::engine::general_purpose::STANDARD
            .decode(&self.wrapped)
            .map_err(|e| bad(format!("wrapped is not base64: {e}")))?;
        let decryptor = age::Decryptor::new_buffered(&wrapped[..])
            .map_err(|e| bad(format!("wrapped is not an age file: {e}")))?;
        let mut secret = String::new();
        match decryptor.decrypt(ids.as_dyn()) {
            Ok(mut r) => {
                let read = r.read_to_string(&mut secret);
                read.map_err(|e| CryptoError::Tampered {
                    what: what.to_string(),
                    reason: e.to_string(),
                })?;
            }
            // age reports a stanza that fails authentication as "not
            // mine": with one of the keys it was wrapped to at hand, that
            // is damage, not a wrong key.
            Err(age::DecryptError::NoMatchingKeys)
                if ids
                    .fingerprints()
                    .iter()
                    .any(|f| self.wrapped_to.contains(f)) =>
            {
                return Err(CryptoError::Tampered {
                    what: what.to_string(),
                    reason: "no identity given opens it, though one of them is a key it names"
                        .into(),
                })
            }
            Err(age::DecryptError::NoMatchingKeys) => {
                return Err(CryptoError::NoMatchingIdentity {
                    what: what.to_string(),
                    needs: self.wrapped_to.clone(),
                    have: ids.fingerprints(),
                })
            }
            Err(e) => {
                return Err(CryptoError::Tampered {
                    what: what.to_string(),
                    reason: e.to_string(),
                })
            }
        };
        let secret = SecretString::from(secret);
        let identity = x25519::Identity::from_str(secret.expose_secret().trim())
            .map_err(|_| bad("its wrapped key is not an age identity".into()))?;
        let key = DataKey { identity };
        if key.id() != self.key_id || key.recipient().to_string() != self.recipient {
            return Err(bad(format!(
                "it names key {} but holds key {}",
                self.key_id,
                key.id()
            )));
        }
        Ok(key)
    }

    /// The same data key wrapped to `to` instead (rotation): unwrapped with
    /// `ids`, wrapped again. The data it encrypts is not touched.
    pub fn rewrap(
        &self,
        what: &str,
        ids: &Identities,
        to: &Recipients,
    ) -> Result<KeyObject, CryptoError> {
        self.unwrap(what, ids)?.wrap(to)
    }
}

/// The first line of every data object's plaintext.
fn object_line(name: &str) -> String {
    format!("pg_ark-object {name}\n")
}

/// An object being encrypted: `finish` ends it (the last chunk, then a
/// flush). An object whose writer is dropped without `finish` is
/// truncated, which every reader refuses.
pub struct ObjectWriter<W: Write> {
    inner: age::stream::StreamWriter<W>,
}

impl<W: Write> Write for ObjectWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Write> ObjectWriter<W> {
    /// Write the last chunk and flush; the writer back.
    pub fn finish(self) -> std::io::Result<W> {
        let mut w = self.inner.finish()?;
        w.flush()?;
        Ok(w)
    }
}

/// What a writer keeps of a data key once it is wrapped: its public half
/// and id, enough to encrypt more objects to it. The secret half is gone.
#[derive(Clone)]
pub struct WriteKey {
    recipient: x25519::Recipient,
    id: String,
    /// Another key each object is encrypted to as well.
    also: Option<x25519::Recipient>,
}

impl WriteKey {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// This key, with objects encrypted to `other`'s public half as well.
    pub fn and(&self, other: &WriteKey) -> WriteKey {
        WriteKey {
            also: Some(other.recipient.clone()),
            ..self.clone()
        }
    }
}

impl DataKey {
    /// What a writer keeps of this key: the public half only.
    pub fn write_key(&self) -> WriteKey {
        WriteKey {
            recipient: self.recipient(),
            id: self.id(),
            also: None,
        }
    }

    /// The key in age's text form (`AGE-SECRET-KEY-1…`), to keep in a file.
    pub fn to_text(&self) -> SecretString {
        self.identity.to_string()
    }

    /// A key kept in a file by [`DataKey::to_text`].
    pub fn from_text(text: &str) -> Result<DataKey, CryptoError> {
        let identity = x25519::Identity::from_str(text.trim())
            .map_err(|_| CryptoError::BadIdentity { line: 1 })?;
        Ok(DataKey { identity })
    }
}

/// Encrypt object `name`, as written to the result, to `key`: one the
/// writer generated and kept, never a recipient read from the repository.
pub fn encrypt_object<W: Write>(
    key: &WriteKey,
    name: &str,
    out: W,
) -> std::io::Result<ObjectWriter<W>> {
    let to = std::iter::once(&key.recipient)
        .chain(key.also.as_ref())
        .map(|r| r as &dyn age::Recipient);
    let mut inner = age::Encryptor::with_recipients(to)
        .map_err(std::io::Error::other)?
        .wrap_output(out)?;
    inner.write_all(object_line(name).as_bytes())?;
    Ok(ObjectWriter { inner })
}

/// An object being decrypted. Every failure of the age layer (a changed
/// byte, a cut anywhere, at a chunk's end too) is an error of kind
/// `InvalidData` whose message is [`CryptoError::Tampered`] naming the
/// object; the end is reported only once the last chunk authenticated, so
/// read it to the end: a reader that stops early has not seen that check.
pub struct ObjectReader<R: Read> {
    inner: age::stream::StreamReader<Peeked<R>>,
    what: String,
}

/// The start of every age file.
const AGE_MAGIC: &[u8; 21] = b"age-encryption.org/v1";

/// An input whose first bytes were read to see what it is, put back.
pub type Peeked<R> = std::io::Chain<std::io::Cursor<[u8; 21]>, R>;

impl<R: Read> Read for ObjectReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf).map_err(|e| {
            // A storage stream that broke off is the storage's failure
            // (perhaps transient), not damage.
            if crate::storage::StorageError::of_io(&e).is_some() {
                return e;
            }
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                CryptoError::Tampered {
                    what: self.what.clone(),
                    reason: e.to_string(),
                },
            )
        })
    }
}

/// Decrypt object `name` with `key`, checking that it is that object.
pub fn decrypt_object<R: Read>(
    key: &DataKey,
    name: &str,
    input: R,
) -> Result<ObjectReader<R>, CryptoError> {
    let tampered = |reason: String| CryptoError::Tampered {
        what: name.to_string(),
        reason,
    };
    // Not an age file at all (a plaintext object in an encrypted
    // repository) is told apart from a damaged one.
    let mut input = input;
    let mut head = [0u8; 21];
    match input.read_exact(&mut head) {
        Ok(()) if &head == AGE_MAGIC => {}
        Ok(()) => {
            return Err(CryptoError::NotEncrypted {
                what: name.to_string(),
                reason: "it does not start as an age file".into(),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(CryptoError::NotEncrypted {
                what: name.to_string(),
                reason: "it is shorter than an age header".into(),
            })
        }
        Err(source) => {
            return Err(CryptoError::Io {
                what: name.to_string(),
                source,
            })
        }
    }
    let input = std::io::Cursor::new(head).chain(input);
    let d = match age::Decryptor::new(input) {
        Ok(d) => d,
        Err(age::DecryptError::Io(source)) => {
            return Err(CryptoError::Io {
                what: name.to_string(),
                source,
            })
        }
        Err(e) => return Err(tampered(e.to_string())),
    };
    let inner = match d.decrypt(std::iter::once(&key.identity as &dyn age::Identity)) {
        Ok(r) => r,
        // The key is the one the object's key object names: a stanza it
        // does not open was changed, or the object was encrypted to
        // another key.
        Err(age::DecryptError::NoMatchingKeys) => {
            return Err(tampered(format!(
                "it is not encrypted to its key {}",
                key.id()
            )))
        }
        Err(age::DecryptError::Io(source)) => {
            return Err(CryptoError::Io {
                what: name.to_string(),
                source,
            })
        }
        Err(e) => return Err(tampered(e.to_string())),
    };
    let mut r = ObjectReader {
        inner,
        what: name.to_string(),
    };
    // Its first line names it.
    let want = object_line(name);
    let mut got = Vec::with_capacity(want.len());
    let mut byte = [0u8; 1];
    while got.len() < want.len() && got.last() != Some(&b'\n') {
        match r.read(&mut byte) {
            Ok(0) => break,
            Ok(_) => got.push(byte[0]),
            // The storage's own failure (a stream that broke off).
            Err(e) if crate::storage::StorageError::of_io(&e).is_some() => {
                return Err(CryptoError::Io {
                    what: name.to_string(),
                    source: e,
                })
            }
            Err(e) => return Err(tampered(format!("its first line could not be read: {e}"))),
        }
    }
    if got != want.as_bytes() {
        return Err(tampered(format!(
            "it is another object ({:?}, not {:?})",
            String::from_utf8_lossy(&got).trim_end(),
            want.trim_end()
        )));
    }
    Ok(r)
}

pub mod layer;

#[cfg(test)]
mod tests;
