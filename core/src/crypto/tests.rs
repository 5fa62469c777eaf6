use super::*;

fn keypair() -> (x25519::Identity, x25519::Recipient) {
    let i = x25519::Identity::generate();
    let r = i.to_public();
    (i, r)
}

fn identities(ids: &[&x25519::Identity]) -> Identities {
    let text: String = ids
        .iter()
        .map(|i| format!("{}\n", i.to_string().expose_secret()))
        .collect();
    Identities::parse(text.as_bytes(), None).unwrap()
}

fn recipients(rs: &[&x25519::Recipient]) -> Recipients {
    let text: String = rs.iter().map(|r| format!("{r}\n")).collect();
    Recipients::parse(&format!("# ops and escrow\n\n{text}")).unwrap()
}

fn encrypt(key: &DataKey, name: &str, plain: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w = encrypt_object(&key.write_key(), name, &mut out).unwrap();
    w.write_all(plain).unwrap();
    w.finish().unwrap();
    out
}

/// Why a read failed: the error from opening, or the one from reading
/// (which must be `InvalidData` carrying a `Tampered`).
#[derive(Debug)]
enum Failed {
    Open(CryptoError),
    Read,
}

fn decrypt(key: &DataKey, name: &str, cipher: &[u8]) -> Result<Vec<u8>, Failed> {
    let mut r = decrypt_object(key, name, cipher).map_err(Failed::Open)?;
    let mut out = Vec::new();
    match r.read_to_end(&mut out) {
        Ok(_) => Ok(out),
        Err(e) => {
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
            let msg = e.to_string();
            assert!(
                msg.contains(name) && msg.contains("failed authentication"),
                "{msg}"
            );
            Err(Failed::Read)
        }
    }
}

fn tampered_on_open(r: Result<Vec<u8>, Failed>) -> String {
    match r {
        Err(Failed::Open(e @ CryptoError::Tampered { .. })) => e.to_string(),
        other => panic!("not refused on open as tampered: {other:?}"),
    }
}

#[test]
fn data_round_trips_through_a_key_object_opened_by_either_recipient() {
    let ((ops, ops_r), (escrow, escrow_r)) = (keypair(), keypair());
    let data_key = DataKey::generate();
    let key = data_key.wrap(&recipients(&[&ops_r, &escrow_r])).unwrap();
    assert_eq!(key.key_id, data_key.id());
    assert_eq!(
        key.wrapped_to,
        vec![fingerprint(&ops_r), fingerprint(&escrow_r)]
    );
    // What is stored reveals no secret: no key, no plaintext.
    let stored = serde_json::to_string(&key).unwrap();
    assert!(!stored.contains("AGE-SECRET-KEY"), "{stored}");
    let plain = b"a marker string 0123456789".repeat(10_000);
    let cipher = encrypt(&data_key, "wal/x", &plain);
    assert!(!cipher.windows(13).any(|w| w == b"a marker stri"));
    for who in [&ops, &escrow] {
        let opened = key.unwrap("keys/k", &identities(&[who])).unwrap();
        assert_eq!(decrypt(&opened, "wal/x", &cipher).unwrap(), plain);
    }
}

#[test]
fn a_wrong_identity_is_named_with_the_keys_the_object_needs() {
    let ((_, ops_r), (stranger, _)) = (keypair(), keypair());
    let key = DataKey::generate().wrap(&recipients(&[&ops_r])).unwrap();
    let e = key
        .unwrap("keys/k", &identities(&[&stranger]))
        .err()
        .unwrap();
    match &e {
        CryptoError::NoMatchingIdentity { what, needs, have } => {
            assert_eq!(what, "keys/k");
            assert_eq!(needs, &vec![fingerprint(&ops_r)]);
            assert_eq!(have, &vec![fingerprint(&stranger.to_public())]);
        }
        other => panic!("{other}"),
    }
    assert!(e.to_string().contains(&fingerprint(&ops_r)), "{e}");
}

#[test]
fn a_changed_byte_or_a_cut_fails_authentication_never_garbage() {
    let (ops, ops_r) = keypair();
    let data_key = DataKey::generate();
    let key = data_key.wrap(&recipients(&[&ops_r])).unwrap();
    let plain = vec![7u8; 200_000];
    let cipher = encrypt(&data_key, "o", &plain);
    let opened = key.unwrap("keys/k", &identities(&[&ops])).unwrap();
    assert_eq!(decrypt(&opened, "o", &cipher).unwrap(), plain);
    for at in [cipher.len() / 2, cipher.len() - 1] {
        let mut bad = cipher.clone();
        bad[at] ^= 1;
        assert!(
            matches!(decrypt(&opened, "o", &bad), Err(Failed::Read)),
            "byte {at} changed, read fine"
        );
    }
    // A byte of the header's stanza: refused as damage, not as a wrong key.
    let mut bad = cipher.clone();
    bad[40] ^= 1;
    tampered_on_open(decrypt(&opened, "o", &bad));
    // Cut inside a chunk, and cut exactly at a chunk's end (age's chunks
    // hold 64 KiB, each with a 16-byte tag).
    let total = "pg_ark-object o\n".len() + plain.len();
    let last = total % 65_536 + 16;
    for cut in [cipher.len() - 100, cipher.len() - last] {
        assert!(
            matches!(decrypt(&opened, "o", &cipher[..cut]), Err(Failed::Read)),
            "cut at {cut} of {}",
            cipher.len()
        );
    }
    // A writer dropped without finish leaves an object no one reads.
    let mut unfinished = Vec::new();
    {
        let mut w = encrypt_object(&data_key.write_key(), "o", &mut unfinished).unwrap();
        w.write_all(&plain).unwrap();
    }
    assert!(decrypt(&opened, "o", &unfinished).is_err());
    // Something that is not an age file at all.
    assert!(matches!(
        decrypt(&opened, "o", b"PGARK plain bytes"),
        Err(Failed::Open(CryptoError::NotEncrypted { .. }))
    ));
    // The wrapped key.
    let mut k = key.clone();
    let mut raw = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(&k.wrapped)
            .unwrap()
    };
    let n = raw.len();
    raw[n - 5] ^= 1;
    k.wrapped = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(raw)
    };
    let e = k.unwrap("keys/k", &identities(&[&ops])).err().unwrap();
    assert!(matches!(e, CryptoError::Tampered { .. }), "{e}");
}

#[test]
fn a_key_object_cannot_stand_in_for_another() {
    let (ops, ops_r) = keypair();
    let to = recipients(&[&ops_r]);
    let a = DataKey::generate().wrap(&to).unwrap();
    let b = DataKey::generate().wrap(&to).unwrap();
    let mut swapped = a.clone();
    swapped.wrapped = b.wrapped.clone();
    let e = swapped
        .unwrap("keys/a", &identities(&[&ops]))
        .err()
        .unwrap();
    assert!(
        matches!(e, CryptoError::BadKeyObject { .. }) && e.to_string().contains("names key"),
        "{e}"
    );
    // Data encrypted to one key does not open with another.
    let key_a = a.unwrap("keys/a", &identities(&[&ops])).unwrap();
    let cipher = encrypt(&key_a, "o", b"secret");
    let other = b.unwrap("keys/b", &identities(&[&ops])).unwrap();
    let e = tampered_on_open(decrypt(&other, "o", &cipher));
    assert!(e.contains("not encrypted to its key"), "{e}");
    // Nor under another name: anyone can encrypt to a key's public half,
    // and the first line says which object it is.
    let e = tampered_on_open(decrypt(&key_a, "wal/other", &cipher));
    assert!(e.contains("another object"), "{e}");
}

#[test]
fn rotation_wraps_the_same_data_key_to_new_recipients() {
    let ((old, old_r), (new, new_r)) = (keypair(), keypair());
    let data_key = DataKey::generate();
    let key = data_key.wrap(&recipients(&[&old_r])).unwrap();
    let cipher = encrypt(&data_key, "o", b"written before the rotation");
    let rotated = key
        .rewrap("keys/k", &identities(&[&old]), &recipients(&[&new_r]))
        .unwrap();
    assert_eq!(rotated.key_id, key.key_id);
    assert_eq!(rotated.recipient, key.recipient);
    assert_eq!(rotated.wrapped_to, vec![fingerprint(&new_r)]);
    // Only the new identity opens it; the data is read unchanged.
    let opened = rotated.unwrap("keys/k", &identities(&[&new])).unwrap();
    assert_eq!(
        decrypt(&opened, "o", &cipher).unwrap(),
        b"written before the rotation"
    );
    assert!(rotated.unwrap("keys/k", &identities(&[&old])).is_err());
}

#[test]
fn identity_files_protected_by_a_passphrase() {
    let (ops, ops_r) = keypair();
    let text = format!(
        "# created by age-keygen\n{}\n",
        ops.to_string().expose_secret()
    );
    let enc = age::Encryptor::with_user_passphrase(SecretString::from("correct horse".to_string()));
    let mut file = Vec::new();
    let mut w = enc.wrap_output(&mut file).unwrap();
    w.write_all(text.as_bytes()).unwrap();
    w.finish().unwrap();
    assert!(matches!(
        Identities::parse(&file, None),
        Err(CryptoError::PassphraseNeeded)
    ));
    assert!(matches!(
        Identities::parse(&file, Some("wrong")),
        Err(CryptoError::WrongPassphrase { .. })
    ));
    let ids = Identities::parse(&file, Some("correct horse")).unwrap();
    assert_eq!(ids.fingerprints(), vec![fingerprint(&ops_r)]);
}

#[test]
fn bad_key_files_are_refused_with_the_line() {
    let (_, r) = keypair();
    assert!(matches!(
        Recipients::parse("# nothing\n"),
        Err(CryptoError::NoRecipients)
    ));
    let e = Recipients::parse(&format!("{r}\nssh-ed25519 AAAA\n"))
        .err()
        .unwrap();
    assert!(
        matches!(e, CryptoError::BadRecipient { line: 2, .. }),
        "{e}"
    );
    assert!(matches!(
        Identities::parse(b"\n# none\n", None),
        Err(CryptoError::NoIdentities)
    ));
    let e = Identities::parse(b"AGE-SECRET-KEY-1NOTAKEY\n", None)
        .err()
        .unwrap();
    assert!(matches!(e, CryptoError::BadIdentity { line: 1 }), "{e}");
    assert!(!e.to_string().contains("NOTAKEY"), "{e}");
}

/// `age` (Debian's, the reference command line; installed by make setup)
/// with `args`, `input` on stdin; its stdout, or why it failed.
fn age_cli(program: &str, args: &[&str], input: &[u8]) -> Result<Vec<u8>, String> {
    use std::process::{Command, Stdio};
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{program}: {e} (make setup installs Debian's age)"))?;
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn the_age_command_line_reads_key_objects_and_data_and_its_keys_work_here() {
    let dir = tempfile::tempdir().unwrap();
    // Keys made by age-keygen, not by this code.
    let id_path = dir.path().join("escrow.key");
    age_cli("age-keygen", &["-o", id_path.to_str().unwrap()], b"").unwrap();
    let id_text = std::fs::read(&id_path).unwrap();
    let public = age_cli("age-keygen", &["-y", id_path.to_str().unwrap()], b"").unwrap();
    let to = Recipients::parse(&String::from_utf8(public).unwrap()).unwrap();
    let ids = Identities::parse(&id_text, None).unwrap();
    assert_eq!(ids.fingerprints(), to.fingerprints());

    let data_key = DataKey::generate();
    let key = data_key.wrap(&to).unwrap();
    let cipher = encrypt(
        &data_key,
        "wal/x",
        b"restored with nothing but age and the escrow key",
    );
    // The disaster procedure: the key object's wrapped key, then the data,
    // each with `age -d`.
    let wrapped = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(&key.wrapped)
            .unwrap()
    };
    let data_identity = age_cli("age", &["-d", "-i", id_path.to_str().unwrap()], &wrapped).unwrap();
    let data_id_path = dir.path().join("data.key");
    std::fs::write(&data_id_path, &data_identity).unwrap();
    let plain = age_cli(
        "age",
        &["-d", "-i", data_id_path.to_str().unwrap()],
        &cipher,
    )
    .unwrap();
    assert_eq!(
        plain,
        b"pg_ark-object wal/x\nrestored with nothing but age and the escrow key"
    );
    // And the other way: what `age` encrypts to a data key's recipient is
    // read here.
    let from_cli = age_cli(
        "age",
        &["-r", &data_key.recipient().to_string()],
        b"pg_ark-object wal/y\nwritten by age",
    )
    .unwrap();
    let opened = key.unwrap("keys/k", &ids).unwrap();
    assert_eq!(
        decrypt(&opened, "wal/y", &from_cli).unwrap(),
        b"written by age"
    );
}
