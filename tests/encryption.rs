//! Encrypted repositories (issue 24), checked against what pg_ark did not
//! write: keys made by Debian's `age-keygen`, objects that the `age`
//! command decrypts, the files s3s-fs keeps on disk, and restores compared
//! with the source cluster's rows.
use pg_ark_tests::{pg_ark, temp_dir, wait_job, Cluster, S3Server};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(120);

/// An age key pair made by `age-keygen`: the identity file (owned by the
/// test user, mode 0600, so a restored server's `pg_ark wal-get` reads it)
/// and the recipient.
struct KeyPair {
    identity: PathBuf,
    recipient: String,
}

fn keygen(dir: &Path, name: &str) -> KeyPair {
    let (identity, recipient) = pg_ark_tests::age_keygen(dir, name);
    KeyPair {
        identity,
        recipient,
    }
}

/// A recipients file (mode 0644: public keys, writable by its owner only).
fn recipients_file(dir: &Path, name: &str, keys: &[&KeyPair]) -> PathBuf {
    let f = dir.join(name);
    let text: String = keys
        .iter()
        .map(|k| format!("# a recipient\n{}\n", k.recipient))
        .collect();
    std::fs::write(&f, text).unwrap();
    std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    f
}

/// Every file under `root` whose bytes contain `needle`.
fn files_containing(root: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    found.push(p);
                }
            }
        }
    }
    found
}

/// Every file under `root` whose path contains `part`.
fn files_named(root: &Path, part: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.to_string_lossy().contains(part) {
                found.push(p);
            }
        }
    }
    found
}

fn set(c: &mut postgres::Client, settings: &[(&str, Option<String>)]) {
    for (name, value) in settings {
        let sql = match value {
            Some(v) => format!("ALTER SYSTEM SET {name} = '{}'", v.replace('\'', "''")),
            None => format!("ALTER SYSTEM RESET {name}"),
        };
        c.batch_execute(&sql).unwrap();
    }
    c.batch_execute("SELECT pg_reload_conf()").unwrap();
}

/// Point the cluster at repository `url` with `settings`, and wait until
/// the archiver has archived a segment into it.
fn switch_to(
    cluster: &Cluster,
    c: &mut postgres::Client,
    url: &str,
    settings: &[(&str, Option<String>)],
) {
    let mark = cluster.log_mark();
    let mut all = vec![("ark.repository", Some(url.to_string()))];
    all.extend(settings.iter().cloned());
    set(c, &all);
    // The archiver reloads on its next wake-up and opens the repository
    // for the next segment.
    let wait_for = format!("pg_ark archiver opened repository {url}");
    let mut at = 0;
    pg_ark_tests::wait_until(&wait_for, WAIT, || {
        c.batch_execute("INSERT INTO tick VALUES (1); SELECT pg_switch_wal()")
            .unwrap();
        let log = cluster.log();
        at = log.get(mark..).and_then(|t| t.find(&wait_for)).unwrap_or(0);
        at > 0
    });
}

/// One phase: rows holding `marker`, a full backup, a plain dump, the WAL
/// with the rows archived. Returns the backup's id.
fn write_marked(cluster: &Cluster, c: &mut postgres::Client, marker: &str) -> String {
    c.execute(
        "INSERT INTO secret SELECT g, $1 || g FROM generate_series(1, 200) g",
        &[&marker],
    )
    .unwrap();
    let done = wait_job(c, "full", r#"{"max_attempts": 1}"#);
    assert_eq!(done["state"], "succeeded", "{done}");
    let id = done["result"]["backup_id"].as_str().unwrap().to_string();
    let dump = wait_job(
        c,
        "logical",
        r#"{"database": "postgres", "format": "plain", "max_attempts": 1}"#,
    );
    assert_eq!(dump["state"], "succeeded", "{dump}");
    c.execute(
        "INSERT INTO secret SELECT g, $1 || 'wal' || g FROM generate_series(1, 50) g",
        &[&marker],
    )
    .unwrap();
    let seg: String = c
        .query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])
        .unwrap()
        .get(0);
    cluster.wait_archived(&seg, WAIT);
    id
}

fn rows(c: &mut postgres::Client) -> (i64, String) {
    let r = c
        .query_one(
            "SELECT count(*), coalesce(md5(string_agg(v, ',' ORDER BY id, v)), '') FROM secret",
            &[],
        )
        .unwrap();
    (r.get(0), r.get(1))
}

/// The marker is in a clear repository's files and nowhere in an
/// encrypted one's, local and in S3; then the encrypted S3 repository
/// restores to a point in time, drills and restores a dump, exactly, and
/// the server took an incremental without any private key.
#[test]
fn encrypted_repositories_hide_every_row_and_restore_exactly() {
    let keys = temp_dir("ark-keys-");
    let ops = keygen(keys.path(), "ops.key");
    let escrow = keygen(keys.path(), "escrow.key");
    let recipients = recipients_file(keys.path(), "recipients", &[&ops, &escrow]);
    let s3 = S3Server::start();
    let creds = s3.credentials_file(keys.path());
    let local_clear = temp_dir("ark-clear-");
    let local_enc = temp_dir("ark-enc-");

    let cluster = Cluster::start_with(
        pg_ark_tests::archiving(local_clear.path()).set("ark.compression", "'none'"),
    );
    let mut c = cluster.client();
    c.batch_execute(
        "CREATE EXTENSION pg_ark;
         CREATE TABLE tick (i int);
         CREATE TABLE secret (id int, v text);
         CREATE TABLE pitr (id int PRIMARY KEY, xid xid8 DEFAULT pg_current_xact_id());",
    )
    .unwrap();
    let s3_settings = |on: bool| {
        let mut s = vec![
            ("ark.s3_endpoint", Some(s3.endpoint())),
            ("ark.s3_force_path_style", Some("on".to_string())),
            ("ark.s3_credentials_file", Some(creds.display().to_string())),
        ];
        s.push((
            "ark.encryption_recipients_file",
            on.then(|| recipients.display().to_string()),
        ));
        s
    };
    let local_url = |p: &Path| format!("file://{}", p.display());

    // 1. Clear, local: every kind of object shows the marker.
    switch_to(&cluster, &mut c, &local_url(local_clear.path()), &[]);
    write_marked(&cluster, &mut c, "MARKER-clear-local-");
    let found = files_containing(local_clear.path(), b"MARKER-clear-local-");
    for kind in ["/wal/", "/backup/", "/logical/"] {
        assert!(
            found.iter().any(|p| p.to_string_lossy().contains(kind)),
            "the marker is in no {kind} object of the clear repository: {found:?}"
        );
    }
    // 2. Encrypted, local: nowhere.
    let enc = vec![(
        "ark.encryption_recipients_file",
        Some(recipients.display().to_string()),
    )];
    switch_to(&cluster, &mut c, &local_url(local_enc.path()), &enc);
    write_marked(&cluster, &mut c, "MARKER-enc-local-");
    assert_eq!(
        files_containing(local_enc.path(), b"MARKER-"),
        Vec::<PathBuf>::new()
    );
    for kind in ["/wal/", "/backup/", "/logical/", "keys/"] {
        assert!(
            !files_named(local_enc.path(), kind).is_empty(),
            "the encrypted repository holds no {kind} object"
        );
    }
    // 3. Clear, S3.
    let url_clear = format!("s3://{}/clear", s3.bucket);
    switch_to(&cluster, &mut c, &url_clear, &s3_settings(false));
    write_marked(&cluster, &mut c, "MARKER-clear-s3-");
    let found = files_containing(&s3.bucket_dir().join("clear"), b"MARKER-clear-s3-");
    for kind in ["/wal/", "/backup/", "/logical/"] {
        assert!(
            found.iter().any(|p| p.to_string_lossy().contains(kind)),
            "the marker is in no {kind} object in S3: {found:?}"
        );
    }
    // 4. Encrypted, S3: nowhere; then the rest of the story from there.
    let url = format!("s3://{}/enc", s3.bucket);
    switch_to(&cluster, &mut c, &url, &s3_settings(true));
    let full = write_marked(&cluster, &mut c, "MARKER-enc-s3-");
    // An incremental on the full, by a server that holds no private key:
    // it reads the full's manifest with its own key.
    c.execute("UPDATE secret SET v = v || '+' WHERE id % 7 = 0", &[])
        .unwrap();
    let inc = wait_job(&mut c, "incremental", r#"{"max_attempts": 1}"#);
    assert_eq!(inc["state"], "succeeded", "{inc}");
    assert_eq!(inc["result"]["kind"], "incremental", "{inc}");
    assert_eq!(inc["result"]["parent"], full.as_str(), "{inc}");
    assert!(inc["result"].get("fallback").is_none(), "{inc}");
    // A directory-format dump (many objects), for restore-logical; its
    // clear descriptor records no digest of the plaintext.
    let dump = wait_job(
        &mut c,
        "logical",
        r#"{"database": "postgres", "format": "directory", "max_attempts": 1}"#,
    );
    assert_eq!(dump["state"], "succeeded", "{dump}");
    let label = dump["result"]["backups"][0]["label"]
        .as_str()
        .unwrap()
        .to_string();
    let info = files_named(
        &s3.bucket_dir().join("enc/clusters"),
        &format!("{label}/backup.info"),
    );
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&info[0]).unwrap()).unwrap();
    let info = &doc["payload"];
    assert_eq!(info["format"], "directory", "{doc}");
    assert!(info["sha256"].is_null(), "{info}");
    let files = info["files"].as_array().unwrap();
    assert!(files.len() > 1, "{info}");
    for f in files {
        assert_eq!(f["sha256"], "", "{info}");
    }
    let (at, _, _) = pg_ark_tests::commit_row(&mut c, 1);
    let expected = rows(&mut c);
    c.execute("INSERT INTO secret VALUES (-1, 'after the target')", &[])
        .unwrap();
    let seg: String = c
        .query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])
        .unwrap()
        .get(0);
    cluster.wait_archived(&seg, WAIT);
    assert_eq!(
        files_containing(&s3.bucket_dir().join("enc"), b"MARKER-"),
        Vec::<PathBuf>::new()
    );
    let desc = std::fs::read_to_string(s3.bucket_dir().join("enc/pg_ark.repo")).unwrap();
    assert!(desc.contains("age-x25519"), "{desc}");

    // A drill needs an identity on the server: without one it fails,
    // saying which key it needs.
    let drill = wait_job(&mut c, "drill", r#"{"count": "secret", "max_attempts": 1}"#);
    assert_eq!(drill["state"], "failed", "{drill}");
    let e = drill["error"].to_string();
    assert!(e.contains("no identity") && e.contains("age:"), "{drill}");
    set(
        &mut c,
        &[(
            "ark.encryption_identity_file",
            Some(ops.identity.display().to_string()),
        )],
    );
    let drill = wait_job(&mut c, "drill", r#"{"count": "secret", "max_attempts": 1}"#);
    assert_eq!(drill["state"], "succeeded", "{drill}");
    assert_eq!(
        drill["result"]["backup_id"], inc["result"]["backup_id"],
        "{drill}"
    );

    // pg_ark verify without an identity checks the stored bytes; with
    // the escrow identity, everything.
    let s3_words = |extra: &[&str]| -> Vec<String> {
        let mut w: Vec<String> = [
            "--repo",
            url.as_str(),
            "--s3-endpoint",
            &s3.endpoint(),
            "--s3-path-style",
            "--s3-credentials-file",
            creds.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        w.extend(extra.iter().map(|s| s.to_string()));
        w
    };
    let run = |cmd: &str, extra: &[&str]| {
        let mut all = vec![cmd.to_string()];
        all.extend(s3_words(extra));
        pg_ark(&all.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let (ok, out, err) = run("verify", &["--quiet"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("stored bytes only"), "{out}");
    // pg_ark info needs no key; an encrypted drill record is not a failed
    // drill.
    let (ok, out, err) = run("info", &[]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("drill record not read") && !out.contains("FAILED"),
        "{out}"
    );
    let (ok, out, err) = run(
        "info",
        &["--identity-file", &ops.identity.display().to_string()],
    );
    assert!(ok && out.contains("restore drill passed"), "{out}{err}");
    let escrow_id = escrow.identity.display().to_string();
    let (ok, out, err) = run("verify", &["--quiet", "--identity-file", &escrow_id]);
    assert!(ok && !out.contains("stored bytes only"), "{out}{err}");
    assert!(out.contains("2 backup(s) verified"), "{out}");

    // Point in time, with the escrow key alone.
    let dir = temp_dir("ark-encpitr-");
    let data = dir.path().join("data");
    let (ok, out, err) = run(
        "restore",
        &[
            "--identity-file",
            &escrow_id,
            "--pgdata",
            data.to_str().unwrap(),
            "--archive-off",
            "--quiet",
            "--target-time",
            &at,
        ],
    );
    assert!(ok, "{out}{err}");
    let conf = std::fs::read_to_string(data.join("postgresql.auto.conf")).unwrap();
    assert!(
        conf.contains(&format!("--identity-file {escrow_id}")),
        "{conf}"
    );
    assert!(!conf.contains("AGE-SECRET-KEY"), "{conf}");
    let restored = Cluster::start_restored(dir, data, &[]);
    let mut rc = restored.client();
    assert_eq!(rows(&mut rc), expected);
    let pitr: i64 = rc
        .query_one("SELECT count(*) FROM pitr", &[])
        .unwrap()
        .get(0);
    assert_eq!(pitr, 1);
    assert!(restored.log().contains("restored log file"));
    drop(restored);

    // restore-logical of the custom dump, into a new database.
    let port = cluster.port.to_string();
    let host = cluster.sockdir.display().to_string();
    let bin = cluster.install.bin("pg_restore");
    let bin = bin.parent().unwrap().display().to_string();
    let (ok, out, err) = run(
        "restore-logical",
        &[
            "--identity-file",
            &escrow_id,
            "--database",
            "postgres",
            "--into",
            "copy",
            "--if-empty",
            "-h",
            &host,
            "-p",
            &port,
            "-U",
            "postgres",
            "--pg-bin",
            &bin,
        ],
    );
    assert!(ok, "{out}{err}");
    let mut copy = cluster.client_on("copy");
    let dumped: i64 = copy
        .query_one("SELECT count(*) FROM secret", &[])
        .unwrap()
        .get(0);
    assert_eq!(dumped, expected.0);
}

fn fingerprint(k: &KeyPair) -> String {
    pg_ark_core::crypto::Recipients::parse(&k.recipient)
        .unwrap()
        .fingerprints()
        .remove(0)
}

/// `ark.archive_status()`'s last failure, once it mentions `needle`.
fn archive_failure(c: &mut postgres::Client, needle: &str) -> String {
    let mut reason = String::new();
    pg_ark_tests::wait_until(&format!("an archive failure with {needle:?}"), WAIT, || {
        c.batch_execute("INSERT INTO tick VALUES (1); SELECT pg_switch_wal()")
            .unwrap();
        reason = c
            .query_one(
                "SELECT coalesce(last_failure_reason, '') FROM ark.archive_status()",
                &[],
            )
            .unwrap()
            .get(0);
        eprintln!("archive failure: {reason}");
        reason.contains(needle)
    });
    reason
}

/// Each refusal, rotation with `pg_ark rekey`, and the last resort: the
/// `age` command line alone reading a WAL segment back.
#[test]
fn wrong_keys_tampering_and_mixing_are_refused_and_rekey_rotates() {
    let keys = temp_dir("ark-keys-");
    let ops = keygen(keys.path(), "ops.key");
    let stranger = keygen(keys.path(), "stranger.key");
    let next = keygen(keys.path(), "next.key");
    let first = recipients_file(keys.path(), "recipients", &[&ops]);
    let second = recipients_file(keys.path(), "recipients.next", &[&next]);
    let repo = temp_dir("ark-enc-");
    let url = format!("file://{}", repo.path().display());
    let cluster = Cluster::start_with(
        pg_ark_tests::archiving(repo.path())
            .set("ark.compression", "'none'")
            .set(
                "ark.encryption_recipients_file",
                &format!("'{}'", first.display()),
            ),
    );
    let mut c = cluster.client();
    c.batch_execute(
        "CREATE EXTENSION pg_ark;
         CREATE TABLE tick (i int);
         CREATE TABLE secret (id int, v text);
         INSERT INTO secret SELECT g, 'row ' || g FROM generate_series(1, 1000) g;",
    )
    .unwrap();
    let full = wait_job(&mut c, "full", r#"{"max_attempts": 1}"#);
    assert_eq!(full["state"], "succeeded", "{full}");
    let id = full["result"]["backup_id"].as_str().unwrap().to_string();
    let expected = rows(&mut c);
    let seg: String = c
        .query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])
        .unwrap()
        .get(0);
    cluster.wait_archived(&seg, WAIT);
    let restore = |identity: Option<&Path>| {
        let dir = temp_dir("ark-encrestore-");
        let data = dir.path().join("data");
        let mut args = vec![
            "restore".to_string(),
            "--repo".into(),
            url.clone(),
            "--pgdata".into(),
            data.display().to_string(),
            "--quiet".into(),
        ];
        if let Some(i) = identity {
            args.extend(["--identity-file".into(), i.display().to_string()]);
        }
        let (ok, out, err) = pg_ark(&args.iter().map(String::as_str).collect::<Vec<_>>());
        (ok, format!("{out}{err}"), dir, data)
    };

    // No identity: refused, naming the object, its data key and the keys
    // that open it, with a hint.
    let (ok, said, _, _) = restore(None);
    assert!(!ok, "{said}");
    assert!(
        said.contains("no identity was given") && said.contains(&fingerprint(&ops)),
        "{said}"
    );
    assert!(
        said.contains("hint: ") && said.contains("--identity-file"),
        "{said}"
    );
    // Another key: refused, naming the keys it needs and those given.
    let (ok, said, _, _) = restore(Some(&stranger.identity));
    assert!(!ok, "{said}");
    assert!(
        said.contains(&fingerprint(&ops)) && said.contains(&fingerprint(&stranger)),
        "{said}"
    );

    // One changed byte in a stored data file: verify finds it without a
    // key and with one, and a restore refuses, naming the object.
    let data_dir = repo.path().join(format!(
        "clusters/{}/backup/{id}/data",
        cluster.system_identifier()
    ));
    let victim = files_named(&data_dir, "/")
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let good = std::fs::read(&victim).unwrap();
    let mut bad = good.clone();
    let at = bad.len() / 2;
    bad[at] ^= 0x01;
    std::fs::write(&victim, &bad).unwrap();
    let rel = victim
        .strip_prefix(repo.path().join(format!(
            "clusters/{}/backup/{id}",
            cluster.system_identifier()
        )))
        .unwrap()
        .display()
        .to_string();
    let (ok, out, err) = pg_ark(&["verify", "--repo", &url, "--quiet"]);
    assert!(
        !ok && out.contains("1 problem(s)") && out.contains(&rel),
        "{out}{err}"
    );
    let ops_id = ops.identity.display().to_string();
    let (ok, out, err) = pg_ark(&[
        "verify",
        "--repo",
        &url,
        "--quiet",
        "--identity-file",
        &ops_id,
    ]);
    assert!(!ok && out.contains("failed authentication"), "{out}{err}");
    let (ok, said, _, _) = restore(Some(&ops.identity));
    assert!(!ok && said.contains("failed authentication"), "{said}");
    std::fs::write(&victim, &good).unwrap();
    let (ok, out, err) = pg_ark(&[
        "verify",
        "--repo",
        &url,
        "--quiet",
        "--identity-file",
        &ops_id,
    ]);
    assert!(ok, "{out}{err}");

    // Mixing: recipients with a clear repository, and an encrypted one
    // without recipients, are both refused by the archiver.
    let clear = temp_dir("ark-clear-");
    pg_ark_core::repo::Repository::open(
        Box::new(pg_ark_core::storage::local::LocalStorage::open(clear.path()).unwrap()),
        true,
    )
    .unwrap();
    set(
        &mut c,
        &[(
            "ark.repository",
            Some(format!("file://{}", clear.path().display())),
        )],
    );
    let reason = archive_failure(&mut c, "is not encrypted");
    assert!(reason.contains("encryption recipients are set"), "{reason}");
    let refused = wait_job(&mut c, "full", r#"{"max_attempts": 1}"#);
    assert_eq!(refused["state"], "failed", "{refused}");
    assert!(
        refused["error"].to_string().contains("is not encrypted"),
        "{refused}"
    );
    // (Set empty: the recipients came from postgresql.conf, which RESET
    // would fall back to.)
    set(
        &mut c,
        &[
            ("ark.repository", Some(url.clone())),
            ("ark.encryption_recipients_file", Some(String::new())),
        ],
    );
    let reason = archive_failure(&mut c, "no recipients");
    assert!(reason.contains("repository is encrypted"), "{reason}");

    // Rotation: the server's recipients first, then every data key.
    set(
        &mut c,
        &[(
            "ark.encryption_recipients_file",
            Some(second.display().to_string()),
        )],
    );
    let seg: String = c
        .query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])
        .unwrap()
        .get(0);
    cluster.wait_archived(&seg, WAIT);
    let second_s = second.display().to_string();
    let (ok, out, err) = pg_ark(&[
        "rekey",
        "--repo",
        &url,
        "--identity-file",
        &ops_id,
        "--recipients-file",
        &second_s,
    ]);
    assert!(ok, "{out}{err}");
    assert!(err.contains("wrapped to the new recipients"), "{err}");
    // Removing the old key objects needs the new identity, which proves
    // that the new ones open: with the old one, nothing is removed.
    let (ok, out, err) = pg_ark(&[
        "rekey",
        "--repo",
        &url,
        "--identity-file",
        &ops_id,
        "--recipients-file",
        &second_s,
        "--remove-old",
        "--quiet",
    ]);
    assert!(!ok && err.contains("nothing was removed"), "{out}{err}");
    // Again, with the new identity: nothing left to wrap (how an
    // interrupted run resumes), and the old generations go.
    let next_id = next.identity.display().to_string();
    let (ok, again, err) = pg_ark(&[
        "rekey",
        "--repo",
        &url,
        "--identity-file",
        &next_id,
        "--recipients-file",
        &second_s,
        "--remove-old",
        "--quiet",
    ]);
    assert!(ok && again.contains(" 0 wrapped"), "{again}{err}");
    assert!(!again.contains(" 0 old key object(s) removed"), "{again}");
    // The old identity opens nothing now; the new one restores exactly.
    let (ok, said, _, _) = restore(Some(&ops.identity));
    assert!(!ok && said.contains(&fingerprint(&next)), "{said}");
    let (ok, said, dir, data) = restore(Some(&next.identity));
    assert!(ok, "{said}");
    let restored = Cluster::start_restored(dir, data, &[]);
    assert_eq!(rows(&mut restored.client()), expected);
    drop(restored);

    // The last resort: with the age command alone, a WAL segment. Unwrap
    // the data key from its key object, then decrypt the age file
    // between pg_ark's header and its 96-byte tail.
    let wal = files_named(&repo.path().join("clusters"), &seg);
    let wal = wal.iter().find(|p| p.ends_with(&seg)).unwrap();
    let obj = std::fs::read(wal).unwrap();
    assert_eq!(&obj[..8], b"PGARK\0\0\x03");
    let n = usize::from(obj[9]);
    let key_id = String::from_utf8(obj[10..10 + n].to_vec()).unwrap();
    let mut start = 10 + n;
    if obj[8] & 1 != 0 {
        start += 1 + usize::from(obj[start]);
    }
    let work = temp_dir("ark-age-");
    let age_file = work.path().join("segment.age");
    std::fs::write(&age_file, &obj[start..obj.len() - 96]).unwrap();
    let ko_dir = repo.path().join("keys").join(key_id.replace(':', "-"));
    let ko_path = std::fs::read_dir(&ko_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max()
        .unwrap();
    let ko: serde_json::Value = serde_json::from_slice(&std::fs::read(ko_path).unwrap()).unwrap();
    use base64::Engine;
    let wrapped = base64::engine::general_purpose::STANDARD
        .decode(ko["wrapped"].as_str().unwrap())
        .unwrap();
    let wrapped_file = work.path().join("key.age");
    std::fs::write(&wrapped_file, wrapped).unwrap();
    let out = Command::new("age")
        .args(["-d", "-i"])
        .arg(&next.identity)
        .arg(&wrapped_file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let data_key = work.path().join("data.key");
    std::fs::write(&data_key, &out.stdout).unwrap();
    let out = Command::new("age")
        .args(["-d", "-i"])
        .arg(&data_key)
        .arg(&age_file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let plain = out.stdout;
    let line = format!(
        "pg_ark-object clusters/{}/wal/{}/{seg}\n",
        cluster.system_identifier(),
        &seg[..16]
    );
    assert!(plain.starts_with(line.as_bytes()), "{:?}", &plain[..80]);
    // Then the clear envelope (version 2, no compression): the segment,
    // whose first page header holds the cluster's system identifier.
    let env = &plain[line.len()..];
    assert_eq!(&env[..8], b"PGARK\0\0\x02");
    let page = &env[24..];
    assert_eq!(
        u64::from_le_bytes(page[24..32].try_into().unwrap()),
        cluster.system_identifier()
    );
}
