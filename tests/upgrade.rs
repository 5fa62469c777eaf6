//! Versioned upgrades (`ALTER EXTENSION pg_ark UPDATE`), on real clusters.
//!
//! - A cluster runs pg_ark 0.1.0 on 0.1.0's own library (built from its
//!   commit by `scripts/old-release.sh`, found first through
//!   `dynamic_library_path`): it archives WAL, takes a full backup and a
//!   logical dump, fails a job, and keeps schedules. Then it restarts on this
//!   release's library: until `ALTER EXTENSION pg_ark UPDATE` the 0.1.0
//!   functions answer (the queue ones refuse, saying to update) and WAL
//!   archiving goes on; after it, the catalog is kept row for row, a
//!   schedule of 0.1.0 runs an incremental on 0.1.0's full, the full
//!   verifies, and `pg_ark restore` rebuilds both from the repository 0.1.0
//!   wrote. A restore of 0.1.0's full (a 0.1.0 catalog on this library)
//!   pauses its schedules once updated. The updated schema equals a fresh
//!   install's.
//! - 0.1.0's install script, run against this library, binds every symbol
//!   it names; each of its functions is called before the update; the
//!   updated schema equals a fresh install's.
//! - A repository of a newer format (a fixture) is refused by this release,
//!   the extension and the CLI alike, and left as it is.
use pg_ark_tests::{
    archiving, give_to_test_user, give_tree_to_test_user, pg_ark, rows_digest, temp_dir, wait_job,
    wait_until, Cluster, ClusterOptions, PgInstall,
};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

const OLD: &str = "0.1.0";
/// 0.1.0's install script, as kept in `sql/`.
const OLD_SCRIPT: &str = include_str!("../sql/pg_ark--0.1.0.sql");
const WAIT: Duration = Duration::from_secs(120);

/// Where `scripts/old-release.sh` put 0.1.0's library for this major.
fn old_library_dir(major: u32) -> PathBuf {
    let cache = std::env::var_os("ARK_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/pg_ark"));
    let dir = cache.join(format!("releases/pg_ark-{OLD}/{major}"));
    assert!(
        dir.join("pg_ark.so").is_file(),
        "pg_ark {OLD}'s library for PostgreSQL {major} is not in {}: run scripts/old-release.sh with this major's pg_config (make integration and make smoke do)",
        dir.display()
    );
    dir
}

/// The version `CREATE EXTENSION pg_ark` installs.
fn current_version(c: &mut postgres::Client) -> String {
    let v: String = c
        .query_one(
            "SELECT default_version FROM pg_available_extensions WHERE name = 'pg_ark'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_ne!(v, OLD);
    v
}

fn extversion(c: &mut postgres::Client) -> String {
    c.query_one(
        "SELECT extversion FROM pg_extension WHERE extname = 'pg_ark'",
        &[],
    )
    .unwrap()
    .get(0)
}

fn library_version(c: &mut postgres::Client) -> String {
    c.query_one("SELECT ark.version()", &[]).unwrap().get(0)
}

/// Every row of `table` (a trusted name) as jsonb text, by id, with
/// `id <= upto`.
/// Rows of `table` up to id `upto`, as JSON, without the columns 0.2.0
/// added to rows 0.1.0 wrote (empty there: checked apart).
fn rows(c: &mut postgres::Client, table: &str, upto: i64) -> Vec<String> {
    c.query(
        &format!(
            "SELECT (to_jsonb(x) - 'queued_by')::text FROM {table} x WHERE x.id <= $1 ORDER BY x.id"
        ),
        &[&upto],
    )
    .unwrap_or_else(|e| panic!("rows of {table}: {e}"))
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// Insert rows into `t` and switch WAL; returns the segment switched from.
fn switch_wal(c: &mut postgres::Client) -> String {
    c.batch_execute(
        "INSERT INTO t SELECT g, 'more' FROM generate_series((SELECT max(id) + 1 FROM t), (SELECT max(id) + 500 FROM t)) g",
    )
    .unwrap();
    c.query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])
        .unwrap()
        .get(0)
}

/// `pg_ark restore --immediate --backup ID --archive-off` of the
/// repository in `repo` into a new directory, started on this release's
/// library (the copied configuration may name 0.1.0's first).
fn restore(repo: &Path, backup_id: &str) -> Cluster {
    let dir = temp_dir("ark-restored-");
    let data = dir.path().join("data");
    let url = format!("file://{}", repo.display());
    let pgdata = data.display().to_string();
    let (ok, out, err) = pg_ark(&[
        "restore",
        "--repo",
        &url,
        "--pgdata",
        &pgdata,
        "--quiet",
        "--archive-off",
        "--immediate",
        "--backup",
        backup_id,
    ]);
    assert!(ok, "pg_ark restore --backup {backup_id}:\n{out}{err}");
    let auto = data.join("postgresql.auto.conf");
    let conf = std::fs::read_to_string(&auto).unwrap_or_default();
    std::fs::write(&auto, conf + "dynamic_library_path = '$libdir'\n").unwrap();
    Cluster::start_restored(dir, data, &[])
}

fn status(c: &mut postgres::Client) -> Value {
    let s: String = c
        .query_one("SELECT ark.status()::text", &[])
        .unwrap()
        .get(0);
    serde_json::from_str(&s).unwrap()
}

fn wait_for(c: &mut postgres::Client, id: i64) -> Value {
    let s: String = c
        .query_one("SELECT ark.wait($1, '5 min')::text", &[&id])
        .unwrap()
        .get(0);
    serde_json::from_str(&s).unwrap()
}

/// A statement a 0.1.0 function refuses before the update: SQLSTATE 55000,
/// naming both versions, with the command as hint.
fn refused_until_updated(c: &mut postgres::Client, sql: &str, current: &str) {
    let e = c
        .batch_execute(sql)
        .expect_err(&format!("{sql} ran on the {OLD} catalog"));
    let db = e.as_db_error().unwrap_or_else(|| panic!("{sql}: {e}"));
    assert_eq!(db.code().code(), "55000", "{sql}: {}", db.message());
    assert!(
        db.message().contains(OLD) && db.message().contains(current),
        "{sql}: {}",
        db.message()
    );
    assert!(
        db.hint()
            .is_some_and(|h| h.contains("ALTER EXTENSION pg_ark UPDATE")),
        "{sql}: hint {:?}",
        db.hint()
    );
}

/// The `ark` schema as the catalog describes it: one entry per object (its
/// kind and name) with everything that defines it, role names instead of
/// OIDs, privileges with PostgreSQL's defaults spelled out.
fn schema(c: &mut postgres::Client) -> BTreeMap<String, String> {
    // aclexplode() of an ACL (or of the default one) with role names.
    const ACL: &str = "(SELECT coalesce(string_agg(a.item, ',' ORDER BY a.item), '')
                         FROM (SELECT format('%s=%s/%s%s',
                                      CASE WHEN x.grantee = 0 THEN 'PUBLIC' ELSE x.grantee::regrole::text END,
                                      x.privilege_type, x.grantor::regrole,
                                      CASE WHEN x.is_grantable THEN '*' ELSE '' END) AS item
                                 FROM aclexplode(coalesce(ACL_COLUMN, acldefault(ACL_KIND, OWNER_COLUMN))) x) a)";
    let acl = |column: &str, kind: &str, owner: &str| {
        ACL.replace("ACL_COLUMN", column)
            .replace("ACL_KIND", kind)
            .replace("OWNER_COLUMN", owner)
    };
    let queries = [
        format!(
            "SELECT 'schema ' || n.nspname,
                    format('owner=%s acl=%s comment=%s', n.nspowner::regrole, {}, obj_description(n.oid, 'pg_namespace'))
               FROM pg_namespace n WHERE n.nspname = 'ark'",
            acl("n.nspacl", "'n'::\"char\"", "n.nspowner")
        ),
        "SELECT 'extension ' || e.extname,
                format('version=%s schema=%s owner=%s relocatable=%s config=%s',
                       e.extversion, e.extnamespace::regnamespace, e.extowner::regrole, e.extrelocatable,
                       (SELECT string_agg(format('%s:%s', t.c::regclass, t.w), ',' ORDER BY t.c::regclass::text)
                          FROM unnest(e.extconfig, e.extcondition) AS t(c, w)))
           FROM pg_extension e WHERE e.extname = 'pg_ark'"
            .to_string(),
        "SELECT 'member ' || pg_describe_object(d.classid, d.objid, d.objsubid), 'of pg_ark'
           FROM pg_depend d JOIN pg_extension e ON d.refclassid = 'pg_extension'::regclass AND d.refobjid = e.oid
          WHERE e.extname = 'pg_ark' AND d.deptype = 'e'"
            .to_string(),
        format!(
            "SELECT 'relation ' || c.relname,
                    format('kind=%s owner=%s persistence=%s options=%s rls=%s/%s acl=%s comment=%s',
                           c.relkind, c.relowner::regrole, c.relpersistence, c.reloptions,
                           c.relrowsecurity, c.relforcerowsecurity, {}, obj_description(c.oid, 'pg_class'))
               FROM pg_class c WHERE c.relnamespace = 'ark'::regnamespace",
            acl(
                "c.relacl",
                "CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END::\"char\"",
                "c.relowner"
            )
        ),
        "SELECT format('column %s.%s', c.relname, a.attname),
                format('position=%s type=%s not_null=%s default=%s identity=%s generated=%s collation=%s acl=%s comment=%s',
                       row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum),
                       format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(d.adbin, d.adrelid),
                       a.attidentity, a.attgenerated, a.attcollation::regcollation,
                       (SELECT string_agg(x.item, ',' ORDER BY x.item)
                          FROM (SELECT format('%s=%s/%s', CASE WHEN e.grantee = 0 THEN 'PUBLIC' ELSE e.grantee::regrole::text END,
                                              e.privilege_type, e.grantor::regrole) AS item
                                  FROM aclexplode(a.attacl) e) x),
                       col_description(c.oid, a.attnum))
           FROM pg_attribute a
           JOIN pg_class c ON c.oid = a.attrelid
           LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
          WHERE c.relnamespace = 'ark'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped"
            .to_string(),
        "SELECT format('constraint %s.%s', co.conrelid::regclass, co.conname),
                format('type=%s %s deferrable=%s/%s comment=%s', co.contype, pg_get_constraintdef(co.oid),
                       co.condeferrable, co.condeferred, obj_description(co.oid, 'pg_constraint'))
           FROM pg_constraint co WHERE co.connamespace = 'ark'::regnamespace"
            .to_string(),
        "SELECT 'index ' || i.indexrelid::regclass, pg_get_indexdef(i.indexrelid)
           FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
          WHERE c.relnamespace = 'ark'::regnamespace"
            .to_string(),
        "SELECT 'view ' || c.relname, pg_get_viewdef(c.oid, true)
           FROM pg_class c WHERE c.relnamespace = 'ark'::regnamespace AND c.relkind IN ('v', 'm')"
            .to_string(),
        "SELECT 'sequence ' || s.seqrelid::regclass,
                format('type=%s start=%s increment=%s min=%s max=%s cache=%s cycle=%s',
                       s.seqtypid::regtype, s.seqstart, s.seqincrement, s.seqmin, s.seqmax, s.seqcache, s.seqcycle)
           FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid
          WHERE c.relnamespace = 'ark'::regnamespace"
            .to_string(),
        format!(
            "SELECT 'function ' || p.oid::regprocedure,
                    format('owner=%s security_definer=%s leakproof=%s acl=%s comment=%s\n%s',
                           p.proowner::regrole, p.prosecdef, p.proleakproof, {},
                           obj_description(p.oid, 'pg_proc'), pg_get_functiondef(p.oid))
               FROM pg_proc p WHERE p.pronamespace = 'ark'::regnamespace",
            acl("p.proacl", "'f'::\"char\"", "p.proowner")
        ),
        "SELECT format('trigger %s.%s', t.tgrelid::regclass, t.tgname), pg_get_triggerdef(t.oid)
           FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
          WHERE c.relnamespace = 'ark'::regnamespace AND NOT t.tgisinternal"
            .to_string(),
        "SELECT format('policy %s.%s', tablename, policyname),
                format('%s %s %s using=%s check=%s', permissive, roles, cmd, qual, with_check)
           FROM pg_policies WHERE schemaname = 'ark'"
            .to_string(),
        "SELECT 'type ' || t.oid::regtype, format('type=%s comment=%s', t.typtype, obj_description(t.oid, 'pg_type'))
           FROM pg_type t
          WHERE t.typnamespace = 'ark'::regnamespace AND t.typrelid = 0 AND t.typelem = 0"
            .to_string(),
        "SELECT format('default privileges %s %s', d.defaclrole::regrole, d.defaclobjtype), d.defaclacl::text
           FROM pg_default_acl d WHERE d.defaclnamespace = 'ark'::regnamespace"
            .to_string(),
    ];
    let mut out = BTreeMap::new();
    for q in &queries {
        for r in c
            .query(q.as_str(), &[])
            .unwrap_or_else(|e| panic!("{q}: {e}"))
        {
            let key: String = r.get(0);
            let value: Option<String> = r.get(1);
            let previous = out.insert(key.clone(), value.unwrap_or_default());
            assert!(previous.is_none(), "{key} twice");
        }
    }
    out
}

/// Assert that the schema of database `updated` equals that of a fresh
/// install in a new database of the same cluster.
fn assert_same_schema_as_a_fresh_install(cluster: &Cluster, updated: &str) {
    let mut su = cluster.client();
    su.batch_execute("CREATE DATABASE fresh").unwrap();
    let mut fresh = cluster.client_on("fresh");
    fresh.batch_execute("CREATE EXTENSION pg_ark").unwrap();
    let want = schema(&mut fresh);
    let got = schema(&mut cluster.client_on(updated));
    // What the comparison covers: the objects that came after 0.1.0, and
    // each kind of entry.
    for key in [
        "schema ark",
        "extension pg_ark",
        "relation schedules",
        "column schedules.paused",
        "function ark.resume_schedules()",
        "member function ark.resume_schedules()",
        "view backup_chains",
        "sequence ark.jobs_id_seq",
    ] {
        assert!(want.contains_key(key), "{key} is not in {:#?}", want.keys());
    }
    for prefix in ["constraint ark.jobs.", "index ark.jobs"] {
        assert!(
            want.keys().any(|k| k.starts_with(prefix)),
            "no {prefix}* in {:#?}",
            want.keys()
        );
    }
    assert!(
        want["relation jobs"].contains("ark_monitor=SELECT/"),
        "{}",
        want["relation jobs"]
    );
    // Every table, view and function has a comment (sql/README.md: every
    // new object gets a COMMENT ON), so the comparison holds the upgrade
    // scripts to it too.
    for (key, value) in &want {
        let commented = |v: &str| {
            v.split_once(" comment=")
                .is_some_and(|(_, c)| !c.lines().next().unwrap_or("").is_empty())
        };
        let needs = key.starts_with("function ")
            || (key.starts_with("relation ")
                && (value.starts_with("kind=r ") || value.starts_with("kind=v ")));
        assert!(!needs || commented(value), "{key} has no comment: {value}");
    }
    let mut differences = Vec::new();
    for key in want.keys().chain(got.keys()).collect::<BTreeSet<_>>() {
        match (want.get(key), got.get(key)) {
            (Some(w), Some(g)) if w == g => {}
            (w, g) => differences.push(format!(
                "{key}:\n  fresh:   {}\n  updated: {}",
                w.map_or("(missing)", String::as_str),
                g.map_or("(missing)", String::as_str)
            )),
        }
    }
    assert!(
        differences.is_empty(),
        "database {updated}, updated from {OLD}, differs from a fresh install:\n{}",
        differences.join("\n")
    );
}

#[test]
fn a_0_1_0_cluster_moves_to_this_release_keeping_its_catalog_and_repository() {
    let install = PgInstall::from_env();
    let old_lib = old_library_dir(install.major);
    let repo = temp_dir("ark-repo-");
    let work = temp_dir("ark-work-");
    give_to_test_user(work.path());
    let mut opts = archiving(repo.path())
        .set(
            "ark.work_directory",
            &format!("'{}'", work.path().display()),
        )
        .set("ark.scheduler_naptime", "'1s'")
        .set(
            "dynamic_library_path",
            &format!("'{}:$libdir'", old_lib.display()),
        );
    if install.major >= 17 {
        opts = opts.set("summarize_wal", "on");
    }
    let mut cluster = Cluster::start_with(opts);
    let mut c = cluster.client();

    // pg_ark 0.1.0 on its own library.
    c.batch_execute(&format!("CREATE EXTENSION pg_ark VERSION '{OLD}'"))
        .unwrap();
    assert_eq!(extversion(&mut c), OLD);
    assert_eq!(library_version(&mut c), OLD, "0.1.0's library is loaded");
    let current = current_version(&mut c);
    c.batch_execute(
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 20000) g;
         CHECKPOINT;",
    )
    .unwrap();
    // Schedules that do not come due during the test (January 1st, July
    // 1st), one of each kind the pause after a restore treats differently.
    for (name, cron, kind, options) in [
        ("incr", "0 3 1 1 *", "incremental", r#"{"max_attempts": 1}"#),
        (
            "dumps",
            "30 4 1 7 *",
            "logical",
            r#"{"database": "postgres"}"#,
        ),
        ("checks", "0 5 1 1 *", "verify", "{}"),
    ] {
        c.query_one(
            "SELECT ark.schedule($1, $2, $3, $4::text::jsonb)",
            &[&name, &cron, &kind, &options],
        )
        .unwrap();
    }
    let full = wait_job(&mut c, "full", r#"{"max_attempts": 1}"#);
    assert_eq!(full["state"], "succeeded", "{full}");
    let full_id = full["result"]["backup_id"].as_str().unwrap().to_string();
    let at_full = rows_digest(&mut c, "t");
    let dump = wait_job(&mut c, "logical", r#"{"database": "postgres"}"#);
    assert_eq!(dump["state"], "succeeded", "{dump}");
    let failed = wait_job(
        &mut c,
        "logical",
        r#"{"database": "no_such_database", "max_attempts": 1}"#,
    );
    assert_eq!(failed["state"], "failed", "{failed}");
    let failed_id = failed["job_id"].as_i64().unwrap();
    c.batch_execute(
        "INSERT INTO t SELECT g, 'after the full' FROM generate_series(20001, 21000) g",
    )
    .unwrap();
    let switched = switch_wal(&mut c);
    cluster.wait_archived(&switched, WAIT);
    let max_id = |c: &mut postgres::Client, table: &str| -> i64 {
        c.query_one(&format!("SELECT coalesce(max(id), 0) FROM {table}"), &[])
            .unwrap()
            .get(0)
    };
    let (jobs_upto, backups_upto) = (max_id(&mut c, "ark.jobs"), max_id(&mut c, "ark.backups"));
    assert_eq!(
        c.query_one(
            "SELECT count(*) FROM ark.jobs WHERE state NOT IN ('succeeded', 'failed')",
            &[]
        )
        .unwrap()
        .get::<_, i64>(0),
        0
    );
    let schedules = rows(&mut c, "ark.schedules", i64::MAX);
    let jobs = rows(&mut c, "ark.jobs", jobs_upto);
    let backups = rows(&mut c, "ark.backups", backups_upto);
    assert_eq!(schedules.len(), 3);
    assert_eq!(jobs.len(), 3);
    assert_eq!(backups.len(), 2, "{backups:?}");

    // This release's library: the setting goes, the server restarts.
    c.batch_execute("ALTER SYSTEM SET dynamic_library_path = '$libdir'")
        .unwrap();
    drop(c);
    assert!(cluster.stop("fast").status.success());
    let mark = cluster.log_mark();
    cluster.restart_stopped();
    let mut c = cluster.client();
    assert_eq!(library_version(&mut c), current);
    assert_eq!(extversion(&mut c), OLD);

    // Before the update: 0.1.0's functions answer from this library. The
    // scheduler waits and says why; the queue's functions refuse.
    cluster.wait_for_log_after(mark, "ALTER EXTENSION pg_ark UPDATE", WAIT);
    let s = status(&mut c);
    // Failing: 0.1.0's failed job is there too.
    assert_eq!(s["status"], "failing", "{s}");
    assert!(
        s["messages"].as_array().unwrap().iter().any(|m| m
            .as_str()
            .unwrap()
            .contains("ALTER EXTENSION pg_ark UPDATE")),
        "{s}"
    );
    for sql in [
        "SELECT ark.backup('full')",
        "SELECT ark.verify()",
        "SELECT ark.schedule('x', '@daily', 'full')",
        "SELECT ark.unschedule('incr')",
        "SELECT ark.wait(1)",
        "SELECT ark.cancel(1)",
        "SELECT ark.retry(1)",
        "SELECT * FROM ark.expire(dry_run => true)",
    ] {
        refused_until_updated(&mut c, sql, &current);
    }
    // The plan reads the repository 0.1.0 wrote.
    let plan: Vec<String> = c
        .query(
            "SELECT action || ': ' || detail FROM ark.restore_plan(backup_id => $1)",
            &[&full_id],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(plan.iter().any(|l| l.contains(&full_id)), "{plan:#?}");
    // WAL archiving goes on, into 0.1.0's repository entry.
    let switched = switch_wal(&mut c);
    cluster.wait_archived(&switched, WAIT);
    let archived: i64 = c
        .query_one("SELECT archived_count FROM ark.archive_status()", &[])
        .unwrap()
        .get(0);
    assert!(archived >= 1);
    assert_eq!(rows(&mut c, "ark.jobs", i64::MAX), jobs, "no job ran");

    // The update.
    c.batch_execute("ALTER EXTENSION pg_ark UPDATE").unwrap();
    assert_eq!(extversion(&mut c), current);

    // Kept, row for row; the new column is empty.
    let paused: i64 = c
        .query_one(
            "SELECT count(*) FROM ark.schedules WHERE paused IS NOT NULL",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(paused, 0);
    // Who made the schedules and queued the jobs of 0.1.0 is not known: the
    // new columns are empty (the kinds only superusers queue are new).
    let unknown: i64 = c
        .query_one(
            "SELECT (SELECT count(*) FROM ark.schedules WHERE created_by IS NOT NULL)
                  + (SELECT count(*) FROM ark.jobs WHERE queued_by IS NOT NULL)",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(unknown, 0);
    let kept_schedules: Vec<String> = c
        .query(
            "SELECT (to_jsonb(s) - 'paused' - 'created_by')::text FROM ark.schedules s ORDER BY id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(kept_schedules, schedules);
    assert_eq!(rows(&mut c, "ark.jobs", jobs_upto), jobs);
    assert_eq!(rows(&mut c, "ark.backups", backups_upto), backups);
    let doc = wait_for(&mut c, failed_id);
    assert_eq!(doc["state"], "failed", "{doc}");

    // It works: a schedule of 0.1.0, due now, takes an incremental on
    // 0.1.0's full.
    let at_incr = rows_digest(&mut c, "t");
    c.batch_execute("UPDATE ark.schedules SET next_run = now() WHERE name = 'incr'")
        .unwrap();
    let mut job = None;
    wait_until("the incr schedule's job", WAIT, || {
        job = c
            .query_opt("SELECT id FROM ark.jobs WHERE schedule_name = 'incr'", &[])
            .unwrap()
            .map(|r| r.get::<_, i64>(0));
        job.is_some()
    });
    let incr = wait_for(&mut c, job.unwrap());
    assert_eq!(incr["state"], "succeeded", "{incr}");
    assert_eq!(incr["result"]["kind"], "incremental", "{incr}");
    assert_eq!(incr["result"]["parent"], full_id.as_str(), "{incr}");
    let incr_id = incr["result"]["backup_id"].as_str().unwrap().to_string();
    let verified: i64 = c
        .query_one("SELECT ark.verify($1)", &[&full_id])
        .unwrap()
        .get(0);
    let verified = wait_for(&mut c, verified);
    assert_eq!(verified["state"], "succeeded", "{verified}");
    let resumed: i64 = c
        .query_one("SELECT ark.resume_schedules()", &[])
        .unwrap()
        .get(0);
    assert_eq!(resumed, 0);
    let s = status(&mut c);
    assert!(
        !s.to_string().contains("ALTER EXTENSION"),
        "status after the update: {s}"
    );

    // The whole repository verifies with this release's CLI, and a restore
    // of the incremental (its full written by 0.1.0) has its rows.
    let url = format!("file://{}", repo.path().display());
    let (ok, out, err) = pg_ark(&["verify", "--repo", &url]);
    assert!(ok, "pg_ark verify:\n{out}{err}");
    assert!(out.contains("2 backup(s) verified"), "{out}");
    let restored = restore(repo.path(), &incr_id);
    assert_eq!(library_version(&mut restored.client()), current);
    assert_eq!(rows_digest(&mut restored.client(), "t"), at_incr);
    drop(restored);

    // 0.1.0's full restored: a 0.1.0 catalog on this library. Nothing runs
    // until the update; then the job that took the backup is recorded as
    // done, and the schedules that would write into the source's
    // repository entry are paused before any comes due.
    let restored = restore(repo.path(), &full_id);
    let mut r = restored.client();
    assert_eq!(library_version(&mut r), current);
    assert_eq!(extversion(&mut r), OLD);
    assert_eq!(rows_digest(&mut r, "t"), at_full);
    let s = status(&mut r);
    assert_eq!(s["status"], "degraded", "{s}");
    let full_job = full["job_id"].as_i64().unwrap();
    let state = |r: &mut postgres::Client| -> String {
        r.query_one("SELECT state FROM ark.jobs WHERE id = $1", &[&full_job])
            .unwrap()
            .get(0)
    };
    assert_eq!(state(&mut r), "running");
    r.batch_execute("ALTER EXTENSION pg_ark UPDATE").unwrap();
    wait_until("the restored copy's schedules paused", WAIT, || {
        let n: i64 = r
            .query_one(
                "SELECT count(*) FROM ark.schedules WHERE paused IS NOT NULL",
                &[],
            )
            .unwrap()
            .get(0);
        n == 2
    });
    let running: Vec<String> = r
        .query(
            "SELECT name FROM ark.schedules WHERE paused IS NULL ORDER BY name",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(running, ["checks"]);
    wait_until("the backup's own job recorded as succeeded", WAIT, || {
        state(&mut r) == "succeeded"
    });
    drop(r);
    drop(restored);

    assert_same_schema_as_a_fresh_install(&cluster, "postgres");
}

#[test]
fn the_0_1_0_script_binds_to_this_library_and_updates_to_a_fresh_install() {
    let cluster =
        Cluster::start_with(ClusterOptions::default().set("ark.scheduler_naptime", "'1s'"));
    let mut c = cluster.client();
    let current = current_version(&mut c);
    // CREATE FUNCTION ... LANGUAGE c looks its symbol up in the library.
    c.batch_execute(&format!("CREATE EXTENSION pg_ark VERSION '{OLD}'"))
        .unwrap();
    assert_eq!(extversion(&mut c), OLD);
    let named: BTreeSet<String> = OLD_SCRIPT
        .split("AS 'MODULE_PATHNAME', '")
        .skip(1)
        .map(|rest| rest.split('\'').next().unwrap().to_string())
        .collect();
    assert_eq!(named.len(), 12, "{named:?}");
    let bound: BTreeSet<String> = c
        .query(
            "SELECT prosrc FROM pg_proc
              WHERE pronamespace = 'ark'::regnamespace
                AND prolang = (SELECT oid FROM pg_language WHERE lanname = 'c')",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(bound, named);

    // Each of 0.1.0's functions, called before the update, is answered by
    // this library.
    assert_eq!(library_version(&mut c), current);
    let archived: i64 = c
        .query_one("SELECT archived_count FROM ark.archive_status()", &[])
        .unwrap()
        .get(0);
    assert_eq!(archived, 0);
    let s = status(&mut c);
    assert_eq!(s["status"], "degraded", "{s}");
    let e = c
        .batch_execute("SELECT * FROM ark.restore_plan()")
        .unwrap_err();
    let db = e.as_db_error().unwrap();
    assert!(db.message().contains("ark.repository"), "{}", db.message());
    for sql in [
        "SELECT ark.backup('full')",
        "SELECT ark.verify('x')",
        "SELECT ark.schedule('x', '@daily', 'full')",
        "SELECT ark.unschedule('x')",
        "SELECT ark.wait(1)",
        "SELECT ark.cancel(1)",
        "SELECT ark.retry(1)",
        "SELECT * FROM ark.expire()",
    ] {
        refused_until_updated(&mut c, sql, &current);
    }
    cluster.wait_for_log("ALTER EXTENSION pg_ark UPDATE", WAIT);

    c.batch_execute("ALTER EXTENSION pg_ark UPDATE").unwrap();
    assert_eq!(extversion(&mut c), current);
    let id: i64 = c
        .query_one("SELECT ark.schedule('x', '@daily', 'full')", &[])
        .unwrap()
        .get(0);
    assert!(id > 0);
    assert!(c
        .query_one("SELECT ark.unschedule('x')", &[])
        .unwrap()
        .get::<_, bool>(0));
    drop(c);
    assert_same_schema_as_a_fresh_install(&cluster, "postgres");
}

/// Every file below `dir`, relative, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

/// The fixture `tests/fixtures/repository-format-3` is the descriptor of a
/// repository of format 3, created by "pg_ark 0.3.0": this release reads
/// formats up to 2 (2: encrypted) and refuses it, naming both versions, in the CLI (its
/// wal-get with the status that stops recovery) and in the extension (the
/// archiver and a backup job); nothing is written into it.
#[test]
fn a_repository_of_a_newer_format_is_refused_and_left_as_it_is() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/repository-format-3");
    let repo = temp_dir("ark-repo-");
    for f in ["pg_ark.repo", "pg_ark.repo.copy"] {
        std::fs::copy(fixture.join(f), repo.path().join(f)).unwrap();
    }
    give_tree_to_test_user(repo.path());
    let before = listing(repo.path());
    assert_eq!(before, ["pg_ark.repo", "pg_ark.repo.copy"]);
    let says_newer = |text: &str| {
        text.contains("format version 3")
            && text.contains("pg_ark 0.3.0")
            && text.contains("up to 2")
    };

    let url = format!("file://{}", repo.path().display());
    let scratch = temp_dir("ark-scratch-");
    let pgdata = scratch.path().join("data").display().to_string();
    let wal = scratch.path().join("wal").display().to_string();
    for args in [
        vec!["info", "--repo", &url],
        vec!["verify", "--repo", &url],
        vec!["restore", "--repo", &url, "--pgdata", &pgdata, "--dry-run"],
    ] {
        let (ok, out, err) = pg_ark(&args);
        assert!(!ok, "pg_ark {args:?} accepted it:\n{out}");
        assert!(says_newer(&err), "pg_ark {args:?}:\n{err}");
        assert!(
            err.contains("hint: Use the pg_ark that writes this format"),
            "{err}"
        );
    }

    let cluster = Cluster::start_with(archiving(repo.path()));
    // wal-get, as restore_command runs it in a data directory.
    let out = std::process::Command::new(PgInstall::from_env().bin("pg_ark"))
        .args(["wal-get", "--repo", &url, "000000010000000000000001", &wal])
        .current_dir(&cluster.data)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(255), "{err}");
    assert!(says_newer(&err), "{err}");
    let mut c = cluster.client();
    c.batch_execute("CREATE EXTENSION pg_ark; CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'x')")
        .unwrap();
    switch_wal(&mut c);
    let mut reason = None;
    wait_until("the archiver's first failure", WAIT, || {
        reason = c
            .query_one(
                "SELECT last_failure_reason FROM ark.archive_status() WHERE failed_count > 0",
                &[],
            )
            .ok()
            .and_then(|r| r.get::<_, Option<String>>(0));
        reason.is_some()
    });
    let reason = reason.unwrap();
    assert!(says_newer(&reason), "{reason}");
    let full = wait_job(&mut c, "full", r#"{"max_attempts": 1}"#);
    assert_eq!(full["state"], "failed", "{full}");
    assert!(says_newer(full["error"].as_str().unwrap()), "{full}");
    drop(c);
    drop(cluster);
    assert_eq!(listing(repo.path()), before);
    for f in ["pg_ark.repo", "pg_ark.repo.copy"] {
        assert_eq!(
            std::fs::read(repo.path().join(f)).unwrap(),
            std::fs::read(fixture.join(f)).unwrap()
        );
    }
}

/// sql/README.md's rule, checked in every upgrade script: the catalog is
/// the record of what backups exist, so no script drops or truncates a
/// table, drops a column or deletes rows.
#[test]
fn no_upgrade_script_destroys_catalog_data() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sql");
    let mut scripts = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !(name.starts_with("pg_ark--")
            && name.ends_with(".sql")
            && name.matches("--").count() == 2)
        {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        // Statements only: no comments, one space between words, upper case.
        let sql = text
            .lines()
            .map(|l| l.split("--").next().unwrap_or(""))
            .collect::<Vec<_>>()
            .join(" ")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_uppercase();
        for destructive in [
            "DROP TABLE",
            "TRUNCATE",
            "DROP SCHEMA",
            "DROP COLUMN",
            "DELETE FROM",
        ] {
            assert!(!sql.contains(destructive), "{name}: {destructive}");
        }
        scripts.push((name, sql));
    }
    // The scripts were read as statements.
    assert!(
        scripts
            .iter()
            .any(|(name, sql)| name == "pg_ark--0.1.0--0.2.0.sql"
                && sql.contains("ALTER TABLE ARK.SCHEDULES ADD COLUMN PAUSED TEXT;")),
        "{scripts:?}"
    );
}
