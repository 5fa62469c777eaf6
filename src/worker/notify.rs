//! Webhook notifications: an outbox table, delivered by the scheduler.
//!
//! A job that fails for good (or succeeds, with `ark.notify_on_success`)
//! adds a row to `ark.notifications` in the transaction that records its
//! end, so a notification is never lost and never sent for a job state that
//! was rolled back. The scheduler hands due rows to a delivery thread (plain
//! HTTP, no PostgreSQL calls) and records the outcome on a later pass:
//! delivered, or retried with backoff (5 s doubling, at most 10 minutes)
//! until `ark.notify_max_attempts`. A dead endpoint therefore delays only
//! other notifications, never the job queue.
use crate::{settings, xact};
use pg_ark_core::schedule::lifecycle::Backoff;
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::Value;
use std::sync::mpsc;
use std::time::Duration;

type Delivered = (i64, Result<u16, String>);

/// A batch of notifications being delivered on a thread.
pub struct Delivery {
    results: mpsc::Receiver<Delivered>,
    pending: usize,
}

/// One scheduler pass: record finished deliveries, then start the next batch.
pub fn pump(delivery: &mut Option<Delivery>) {
    if let Some(d) = delivery.as_mut() {
        let mut done = Vec::new();
        let mut thread_gone = false;
        loop {
            match d.results.try_recv() {
                Ok(o) => done.push(o),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    thread_gone = true;
                    break;
                }
            }
        }
        d.pending = d.pending.saturating_sub(done.len());
        if thread_gone {
            // The thread ended (or panicked) without reporting the rest:
            // they stay pending and go out in a later batch.
            d.pending = 0;
        }
        if !done.is_empty() {
            if let Err(e) = xact::run(|| record(&done)) {
                warning!("pg_ark could not record webhook deliveries: {}", e);
            }
        }
        if d.pending == 0 {
            *delivery = None;
        } else {
            return;
        }
    }
    let Some(url) = settings::notify_url() else {
        return;
    };
    let batch = match xact::run(due) {
        Ok(b) => b,
        Err(e) => {
            warning!("pg_ark could not read ark.notifications: {}", e);
            return;
        }
    };
    if batch.is_empty() {
        return;
    }
    let timeout = Duration::from_secs(u64::try_from(settings::NOTIFY_TIMEOUT.get()).unwrap_or(5));
    let (tx, rx) = mpsc::channel();
    let pending = batch.len();
    let spawned = pg_ark_core::threads::with_signals_blocked(|| {
        std::thread::Builder::new()
            .name("pg_ark-notify".into())
            .spawn(move || {
                for (id, payload) in batch {
                    let r = pg_ark_core::notify::post_json(&url, &payload, timeout);
                    if tx.send((id, r)).is_err() {
                        return;
                    }
                }
            })
    });
    match spawned {
        Ok(_) => {
            *delivery = Some(Delivery {
                results: rx,
                pending,
            })
        }
        Err(e) => warning!("pg_ark could not start the webhook thread: {}", e),
    }
}

/// Up to 20 notifications due now.
fn due() -> Result<Vec<(i64, String)>, crate::error::ArkError> {
    Ok(Spi::connect(|c| {
        let t = c.select(
            "SELECT id, payload FROM ark.notifications
              WHERE state = 'pending' AND next_attempt_at <= now()
              ORDER BY id LIMIT 20",
            None,
            &[],
        )?;
        let mut out = Vec::new();
        for r in t {
            let payload = r.get::<JsonB>(2)?.map(|j| j.0).unwrap_or(Value::Null);
            out.push((r.get::<i64>(1)?.unwrap_or(0), payload.to_string()));
        }
        Ok::<_, pgrx::spi::SpiError>(out)
    })?)
}

fn record(done: &[Delivered]) -> Result<(), crate::error::ArkError> {
    let max = settings::NOTIFY_MAX_ATTEMPTS.get();
    for (id, r) in done {
        match r {
            Ok(_) => Spi::run_with_args(
                "UPDATE ark.notifications
                    SET state = 'delivered', delivered_at = now(), attempts = attempts + 1,
                        last_error = NULL
                  WHERE id = $1",
                &[(*id).into()],
            )?,
            Err(e) => {
                // The jobs' backoff policy, with the notifications' base
                // and cap: attempt n failed, the next in 5 × 2^(n-1) s.
                let attempts = crate::xact::first_value::<i32>(
                    "SELECT attempts FROM ark.notifications WHERE id = $1 FOR UPDATE",
                    &[(*id).into()],
                )?
                .unwrap_or(0);
                let delay = Backoff::NOTIFICATIONS.delay(attempts + 1);
                let gave_up = crate::xact::first_value::<bool>(
                    "UPDATE ark.notifications
                        SET attempts = attempts + 1, last_error = $2,
                            state = CASE WHEN attempts + 1 >= $3 THEN 'failed' ELSE 'pending' END,
                            next_attempt_at = now() + make_interval(secs => $4)
                      WHERE id = $1
                      RETURNING state = 'failed'",
                    &[(*id).into(), e.clone().into(), max.into(), delay.into()],
                )?;
                if gave_up == Some(true) {
                    warning!(
                        "pg_ark gave up delivering notification {} to ark.notify_url after {} attempts: {}",
                        id,
                        max,
                        e
                    );
                }
            }
        }
    }
    Ok(())
}
