use super::*;

fn facts() -> Facts {
    Facts {
        now: 1_000_100.0,
        last_backups: vec![LastBackup {
            kind: "full".into(),
            finished: 1_000_000.0,
            duration: 2.5,
            original_bytes: 1000,
            stored_bytes: 300,
        }],
        backups_kept: vec![Count {
            labels: vec![("kind", "full".into())],
            value: 2,
        }],
        chains_kept: 2,
        repository_bytes: 600,
        archived_segments: 7,
        archive_failures: 1,
        last_archived: Some(1_000_040.0),
        archive_backlog: 3,
        earliest_recoverable: Some(999_000.0),
        latest_recoverable: Some(1_000_040.0),
        jobs: vec![Count {
            labels: vec![("kind", "full".into()), ("state", "succeeded".into())],
            value: 2,
        }],
        jobs_finished: vec![Count {
            labels: vec![("kind", "full".into()), ("outcome", "failed".into())],
            value: 4,
        }],
        job_retries: vec![Count {
            labels: vec![("kind", "full".into())],
            value: 5,
        }],
        last_drill: Some(Drill {
            at: 1_000_050.0,
            ok: true,
            rto_seconds: Some(12.5),
        }),
        webhooks_waiting: 0,
        webhooks_given_up: 1,
        verdict: Verdict::Degraded,
    }
}

/// The value of the sample line that starts with `series ` in `text`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{series} ")))
        .map(|v| v.trim().parse().unwrap())
}

#[test]
fn prometheus_text_has_help_type_and_the_values() {
    let t = render(&facts(), Format::Prometheus);
    assert!(!t.contains("# EOF"), "{t}");
    assert_eq!(
        sample(
            &t,
            "pg_ark_backup_last_success_timestamp_seconds{kind=\"full\"}"
        ),
        Some(1_000_000.0),
        "{t}"
    );
    assert_eq!(
        sample(&t, "pg_ark_archive_last_archived_age_seconds"),
        Some(60.0)
    );
    assert_eq!(sample(&t, "pg_ark_rpo_seconds"), Some(60.0));
    assert_eq!(
        sample(&t, "pg_ark_archive_segments_archived_total"),
        Some(7.0)
    );
    assert_eq!(
        sample(
            &t,
            "pg_ark_jobs_finished_total{kind=\"full\",outcome=\"failed\"}"
        ),
        Some(4.0)
    );
    assert_eq!(
        sample(&t, "pg_ark_job_retries_total{kind=\"full\"}"),
        Some(5.0)
    );
    assert_eq!(sample(&t, "pg_ark_health_status"), Some(1.0));
    assert_eq!(sample(&t, "pg_ark_drill_last_rto_seconds"), Some(12.5));
    // Every sample's family has its HELP and TYPE, and every name has the
    // prefix.
    for line in t.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let name = line.split(['{', ' ']).next().unwrap();
        assert!(name.starts_with("pg_ark_"), "{line}");
        let family = name.strip_suffix("_total").unwrap_or(name);
        assert!(
            t.contains(&format!("# HELP {name} ")) || t.contains(&format!("# HELP {family} ")),
            "no HELP for {name}: {t}"
        );
        assert!(
            t.contains(&format!("# TYPE {name} ")) || t.contains(&format!("# TYPE {family} ")),
            "no TYPE for {name}: {t}"
        );
    }
}

#[test]
fn openmetrics_ends_with_eof_and_names_units() {
    let t = render(&facts(), Format::OpenMetrics);
    assert!(t.ends_with("# EOF\n"), "{t}");
    assert!(t.contains("# UNIT pg_ark_repository_bytes bytes"), "{t}");
    assert_eq!(sample(&t, "pg_ark_archive_failures_total"), Some(1.0));
}

#[test]
fn unknown_facts_leave_their_series_out() {
    let mut f = facts();
    f.last_backups.clear();
    f.last_archived = None;
    f.latest_recoverable = None;
    f.earliest_recoverable = None;
    f.last_drill = None;
    let t = render(&f, Format::Prometheus);
    for absent in [
        "pg_ark_backup_last_success_timestamp_seconds{",
        "pg_ark_archive_last_archived_timestamp_seconds ",
        "pg_ark_rpo_seconds ",
        "pg_ark_recovery_window_earliest_timestamp_seconds ",
        "pg_ark_drill_last_success ",
    ] {
        assert!(!t.contains(absent), "{absent} in {t}");
    }
    // The counts are still there, at what they are.
    assert_eq!(sample(&t, "pg_ark_archive_ready_segments"), Some(3.0));
}

#[test]
fn the_accept_header_picks_the_format() {
    for (accept, want) in [
        (None, Format::Prometheus),
        (Some("text/plain"), Format::Prometheus),
        (
            Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"),
            Format::OpenMetrics,
        ),
        (Some("application/openmetrics-text; q=0"), Format::Prometheus),
        (Some("Application/OpenMetrics-Text"), Format::OpenMetrics),
    ] {
        assert_eq!(Format::from_accept(accept), want, "{accept:?}");
    }
}
