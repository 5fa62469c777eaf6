//! Randomized chains, checked against oracles pg_ark did not write.
//!
//! A seeded random mix of DDL and DML (CREATE TABLE, INSERT, UPDATE,
//! DELETE, TRUNCATE, CREATE INDEX, DROP TABLE), maintenance (VACUUM,
//! VACUUM (FREEZE), VACUUM FULL, CLUSTER, CHECKPOINT) and whole-database
//! copies (CREATE DATABASE with STRATEGY WAL_LOG and FILE_COPY, DROP and
//! CREATE under the same OID, ALTER DATABASE SET TABLESPACE there and
//! back), with fulls, incrementals and differentials taken in between. When
//! each backup ends, the source's state is recorded: every table's rows
//! (a digest) and its visibility map (`pg_visibility`). Then every backup
//! is restored (`pg_ark restore --immediate`) and compared with that
//! record, and checked by PostgreSQL itself: `pg_check_visible` and
//! `pg_check_frozen` on every relation, `verify_heapam` on every heap and
//! `bt_index_check(heapallindexed)` on every B-tree index, catalogs
//! included.
//!
//! `ARK_SEEDS=1,2,3` runs those seeds (default: a few fixed ones, for CI);
//! every assertion names its seed, and each step is printed, so a failure
//! can be replayed (`make random-chains ARK_SEEDS=<seed>`). `ARK_BIG=1`
//! adds a relation beyond 1 GiB (segment files, a truncation across
//! segments), outside CI's time.
use pg_ark_tests::{
    archiving, give_to_test_user, pg_ark, temp_dir, visibility, wait_job, Cluster, PgInstall,
    Visibility,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The seeds CI runs.
const CI_SEEDS: &[u64] = &[1, 20_260_301, 777];
/// Backups per seed, and the random steps before each.
const BACKUPS: usize = 7;

/// splitmix64: small, seedable, good enough to pick steps.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// In `lo..hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.range(0, items.len() as u64) as usize]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.range(0, 100) < percent
    }
}

fn seeds() -> Vec<u64> {
    match std::env::var("ARK_SEEDS") {
        Ok(s) if !s.trim().is_empty() => s
            .split(',')
            .map(|x| {
                x.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("ARK_SEEDS: not a seed: {x}"))
            })
            .collect(),
        _ => CI_SEEDS.to_vec(),
    }
}

/// A cluster archiving into `repo`, with WAL summaries on 17+ (increments
/// from them there, from page LSNs on 15), autovacuum off (nothing but the
/// test writes), pg_visibility in template1 (every database made from it
/// has it) and in postgres, and a tablespace `ts1`.
fn primary(repo: &Path, ts: &Path) -> (Cluster, postgres::Client, String) {
    // Every chain is kept: each backup is restored at the end.
    let mut opts = archiving(repo)
        .set("autovacuum", "off")
        .set("ark.retention_full", "1000");
    if PgInstall::from_env().major >= 17 {
        opts = opts.set("summarize_wal", "on");
    }
    let cluster = Cluster::start_with(opts);
    cluster
        .client_on("template1")
        .batch_execute("CREATE EXTENSION pg_visibility")
        .unwrap();
    let mut c = cluster.client();
    c.batch_execute("CREATE EXTENSION pg_ark; CREATE EXTENSION pg_visibility")
        .unwrap();
    c.batch_execute(&format!(
        "CREATE TABLESPACE ts1 LOCATION '{}'",
        ts.display()
    ))
    .unwrap();
    let oid: String = c
        .query_one(
            "SELECT oid::text FROM pg_tablespace WHERE spcname = 'ts1'",
            &[],
        )
        .unwrap()
        .get(0);
    (cluster, c, oid)
}

/// Row count and digest of `table`: one md5 per row, so that tables of
/// any size fit in a text value.
fn digest(c: &mut postgres::Client, table: &str) -> Result<(i64, String), postgres::Error> {
    let r = c.query_one(
        &format!(
            "SELECT count(*), coalesce(md5(string_agg(h, ',' ORDER BY h)), '')
               FROM (SELECT md5(x::text) AS h FROM {table} x) s"
        ),
        &[],
    )?;
    Ok((r.get(0), r.get(1)))
}

/// The user tables of a database.
fn tables(c: &mut postgres::Client) -> Vec<String> {
    c.query(
        "SELECT relname::text FROM pg_class
          WHERE relnamespace = 'public'::regnamespace AND relkind = 'r' ORDER BY 1",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// The databases (but template0), sorted.
fn databases(c: &mut postgres::Client) -> Vec<String> {
    c.query(
        "SELECT datname::text FROM pg_database WHERE datallowconn ORDER BY 1",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// What a backup must restore: per database and table, its rows and its
/// visibility map.
type State = BTreeMap<(String, String), ((i64, String), Visibility)>;

fn record(cluster: &Cluster, c: &mut postgres::Client) -> (Vec<String>, State) {
    let dbs = databases(c);
    let mut state = State::new();
    for db in &dbs {
        let mut d = cluster.client_on(db);
        for t in tables(&mut d) {
            let rows = digest(&mut d, &t).unwrap();
            let vis = visibility(&mut d, &t);
            state.insert((db.clone(), t), (rows, vis));
        }
    }
    (dbs, state)
}

/// The model the steps pick from: the databases made by the test, each
/// with its tables (name, has an index).
#[derive(Default)]
struct Model {
    dbs: BTreeMap<String, Vec<(String, bool)>>,
    next: u64,
}

impl Model {
    fn name(&mut self, prefix: &str) -> String {
        self.next += 1;
        format!("{prefix}{}", self.next)
    }
}

/// One random step; returns what it did, for the replay log.
fn step(
    rng: &mut Rng,
    cluster: &Cluster,
    c: &mut postgres::Client,
    m: &mut Model,
    ctx: &str,
) -> String {
    let db = rng.pick(&m.dbs.keys().cloned().collect::<Vec<_>>()).clone();
    let tables = m.dbs[&db].clone();
    let made: Vec<String> = m.dbs.keys().filter(|d| *d != "postgres").cloned().collect();
    let mut roll = rng.range(0, 100);
    // Steps on databases a sixth of the time, on tables the rest.
    if roll >= 71 && rng.chance(45) {
        roll = rng.range(0, 71);
    }
    // A step on a table needs one; one on a made database needs one.
    if tables.is_empty() && roll < 71 {
        roll = 0;
    }
    if made.is_empty() && roll >= 83 {
        roll = 75;
    }
    let (t, has_index) = if tables.is_empty() {
        (String::new(), false)
    } else {
        rng.pick(&tables).clone()
    };
    let mut on_db = db.clone();
    let sql = match roll {
        0..=11 => {
            let t = m.name("t");
            let rows = rng.range(200, 3000);
            let pk = rng.chance(50);
            m.dbs.get_mut(&db).unwrap().push((t.clone(), pk));
            // A tenth of the rows are wide enough to be TOASTed.
            format!(
                "CREATE TABLE {t} (id int{}, k int, v text) WITH (autovacuum_enabled = off);
                 INSERT INTO {t} SELECT g, g % 97,
                   CASE WHEN g % 10 = 0
                        THEN (SELECT string_agg(md5(g::text || i), '') FROM generate_series(1, 150) i)
                        ELSE md5(g::text) END
                   FROM generate_series(1, {rows}) g;",
                if pk { " PRIMARY KEY" } else { "" }
            )
        }
        12..=23 => {
            let n = rng.range(100, 2000);
            format!(
                "INSERT INTO {t} SELECT g, g % 89, md5('{}' || g)
                   FROM generate_series((SELECT coalesce(max(id), 0) + 1 FROM {t}),
                                        (SELECT coalesce(max(id), 0) + {n} FROM {t})) g;",
                rng.next() % 1000
            )
        }
        24..=33 => {
            let (md, r) = (rng.range(2, 20), rng.range(0, 2));
            format!("UPDATE {t} SET v = md5(v), k = k + 1 WHERE id % {md} = {r};")
        }
        34..=43 if rng.chance(50) => {
            let (md, r) = (rng.range(2, 30), rng.range(0, 2));
            format!("DELETE FROM {t} WHERE id % {md} = {r};")
        }
        34..=43 => {
            // The tail: a VACUUM truncates the relation after this.
            let n = rng.range(50, 1500);
            format!("DELETE FROM {t} WHERE id > (SELECT max(id) - {n} FROM {t});")
        }
        44..=51 => format!("VACUUM {t};"),
        52..=57 => format!("VACUUM (FREEZE) {t};"),
        58..=60 => format!("VACUUM FULL {t};"),
        61..=63 if has_index => format!("CLUSTER {t} USING {t}_pkey;"),
        61..=63 => format!("CREATE INDEX IF NOT EXISTS {t}_k ON {t} (k); CLUSTER {t} USING {t}_k;"),
        64..=65 => format!("TRUNCATE {t};"),
        66..=68 => format!("CREATE INDEX ON {t} (md5(v), k);"),
        69..=70 => {
            m.dbs.get_mut(&db).unwrap().retain(|(n, _)| *n != t);
            format!("DROP TABLE {t};")
        }
        71..=74 => {
            on_db = "postgres".into();
            "CHECKPOINT;".into()
        }
        75..=82 => {
            // A database copied from template1 or from one the test made.
            on_db = "postgres".into();
            let d = m.name("d");
            let template = if made.is_empty() || rng.chance(40) {
                "template1".to_string()
            } else {
                rng.pick(&made).clone()
            };
            let strategy = *rng.pick(&["WAL_LOG", "FILE_COPY"]);
            let copied = m.dbs.get(&template).cloned().unwrap_or_default();
            m.dbs.insert(d.clone(), copied);
            format!("CREATE DATABASE {d} TEMPLATE {template} STRATEGY {strategy};")
        }
        83..=90 => {
            // To the other tablespace, or there and back with writes in
            // between.
            on_db = "postgres".into();
            let d = rng.pick(&made).clone();
            let there: bool = c
                .query_one(
                    "SELECT d.dattablespace = t.oid FROM pg_database d, pg_tablespace t
                      WHERE d.datname = $1 AND t.spcname = 'ts1'",
                    &[&d.as_str()],
                )
                .unwrap()
                .get(0);
            let (to, back) = if there {
                ("pg_default", "ts1")
            } else {
                ("ts1", "pg_default")
            };
            let mut s = format!("ALTER DATABASE {d} SET TABLESPACE {to};");
            if rng.chance(50) {
                if let Some((t, _)) = m.dbs[&d].first() {
                    s += &format!(" /* in {d} */ UPDATE {t} SET k = k + 7;");
                }
                s += &format!(" ALTER DATABASE {d} SET TABLESPACE {back};");
            }
            s
        }
        91..=95 => {
            // Dropped, and made again under the same OID by FILE_COPY from
            // template1: old page LSNs where the parent had other files.
            on_db = "postgres".into();
            let d = rng.pick(&made).clone();
            let oid: u32 = c
                .query_one(
                    "SELECT oid FROM pg_database WHERE datname = $1",
                    &[&d.as_str()],
                )
                .unwrap()
                .get::<_, postgres::types::Oid>(0);
            m.dbs.insert(d.clone(), Vec::new());
            format!(
                "DROP DATABASE {d}; CREATE DATABASE {d} TEMPLATE template1 STRATEGY FILE_COPY OID {oid};"
            )
        }
        _ => {
            on_db = "postgres".into();
            let d = rng.pick(&made).clone();
            m.dbs.remove(&d);
            format!("DROP DATABASE {d};")
        }
    };
    // Statement by statement; "/* in d */ ..." runs in database d.
    let mut other = cluster.client_on(&on_db);
    for part in sql.split_inclusive(';') {
        let part = part.trim();
        if let Some(rest) = part.strip_prefix("/* in ") {
            let (d, stmt) = rest.split_once(" */ ").unwrap();
            cluster
                .client_on(d)
                .batch_execute(stmt)
                .unwrap_or_else(|e| panic!("{ctx}: [{d}] {stmt}: {e}"));
        } else if !part.is_empty() {
            let client = if on_db == "postgres" {
                &mut *c
            } else {
                &mut other
            };
            client
                .batch_execute(part)
                .unwrap_or_else(|e| panic!("{ctx}: [{on_db}] {part}: {e}"));
        }
    }
    drop(other);
    format!(
        "[{on_db}] {}",
        sql.split_whitespace().collect::<Vec<_>>().join(" ")
    )
}

/// Run each statement of `sql` on its own (VACUUM, CREATE DATABASE and
/// their kind refuse a multi-statement transaction block).
fn each(c: &mut postgres::Client, sql: &str) {
    for stmt in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        c.batch_execute(stmt)
            .unwrap_or_else(|e| panic!("{stmt}: {e}"));
    }
}

/// Take a backup of `kind` (one attempt): its id, checked to be of that
/// kind.
fn backup(c: &mut postgres::Client, kind: &str, ctx: &str) -> String {
    let done = wait_job(c, kind, r#"{"max_attempts": 1}"#);
    assert_eq!(done["state"], "succeeded", "{ctx}: {done}");
    assert_eq!(done["result"]["kind"], kind, "{ctx}: {done}");
    done["result"]["backup_id"].as_str().unwrap().to_string()
}

/// `pg_ark restore` of backup `id` to its consistent point into a new
/// directory, tablespace `ts_oid` mapped into it too; started.
fn restore(repo: &Path, id: &str, ts_oid: &str, ctx: &str) -> Cluster {
    let dir = temp_dir("ark-random-");
    let data = dir.path().join("data");
    let ts: PathBuf = dir.path().join("ts1");
    let url = format!("file://{}", repo.display());
    let map = format!("{ts_oid}={}", ts.display());
    let data_arg = data.display().to_string();
    let args = [
        "restore",
        "--repo",
        &url,
        "--pgdata",
        &data_arg,
        "--backup",
        id,
        "--immediate",
        "--archive-off",
        "--quiet",
        "--tablespace-map",
        &map,
    ];
    let (ok, out, err) = pg_ark(&args);
    assert!(ok, "{ctx}: pg_ark {args:?}:\n{out}{err}");
    let own: Vec<&Path> = if ts.exists() {
        vec![ts.as_path()]
    } else {
        vec![]
    };
    Cluster::start_restored(dir, data, &own)
}

/// PostgreSQL's own checks of every relation of a database: tuples the
/// visibility map wrongly vouches for, `verify_heapam` and
/// `bt_index_check(heapallindexed)`. Empty when all is well.
fn postgres_checks(d: &mut postgres::Client) -> Vec<String> {
    d.batch_execute("CREATE EXTENSION IF NOT EXISTS amcheck")
        .unwrap();
    let mut problems = Vec::new();
    let rows = d
        .query(
            "SELECT c.oid::regclass::text,
                    (SELECT count(*) FROM pg_check_visible(c.oid::regclass)),
                    (SELECT count(*) FROM pg_check_frozen(c.oid::regclass))
               FROM pg_class c
              WHERE c.relkind IN ('r', 'm', 't') AND c.relpersistence <> 't'",
            &[],
        )
        .unwrap();
    for r in rows {
        let (rel, v, f): (String, i64, i64) = (r.get(0), r.get(1), r.get(2));
        if v != 0 || f != 0 {
            problems.push(format!(
                "{rel}: pg_check_visible {v} tuple(s), pg_check_frozen {f}"
            ));
        }
    }
    let rows = d
        .query(
            "SELECT c.oid::regclass::text, v.blkno, v.offnum, v.msg
               FROM pg_class c
              CROSS JOIN LATERAL verify_heapam(c.oid::regclass, on_error_stop => false,
                                               check_toast => true) v
              WHERE c.relkind IN ('r', 'm', 't') AND c.relpersistence <> 't'",
            &[],
        )
        .unwrap();
    for r in rows.iter().take(20) {
        let (rel, blk, off, msg): (String, i64, Option<i32>, String) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        problems.push(format!(
            "verify_heapam {rel} block {blk} item {off:?}: {msg}"
        ));
    }
    let rows = d
        .query(
            "SELECT c.oid, c.oid::regclass::text FROM pg_index i
               JOIN pg_class c ON c.oid = i.indexrelid
               JOIN pg_am a ON a.oid = c.relam
              WHERE a.amname = 'btree' AND i.indisvalid AND i.indisready
                AND c.relpersistence <> 't'",
            &[],
        )
        .unwrap();
    for r in rows {
        let (oid, idx): (postgres::types::Oid, String) = (r.get(0), r.get(1));
        if let Err(e) = d.execute("SELECT bt_index_check($1::oid::regclass, true)", &[&oid]) {
            problems.push(format!("bt_index_check {idx}: {e}"));
        }
    }
    problems
}

/// Restore backup `id` and compare it with `want` (the source when it
/// ended) and with PostgreSQL's own checks.
fn check_restore(repo: &Path, id: &str, ts_oid: &str, want: &(Vec<String>, State), ctx: &str) {
    let restored = restore(repo, id, ts_oid, ctx);
    let mut r = restored.client();
    assert_eq!(databases(&mut r), want.0, "{ctx}: the databases");
    let mut got = State::new();
    for db in &want.0 {
        let mut d = restored.client_on(db);
        for t in tables(&mut d) {
            let rows = digest(&mut d, &t).unwrap_or_else(|e| panic!("{ctx}: {db}.{t}: {e}"));
            got.insert((db.clone(), t.clone()), (rows, visibility(&mut d, &t)));
        }
        let problems = postgres_checks(&mut d);
        assert!(
            problems.is_empty(),
            "{ctx}: database {db} of the restored cluster: {problems:#?}"
        );
    }
    let tables_want: Vec<_> = want.1.keys().collect();
    let tables_got: Vec<_> = got.keys().collect();
    assert_eq!(tables_got, tables_want, "{ctx}: the tables");
    for (k, (rows, vis)) in &want.1 {
        let (grows, gvis) = &got[k];
        assert_eq!(grows, rows, "{ctx}: the rows of {}.{}", k.0, k.1);
        assert_eq!(gvis, vis, "{ctx}: the visibility map of {}.{}", k.0, k.1);
    }
}

fn run_seed(seed: u64) {
    let began = std::time::Instant::now();
    let major = PgInstall::from_env().major;
    let repo = temp_dir("ark-repo-");
    let ts = temp_dir("ark-ts-");
    give_to_test_user(ts.path());
    let (cluster, mut c, ts_oid) = primary(repo.path(), ts.path());
    let mut rng = Rng(seed);
    let mut m = Model::default();
    m.dbs.insert("postgres".into(), Vec::new());
    let mut taken: Vec<(String, String, (Vec<String>, State))> = Vec::new();
    let mut log = Vec::new();
    for b in 0..BACKUPS {
        for _ in 0..rng.range(3, 9) {
            let ctx = format!(
                "seed {seed} (PostgreSQL {major}) step {}; replay: ARK_SEEDS={seed}",
                log.len()
            );
            let did = step(&mut rng, &cluster, &mut c, &mut m, &ctx);
            println!("seed {seed} step {}: {did}", log.len());
            log.push(did);
        }
        let kind = if b == 0 {
            "full"
        } else {
            *rng.pick(&[
                "full",
                "incremental",
                "incremental",
                "differential",
                "differential",
            ])
        };
        let ctx = format!("seed {seed} (PostgreSQL {major}), backup {b} ({kind})");
        let id = backup(&mut c, kind, &ctx);
        println!("seed {seed} backup {b}: {kind} {id}");
        let state = record(&cluster, &mut c);
        taken.push((id, kind.to_string(), state));
    }
    drop(c);
    for (b, (id, kind, want)) in taken.iter().enumerate() {
        let ctx = format!(
            "seed {seed} (PostgreSQL {major}), backup {b} ({kind} {id}); replay: ARK_SEEDS={seed}"
        );
        check_restore(repo.path(), id, &ts_oid, want, &ctx);
    }
    println!(
        "seed {seed}: {} steps, {} backups restored and checked in {:.1} s",
        log.len(),
        taken.len(),
        began.elapsed().as_secs_f64()
    );
}

#[test]
fn random_chains_restore_every_backup_as_postgresql_checks_it() {
    for seed in seeds() {
        run_seed(seed);
    }
}

/// A relation beyond 1 GiB (two segment files), frozen, backed up; then
/// its tail deleted and vacuumed (the relation truncated across the
/// segment boundary) and rows deleted throughout (map bits cleared), and
/// an incremental; then more deletions and a differential. Each restored
/// and compared. Only with `ARK_BIG=1` (make random-chains): it writes
/// several GiB.
#[test]
#[ignore = "writes several GiB, outside CI's time: make random-chains runs it (ARK_BIG=1)"]
fn a_relation_beyond_one_gib_restores_across_segments() {
    let major = PgInstall::from_env().major;
    let repo = temp_dir("ark-repo-");
    let ts = temp_dir("ark-ts-");
    give_to_test_user(ts.path());
    let (cluster, mut c, ts_oid) = primary(repo.path(), ts.path());
    // 4 rows of ~1.9 kB a page: 630,000 rows are about 1.2 GiB.
    each(
        &mut c,
        "SET maintenance_work_mem = '256MB';
         CREATE TABLE big (id int PRIMARY KEY, v text) WITH (autovacuum_enabled = off);
         INSERT INTO big SELECT g, lpad(md5(g::text), 1900, md5((g + 1)::text))
           FROM generate_series(1, 630000) g;
         VACUUM (FREEZE) big;",
    );
    let size: i64 = c
        .query_one("SELECT pg_relation_size('big')", &[])
        .unwrap()
        .get(0);
    assert!(size > 1 << 30, "big is {size} bytes");
    let mut taken = Vec::new();
    let ctx = |kind: &str| format!("ARK_BIG (PostgreSQL {major}), {kind}");
    let id = backup(&mut c, "full", &ctx("full"));
    taken.push((id, "full", record(&cluster, &mut c)));
    each(
        &mut c,
        "DELETE FROM big WHERE id > 420000;
         DELETE FROM big WHERE id % 1000 = 0;
         VACUUM big;",
    );
    let size: i64 = c
        .query_one("SELECT pg_relation_size('big')", &[])
        .unwrap()
        .get(0);
    assert!(size < 1 << 30, "truncated below 1 GiB: {size} bytes");
    let id = backup(&mut c, "incremental", &ctx("incremental"));
    taken.push((id, "incremental", record(&cluster, &mut c)));
    each(
        &mut c,
        "DELETE FROM big WHERE id % 1000 = 1;
         INSERT INTO big SELECT g, md5(g::text) FROM generate_series(700001, 710000) g;",
    );
    let id = backup(&mut c, "differential", &ctx("differential"));
    taken.push((id, "differential", record(&cluster, &mut c)));
    drop(c);
    for (id, kind, want) in &taken {
        check_restore(
            repo.path(),
            id,
            &ts_oid,
            want,
            &ctx(&format!("{kind} {id}")),
        );
    }
}
