//! S3 Object Lock and versions, against a real moto server on loopback
//! (`MotoServer`): uploads carry the lock, a locked object's delete is
//! refused without a delete marker, a lock asked of a bucket without Object
//! Lock is a clear error, `AsOf` reads an attacked prefix as it was, and
//! the storage contract holds on a versioned bucket.
//!
//! moto checks no permissions, so only compliance mode is tested (who may
//! bypass a governance lock cannot be shown), and it puts no lock on
//! multipart objects (AWS does): every object whose lock is checked here is
//! one PutObject. The harness runs moto so that aws-sdk-s3 can read its
//! answers to multipart uploads and versioning queries
//! (`harness/moto_server.py`).
use pg_ark_core::storage::lock::{lock_warnings, utc, BucketLock};
use pg_ark_core::storage::s3::{LockMode, ObjectLock, S3Options, S3Storage};
use pg_ark_core::storage::versioned::{AsOf, Tamper, TamperKind};
use pg_ark_core::storage::{conformance, PutMode, Storage, StorageError};
use pg_ark_tests::MotoServer;
use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const LOCK: ObjectLock = ObjectLock {
    mode: LockMode::Compliance,
    days: 1,
};

fn options(moto: &MotoServer, object_lock: Option<ObjectLock>) -> S3Options {
    S3Options {
        endpoint: Some(moto.endpoint()),
        region: Some("us-east-1".into()),
        force_path_style: true,
        access_key_id: Some(moto.access_key.clone()),
        secret_access_key: Some(moto.secret_key.clone()),
        operation_timeout: None,
        object_lock,
    }
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs() as i64
}

/// Wait until the clock has passed second `t`: S3 stamps LastModified in
/// whole seconds, so only then is a new object stamped after `t`.
fn wait_past_second(t: i64) {
    let start = Instant::now();
    while now_secs() <= t {
        assert!(start.elapsed() < Duration::from_secs(5), "the clock stands");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn uploads_carry_the_lock_and_locked_objects_are_not_deleted() {
    let moto = MotoServer::start();
    let s = S3Storage::open(&moto.bucket, "locked", &options(&moto, Some(LOCK))).unwrap();
    assert_eq!(s.object_lock(), Some(LOCK));
    assert_eq!(
        s.bucket_lock().unwrap(),
        BucketLock {
            enabled: true,
            versioning: true,
            default_mode: None,
            default_days: None
        }
    );

    // (i) PutObject, through put and a one-part put_stream, carries the lock.
    let before = now_secs();
    s.put("wal/1", b"segment", PutMode::Create).unwrap();
    s.put_stream("wal/2", &mut &b"streamed"[..], PutMode::Create)
        .unwrap();
    let after = now_secs();
    let head = s.head_lock("wal/1").unwrap().expect("stored");
    assert_eq!(head.lock_mode.as_deref(), Some("COMPLIANCE"));
    assert_eq!(head.size, 7);
    assert!(!head.legal_hold);
    let until = head.retain_until.expect("a retain-until date");
    assert!(
        (before + 86_400..=after + 86_400).contains(&until),
        "retained until {}, stored between {} and {}",
        utc(until),
        utc(before),
        utc(after)
    );
    let streamed = s.head_lock("wal/2").unwrap().expect("stored");
    assert_eq!(streamed.lock_mode.as_deref(), Some("COMPLIANCE"));
    assert!(streamed.retain_until.is_some_and(|t| t >= before + 86_400));
    // A lock is extended (PutObjectRetention on the first version), never
    // shortened.
    let longer = after + 3 * 86_400;
    assert!(s.extend_lock("wal/2", longer).unwrap());
    let extended = s.head_lock("wal/2").unwrap().expect("stored");
    assert_eq!(extended.retain_until, Some(longer));
    assert_eq!(extended.lock_mode.as_deref(), Some("COMPLIANCE"));
    assert!(!s.extend_lock("wal/2", longer - 86_400).unwrap());
    assert_eq!(s.retained_until("wal/2").unwrap(), Some(longer));
    let versions = s.list_versions("wal/1").unwrap();
    assert_eq!(versions.len(), 1, "{versions:?}");
    let v = &versions[0];
    assert!(v.key == "wal/1" && v.is_latest && !v.delete_marker && v.size == 7);
    assert!((before..=after).contains(&v.last_modified), "{v:?}");
    assert_eq!(
        s.head_version("wal/1", &v.version_id).unwrap(),
        Some(head.clone())
    );
    assert_eq!(s.get_version("wal/1", &v.version_id).unwrap(), b"segment");

    // (ii) Its delete is refused, and changes nothing: no delete marker.
    let e = s.delete("wal/1").unwrap_err();
    assert!(e.is_retained() && !e.is_transient(), "{e:?}");
    assert!(
        matches!(&e, StorageError::Retained { key, until: Some(t), .. } if key == "wal/1" && *t == until),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        format!(
            "object \"wal/1\" in s3://{}/locked is retained by Object Lock until {}",
            moto.bucket,
            utc(until)
        )
    );
    assert!(pg_ark_core::Error::from(e)
        .hint()
        .is_some_and(|h| h.starts_with("Nothing was removed.")));
    assert_eq!(s.list_versions("wal/1").unwrap(), versions);
    assert_eq!(s.get("wal/1").unwrap(), b"segment");
    // Deleting a missing key still succeeds.
    s.delete("wal/none").unwrap();

    // Anyone can still hide it behind a delete marker; pg_ark's delete then
    // still removes nothing, the marker included.
    let plain = S3Storage::open(&moto.bucket, "locked", &options(&moto, None)).unwrap();
    plain.delete("wal/1").unwrap();
    assert!(plain.get("wal/1").unwrap_err().is_not_found());
    let hidden = s.list_versions("wal/1").unwrap();
    assert_eq!(hidden.len(), 2, "{hidden:?}");
    assert!(hidden[1].delete_marker && hidden[1].is_latest, "{hidden:?}");
    assert!(s.delete("wal/1").unwrap_err().is_retained());
    assert_eq!(s.list_versions("wal/1").unwrap(), hidden);

    // An unlocked key's delete removes every version and delete marker.
    plain.put("tmp/a", b"one", PutMode::Create).unwrap();
    plain.put("tmp/a", b"two", PutMode::Overwrite).unwrap();
    plain.delete("tmp/a").unwrap();
    plain.put("tmp/a.copy", b"kept", PutMode::Create).unwrap();
    assert_eq!(s.list_versions("tmp/a").unwrap().len(), 4);
    s.delete("tmp/a").unwrap();
    let left = s.list_versions("tmp/").unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].key, "tmp/a.copy");

    // A body longer than one part is a multipart upload with the lock's
    // headers, which moto accepts (and, unlike AWS, does not lock).
    let big: Vec<u8> = (0..9 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    s.put_stream("big/object", &mut &big[..], PutMode::Create)
        .unwrap();
    let mut back = Vec::new();
    s.get_reader("big/object")
        .unwrap()
        .read_to_end(&mut back)
        .unwrap();
    assert!(back == big, "the multipart object reads back");
}

#[test]
fn a_lock_on_a_bucket_without_object_lock_is_a_clear_error() {
    let moto = MotoServer::start();
    // (iii)
    let e = match S3Storage::open(&moto.plain_bucket, "p", &options(&moto, Some(LOCK))) {
        Err(e) => e,
        Ok(_) => panic!("a lock on a bucket without Object Lock must be refused"),
    };
    assert!(
        matches!(e, StorageError::ObjectLockUnavailable { .. }),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        format!(
            "s3://{b}/p: Object Lock is set, but bucket \"{b}\" has no Object Lock",
            b = moto.plain_bucket
        )
    );
    assert!(!e.is_transient());
    let hint = pg_ark_core::Error::from(e).hint().unwrap_or_default();
    assert!(
        hint.contains(
            "aws s3api create-bucket --bucket NEW-BUCKET --object-lock-enabled-for-bucket"
        ),
        "{hint}"
    );

    // Versioning suspended on a bucket with Object Lock: AWS refuses to
    // suspend it, moto does not, which lets the check be seen.
    moto.create_bucket("ark-suspended", true);
    let (status, body) = moto.http(
        "PUT",
        "/ark-suspended?versioning",
        &[],
        "<VersioningConfiguration><Status>Suspended</Status></VersioningConfiguration>",
    );
    assert!(status.starts_with("HTTP/1.1 200"), "{status}\n{body}");
    let e = match S3Storage::open("ark-suspended", "p", &options(&moto, Some(LOCK))) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a lock on a bucket without versioning must be refused"),
    };
    assert_eq!(
        e,
        "s3://ark-suspended/p: Object Lock is set, but bucket \"ark-suspended\" does not have \
         versioning enabled"
    );

    // Without the lock it opens, and reports the bucket as it is.
    let s = S3Storage::open(&moto.plain_bucket, "p", &options(&moto, None)).unwrap();
    let b = s.bucket_lock().unwrap();
    assert!(!b.enabled && !b.versioning, "{b:?}");
    assert_eq!(
        lock_warnings(&b, Some(&LOCK), None),
        [
            "Object Lock is set (compliance, 1 days), but the bucket has no Object Lock: \
          nothing pg_ark stores is protected"
        ]
    );

    // A default retention is read, in days.
    moto.create_bucket("ark-default", true);
    let (status, body) = moto.http(
        "PUT",
        "/ark-default?object-lock",
        &[],
        "<ObjectLockConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
         <ObjectLockEnabled>Enabled</ObjectLockEnabled><Rule><DefaultRetention>\
         <Mode>GOVERNANCE</Mode><Days>2</Days></DefaultRetention></Rule>\
         </ObjectLockConfiguration>",
    );
    assert!(status.starts_with("HTTP/1.1 200"), "{status}\n{body}");
    let s = S3Storage::open("ark-default", "p", &options(&moto, Some(LOCK))).unwrap();
    let b = s.bucket_lock().unwrap();
    assert_eq!(
        b,
        BucketLock {
            enabled: true,
            versioning: true,
            default_mode: Some(LockMode::Governance),
            default_days: Some(2)
        }
    );
    let wanted = ObjectLock {
        mode: LockMode::Compliance,
        days: 3,
    };
    assert_eq!(lock_warnings(&b, Some(&wanted), Some(3)).len(), 1);
    // Lock headers satisfy a bucket with a default retention.
    s.put("k", b"v", PutMode::Create).unwrap();
    assert_eq!(
        s.head_lock("k").unwrap().and_then(|h| h.lock_mode),
        Some("COMPLIANCE".to_string())
    );
}

#[test]
fn as_of_reads_an_attacked_prefix_as_it_was() {
    let moto = MotoServer::start();
    let writer =
        Arc::new(S3Storage::open(&moto.bucket, "repo", &options(&moto, Some(LOCK))).unwrap());
    writer
        .put("wal/k1", b"genuine k1", PutMode::Create)
        .unwrap();
    writer
        .put("wal/k0", b"genuine k0", PutMode::Create)
        .unwrap();
    let t = now_secs();
    wait_past_second(t);

    // (iv) The attack, with the same keys and no lock: a new version over
    // k1, then a delete marker over it, and a planted k2.
    let attacker = S3Storage::open(&moto.bucket, "repo", &options(&moto, None)).unwrap();
    attacker
        .put("wal/k1", b"garbage", PutMode::Overwrite)
        .unwrap();
    attacker.delete("wal/k1").unwrap();
    attacker.put("wal/k2", b"planted", PutMode::Create).unwrap();
    assert!(attacker.get("wal/k1").unwrap_err().is_not_found());

    // Without a time: the first version of each key. k2 has one version,
    // so it cannot be told from a genuine key and is listed, unreported.
    let view = AsOf::new(writer.clone(), None);
    assert_eq!(view.get("wal/k1").unwrap(), b"genuine k1");
    let tampered = |kind| Tamper {
        key: "wal/k1".into(),
        kind,
    };
    assert_eq!(
        view.tampering(),
        [
            tampered(TamperKind::NewerVersion { count: 1 }),
            tampered(TamperKind::DeleteMarker {
                count: 1,
                hiding: true
            }),
        ]
    );
    let listed: Vec<(String, u64)> = view
        .list("wal/")
        .unwrap()
        .into_iter()
        .map(|o| (o.key, o.size))
        .collect();
    assert_eq!(
        listed,
        [
            ("wal/k0".to_string(), 10),
            ("wal/k1".to_string(), 10),
            ("wal/k2".to_string(), 7)
        ]
    );
    assert_eq!(view.tampering().len(), 2);

    // As of the time before the attack: k2 was planted after it.
    let view = AsOf::new(writer.clone(), Some(t));
    let mut streamed = Vec::new();
    view.get_reader("wal/k1")
        .unwrap()
        .read_to_end(&mut streamed)
        .unwrap();
    assert_eq!(streamed, b"genuine k1");
    assert_eq!(view.head("wal/k1").unwrap().map(|o| o.size), Some(10));
    assert!(view.get("wal/k2").unwrap_err().is_not_found());
    assert_eq!(view.head("wal/k2").unwrap(), None);
    let keys: Vec<String> = view
        .list("wal/")
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(keys, ["wal/k0", "wal/k1"]);
    let found = view.scan("").unwrap();
    assert_eq!(found.len(), 3, "{found:?}");
    assert_eq!(found[2].key, "wal/k2");
    match found[2].kind {
        TamperKind::AfterAsOf {
            first_written,
            as_of,
        } => assert!(as_of == t && first_written > t, "{:?}", found[2]),
        ref other => panic!("k2 must be reported as planted after the time, got {other:?}"),
    }
    let words: Vec<String> = found.iter().map(|t| t.to_string()).collect();
    assert_eq!(words[0], "wal/k1: a newer version was put over the first");
    assert_eq!(words[1], "wal/k1: hidden behind a delete marker");

    // The view is read-only.
    let e = view.put("wal/k3", b"x", PutMode::Create).unwrap_err();
    assert!(e.to_string().contains("read-only view"), "{e}");
    assert!(view.delete("wal/k1").is_err());
    assert_eq!(attacker.head("wal/k3").unwrap(), None);
}

#[test]
fn s3_storage_keeps_the_contract_on_a_versioned_bucket() {
    // (v) The bucket with Object Lock (so versioned), without a lock set.
    let moto = MotoServer::start();
    let storage = S3Storage::open(&moto.bucket, "conformance", &options(&moto, None)).unwrap();
    conformance::run_all(&storage);
    // And on the plain bucket.
    let storage =
        S3Storage::open(&moto.plain_bucket, "conformance", &options(&moto, None)).unwrap();
    conformance::run_all(&storage);
}

/// The attack of issue 25, on a real server under compliance-mode Object
/// Lock: with the server's own S3 keys, every object is deleted (delete
/// markers), every version's delete is tried (each refused), descriptors
/// and indexes are overwritten with garbage, and a next WAL segment, a
/// newer backup and a newer index generation are planted. Reading the
/// repository as it was before (`--as-of`), `pg_ark verify` finds both
/// backups intact and names the tampering, `pg_ark restore` gives the
/// source's rows back, `wal-get` never serves the planted segment; the
/// server's drill reads the genuine first versions; and `ark.status()`
/// raises the tampering.
#[test]
fn a_repository_attacked_with_the_servers_own_keys_restores_exactly() {
    use pg_ark_core::repo::info;
    use pg_ark_tests::{pg_ark, rows_digest, temp_dir, wait_until, Cluster, ClusterOptions};
    let moto = MotoServer::start();
    let prefix = "attack";
    let url = format!("s3://{}/{prefix}", moto.bucket);
    let endpoint = moto.endpoint();
    let mut primary = Cluster::start_with(
        ClusterOptions::default()
            .set("archive_mode", "on")
            .set("archive_library", "'pg_ark'")
            .set("ark.repository", &format!("'{url}'"))
            .set("ark.s3_endpoint", &format!("'{endpoint}'"))
            .set("ark.s3_force_path_style", "on")
            .set("ark.s3_access_key_id", &format!("'{}'", moto.access_key))
            .set(
                "ark.s3_secret_access_key",
                &format!("'{}'", moto.secret_key),
            )
            .set("ark.s3_object_lock_mode", "compliance")
            .set("ark.s3_object_lock_days", "1"),
    );
    let mut c = primary.client();
    c.batch_execute(
        "CREATE EXTENSION pg_ark;
         CREATE TABLE t (id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 20000) g",
    )
    .unwrap();
    let run = |c: &mut postgres::Client, sql: &str| -> serde_json::Value {
        let doc: String = c.query_one(sql, &[]).unwrap().get(0);
        serde_json::from_str(&doc).unwrap()
    };
    let mut ids = Vec::new();
    for kind in ["full", "incremental"] {
        let done = run(
            &mut c,
            &format!(
                "SELECT ark.wait(ark.backup('{kind}', '{{\"max_attempts\": 1}}'), '5 min')::text"
            ),
        );
        assert_eq!(done["state"], "succeeded", "{done}");
        // The backup job scanned the bucket's versions: nothing found.
        assert_eq!(done["result"]["tampering"], serde_json::json!([]), "{done}");
        ids.push(done["result"]["backup_id"].as_str().unwrap().to_string());
        c.execute("UPDATE t SET v = md5(v) WHERE id % 7 = 0", &[])
            .unwrap();
    }
    let last: String = c
        .query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])
        .unwrap()
        .get(0);
    wait_until("the last segment archived", Duration::from_secs(90), || {
        c.query_one("SELECT last_archived_wal FROM pg_stat_archiver", &[])
            .unwrap()
            .get::<_, Option<String>>(0)
            .is_some_and(|l| l >= last)
    });
    let expected = rows_digest(&mut c, "t");
    drop(c);
    let sysid = primary.system_identifier();
    assert!(primary.stop("fast").status.success());

    // Before the attack: the server, its archiver and its jobs wrote every
    // key once (one version, no delete marker), each under the lock, and
    // each in one PutObject (moto locks no multipart object).
    let raw = S3Storage::open(&moto.bucket, prefix, &options(&moto, None)).unwrap();
    let versions = raw.list_versions("").unwrap();
    assert!(versions.len() > 20, "{versions:?}");
    let mut keys: Vec<String> = versions.iter().map(|v| v.key.clone()).collect();
    keys.dedup();
    assert_eq!(keys.len(), versions.len(), "a key written twice");
    for v in &versions {
        assert!(!v.delete_marker, "{}: a delete marker", v.key);
        let head = raw.head_version(&v.key, &v.version_id).unwrap().unwrap();
        assert_eq!(head.lock_mode.as_deref(), Some("COMPLIANCE"), "{}", v.key);
        assert!(
            head.retain_until.unwrap() > now_secs() + 80_000,
            "{}",
            v.key
        );
    }
    // The segment after the newest archived one (16 MiB segments), which
    // the server has not written yet.
    let newest = keys
        .iter()
        .filter_map(|k| k.rsplit('/').next())
        .filter(|n| n.len() == 24 && n.bytes().all(|b| b.is_ascii_hexdigit()))
        .max()
        .unwrap()
        .to_string();
    let (log, seg) = (
        u32::from_str_radix(&newest[8..16], 16).unwrap(),
        u32::from_str_radix(&newest[16..], 16).unwrap(),
    );
    let (log, seg) = if seg == 0xFF {
        (log + 1, 0)
    } else {
        (log, seg + 1)
    };
    let next = format!("{}{log:08X}{seg:08X}", &newest[..8]);
    // `pg_ark verify` and `info` show each backup's lock.
    let keys_dir = temp_dir("ark-keys-");
    let creds = moto.credentials_file(keys_dir.path());
    let plain = [
        "--repo",
        url.as_str(),
        "--s3-endpoint",
        endpoint.as_str(),
        "--s3-path-style",
        "--s3-credentials-file",
        creds.to_str().unwrap(),
    ];
    for cmd in ["verify", "info"] {
        let mut args = vec![cmd];
        args.extend(plain);
        let (ok, out, err) = pg_ark(&args);
        assert!(ok, "{out}{err}");
        assert_eq!(
            out.matches("Object Lock (compliance) until ").count(),
            2,
            "{cmd}: {out}"
        );
    }
    let before = now_secs();
    wait_past_second(before);

    // 1. With the server's keys: garbage over every descriptor, then
    //    every key deleted; the index generations deleted first, then
    //    garbage put over them (a version after a delete marker: which one
    //    is pg_ark's cannot be told); every version's delete is refused.
    let entry = format!("clusters/{sysid}/");
    let index: Vec<&String> = keys
        .iter()
        .filter(|k| k.contains("/backup.index.d/"))
        .collect();
    for k in &index {
        raw.delete(k).unwrap();
    }
    // (S3 stamps to the second on moto: the versions come after the markers.)
    wait_past_second(now_secs());
    for k in &index {
        raw.put(k, b"garbage", PutMode::Overwrite).unwrap();
    }
    for k in &keys {
        let name = k.rsplit('/').next().unwrap();
        if k.contains("/backup.index.d/") {
            continue;
        } else if name.starts_with("pg_ark.repo")
            || name.starts_with("cluster.info")
            || name.starts_with("backup.info")
        {
            raw.put(k, b"garbage", PutMode::Overwrite).unwrap();
        }
    }
    for k in &keys {
        raw.delete(k).unwrap();
    }
    let locked = S3Storage::open(&moto.bucket, prefix, &options(&moto, Some(LOCK))).unwrap();
    for k in &keys {
        let e = locked.delete(k).unwrap_err();
        assert!(e.is_retained(), "{k}: {e}");
    }
    // The server itself refuses each version's delete (not only pg_ark's
    // client, which checks the lock first).
    let auth = "AWS4-HMAC-SHA256 Credential=attacker/20261206/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00";
    for v in &versions {
        let (status, body) = moto.http(
            "DELETE",
            &format!(
                "/{}/{prefix}/{}?versionId={}",
                moto.bucket, v.key, v.version_id
            ),
            &[("Authorization", auth)],
            "",
        );
        assert!(status.contains(" 403 "), "{}: {status}\n{body}", v.key);
    }
    // 2. Planted: the next WAL segment (a genuine segment's object under
    //    the next name), a newer backup, a newer index generation.
    let wal_key = |name: &str| format!("{entry}wal/{}/{name}", &name[..16]);
    let genuine = raw
        .get_version(
            &wal_key(&newest),
            &versions
                .iter()
                .find(|v| v.key == wal_key(&newest))
                .unwrap()
                .version_id,
        )
        .unwrap();
    raw.put(&wal_key(&next), &genuine, PutMode::Create).unwrap();
    let descriptor = format!("{entry}backup/{}/backup.info", ids[1]);
    let first = |key: &str| {
        let v = versions.iter().find(|v| v.key == key).unwrap();
        raw.get_version(key, &v.version_id).unwrap()
    };
    let doc: serde_json::Value = serde_json::from_slice(&first(&descriptor)).unwrap();
    let mut fake = doc["payload"].clone();
    let fake_id = "29991231T000000Z-F-j999";
    fake["backup_id"] = serde_json::json!(fake_id);
    fake["kind"] = serde_json::json!("full");
    fake["parent"] = serde_json::Value::Null;
    fake["chain"] = serde_json::json!(fake_id);
    fake["started_epoch"] = serde_json::json!(32_503_593_600i64);
    info::save(&raw, &format!("{entry}backup/{fake_id}/backup.info"), &fake).unwrap();
    let newest_index = keys
        .iter()
        .filter(|k| k.contains("/backup.index.d/") && !k.ends_with(".copy"))
        .max()
        .unwrap();
    raw.put(
        &format!("{entry}backup.index.d/999999999999"),
        &first(newest_index),
        PutMode::Create,
    )
    .unwrap();
    // Read plainly, the repository is gone.
    let (ok, out, err) = pg_ark(&[
        "info",
        "--repo",
        &url,
        "--s3-endpoint",
        &endpoint,
        "--s3-path-style",
    ]);
    assert!(!ok || !out.contains(&ids[0]), "{out}{err}");

    // Read through first versions: both backups verify (the planted one,
    //    which only --as-of leaves out, does not); the index generations
    //    are ambiguous, not read, and named.
    let mut args = vec!["verify", "--first-versions"];
    args.extend(plain);
    let (ok, out, err) = pg_ark(&args);
    assert!(!ok, "{out}{err}");
    for id in &ids {
        assert!(
            out.lines()
                .any(|l| l.contains(&format!("backup {id} (")) && l.ends_with(": ok")),
            "{out}"
        );
    }
    assert!(
        err.contains(&format!(
            "{entry}backup.index.d/000000000001: a version was stored after a delete marker"
        )),
        "{err}"
    );

    // 3. Read as it was: `pg_ark verify --as-of` finds both backups intact
    //    and fails on the tampering, which it names.
    let as_of = utc(before);
    let reach = [
        "--repo",
        url.as_str(),
        "--s3-endpoint",
        endpoint.as_str(),
        "--s3-path-style",
        "--s3-credentials-file",
        creds.to_str().unwrap(),
        "--as-of",
        as_of.as_str(),
    ];
    let mut args = vec!["verify"];
    args.extend(reach);
    let (ok, out, err) = pg_ark(&args);
    assert!(!ok, "{out}{err}");
    for id in &ids {
        assert!(
            out.contains(&format!("backup {id} (")) && !out.contains("problem"),
            "{out}"
        );
    }
    assert!(!out.contains(fake_id), "{out}");
    assert!(
        out.contains("2 backup(s) verified") || err.contains("2 backup(s) verified"),
        "{out}{err}"
    );
    for want in [
        format!("{}: first written at", wal_key(&next)),
        format!("{descriptor}: hidden behind a delete marker"),
        format!("{descriptor}: a newer version was put over the first"),
        "pg_ark.repo: hidden behind a delete marker".to_string(),
    ] {
        assert!(err.contains(&want), "{want}:\n{err}");
    }

    // 4. `pg_ark restore --as-of`: the rows of the source, through
    //    `wal-get --as-of`, which never serves the planted segment.
    let dir = temp_dir("ark-attacked-");
    let data = dir.path().join("data");
    let mut args = vec![
        "restore",
        "--pgdata",
        data.to_str().unwrap(),
        "--archive-off",
        "--quiet",
    ];
    args.extend(reach);
    let (ok, out, err) = pg_ark(&args);
    assert!(ok, "{out}{err}");
    assert!(err.contains("tampering"), "{err}");
    let conf = std::fs::read_to_string(data.join("postgresql.auto.conf")).unwrap();
    assert!(conf.contains("--as-of"), "{conf}");
    let restored = Cluster::start_restored(dir, data.clone(), &[]);
    assert_eq!(rows_digest(&mut restored.client(), "t"), expected);
    let spare = temp_dir("ark-walget-");
    let dest = spare.path().join("seg");
    let mut args = vec!["wal-get", "--pgdata", data.to_str().unwrap()];
    args.extend(reach);
    args.extend([next.as_str(), dest.to_str().unwrap()]);
    let (ok, out, err) = pg_ark(&args);
    // Not found, quietly (as for any segment not archived), never served.
    assert!(
        !ok && !dest.exists() && !err.contains("error"),
        "the planted segment was served: {out}{err}"
    );
    // A genuine one is served, from its hidden first version.
    let mut args = vec!["wal-get", "--pgdata", data.to_str().unwrap()];
    args.extend(reach);
    args.extend([newest.as_str(), dest.to_str().unwrap()]);
    let (ok, out, err) = pg_ark(&args);
    assert!(ok, "{out}{err}");
    assert_eq!(std::fs::metadata(&dest).unwrap().len(), 16 << 20);
    drop(restored);

    // 5. The server: its drill reads the genuine versions, and a
    //    verification's scan makes ark.status() raise the tampering.
    primary.restart_stopped();
    let mut c = primary.client();
    let drill = run(
        &mut c,
        &format!(
            "SELECT ark.wait(ark.backup('drill', '{{\"backup_id\": \"{}\", \"count\": \"t\", \"max_attempts\": 1}}'), '5 min')::text",
            ids[1]
        ),
    );
    assert_eq!(drill["state"], "succeeded", "{drill}");
    let counted = drill["result"]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["rows"].is_number())
        .cloned();
    assert_eq!(counted.unwrap()["rows"], 20000, "{drill}");
    // Its record is not written into the tampered repository.
    assert!(
        drill["result"]["record_error"]
            .as_str()
            .unwrap_or_default()
            .contains("was tampered with"),
        "{drill}"
    );
    let verify = run(&mut c, "SELECT ark.wait(ark.verify(NULL), '5 min')::text");
    assert_eq!(verify["state"], "failed", "{verify}");
    let error = verify["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("the repository was tampered with")
            && error.contains(&format!(
                "read through the versions pg_ark wrote, backup \"{}\" verifies",
                ids[1]
            ))
            && error.contains("/backup.info: hidden behind a delete marker"),
        "{verify}"
    );
    // A backup into the attacked repository: it finds the repository's
    // descriptor hidden, and refuses to create it again over the
    // tampering.
    let full = run(
        &mut c,
        "SELECT ark.wait(ark.backup('full', '{\"max_attempts\": 1}'), '5 min')::text",
    );
    assert_eq!(full["state"], "failed", "{full}");
    assert!(
        full["error"]
            .as_str()
            .unwrap_or_default()
            .contains("was tampered with: \"pg_ark.repo\" is hidden behind a delete marker"),
        "{full}"
    );
    // Nothing pg_ark wrote is gone: every first version is still there.
    let after = raw.list_versions("").unwrap();
    for v in &versions {
        assert!(
            after
                .iter()
                .any(|a| a.version_id == v.version_id && !a.delete_marker),
            "{} lost its first version",
            v.key
        );
    }
    let status = run(&mut c, "SELECT ark.status()::text");
    assert_eq!(status["status"], "failing", "{status}");
    assert!(
        status["messages"]
            .to_string()
            .contains("the repository was tampered with"),
        "{status}"
    );
}
