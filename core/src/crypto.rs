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
    #[error("{what} is not a pg_ark key object: {reason}")]
    BadKeyObject { what: String, reason: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
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
        let text = if armored || binary {
            let Some(pass) = passphrase else {
                return Err(CryptoError::PassphraseNeeded);
            };
            let wrong = |reason: String| CryptoError::WrongPassphrase { reason };
            let reader = age::armor::ArmoredReader::new(bytes);
            let decryptor = age::Decryptor::new(reader).map_err(|e| wrong(e.to_string()))?;
            let mut id = age::scrypt::Identity::new(SecretString::from(pass.to_string()));
            // An identity file is the user's own: allow the work factor
            // `age -p` picks on a slow machine.
            id.set_max_work_factor(22);
            let mut plain = String::new();
            decryptor
                .decrypt(std::iter::once(&id as &dyn age::Identity))
                .map_err(|e| wrong(e.to_string()))?
                .read_to_string(&mut plain)
                .map_err(|e| wrong(e.to_string()))?;
            plain
        } else {
            String::from_utf8_lossy(bytes).into_owned()
        };
        let mut list = Vec::new();
        for (line, l) in lines(&text) {
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
            Ok(mut r) => r
                .read_to_string(&mut secret)
                .map_err(|e| CryptoError::Tampered {
                    what: what.to_string(),
                    reason: e.to_string(),
                })?,
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
        let identity = x25519::Identity::from_str(secret.trim())
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

/// Encrypt what is written to `out` to the data key whose public half is
/// `to` (`recipient` of its key object); call `finish` at the end.
pub fn encrypt_to<W: Write>(
    to: &x25519::Recipient,
    out: W,
) -> std::io::Result<age::stream::StreamWriter<W>> {
    age::Encryptor::with_recipients(std::iter::once(to as &dyn age::Recipient))
        .map_err(std::io::Error::other)?
        .wrap_output(out)
}

/// The public half of a key object's data key, to encrypt to.
pub fn recipient_of(key: &KeyObject, what: &str) -> Result<x25519::Recipient, CryptoError> {
    x25519::Recipient::from_str(&key.recipient).map_err(|e| CryptoError::BadKeyObject {
        what: what.to_string(),
        reason: format!("its recipient is not an age recipient: {e}"),
    })
}

/// Decrypt `input`, an age file encrypted to `key`. A damaged or changed
/// byte fails authentication when the chunk holding it is read (as an I/O
/// error of kind `InvalidData` from the reader); `what` names the object.
pub fn decrypt_with<R: Read>(
    key: &DataKey,
    what: &str,
    input: R,
) -> Result<age::stream::StreamReader<R>, CryptoError> {
    let d = age::Decryptor::new(input).map_err(|e| CryptoError::Tampered {
        what: what.to_string(),
        reason: e.to_string(),
    })?;
    d.decrypt(std::iter::once(&key.identity as &dyn age::Identity))
        .map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => CryptoError::NoMatchingIdentity {
                what: what.to_string(),
                needs: vec!["another data key".into()],
                have: vec![key.id()],
            },
            e => CryptoError::Tampered {
                what: what.to_string(),
                reason: e.to_string(),
            },
        })
}

#[cfg(test)]
mod tests;
