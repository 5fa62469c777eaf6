//! `verify` jobs: a physical backup re-read against its manifest, and the
//! outcome recorded beside it in `ark.backups`.
use crate::catalog::jobs::{Job, Outcome};
use crate::repo::RepoTarget;
use crate::worker::job::{set_progress, stopped, supervise};
use crate::xact;
use pg_ark_core::physical;
use pg_ark_core::schedule::lifecycle::JobFailure;
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::{json, Value};

/// Run a `verify` job: re-read backup `backup_id` (the newest complete
/// physical backup by default) and everything its restore needs. Problems
/// fail the job, each named with its file; the outcome is recorded in
/// `ark.backups.info->'verification'` either way, and an incremental or
/// differential never takes a backup that failed it as its parent.
pub fn run_verify(job: &Job) -> Outcome {
    let target = match xact::run(RepoTarget::current) {
        Ok(t) => t,
        Err(e) => return Outcome::Failed(e),
    };
    // Without one named, the newest backup this server took into its
    // repository (its catalog, which no one with only the repository's
    // keys can change), else the newest the repository lists.
    let wanted = match job.options.get("backup_id").and_then(Value::as_str) {
        Some(id) => Some(id.to_string()),
        None => match xact::run(newest_in_catalog) {
            Ok(id) => id,
            Err(e) => return Outcome::Failed(e),
        },
    };
    let checked = supervise(
        job,
        move |control, _tx: std::sync::mpsc::Sender<()>| {
            // First what was done behind pg_ark's back: a repository
            // tampered with is not verified through its current versions.
            // A repository tampered with is verified through the versions
            // pg_ark wrote (the first ones), and the job fails all the same.
            set_progress(&control, json!({"phase": "tampering"}));
            let tampering = target.tampering().map_err(JobFailure::from)?;
            let tampered = tampering.as_ref().filter(|t| !t.is_empty());
            let c = match tampered {
                Some(found) => target.open_reading().map_err(|e| {
                    // Not even the first versions open: say both.
                    JobFailure::permanent(format!(
                        "the repository was tampered with: {} finding(s), and it cannot be read through the versions pg_ark wrote either ({e}); read it with pg_ark verify --as-of a time before the tampering: {}",
                        found.len(),
                        found.iter().take(20).cloned().collect::<Vec<_>>().join("; ")
                    ))
                })?,
                None => target.open().map_err(JobFailure::from)?,
            };
            let id = match wanted {
                Some(id) => id,
                None => physical::list_backups(&c)
                    .map_err(JobFailure::from)?
                    .pop()
                    .map(|b| b.backup_id)
                    .ok_or_else(|| {
                        JobFailure::permanent(
                            "there is no complete physical backup in the repository to verify",
                        )
                    })?,
            };
            set_progress(&control, json!({"phase": "verify", "backup_id": id}));
            let problems = physical::verify_backup(&c, &id).map_err(JobFailure::from)?;
            Ok::<_, JobFailure>((id, problems, tampering))
        },
        |_| {},
    );
    let (id, problems, tampering) = match checked {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return Outcome::Failed(e),
        Err(s) => return stopped(s),
    };
    if let Some(found) = tampering.as_ref().filter(|t| !t.is_empty()) {
        // Tampered with: a failed verification (ark.status() and the
        // notifications raise it), the first findings in the log.
        for t in found.iter().take(20) {
            warning!(
                "pg_ark job {}: the repository was tampered with: {}",
                job.id,
                t
            );
        }
        let mut message = format!(
            "the repository was tampered with: {} finding(s); read through the versions pg_ark wrote, backup \"{id}\" {}:",
            found.len(),
            match problems.len() {
                0 => "verifies".to_string(),
                n => format!("has {n} problem(s) (first: {}: {})", problems[0].file, problems[0].reason),
            }
        );
        for t in found.iter().take(20) {
            message.push_str(&format!(" {t};"));
        }
        if found.len() > 20 {
            message.push_str(&format!(" and {} more", found.len() - 20));
        }
        return Outcome::Failed(JobFailure::permanent(message));
    }
    let listed: Vec<Value> = problems
        .iter()
        .map(|p| json!({"file": p.file, "problem": p.reason}))
        .collect();
    let verification = json!({
        "ok": problems.is_empty(),
        "job_id": job.id,
        "at": pg_ark_core::logical::rfc3339_utc(pg_ark_core::logical::now_epoch()),
        "problems": listed.len(),
    });
    if let Err(e) = xact::run(|| {
        Spi::run_with_args(
            "UPDATE ark.backups SET info = info || jsonb_build_object('verification', $2::jsonb)
              WHERE label = $1 AND kind IN ('full', 'incremental', 'differential')",
            &[id.clone().into(), JsonB(verification.clone()).into()],
        )?;
        Ok(())
    }) {
        warning!(
            "pg_ark could not record the verification of \"{}\": {}",
            id,
            e
        );
    }
    if problems.is_empty() {
        log!("pg_ark job {}: backup \"{}\" verified", job.id, id);
        let mut result = json!({"backup_id": id, "ok": true, "problems": []});
        report_tampering(job, tampering, &mut result);
        return Outcome::Succeeded(result);
    }
    let mut message = format!(
        "backup \"{id}\" failed verification: {} problem(s):",
        problems.len()
    );
    for p in problems.iter().take(20) {
        message.push_str(&format!(" {}: {};", p.file, p.reason));
    }
    if problems.len() > 20 {
        message.push_str(&format!(" and {} more", problems.len() - 20));
    }
    Outcome::Failed(JobFailure::permanent(message))
}

/// Record what a scan of the repository's versions found (`None`: no scan,
/// not a bucket under Object Lock) in `result`, which `ark.status()` reads,
/// and say each finding in the log.
pub(crate) fn report_tampering(job: &Job, found: Option<Vec<String>>, result: &mut Value) {
    let Some(found) = found else {
        return;
    };
    const LOGGED: usize = 20;
    const KEPT: usize = 100;
    for t in found.iter().take(LOGGED) {
        warning!(
            "pg_ark job {}: the repository was tampered with: {}",
            job.id,
            t
        );
    }
    if found.len() > LOGGED {
        warning!(
            "pg_ark job {}: the repository was tampered with: and {} more finding(s)",
            job.id,
            found.len() - LOGGED
        );
    }
    // The first findings and their count: a bucket can hold millions.
    result["tampering"] = json!(found.iter().take(KEPT).collect::<Vec<_>>());
    result["tampering_count"] = json!(found.len());
}

/// The newest physical backup `ark.backups` records in the repository in
/// use.
fn newest_in_catalog() -> Result<Option<String>, crate::error::ArkError> {
    match Spi::get_one_with_args::<String>(
        "SELECT label FROM ark.backups
          WHERE kind IN ('full', 'incremental', 'differential') AND repository = $1
            AND path LIKE $2
          ORDER BY finished_at DESC, id DESC LIMIT 1",
        &[
            crate::settings::repository_location().into(),
            // This cluster's entry (a pg_upgrade leaves the old one's rows).
            // SAFETY: reads the control file's identifier, loaded at start.
            format!("clusters/{}/%", unsafe { pg_sys::GetSystemIdentifier() }).into(),
        ],
    ) {
        Ok(label) => Ok(label),
        Err(pgrx::spi::SpiError::InvalidPosition) => Ok(None),
        Err(e) => Err(e.into()),
    }
}
