use super::*;
use crate::repo::compress::Compression;
use crate::repo::envelope;
use crate::storage::local::LocalStorage;
use age::secrecy::ExposeSecret;
use age::x25519;

const WAL: &str = "clusters/42/wal/0000000100000000/000000010000000000000001";
const MARKER: &[u8] = b"MARKER-7f3c-secret-row";

struct Keyset {
    ids_text: String,
    recipients_text: String,
}

fn keyset() -> Keyset {
    let i = x25519::Identity::generate();
    Keyset {
        ids_text: format!("{}\n", i.to_string().expose_secret()),
        recipients_text: format!("{}\n", i.to_public()),
    }
}

fn writer_keys(k: &Keyset, digest: Option<[u8; 32]>) -> Keys {
    Keys {
        recipients: Some(Recipients::parse(&k.recipients_text).unwrap()),
        identities: None,
        digest_key: digest,
        server_key: None,
    }
}

fn reader_keys(k: &Keyset) -> Keys {
    Keys {
        recipients: None,
        identities: Some(Arc::new(
            Identities::parse(k.ids_text.as_bytes(), None).unwrap(),
        )),
        digest_key: None,
        server_key: None,
    }
}

fn local(dir: &std::path::Path) -> Box<dyn Storage> {
    Box::new(LocalStorage::open(dir).unwrap())
}

fn content() -> Vec<u8> {
    let mut v = Vec::new();
    for i in 0..40_000u32 {
        v.extend_from_slice(&i.to_le_bytes());
        v.extend_from_slice(MARKER);
    }
    v
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn err_of<T>(r: Result<T, StorageError>) -> CryptoError {
    match r {
        Err(StorageError::Encryption(e)) => *e,
        Err(e) => panic!("another error: {e}"),
        Ok(_) => panic!("no error"),
    }
}

#[test]
fn objects_round_trip_encrypted_and_metadata_stays_clear() {
    let dir = tempfile::tempdir().unwrap();
    let k = keyset();
    let w = EncryptedStorage::new(local(dir.path()), writer_keys(&k, None));
    let data = content();
    let sealed = envelope::seal(&data, Compression::None, 0).unwrap();
    w.put(WAL, &sealed, PutMode::Create).unwrap();
    let dump = "clusters/42/logical/db/L/dump.sql";
    let stored = w.put_stream(dump, &mut &data[..], PutMode::Create).unwrap();
    let info = "clusters/42/logical/db/L/backup.info";
    w.put(info, b"{\"database\":\"db\"}", PutMode::Create)
        .unwrap();

    let raw = local(dir.path());
    // Nothing of the content in the stored bytes; the metadata as written.
    for key in [WAL, dump] {
        let bytes = raw.get(key).unwrap();
        assert!(bytes.starts_with(&MAGIC), "{key}");
        assert!(!contains(&bytes, MARKER), "{key} holds the marker");
    }
    assert_eq!(raw.head(dump).unwrap().unwrap().size, stored);
    assert_eq!(raw.get(info).unwrap(), b"{\"database\":\"db\"}");
    // One data key for this writer, its key object in the clear.
    let keys = raw.list("keys/").unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let ko: KeyObject = serde_json::from_slice(&raw.get(&keys[0].key).unwrap()).unwrap();
    assert_eq!(
        keys[0].key,
        format!("{}000001", layout::key_objects(&ko.key_id))
    );

    // A writer without an identity cannot read back.
    let e = err_of(w.get(WAL));
    assert!(matches!(e, CryptoError::IdentityNeeded { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains(WAL) && msg.contains(&ko.key_id), "{msg}");

    let r = EncryptedStorage::new(local(dir.path()), reader_keys(&k));
    assert_eq!(r.get(WAL).unwrap(), sealed);
    let mut streamed = Vec::new();
    r.get_reader(dump)
        .unwrap()
        .read_to_end(&mut streamed)
        .unwrap();
    assert_eq!(streamed, data);
    assert_eq!(r.get(info).unwrap(), b"{\"database\":\"db\"}");
    // Without any key, the stored bytes are checked.
    let none = EncryptedStorage::new(local(dir.path()), Keys::default());
    assert_eq!(none.check_stored(WAL).unwrap(), Ok(ko.key_id.clone()));
    // Age can read it as a last resort: after the header, up to the tail.
    let bytes = raw.get(WAL).unwrap();
    let age_file = &bytes[10 + 20..bytes.len() - 96];
    let ids = Identities::parse(k.ids_text.as_bytes(), None).unwrap();
    let key = ko.unwrap("k", &ids).unwrap();
    let mut plain = Vec::new();
    decrypt_object(&key, WAL, age_file)
        .unwrap()
        .read_to_end(&mut plain)
        .unwrap();
    assert_eq!(plain, sealed);
}

#[test]
fn a_wrong_identity_is_refused_naming_the_object_and_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (k, other) = (keyset(), keyset());
    let w = EncryptedStorage::new(local(dir.path()), writer_keys(&k, None));
    w.put(WAL, b"PGARK\0\0\x02 something", PutMode::Create)
        .unwrap();
    let r = EncryptedStorage::new(local(dir.path()), reader_keys(&other));
    let e = err_of(r.get(WAL));
    let want = Recipients::parse(&k.recipients_text)
        .unwrap()
        .fingerprints();
    match &e {
        CryptoError::NoMatchingIdentity { what, needs, .. } => {
            assert!(what.contains(WAL), "{what}");
            assert_eq!(needs, &want);
        }
        other => panic!("{other}"),
    }
}

#[test]
fn every_changed_byte_moved_object_or_clear_object_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let k = keyset();
    let w = EncryptedStorage::new(local(dir.path()), writer_keys(&k, None));
    let sealed = envelope::seal(&content(), Compression::Zstd, 1).unwrap();
    w.put(WAL, &sealed, PutMode::Create).unwrap();
    let raw = local(dir.path());
    let good = raw.get(WAL).unwrap();
    let r = EncryptedStorage::new(local(dir.path()), reader_keys(&k));
    let none = EncryptedStorage::new(local(dir.path()), Keys::default());
    // A byte of the age file, of the keyed digest, of the final digest.
    for at in [40, good.len() / 2, good.len() - 40, good.len() - 1] {
        let mut bad = good.clone();
        bad[at] ^= 0x20;
        raw.put(WAL, &bad, PutMode::Overwrite).unwrap();
        let e = err_of(r.get(WAL));
        assert!(matches!(e, CryptoError::Tampered { .. }), "byte {at}: {e}");
        assert!(e.to_string().contains(WAL), "{e}");
        let mut out = Vec::new();
        let streamed = r.get_reader(WAL).and_then(|mut s| {
            s.read_to_end(&mut out)
                .map_err(|e| read_error(WAL, "here", e))
        });
        assert!(
            matches!(err_of(streamed), CryptoError::Tampered { .. }),
            "byte {at}"
        );
        assert!(
            none.check_stored(WAL).unwrap().is_err(),
            "byte {at} passed the check without a key"
        );
    }
    // Cut short.
    raw.put(WAL, &good[..good.len() - 70], PutMode::Overwrite)
        .unwrap();
    assert!(matches!(err_of(r.get(WAL)), CryptoError::Tampered { .. }));
    // Moved under another name.
    let other = "clusters/42/wal/0000000100000000/000000010000000000000002";
    raw.put(other, &good, PutMode::Create).unwrap();
    let e = err_of(r.get(other));
    assert!(e.to_string().contains("another object"), "{e}");
    // A clear object where an encrypted one belongs.
    raw.put(WAL, &sealed, PutMode::Overwrite).unwrap();
    let e = err_of(r.get(WAL));
    assert!(matches!(e, CryptoError::NotEncrypted { .. }), "{e}");
    assert!(e.to_string().contains("in the clear"), "{e}");
}

#[test]
fn the_archiver_compares_without_the_private_key() {
    let dir = tempfile::tempdir().unwrap();
    let digest_dir = tempfile::tempdir().unwrap();
    let k = keyset();
    let dk =
        load_or_create_digest_key(&digest_dir.path().join("pg_ark/archive_digest.key")).unwrap();
    // The same key on the next load.
    assert_eq!(
        load_or_create_digest_key(&digest_dir.path().join("pg_ark/archive_digest.key")).unwrap(),
        dk
    );
    let w = EncryptedStorage::new(local(dir.path()), writer_keys(&k, Some(dk)));
    let data = content();
    w.put(
        WAL,
        &envelope::seal(&data, Compression::Zstd, 1).unwrap(),
        PutMode::Create,
    )
    .unwrap();
    let same = *blake3::hash(&data).as_bytes();
    let other = *blake3::hash(b"other").as_bytes();
    assert!(matches!(w.compare(WAL, &same).unwrap(), Compared::Same));
    assert!(matches!(w.compare(WAL, &other).unwrap(), Compared::Differs));
    // Another server's digest key, without an identity: no verdict.
    let stranger = EncryptedStorage::new(local(dir.path()), writer_keys(&k, Some([7; 32])));
    assert!(matches!(
        err_of(stranger.compare(WAL, &same)),
        CryptoError::IdentityNeeded { .. }
    ));
    // With an identity, by content.
    let mut keys = reader_keys(&k);
    keys.digest_key = Some([7; 32]);
    let reader = EncryptedStorage::new(local(dir.path()), keys);
    match reader.compare(WAL, &same).unwrap() {
        Compared::Decrypted(obj) => assert_eq!(envelope::open(&obj).unwrap().1, data),
        other => panic!("{other:?}"),
    }
    // Damaged stored bytes.
    let raw = local(dir.path());
    let mut bad = raw.get(WAL).unwrap();
    bad[50] ^= 1;
    raw.put(WAL, &bad, PutMode::Overwrite).unwrap();
    assert!(matches!(
        w.compare(WAL, &same).unwrap(),
        Compared::Damaged(_)
    ));
}

#[test]
fn a_new_generation_of_key_objects_opens_old_data_with_a_new_identity() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (keyset(), keyset());
    let w = EncryptedStorage::new(local(dir.path()), writer_keys(&old, None));
    w.put(WAL, b"PGARK\0\0\x02 data", PutMode::Create).unwrap();
    let raw = local(dir.path());
    let ko_key = raw.list("keys/").unwrap()[0].key.clone();
    let ko: KeyObject = serde_json::from_slice(&raw.get(&ko_key).unwrap()).unwrap();
    let old_ids = Identities::parse(old.ids_text.as_bytes(), None).unwrap();
    let next = ko
        .rewrap(
            "k",
            &old_ids,
            &Recipients::parse(&new.recipients_text).unwrap(),
        )
        .unwrap();
    let next_key = ko_key.replace("000001", "000002");
    raw.put(
        &next_key,
        &serde_json::to_vec(&next).unwrap(),
        PutMode::Create,
    )
    .unwrap();
    let r = EncryptedStorage::new(local(dir.path()), reader_keys(&new));
    assert_eq!(r.get(WAL).unwrap(), b"PGARK\0\0\x02 data");
    // A writer without recipients refuses to write.
    let none = EncryptedStorage::new(local(dir.path()), Keys::default());
    let e = err_of(none.put("clusters/42/x", b"y", PutMode::Create));
    assert!(matches!(e, CryptoError::RecipientsNeeded { .. }), "{e}");
}

#[test]
fn rekey_wraps_every_data_key_again_resumably_and_removes_the_old() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (keyset(), keyset());
    // Two writers: two data keys.
    for (i, key) in [WAL, "clusters/42/backup/B/data/f"].iter().enumerate() {
        let w = EncryptedStorage::new(local(dir.path()), writer_keys(&old, None));
        w.put(
            key,
            format!("PGARK\0\0\x02 {i}").as_bytes(),
            PutMode::Create,
        )
        .unwrap();
    }
    let to = Recipients::parse(&new.recipients_text).unwrap();
    let r = EncryptedStorage::new(local(dir.path()), reader_keys(&old));
    let mut seen = Vec::new();
    let done = r
        .rekey(&to, false, &mut |n, t, id| {
            seen.push((n, t, id.to_string()))
        })
        .unwrap();
    assert_eq!(
        (done.keys, done.written, done.already, done.removed),
        (2, 2, 0, 0)
    );
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].0, 2);
    // Again: nothing to do (an interrupted run resumes like this).
    let again = r.rekey(&to, false, &mut |_, _, _| {}).unwrap();
    assert_eq!((again.written, again.already), (0, 2));
    // The old identity still opens the data until the old generation goes.
    let old_reader = EncryptedStorage::new(local(dir.path()), reader_keys(&old));
    assert!(old_reader.get(WAL).is_ok());
    // Removing needs proof that the new identity opens every key: with the
    // old one, nothing is removed.
    let e = err_of(r.rekey(&to, true, &mut |_, _, _| {}));
    assert!(e.to_string().contains("nothing was removed"), "{e}");
    assert_eq!(local(dir.path()).list("keys/").unwrap().len(), 4);
    // A stray object in a key folder is never taken for a generation.
    let folder = local(dir.path()).list("keys/").unwrap()[0].key.clone();
    let stray = format!("{}/zzz.bak", folder.rsplit_once('/').unwrap().0);
    local(dir.path())
        .put(&stray, b"{}", PutMode::Create)
        .unwrap();
    let with_new = EncryptedStorage::new(local(dir.path()), reader_keys(&new));
    let gone = with_new.rekey(&to, true, &mut |_, _, _| {}).unwrap();
    assert_eq!(gone.removed, 2);
    local(dir.path()).delete(&stray).unwrap();
    let old_reader = EncryptedStorage::new(local(dir.path()), reader_keys(&old));
    assert!(matches!(
        err_of(old_reader.get(WAL)),
        CryptoError::NoMatchingIdentity { .. }
    ));
    let new_reader = EncryptedStorage::new(local(dir.path()), reader_keys(&new));
    assert_eq!(new_reader.get(WAL).unwrap(), b"PGARK\0\0\x02 0");
    // Data objects were never rewritten: only keys/ changed.
    assert_eq!(local(dir.path()).list("keys/").unwrap().len(), 2);
    // Without an identity, no rekey.
    let none = EncryptedStorage::new(local(dir.path()), Keys::default());
    assert!(none.rekey(&to, false, &mut |_, _, _| {}).is_err());
}

/// Under Object Lock, rekey writes new generations only (nothing is ever
/// overwritten), and `--remove-old` leaves the old ones their lock still
/// retains for a later run, counted, without trying to delete them.
#[test]
fn rekey_under_object_lock_writes_once_and_removes_only_what_its_lock_allows() {
    use crate::storage::write_once::WriteOnce;
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(WriteOnce::locked_for(
        LocalStorage::open(dir.path()).unwrap(),
        100,
    ));
    let (old, new) = (keyset(), keyset());
    let w = EncryptedStorage::new(Box::new(Arc::clone(&s)), writer_keys(&old, None));
    w.put(WAL, b"PGARK\0\0\x02 0", PutMode::Create).unwrap();
    let to = Recipients::parse(&new.recipients_text).unwrap();
    let r = EncryptedStorage::new(Box::new(Arc::clone(&s)), reader_keys(&old));
    assert_eq!(r.rekey(&to, false, &mut |_, _, _| {}).unwrap().written, 1);
    let with_new = EncryptedStorage::new(Box::new(Arc::clone(&s)), reader_keys(&new));
    let held = with_new.rekey(&to, true, &mut |_, _, _| {}).unwrap();
    assert_eq!((held.removed, held.retained), (0, 1));
    s.backdate("", 200);
    let gone = with_new.rekey(&to, true, &mut |_, _, _| {}).unwrap();
    assert_eq!((gone.removed, gone.retained), (1, 0));
    assert_eq!(with_new.get(WAL).unwrap(), b"PGARK\0\0\x02 0");
    assert_eq!(s.refused(), Vec::<String>::new());
}

#[test]
fn a_server_reads_its_own_manifests_and_nothing_else_without_an_identity() {
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let k = keyset();
    let keys = writer_keys(&k, None)
        .with_server_state(state.path())
        .unwrap();
    assert!(keys.digest_key.is_some());
    let server_id = keys.server_key.as_ref().unwrap().id();
    // Made once, then read back.
    let again = writer_keys(&k, None)
        .with_server_state(state.path())
        .unwrap();
    assert_eq!(again.server_key.unwrap().id(), server_id);
    use std::os::unix::fs::PermissionsExt;
    for f in [DIGEST_KEY_FILE, SERVER_KEY_FILE] {
        let mode = std::fs::metadata(state.path().join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    let w = EncryptedStorage::new(local(dir.path()), keys);
    let manifest = "clusters/42/backup/B/manifest.d/000001";
    let data = "clusters/42/backup/B/data/base/1/1259";
    w.put(manifest, b"PGARK\0\0\x02 manifest", PutMode::Create)
        .unwrap();
    w.put(data, b"PGARK\0\0\x02 data", PutMode::Create).unwrap();
    assert_eq!(w.get(manifest).unwrap(), b"PGARK\0\0\x02 manifest");
    assert!(matches!(
        err_of(w.get(data)),
        CryptoError::IdentityNeeded { .. }
    ));
    // Another server (a new state folder) reads neither.
    let other_state = tempfile::tempdir().unwrap();
    let other = EncryptedStorage::new(
        local(dir.path()),
        writer_keys(&k, None)
            .with_server_state(other_state.path())
            .unwrap(),
    );
    assert!(matches!(
        err_of(other.get(manifest)),
        CryptoError::IdentityNeeded { .. }
    ));
    // The user's identity reads both.
    let r = EncryptedStorage::new(local(dir.path()), reader_keys(&k));
    assert_eq!(r.get(manifest).unwrap(), b"PGARK\0\0\x02 manifest");
    assert_eq!(r.get(data).unwrap(), b"PGARK\0\0\x02 data");
    assert!(EncryptedStorage::new(local(dir.path()), Keys::default())
        .check_stored(manifest)
        .unwrap()
        .is_ok());
}

#[test]
fn an_object_planted_with_the_public_half_alone_is_refused() {
    use std::str::FromStr;
    let dir = tempfile::tempdir().unwrap();
    let k = keyset();
    let w = EncryptedStorage::new(local(dir.path()), writer_keys(&k, None));
    w.put(WAL, b"PGARK\0\0\x02 genuine", PutMode::Create)
        .unwrap();
    // The attacker reads the key object's public half from the bucket and
    // encrypts a forged segment of the right name to it, with a well-formed
    // header and tail (digest and all), but cannot know the MAC key.
    let raw = local(dir.path());
    let ko: KeyObject =
        serde_json::from_slice(&raw.get(&raw.list("keys/").unwrap()[0].key).unwrap()).unwrap();
    let forged_key = WriteKey {
        recipient: x25519::Recipient::from_str(&ko.recipient).unwrap(),
        id: ko.key_id.clone(),
        also: None,
    };
    let mut body: &[u8] = b"PGARK\0\0\x02 forged";
    let mut forged = Vec::new();
    EncryptReader::new(&forged_key, [9; 32], None, WAL, &mut body, None)
        .unwrap()
        .read_to_end(&mut forged)
        .unwrap();
    raw.put(WAL, &forged, PutMode::Overwrite).unwrap();
    // Its stored bytes pass the keyless check: it is well-formed.
    let none = EncryptedStorage::new(local(dir.path()), Keys::default());
    assert!(none.check_stored(WAL).unwrap().is_ok());
    // A reader with the identity refuses it.
    let r = EncryptedStorage::new(local(dir.path()), reader_keys(&k));
    let e = err_of(r.get(WAL));
    assert!(matches!(e, CryptoError::Tampered { .. }), "{e}");
    assert!(e.to_string().contains("MAC"), "{e}");
}

#[test]
fn a_changed_key_id_is_damage_and_the_keyed_digest_is_for_wal_only() {
    let dir = tempfile::tempdir().unwrap();
    let k = keyset();
    let w = EncryptedStorage::new(local(dir.path()), writer_keys(&k, Some([5; 32])));
    let sealed = envelope::seal(&content(), Compression::Zstd, 1).unwrap();
    let file = "clusters/42/backup/B/data/base/5/16384";
    w.put(WAL, &sealed, PutMode::Create).unwrap();
    w.put(file, &sealed, PutMode::Create).unwrap();
    let raw = local(dir.path());
    let keyed = |key: &str| {
        let b = raw.get(key).unwrap();
        b[b.len() - 64..b.len() - 32].to_vec()
    };
    assert_ne!(keyed(WAL), vec![0u8; 32]);
    assert_eq!(keyed(file), vec![0u8; 32]);
    // One hex digit of the data key's id in the header: no key object has
    // that id, but the stored bytes fail their digest: damage.
    let mut bad = raw.get(WAL).unwrap();
    bad[20] = if bad[20] == b'0' { b'1' } else { b'0' };
    raw.put(WAL, &bad, PutMode::Overwrite).unwrap();
    let r = EncryptedStorage::new(local(dir.path()), reader_keys(&k));
    let e = err_of(r.get(WAL));
    assert!(matches!(e, CryptoError::Tampered { .. }), "{e}");
}
