//! pg_ark's HTTP endpoint (`ark.http_listen`): `/health` and `/metrics`
//! from a real cluster, read by a real HTTP client (ureq, over loopback),
//! the exposition checked by Prometheus's own `promtool`, and its values
//! after a known sequence (a full, a failed job, a drill) checked against
//! the catalog and `pg_stat_archiver`.
use pg_ark_tests::{archiving, free_port, give_to_test_user, temp_dir, wait_job, Cluster};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// (status, content type, body) of `GET url`.
fn get(url: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    let mut req = ureq::get(url).timeout(Duration::from_secs(30));
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let r = match req.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("GET {url}: {e}"),
    };
    let (status, ct) = (r.status(), r.content_type().to_string());
    (status, ct, r.into_string().unwrap())
}

/// The value of the sample `series` (name and labels as written).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{series} ")))
        .map(|v| v.trim().parse().unwrap())
}

/// The series (name and labels) of an exposition, without values.
fn series(text: &str) -> Vec<String> {
    let mut out: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.rsplit_once(' ').unwrap().0.to_string())
        .collect();
    out.sort();
    out
}

/// `promtool check metrics` of `text`: its verdict and what it printed.
fn promtool(text: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package, installed by make setup)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// `/dashboard.json`.
fn dashboard(base: &str) -> Value {
    let (code, _, body) = get(&format!("{base}/dashboard.json"), &[]);
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// The WAL segment files of the local repository in `repo`.
fn wal_files(repo: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![repo.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p
                .parent()
                .and_then(|d| d.parent())
                .is_some_and(|d| d.ends_with("wal"))
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.len() == 24 && n.bytes().all(|b| b.is_ascii_hexdigit()))
            {
                out.push(p);
            }
        }
    }
    out
}

/// Where the dashboard's screenshots are kept: `$ARK_CACHE/screenshots`
/// (make prints their paths), or the temp directory.
fn screenshot_dir() -> std::path::PathBuf {
    let dir = std::env::var_os("ARK_CACHE")
        .map(|c| Path::new(&c).join("screenshots"))
        .unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Headless Chromium (Debian's) on the dashboard at `base`, its scripts
/// run: the rendered DOM (with `--dump-dom` when `extra` is empty).
fn chromium(base: &str, extra: &[&str]) -> String {
    let profile = temp_dir("ark-chromium-");
    let mut cmd = Command::new("chromium");
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--no-first-run",
        "--virtual-time-budget=5000",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .args(extra);
    if extra.is_empty() {
        cmd.arg("--dump-dom");
    }
    let out = cmd
        .arg(format!("{base}/"))
        .output()
        .expect("chromium (Debian's package, installed by make setup)");
    assert!(
        out.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn start(repo: &Path, work: &Path, listen: &str) -> Cluster {
    Cluster::start_with(
        archiving(repo)
            .set("ark.work_directory", &format!("'{}'", work.display()))
            .set("ark.scheduler_naptime", "'1s'")
            .set("ark.http_listen", &format!("'{listen}'")),
    )
}

#[test]
fn health_and_metrics_after_a_full_a_failed_job_and_a_drill() {
    let repo = temp_dir("ark-repo-");
    let work = temp_dir("ark-work-");
    give_to_test_user(work.path());
    let port = free_port();
    let cluster = start(repo.path(), work.path(), &format!("127.0.0.1:{port}"));
    cluster.wait_for_log(&format!("listens on http://127.0.0.1:{port}"), WAIT);
    let base = format!("http://127.0.0.1:{port}");
    let mut c = cluster.client();
    c.batch_execute(
        "CREATE EXTENSION pg_ark;
         CREATE TABLE t (id int, v text);",
    )
    .unwrap();

    // Healthy: 200 and ark.status()'s document.
    let (code, ct, body) = get(&format!("{base}/health"), &[]);
    assert_eq!((code, ct.as_str()), (200, "application/json"), "{body}");
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["status"], "healthy", "{doc}");

    // A slow client (half a request, then nothing) holds its connection
    // while a backup runs, a WAL segment is archived and /health answers.
    let mut slow: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(b"GET /hea").unwrap();
            s
        })
        .collect();
    assert_eq!(get(&format!("{base}/health"), &[]).0, 200);
    let full = wait_job(&mut c, "full", r#"{"max_attempts": 1}"#);
    assert_eq!(full["state"], "succeeded", "{full}");
    let wal = Cluster::write_and_switch_wal(&mut c, 1);
    cluster.wait_archived(&wal, WAIT);
    // The server ends each slow connection itself (the head must come
    // within 5 s, and a connection lasts at most 10 s): read until it
    // closes.
    for s in &mut slow {
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut rest = Vec::new();
        match s.read_to_end(&mut rest) {
            Ok(_) => {}
            Err(e) => assert!(
                !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
                "the slow connection was not closed by the server: {e}"
            ),
        }
    }

    // A job that fails for good: failing, 503, with and without ?strict.
    let failed = wait_job(
        &mut c,
        "logical",
        r#"{"database": "no_such_db", "max_attempts": 1}"#,
    );
    assert_eq!(failed["state"], "failed", "{failed}");
    let (code, _, body) = get(&format!("{base}/health"), &[]);
    assert_eq!(code, 503, "{body}");
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["status"], "failing", "{doc}");
    assert_eq!(get(&format!("{base}/health?strict"), &[]).0, 503);

    let drill = wait_job(&mut c, "drill", r#"{"max_attempts": 1}"#);
    assert_eq!(drill["state"], "succeeded", "{drill}");

    let archived_before: i64 = c
        .query_one("SELECT archived_count FROM pg_stat_archiver", &[])
        .unwrap()
        .get(0);
    let (code, ct, text) = get(&format!("{base}/metrics"), &[]);
    let archived_after: i64 = c
        .query_one("SELECT archived_count FROM pg_stat_archiver", &[])
        .unwrap()
        .get(0);
    assert_eq!(code, 200, "{text}");
    assert_eq!(ct, "text/plain", "{text}");
    let (ok, said) = promtool(&text);
    assert!(ok, "promtool check metrics: {said}\n{text}");

    let finished = |kind: &str, outcome: &str| {
        sample(
            &text,
            &format!("pg_ark_jobs_finished_total{{kind=\"{kind}\",outcome=\"{outcome}\"}}"),
        )
    };
    assert_eq!(finished("full", "succeeded"), Some(1.0), "{text}");
    assert_eq!(finished("logical", "failed"), Some(1.0), "{text}");
    assert_eq!(finished("drill", "succeeded"), Some(1.0), "{text}");
    assert_eq!(
        sample(&text, "pg_ark_jobs{kind=\"logical\",state=\"failed\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "pg_ark_backups_kept{kind=\"full\"}"),
        Some(1.0)
    );
    assert_eq!(sample(&text, "pg_ark_chains_kept"), Some(1.0));
    assert_eq!(sample(&text, "pg_ark_health_status"), Some(2.0));
    assert_eq!(sample(&text, "pg_ark_drill_last_success"), Some(1.0));
    let rto = sample(&text, "pg_ark_drill_last_rto_seconds").unwrap_or_else(|| panic!("{text}"));
    assert!(rto > 0.0, "{text}");
    // The catalog's own figures.
    let row = c
        .query_one(
            "SELECT extract(epoch FROM finished_at)::float8, size_bytes::float8,
                    (info->>'stored_bytes')::float8
               FROM ark.backups WHERE kind = 'full'",
            &[],
        )
        .unwrap();
    let (finished_at, original, stored): (f64, f64, f64) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(
        sample(
            &text,
            "pg_ark_backup_last_success_timestamp_seconds{kind=\"full\"}"
        ),
        Some(finished_at)
    );
    assert_eq!(
        sample(&text, "pg_ark_backup_last_original_bytes{kind=\"full\"}"),
        Some(original)
    );
    assert_eq!(
        sample(&text, "pg_ark_backup_last_stored_bytes{kind=\"full\"}"),
        Some(stored)
    );
    assert_eq!(sample(&text, "pg_ark_repository_bytes"), Some(stored));
    assert_eq!(
        sample(&text, "pg_ark_recovery_window_earliest_timestamp_seconds"),
        Some(finished_at)
    );
    let archived = sample(&text, "pg_ark_archive_segments_archived_total").unwrap();
    assert!(
        (archived_before as f64..=archived_after as f64).contains(&archived) && archived >= 1.0,
        "{archived} not within {archived_before}..{archived_after}"
    );
    assert!(sample(&text, "pg_ark_rpo_seconds").is_some(), "{text}");

    // OpenMetrics when asked for.
    let (code, ct, om) = get(
        &format!("{base}/metrics"),
        &[(
            "Accept",
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
        )],
    );
    assert_eq!(code, 200);
    assert_eq!(ct, "application/openmetrics-text", "{om}");
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert_eq!(series(&om), series(&text));

    // ark.metrics(): the same series, for monitoring roles only.
    let sql: String = c.query_one("SELECT ark.metrics()", &[]).unwrap().get(0);
    assert_eq!(series(&sql), series(&text));
    c.batch_execute(
        "CREATE ROLE watcher LOGIN IN ROLE ark_monitor;
         CREATE ROLE nobody LOGIN;",
    )
    .unwrap();
    let mut watcher = cluster.client_as("watcher");
    let as_monitor: String = watcher
        .query_one("SELECT ark.metrics()", &[])
        .unwrap()
        .get(0);
    assert_eq!(series(&as_monitor), series(&text));
    let err = cluster
        .client_as("nobody")
        .query_one("SELECT ark.metrics()", &[])
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
        "{err}"
    );

    // The dashboard: a gap in the archive (a segment removed from the
    // repository) is listed again on reload and drawn in red, beside the
    // backup's mark; a real browser renders it.
    for i in 2..6 {
        let wal = Cluster::write_and_switch_wal(&mut c, i);
        cluster.wait_archived(&wal, WAIT);
    }
    let mut segments = wal_files(repo.path());
    segments.sort();
    assert!(segments.len() >= 4, "{segments:?}");
    let removed = segments[segments.len() - 2].clone();
    std::fs::remove_file(&removed).unwrap();
    let before = dashboard(&base)["wal"]["listed_at"].as_i64().unwrap_or(0);
    c.batch_execute("SELECT pg_reload_conf()").unwrap();
    let mut data = Value::Null;
    pg_ark_tests::wait_until("the WAL listed again, with its gap", WAIT, || {
        data = dashboard(&base);
        data["wal"]["listed_at"].as_i64().unwrap_or(0) > before
            && data["wal"]["timelines"][0]["gaps"]
                .as_array()
                .is_some_and(|g| g.len() == 1)
    });
    let gap = &data["wal"]["timelines"][0]["gaps"][0];
    assert_eq!(
        gap["first"].as_str(),
        removed.file_name().and_then(|n| n.to_str()),
        "{data}"
    );
    assert_eq!(data["status"]["status"], "failing", "{data}");
    let label = full["result"]["backup_id"].as_str().unwrap();
    assert_eq!(data["backups"][0]["label"], label, "{data}");
    assert_eq!(data["drills"][0]["ok"], true, "{data}");
    // What the catalog holds reaches the page as text, never as markup.
    let changed = c
        .execute(
            "UPDATE ark.jobs SET last_error = $1 WHERE kind = 'logical' AND state = 'failed'",
            &[&"<img src=x onerror=alert(1)> no_such_db"],
        )
        .unwrap();
    assert_eq!(changed, 1);
    let dom = chromium(&base, &[]);
    assert!(
        dom.contains("&lt;img src=x onerror=alert(1)&gt; no_such_db"),
        "{dom}"
    );
    assert!(!dom.contains("<img src"), "{dom}");
    assert!(
        dom.contains(r#"<span id="verdict" class="failing">failing</span>"#),
        "{dom}"
    );
    assert!(dom.contains(&format!("data-backup=\"{label}\"")), "{dom}");
    assert_eq!(dom.matches("class=\"gap\"").count(), 1, "{dom}");
    assert!(dom.contains("class=\"wal\""), "{dom}");
    let shots = screenshot_dir();
    for (name, size) in [("laptop", "1280,1000"), ("phone", "390,844")] {
        let path = shots.join(format!("dashboard-pg{}-{name}.png", cluster.install.major));
        let _ = std::fs::remove_file(&path);
        let window = format!("--window-size={size}");
        let shot = format!("--screenshot={}", path.display());
        chromium(&base, &[&window, &shot]);
        let png = std::fs::read(&path).unwrap_or_default();
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 10_000,
            "{}",
            path.display()
        );
        println!("dashboard screenshot: {}", path.display());
    }

    // Counters never go down: the job history pruned, the totals stay.
    c.batch_execute("DELETE FROM ark.jobs").unwrap();
    let (_, _, after) = get(&format!("{base}/metrics"), &[]);
    assert_eq!(
        sample(
            &after,
            "pg_ark_jobs_finished_total{kind=\"full\",outcome=\"succeeded\"}"
        ),
        Some(1.0),
        "{after}"
    );
    assert_eq!(
        sample(&after, "pg_ark_jobs{kind=\"logical\",state=\"failed\"}"),
        None
    );

    // An answer whose queries run too long is cut at 4 s by the statement
    // timer (a 500, before the I/O thread's 5 s deadline), and the worker
    // answers the next request at once. The chains view is made slow for
    // the while.
    c.batch_execute(
        "ALTER VIEW ark.backup_chains RENAME TO backup_chains_real;
         CREATE VIEW ark.backup_chains AS
           SELECT r.* FROM ark.backup_chains_real r, LATERAL pg_sleep(30) s;",
    )
    .unwrap();
    let mark = cluster.log_mark();
    let (code, _, body) = get(&format!("{base}/metrics"), &[]);
    assert_eq!(code, 500, "{body}");
    assert!(
        !body.contains("statement timeout"),
        "the reason is the log's: {body}"
    );
    cluster.wait_for_log_after(mark, "canceling statement due to statement timeout", WAIT);
    c.batch_execute(
        "DROP VIEW ark.backup_chains;
         ALTER VIEW ark.backup_chains_real RENAME TO backup_chains;",
    )
    .unwrap();
    assert_eq!(get(&format!("{base}/metrics"), &[]).0, 200);
    // A cancel of the idle worker ends nothing.
    let pid: i32 = c
        .query_one(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_ark http'",
            &[],
        )
        .unwrap()
        .get(0);
    let cancelled: bool = c
        .query_one("SELECT pg_cancel_backend($1)", &[&pid])
        .unwrap()
        .get(0);
    assert!(cancelled);
    assert_eq!(get(&format!("{base}/health"), &[]).0, 200);
    let same: i32 = c
        .query_one(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_ark http'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(same, pid, "the worker was restarted");

    // Not served: other paths and methods.
    assert_eq!(get(&format!("{base}/nothing"), &[]).0, 404);
    let post = ureq::post(&format!("{base}/metrics")).send_string("");
    assert!(matches!(post, Err(ureq::Error::Status(405, _))), "{post:?}");
}

#[test]
fn off_loopback_the_endpoint_needs_a_token_from_a_private_file() {
    let repo = temp_dir("ark-repo-");
    let work = temp_dir("ark-work-");
    give_to_test_user(work.path());
    let port = free_port();
    let cluster = start(repo.path(), work.path(), &format!("0.0.0.0:{port}"));
    cluster.wait_for_log(
        "is not a loopback address, and ark.http_token_file is not set",
        WAIT,
    );
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "something listens on {port} without a token"
    );
    let mut c = cluster.client();
    c.batch_execute("CREATE EXTENSION pg_ark").unwrap();

    // A token file others can read is refused, and says so without the
    // token.
    let secrets = temp_dir("ark-secrets-");
    let file = secrets.path().join("token");
    let token = "0123456789abcdef0123456789abcdef";
    std::fs::write(&file, format!("{token}\n")).unwrap();
    give_to_test_user(&file);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mark = cluster.log_mark();
    c.batch_execute(&format!(
        "ALTER SYSTEM SET ark.http_token_file = '{}'",
        file.display()
    ))
    .unwrap();
    c.batch_execute("SELECT pg_reload_conf()").unwrap();
    cluster.wait_for_log_after(mark, "chmod 600 it", WAIT);
    assert!(!cluster.log().contains(token), "the token is in the log");

    // Private: the worker listens (on reload), and wants the token.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mark = cluster.log_mark();
    c.batch_execute("SELECT pg_reload_conf()").unwrap();
    cluster.wait_for_log_after(mark, &format!("listens on http://0.0.0.0:{port}"), WAIT);
    let url = format!("http://127.0.0.1:{port}/health");
    let (code, _, body) = get(&url, &[]);
    assert_eq!(code, 401, "{body}");
    assert!(!body.contains(token));
    assert_eq!(get(&url, &[("Authorization", "Bearer wrong")]).0, 401);
    let bearer = format!("Bearer {token}");
    let (code, _, body) = get(&url, &[("Authorization", &bearer)]);
    assert_eq!(code, 200, "{body}");
    assert!(!body.contains(token));
    let (code, _, metrics) = get(
        &format!("http://127.0.0.1:{port}/metrics"),
        &[("Authorization", &bearer)],
    );
    assert_eq!(code, 200);
    assert!(!metrics.contains(token));
}
