//! `ark.restore_plan()`: what a restore to a target would do, from the
//! repository alone, with the planner `pg_ark restore` runs
//! (`pg_ark_core::restore::plan`).
use crate::error::ArkError;
use crate::server::bindir;
use crate::xact::{raise, require_monitor};
use pg_ark_core::restore::plan::{self, Request, Target, TimelineChoice};
use pgrx::prelude::*;

type Row = (i32, String, String, String);

fn plan_rows(
    target_time: Option<String>,
    target_lsn: Option<String>,
    target_xid: Option<String>,
    target_name: Option<String>,
    backup_id: Option<String>,
    target_timeline: String,
    target_action: String,
) -> Result<Vec<Row>, ArkError> {
    require_monitor()?;
    let target = plan::parse_target(
        target_time.as_deref(),
        target_lsn.as_deref(),
        target_xid.as_deref(),
        target_name.as_deref(),
        Target::Latest,
    )?;
    let req = Request {
        target,
        timeline: TimelineChoice::parse(&target_timeline)?,
        backup: backup_id,
    };
    let url = crate::settings::repository().ok_or(ArkError::NoRepository)?;
    let s3 = crate::settings::s3_options()?;
    // SAFETY: reads the control file's identifier, loaded at start.
    let sysid = unsafe { pg_sys::GetSystemIdentifier() };
    let major = pg_sys::PG_VERSION_NUM / 10000;
    // With the identity the settings name (an encrypted repository's WAL
    // is read for time targets).
    let repository = crate::repo::config(url.clone()).open(
        &pg_ark_core::repo::config::SETTINGS,
        crate::settings::data_directory().as_deref(),
        false,
    )?;
    let cluster = repository.cluster(sysid, major, false)?;
    cluster.expect_segment_size(crate::settings::wal_segment_size()?)?;
    // Reading the archived WAL can take a while: it can be cancelled.
    let p = plan::plan_with(&cluster, &req, &target_action, &|| {
        pgrx::check_for_interrupts!();
    })?;
    let exe = bindir().join("pg_ark").display().to_string();
    let repo = crate::repo::config(url);
    let (command, restore_command) =
        plan::command_lines(&p, &req, &repo, &exe, "DIR", &target_action);
    let mut rows = plan::steps(&p, &restore_command, &command);
    if s3.access_key_id.is_some() && crate::settings::s3_credentials_file().is_none() {
        let n = rows.len() as i32 + 1;
        rows.push((
            n,
            "note".into(),
            String::new(),
            "the S3 keys are in ark.s3_* settings: give them to pg_ark through AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a --s3-credentials-file".into(),
        ));
    }
    Ok(rows)
}

/// The plan of a restore to a target (none: the latest archived state),
/// read from the repository: the chain to fetch with its sizes, the
/// recovery settings, the WAL to replay and where recovery stops, and the
/// `pg_ark restore` command (DIR is the directory to restore into). An
/// impossible target is an error that says why.
#[pg_extern(name = "_restore_plan", volatile)]
#[allow(clippy::type_complexity)]
fn restore_plan_text(
    target_time: Option<String>,
    target_lsn: Option<String>,
    target_xid: Option<String>,
    target_name: Option<String>,
    backup_id: Option<String>,
    target_timeline: Option<String>,
    target_action: Option<String>,
) -> TableIterator<
    'static,
    (
        name!(step, i32),
        name!(action, String),
        name!(command, String),
        name!(detail, String),
    ),
> {
    let rows = plan_rows(
        target_time,
        target_lsn,
        target_xid,
        target_name,
        backup_id,
        target_timeline.unwrap_or_else(|| "latest".into()),
        target_action.unwrap_or_else(|| "promote".into()),
    )
    .unwrap_or_else(|e| raise(e));
    TableIterator::new(rows)
}

extension_sql!(
    r#"
CREATE FUNCTION ark.restore_plan(
    target_time timestamptz DEFAULT NULL,
    target_lsn pg_lsn DEFAULT NULL,
    target_xid xid8 DEFAULT NULL,
    target_name text DEFAULT NULL,
    backup_id text DEFAULT NULL,
    target_timeline text DEFAULT 'latest',
    target_action text DEFAULT 'promote')
RETURNS TABLE(step int, action text, command text, detail text)
LANGUAGE sql VOLATILE
SET search_path = pg_catalog
AS $$
    SELECT * FROM ark._restore_plan(
        to_char(target_time AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00',
        target_lsn::text, target_xid::text, target_name, backup_id, target_timeline, target_action)
$$;
COMMENT ON FUNCTION ark.restore_plan(timestamptz, pg_lsn, xid8, text, text, text, text) IS 'Plan a restore from the repository: the chain to fetch, the recovery settings, the WAL to replay, where recovery stops and the pg_ark restore command; an impossible target is an error that says why';
REVOKE ALL ON FUNCTION ark.restore_plan(timestamptz, pg_lsn, xid8, text, text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ark.restore_plan(timestamptz, pg_lsn, xid8, text, text, text, text) TO ark_monitor;
COMMENT ON FUNCTION ark._restore_plan(text, text, text, text, text, text, text) IS 'ark.restore_plan() with its arguments as text (call ark.restore_plan instead)';
REVOKE ALL ON FUNCTION ark._restore_plan(text, text, text, text, text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ark._restore_plan(text, text, text, text, text, text, text) TO ark_monitor;
"#,
    name = "restore_plan",
    requires = [restore_plan_text]
);
