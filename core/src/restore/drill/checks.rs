//! The drill's checks on the recovered cluster: amcheck, row counts,
//! pg_visibility, each a psql script run as the table's owner.
use super::*;

/// Resolve table `:t` by name (the database's own search_path), then leave
/// only pg_catalog on the path: `:relid` (0 when there is none) and
/// `:missing`.
pub(super) const RESOLVE: &str = "SELECT pg_catalog.to_regclass(:'t') IS NULL AS missing,
       coalesce(pg_catalog.to_regclass(:'t')::pg_catalog.oid, 0) AS relid \\gset
SET search_path = pg_catalog, pg_temp;
";

/// Create amcheck if it is not there (in a schema of its own), bring it up
/// to date; print its schema.
pub(super) const AMCHECK_SETUP: &str = "SET search_path = pg_catalog, pg_temp;
SELECT NOT EXISTS (SELECT FROM pg_catalog.pg_extension
                    WHERE extname OPERATOR(pg_catalog.=) 'amcheck') AS absent \\gset
\\if :absent
CREATE SCHEMA IF NOT EXISTS ark_drill;
CREATE EXTENSION amcheck WITH SCHEMA ark_drill;
\\else
ALTER EXTENSION amcheck UPDATE;
\\endif
SELECT n.nspname FROM pg_catalog.pg_extension e
  JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) e.extnamespace
 WHERE e.extname OPERATOR(pg_catalog.=) 'amcheck';
";

/// amcheck of table `:t` (or every leaf partition of it): "missing",
/// "kind <c>" for what is not a table, or the heaps checked, the problems
/// verify_heapam found and the B-tree indexes checked, one per line.
pub(super) fn amcheck_script() -> String {
    format!(
        "{RESOLVE}\\if :missing
\\echo missing
\\else
SELECT c.relkind OPERATOR(pg_catalog.=) ANY ('{{r,p}}'::\"char\"[]) AS is_table, c.relkind AS kind
  FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) :relid::pg_catalog.oid \\gset
\\if :is_table
CREATE TEMPORARY TABLE ark_drill_rels AS
SELECT c.oid FROM pg_catalog.pg_class c
 WHERE c.oid OPERATOR(pg_catalog.=) :relid::pg_catalog.oid AND c.relkind OPERATOR(pg_catalog.=) 'r'
UNION
SELECT c.oid FROM pg_catalog.pg_partition_tree(:relid::pg_catalog.oid::pg_catalog.regclass) pt
  JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) pt.relid::pg_catalog.oid
 WHERE pt.isleaf AND c.relkind OPERATOR(pg_catalog.=) 'r';
SELECT pg_catalog.count(*) FROM pg_temp.ark_drill_rels;
SELECT pg_catalog.count(*)
  FROM pg_temp.ark_drill_rels r
 CROSS JOIN LATERAL :\"amschema\".verify_heapam(r.oid::pg_catalog.regclass, on_error_stop => false, check_toast => true) v;
SELECT pg_catalog.count(:\"amschema\".bt_index_check(i.indexrelid::pg_catalog.regclass, true))
  FROM pg_temp.ark_drill_rels r
  JOIN pg_catalog.pg_index i ON i.indrelid OPERATOR(pg_catalog.=) r.oid
  JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) i.indexrelid
  JOIN pg_catalog.pg_am a ON a.oid OPERATOR(pg_catalog.=) c.relam
 WHERE a.amname OPERATOR(pg_catalog.=) 'btree' AND i.indisvalid;
\\else
\\echo kind :kind
\\endif
\\endif
"
    )
}

/// Row count of table `:t`, counted as its owner: "missing", "kind <c>"
/// for what is not a table (a view or a foreign table would run other
/// code), or the count.
pub(super) fn count_script() -> String {
    format!(
        "{RESOLVE}\\if :missing
\\echo missing
\\else
SELECT c.relkind OPERATOR(pg_catalog.=) ANY ('{{r,p,m}}'::\"char\"[]) AS is_table, c.relkind AS kind,
       pg_catalog.pg_get_userbyid(c.relowner) AS owner
  FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) :relid::pg_catalog.oid \\gset
\\if :is_table
SET ROLE :\"owner\";
SELECT pg_catalog.format('SELECT pg_catalog.count(*) FROM %s', :relid::pg_catalog.oid::pg_catalog.regclass) \\gexec
\\else
\\echo kind :kind
\\endif
\\endif
"
    )
}

/// Whether `pg_visibility` can be created in the restored cluster, and the
/// databases that accept connections, as a JSON array.
pub(super) const VISIBILITY_AVAILABLE: &str = "SET search_path = pg_catalog, pg_temp;
SELECT pg_catalog.count(*) FROM pg_catalog.pg_available_extensions
 WHERE name OPERATOR(pg_catalog.=) 'pg_visibility';
SELECT COALESCE(pg_catalog.json_agg(d.datname ORDER BY d.datname), '[]')
  FROM pg_catalog.pg_database d
 WHERE d.datallowconn AND d.datconnlimit OPERATOR(pg_catalog.<>) -2;
";

/// Create pg_visibility if it is not there (in a schema of its own), bring
/// it up to date; print its schema.
pub(super) const VISIBILITY_SETUP: &str = "SET search_path = pg_catalog, pg_temp;
SELECT NOT EXISTS (SELECT FROM pg_catalog.pg_extension
                    WHERE extname OPERATOR(pg_catalog.=) 'pg_visibility') AS absent \\gset
\\if :absent
CREATE SCHEMA IF NOT EXISTS ark_drill;
CREATE EXTENSION pg_visibility WITH SCHEMA ark_drill;
\\else
ALTER EXTENSION pg_visibility UPDATE;
\\endif
SELECT n.nspname FROM pg_catalog.pg_extension e
  JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) e.extnamespace
 WHERE e.extname OPERATOR(pg_catalog.=) 'pg_visibility';
";

/// The relations with a visibility map (tables, materialized views, TOAST
/// tables; not other sessions' temporary ones), as a condition on
/// `pg_class c`.
pub(super) const HAS_VISIBILITY_MAP: &str =
    "c.relkind OPERATOR(pg_catalog.=) ANY ('{r,m,t}'::\"char\"[])
   AND c.relpersistence OPERATOR(pg_catalog.<>) 't'";

/// `pg_check_visible` and `pg_check_frozen` (schema `:vmschema`) on every
/// relation with a visibility map: one JSON object, `relations` (how many
/// were checked) and `problems` (those with tuples the map wrongly marks
/// all-visible or all-frozen: `relation`, `not_visible`, `not_frozen`).
pub(super) fn visibility_script() -> String {
    format!(
        "SET search_path = pg_catalog, pg_temp;
SELECT pg_catalog.json_build_object(
  'relations', (SELECT pg_catalog.count(*) FROM pg_catalog.pg_class c WHERE {HAS_VISIBILITY_MAP}),
  'problems', (SELECT COALESCE(pg_catalog.json_agg(p ORDER BY p.relation), '[]')
     FROM (SELECT c.oid::pg_catalog.regclass::pg_catalog.text AS relation,
                  v.n AS not_visible, f.n AS not_frozen
             FROM pg_catalog.pg_class c
            CROSS JOIN LATERAL (SELECT pg_catalog.count(*)
                  FROM :\"vmschema\".pg_check_visible(c.oid::pg_catalog.regclass)) v(n)
            CROSS JOIN LATERAL (SELECT pg_catalog.count(*)
                  FROM :\"vmschema\".pg_check_frozen(c.oid::pg_catalog.regclass)) f(n)
            WHERE {HAS_VISIBILITY_MAP}
              AND (v.n OPERATOR(pg_catalog.>) 0 OR f.n OPERATOR(pg_catalog.>) 0)) p));
"
    )
}

/// The visibility check of database `db` from the script's output: the
/// check's record, or the record and the failure (tuples the map wrongly
/// vouches for are a verdict on the backup).
pub(super) fn visibility_outcome(db: &str, out: &str) -> Result<Value, (Value, Fail)> {
    let doc: Value = match serde_json::from_str(out.trim()) {
        Ok(d) => d,
        Err(_) => {
            let msg = format!("visibility check of database \"{db}\": unexpected output \"{out}\"");
            let check = json!({"check": "visibility", "database": db, "ok": false, "detail": msg});
            return Err((check, setup(msg)));
        }
    };
    let relations = doc["relations"].as_u64().unwrap_or(0);
    let problems = doc["problems"].as_array().cloned().unwrap_or_default();
    if problems.is_empty() {
        return Ok(json!({
            "check": "visibility", "database": db, "ok": true, "relations": relations,
            "detail": format!("pg_check_visible and pg_check_frozen found nothing on {relations} relation(s) with a visibility map"),
        }));
    }
    let named: Vec<String> = problems
        .iter()
        .take(10)
        .map(|p| {
            format!(
                "{} ({} tuple(s) not all-visible, {} not all-frozen)",
                p["relation"].as_str().unwrap_or("?"),
                p["not_visible"],
                p["not_frozen"]
            )
        })
        .collect();
    let more = if problems.len() > 10 {
        format!(" and {} more", problems.len() - 10)
    } else {
        String::new()
    };
    let msg = format!(
        "visibility: the visibility map of {} relation(s) in database \"{db}\" of the restored cluster marks pages all-visible or all-frozen whose tuples are not (pg_check_visible, pg_check_frozen): {}{more}",
        problems.len(),
        named.join(", ")
    );
    let check = json!({
        "check": "visibility", "database": db, "ok": false, "relations": relations,
        "problems": problems, "detail": msg,
    });
    Err((check, verdict(msg)))
}

/// The visibility check: every database it covers, one record each.
pub(super) fn visibility_checks(
    spec: &Spec,
    stop: &AtomicBool,
    port: u16,
    done: &mut Vec<Value>,
) -> Result<(), (Value, Fail)> {
    let (required, named) = match &spec.visibility {
        VisibilityCheck::Off => return Ok(()),
        VisibilityCheck::Every { required } => (*required, None),
        VisibilityCheck::Databases(d) => (true, Some(d.clone())),
    };
    let failed = |msg: String, f: fn(String) -> Fail| {
        let check = json!({"check": "visibility", "ok": false, "detail": msg});
        Err((check, f(msg)))
    };
    let out = match psql(spec, stop, port, VISIBILITY_AVAILABLE, &[]) {
        Ok(out) => out,
        Err(e) => return failed(format!("visibility check: {e}"), setup),
    };
    let mut lines = out.lines();
    let available = lines.next().is_some_and(|n| n.trim() != "0");
    let every: Vec<String> = lines
        .next()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_default();
    if !available {
        let msg = "pg_visibility is not available in the restored cluster's installation (it is a contrib module of PostgreSQL)".to_string();
        if required {
            return failed(
                format!("visibility check: {msg}; install it, or set \"visibility\": false"),
                setup,
            );
        }
        done.push(json!({"check": "visibility", "ok": true, "skipped": true, "detail": msg}));
        return Ok(());
    }
    let databases = named.unwrap_or(every);
    for db in &databases {
        let vmschema = match psql_in(spec, stop, port, db, VISIBILITY_SETUP, &[]) {
            Ok(s) if !s.is_empty() => s,
            other => {
                let e = other.err().unwrap_or_else(|| "it has no schema".into());
                let msg = format!(
                    "visibility check: pg_visibility could not be set up in database \"{db}\" of the restored cluster: {e}"
                );
                let check =
                    json!({"check": "visibility", "database": db, "ok": false, "detail": msg});
                return Err((check, setup(msg)));
            }
        };
        let vars = [("vmschema", vmschema.as_str())];
        match psql_in(spec, stop, port, db, &visibility_script(), &vars) {
            Ok(out) => done.push(visibility_outcome(db, &out)?),
            Err(e) => {
                let f: fn(String) -> Fail = if e == "the drill was stopped" {
                    setup
                } else {
                    verdict
                };
                let msg = format!(
                    "visibility check of database \"{db}\" in the restored cluster failed: {e}"
                );
                let check =
                    json!({"check": "visibility", "database": db, "ok": false, "detail": msg});
                return Err((check, f(msg)));
            }
        }
    }
    Ok(())
}

/// What a relkind is, in words.
pub(super) fn relkind(out: &str) -> &'static str {
    match out.trim_start_matches("kind ").trim() {
        "v" => "a view",
        "m" => "a materialized view",
        "f" => "a foreign table",
        "S" => "a sequence",
        "i" | "I" => "an index",
        "c" => "a composite type",
        _ => "not a table",
    }
}

/// Run `check`'s `script` on table `vars["t"]`: its output, or the failed
/// check for a table that is missing or not a table (the drill could not
/// be carried out) or a script that failed (a verdict: the restored data
/// could not be read).
pub(super) fn table_check(
    spec: &Spec,
    stop: &AtomicBool,
    port: u16,
    check: &str,
    script: &str,
    vars: &[(&str, &str)],
) -> Result<String, (Value, Fail)> {
    let table = vars.iter().find(|(k, _)| *k == "t").map_or("", |(_, v)| *v);
    let problem = |msg: String, f: fn(String) -> Fail| {
        let doc = json!({"check": check, "table": table, "ok": false, "detail": msg});
        Err((doc, f(msg)))
    };
    match psql(spec, stop, port, script, vars) {
        Ok(out) if out == "missing" => problem(
            format!(
                "{check}: there is no table \"{table}\" in database \"{}\" of the restored cluster",
                spec.database
            ),
            setup,
        ),
        Ok(out) if out.starts_with("kind ") => problem(
            format!("{check}: \"{table}\" is {}, not a table", relkind(&out)),
            setup,
        ),
        Ok(out) => Ok(out),
        Err(e) if e == "the drill was stopped" => problem(e, setup),
        Err(e) => problem(
            format!("{check} of table \"{table}\" in the restored cluster failed: {e}"),
            verdict,
        ),
    }
}

/// The checks of the restored cluster: one JSON object each.
pub(super) fn checks(
    spec: &Spec,
    stop: &AtomicBool,
    port: u16,
    recovery: &[String],
) -> Result<Vec<Value>, (Vec<Value>, Fail)> {
    let mut done = Vec::new();
    let fail = |mut done: Vec<Value>, check: Value, f: Fail| {
        done.push(check);
        Err((done, f))
    };
    // Recovery ended where it was meant to: a target (or consistency) was
    // reached, or all the WAL was replayed.
    let reached = server_log::stop_line(recovery, spec.target == Target::Latest);
    match reached {
        Some(line) => done.push(json!({"check": "recovery", "ok": true, "detail": line})),
        None => {
            let msg = "the server started, but its log does not say that recovery reached the target (no \"recovery stopping\" line)".to_string();
            return fail(
                done,
                json!({"check": "recovery", "ok": false, "detail": msg}),
                verdict(msg),
            );
        }
    }
    match psql(
        spec,
        stop,
        port,
        "SELECT pg_catalog.pg_is_in_recovery(), pg_catalog.current_setting('server_version');",
        &[],
    ) {
        Ok(out) if out.starts_with("f|") => done.push(json!({
            "check": "started", "ok": true,
            "detail": format!("accepts connections, out of recovery (PostgreSQL {})", &out[2..]),
        })),
        Ok(out) => {
            let msg = format!("the restored cluster is still in recovery ({out})");
            return fail(
                done,
                json!({"check": "started", "ok": false, "detail": msg}),
                verdict(msg),
            );
        }
        Err(e) => {
            let msg = format!(
                "could not connect to the restored cluster as \"{}\" in database \"{}\": {e}",
                spec.user, spec.database
            );
            return fail(
                done,
                json!({"check": "started", "ok": false, "detail": msg}),
                setup(msg),
            );
        }
    }
    let mut amschema = String::new();
    if !spec.amcheck.is_empty() {
        match psql(spec, stop, port, AMCHECK_SETUP, &[]) {
            Ok(s) if !s.is_empty() => amschema = s,
            other => {
                let e = other.err().unwrap_or_else(|| "it has no schema".into());
                let msg = format!("amcheck is not available in the restored cluster: {e}");
                return fail(
                    done,
                    json!({"check": "amcheck", "ok": false, "detail": msg}),
                    setup(msg),
                );
            }
        }
    }
    let script = amcheck_script();
    for table in &spec.amcheck {
        let vars = [("t", table.as_str()), ("amschema", amschema.as_str())];
        let out = match table_check(spec, stop, port, "amcheck", &script, &vars) {
            Ok(out) => out,
            Err((check, f)) => return fail(done, check, f),
        };
        let problem = |msg: String, f: fn(String) -> Fail| {
            let check = json!({"check": "amcheck", "table": table, "ok": false, "detail": msg});
            (check, f(msg))
        };
        let mut it = out.lines().map(|n| n.trim().parse::<u64>());
        let (check, f) = match (it.next(), it.next(), it.next()) {
            (Some(Ok(rels)), Some(Ok(0)), Some(Ok(indexes))) => {
                done.push(json!({
                    "check": "amcheck", "table": table, "ok": true,
                    "detail": format!("{rels} heap(s) verified; {indexes} B-tree index(es) checked with heapallindexed"),
                }));
                continue;
            }
            (Some(Ok(_)), Some(Ok(n)), Some(Ok(_))) => problem(
                format!(
                    "amcheck: verify_heapam found {n} problem(s) in table \"{table}\" of the restored cluster"
                ),
                verdict,
            ),
            _ => problem(
                format!("amcheck of table \"{table}\": unexpected output \"{out}\""),
                setup,
            ),
        };
        return fail(done, check, f);
    }
    let script = count_script();
    for table in &spec.count {
        let out = match table_check(spec, stop, port, "count", &script, &[("t", table)]) {
            Ok(out) => out,
            Err((check, f)) => return fail(done, check, f),
        };
        match out.trim().parse::<i64>() {
            Ok(rows) => {
                done.push(json!({"check": "count", "table": table, "ok": true, "rows": rows}))
            }
            Err(_) => {
                let msg = format!("count of table \"{table}\": unexpected output \"{out}\"");
                let check = json!({"check": "count", "table": table, "ok": false, "detail": msg});
                return fail(done, check, setup(msg));
            }
        }
    }
    if let Err((check, f)) = visibility_checks(spec, stop, port, &mut done) {
        return fail(done, check, f);
    }
    Ok(done)
}
