//! `ark.notifications`, the outbox of webhook notifications: a row is
//! added in the transaction that records a job's end (see
//! `worker::notify` for their delivery).
use crate::settings;
use pgrx::prelude::*;

/// Queue a notification about job `id`, if a webhook is configured and the
/// event is wanted. Call inside the transaction that records the job's end.
pub fn queue(id: i64, event: &str) -> Result<(), crate::error::ArkError> {
    if settings::notify_url().is_none() {
        return Ok(());
    }
    if event == "job.succeeded" && !settings::NOTIFY_ON_SUCCESS.get() {
        return Ok(());
    }
    Spi::run_with_args(
        "INSERT INTO ark.notifications (job_id, event, payload)
         SELECT id, $2, jsonb_build_object(
                    'event', $2, 'job_id', id, 'kind', kind, 'state', state,
                    'attempts', attempts, 'max_attempts', max_attempts,
                    'schedule', schedule_name, 'options', options,
                    'error', last_error, 'result', result,
                    'created_at', created_at, 'finished_at', finished_at,
                    'database', current_database(),
                    'system_identifier', (SELECT system_identifier::text
                                            FROM pg_catalog.pg_control_system()))
           FROM ark.jobs WHERE id = $1",
        &[id.into(), event.into()],
    )?;
    Ok(())
}
