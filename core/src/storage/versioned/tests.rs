use super::*;

fn version(key: &str, id: &str, t: i64, latest: bool) -> ObjectVersion {
    ObjectVersion {
        key: key.into(),
        version_id: id.into(),
        last_modified: t,
        is_latest: latest,
        delete_marker: false,
        size: id.len() as u64,
    }
}

fn marker(key: &str, id: &str, t: i64, latest: bool) -> ObjectVersion {
    ObjectVersion {
        delete_marker: true,
        size: 0,
        ..version(key, id, t, latest)
    }
}

fn chosen_ids(v: &View) -> Vec<(&str, &str)> {
    v.chosen
        .iter()
        .map(|(k, c)| (k.as_str(), c.version_id.as_str()))
        .collect()
}

#[test]
fn an_untouched_key_reads_its_only_version() {
    let v = view(&[version("a", "v1", 10, true)], None);
    assert_eq!(chosen_ids(&v), [("a", "v1")]);
    assert_eq!(v.chosen["a"].size, 2);
    assert!(v.tampering.is_empty());
}

#[test]
fn the_first_version_wins_and_the_rest_is_tampering() {
    // Oldest first, as list_versions orders them: v1, v2, v3 put over it,
    // then a marker in the same second as v3.
    let all = [
        version("k", "v1", 10, false),
        version("k", "v2", 20, false),
        version("k", "v3", 25, false),
        marker("k", "m1", 25, true),
        version("other", "o1", 5, true),
    ];
    let v = view(&all, None);
    assert_eq!(chosen_ids(&v), [("k", "v1"), ("other", "o1")]);
    assert_eq!(
        v.tampering,
        [
            Tamper {
                key: "k".into(),
                kind: TamperKind::NewerVersion { count: 2 }
            },
            Tamper {
                key: "k".into(),
                kind: TamperKind::DeleteMarker {
                    count: 1,
                    hiding: true
                }
            },
        ]
    );
}

/// A key planted before pg_ark wrote it, then hidden: pg_ark's conditional
/// write succeeds over the marker, so the first version is the attacker's.
/// A version after a marker makes the key unreadable without a time; with
/// a time before the planting, neither is read.
#[test]
fn a_version_after_a_delete_marker_is_ambiguous() {
    let all = [
        version("wal/9", "planted", 10, false),
        marker("wal/9", "m", 11, false),
        version("wal/9", "genuine", 20, true),
        version("wal/8", "g", 5, true),
    ];
    let v = view(&all, None);
    assert_eq!(chosen_ids(&v), [("wal/8", "g")]);
    assert_eq!(
        v.tampering,
        [Tamper {
            key: "wal/9".into(),
            kind: TamperKind::Ambiguous
        }]
    );
    let v = view(&all, Some(9));
    assert_eq!(chosen_ids(&v), [("wal/8", "g")]);
    assert!(matches!(v.tampering[0].kind, TamperKind::AfterAsOf { .. }));
    // A marker and a version put back after the time: the version before
    // the time is read.
    let all = [
        version("k", "v1", 10, false),
        marker("k", "m", 30, false),
        version("k", "v2", 31, true),
    ];
    let v = view(&all, Some(20));
    assert_eq!(chosen_ids(&v), [("k", "v1")]);
}

#[test]
fn a_latest_delete_marker_hides_the_key() {
    let all = [version("k", "v1", 10, false), marker("k", "m1", 11, true)];
    let v = view(&all, None);
    assert_eq!(chosen_ids(&v), [("k", "v1")]);
    assert_eq!(
        v.tampering[0].kind,
        TamperKind::DeleteMarker {
            count: 1,
            hiding: true
        }
    );
    assert_eq!(v.tampering.len(), 1);
}

#[test]
fn as_of_ignores_later_versions_and_planted_keys() {
    let all = [
        version("wal/1", "g", 100, false),
        version("wal/1", "bad", 200, true),
        version("wal/2", "planted", 200, true),
        version("wal/3", "edge", 150, true),
    ];
    let v = view(&all, Some(150));
    // Stored at the as-of second itself counts as before it.
    assert_eq!(chosen_ids(&v), [("wal/1", "g"), ("wal/3", "edge")]);
    assert_eq!(
        v.tampering,
        [
            Tamper {
                key: "wal/1".into(),
                kind: TamperKind::NewerVersion { count: 1 }
            },
            Tamper {
                key: "wal/2".into(),
                kind: TamperKind::AfterAsOf {
                    first_written: 200,
                    as_of: 150
                }
            },
        ]
    );
    // Without a time the planted key cannot be told from a genuine one.
    let v = view(&all, None);
    assert!(v.chosen.contains_key("wal/2"));
    assert_eq!(v.tampering.len(), 1);
}

#[test]
fn a_key_of_delete_markers_only_has_nothing_to_read_and_is_reported() {
    let v = view(&[marker("gone", "m", 10, true)], None);
    assert!(v.chosen.is_empty());
    assert_eq!(
        v.tampering,
        [Tamper {
            key: "gone".into(),
            kind: TamperKind::DeleteMarker {
                count: 1,
                hiding: true
            }
        }]
    );
}

#[test]
fn tampering_reads_as_sentences() {
    let t = |kind| {
        Tamper {
            key: "wal/000000010000000000000005.zst".into(),
            kind,
        }
        .to_string()
    };
    assert_eq!(
        t(TamperKind::NewerVersion { count: 2 }),
        "wal/000000010000000000000005.zst: 2 newer versions were put over the first"
    );
    assert_eq!(
        t(TamperKind::NewerVersion { count: 1 }),
        "wal/000000010000000000000005.zst: a newer version was put over the first"
    );
    assert_eq!(
        t(TamperKind::DeleteMarker {
            count: 1,
            hiding: true
        }),
        "wal/000000010000000000000005.zst: hidden behind a delete marker"
    );
    assert_eq!(
        t(TamperKind::DeleteMarker {
            count: 3,
            hiding: false
        }),
        "wal/000000010000000000000005.zst: 3 delete markers were put over it"
    );
    assert_eq!(
        t(TamperKind::AfterAsOf {
            first_written: 1_796_601_661,
            as_of: 1_796_601_600
        }),
        "wal/000000010000000000000005.zst: first written at 2026-12-07T00:01:01Z, after the \
         as-of time 2026-12-07T00:00:00Z: ignored"
    );
}

/// An in-memory versioned store: versions in the order they were stored.
#[derive(Default)]
struct Fake {
    versions: Mutex<Vec<(ObjectVersion, Vec<u8>)>>,
}

impl Fake {
    fn add(&self, key: &str, body: Option<&[u8]>, t: i64) {
        let mut all = self.versions.lock().unwrap();
        for (v, _) in all.iter_mut().filter(|(v, _)| v.key == key) {
            v.is_latest = false;
        }
        let id = format!("{key}#{}", all.len());
        all.push((
            ObjectVersion {
                key: key.into(),
                version_id: id,
                last_modified: t,
                is_latest: true,
                delete_marker: body.is_none(),
                size: body.map_or(0, |b| b.len() as u64),
            },
            body.unwrap_or_default().to_vec(),
        ));
    }
}

impl Versioned for Fake {
    fn location(&self) -> String {
        "fake://versions".into()
    }
    fn list_versions(&self, prefix: &str) -> Result<Vec<ObjectVersion>, StorageError> {
        let mut out: Vec<ObjectVersion> = self
            .versions
            .lock()
            .unwrap()
            .iter()
            .filter(|(v, _)| v.key.starts_with(prefix))
            .map(|(v, _)| v.clone())
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key)); // stable: oldest first per key
        Ok(out)
    }
    fn get_version(&self, key: &str, version_id: &str) -> Result<Vec<u8>, StorageError> {
        self.versions
            .lock()
            .unwrap()
            .iter()
            .find(|(v, _)| v.version_id == version_id && !v.delete_marker)
            .map(|(_, b)| b.clone())
            .ok_or_else(|| StorageError::NotFound {
                key: key.into(),
                location: self.location(),
            })
    }
}

fn attacked() -> Arc<Fake> {
    let f = Arc::new(Fake::default());
    f.add("wal/1", Some(b"genuine one"), 100);
    f.add("wal/0", Some(b"genuine zero"), 100);
    f.add("backup/x/backup.info", Some(b"descriptor"), 100);
    // The attack, after 150.
    f.add("wal/1", Some(b"garbage"), 200);
    f.add("wal/1", None, 201);
    f.add("wal/2", Some(b"planted"), 202);
    f
}

#[test]
fn as_of_reads_first_versions_and_refuses_writes() {
    let s = AsOf::new(attacked(), None);
    assert_eq!(s.get("wal/1").unwrap(), b"genuine one");
    let mut streamed = Vec::new();
    s.get_reader("wal/1")
        .unwrap()
        .read_to_end(&mut streamed)
        .unwrap();
    assert_eq!(streamed, b"genuine one");
    assert_eq!(s.head("wal/1").unwrap().map(|i| i.size), Some(11));
    let listed: Vec<(String, u64)> = s
        .list("wal/")
        .unwrap()
        .into_iter()
        .map(|i| (i.key, i.size))
        .collect();
    assert_eq!(
        listed,
        [
            ("wal/0".to_string(), 12),
            ("wal/1".to_string(), 11),
            ("wal/2".to_string(), 7)
        ]
    );
    assert!(s.get("wal/9").unwrap_err().is_not_found());
    assert_eq!(s.head("wal/9").unwrap(), None);
    assert!(matches!(
        s.get("../x"),
        Err(StorageError::InvalidKey { .. })
    ));

    for e in [
        s.put("wal/3", b"x", PutMode::Create).unwrap_err(),
        s.put_stream("wal/3", &mut &b"x"[..], PutMode::Overwrite)
            .unwrap_err(),
        s.delete("wal/1").unwrap_err(),
    ] {
        assert!(
            e.to_string()
                .contains("is a read-only view of the repository, first versions only"),
            "{e}"
        );
    }
    assert_eq!(s.list("").unwrap().len(), 4, "nothing was written");
}

#[test]
fn as_of_reports_what_it_saw() {
    let s = AsOf::new(attacked(), Some(150));
    assert!(s.tampering().is_empty(), "nothing seen yet");
    // One read covers its key.
    assert_eq!(s.get("wal/1").unwrap(), b"genuine one");
    let words: Vec<String> = s.tampering().iter().map(|t| t.to_string()).collect();
    assert_eq!(
        words,
        [
            "wal/1: a newer version was put over the first",
            "wal/1: hidden behind a delete marker"
        ]
    );
    // The planted key is neither read nor listed.
    assert!(s.get("wal/2").unwrap_err().is_not_found());
    let listed: Vec<String> = s.list("wal/").unwrap().into_iter().map(|i| i.key).collect();
    assert_eq!(listed, ["wal/0", "wal/1"]);
    let found = s.scan("").unwrap();
    assert_eq!(found.len(), 3, "{found:?}");
    assert_eq!(
        found[2].kind,
        TamperKind::AfterAsOf {
            first_written: 202,
            as_of: 150
        }
    );
    // Listing again does not repeat a report.
    s.list("").unwrap();
    assert_eq!(s.tampering(), found);
    assert!(s.scan("backup/").unwrap().is_empty());
}
