//! S3 Object Lock: the lock pg_ark asks for on every object it stores, what
//! a bucket offers, and the warnings when the two do not fit.
//!
//! A locked object version cannot be deleted or changed before its
//! retain-until date: in compliance mode by no one, in governance mode only
//! by a user with `s3:BypassGovernanceRetention` who asks for the bypass
//! (pg_ark never does). Versioning stays on: anyone with write access can
//! still put a new version over a key or hide it behind a delete marker,
//! which is why `storage::versioned` reads the first version of each key.
//!
//! This module is pure (no requests): `s3.rs` applies the lock and reads the
//! bucket's configuration into a [`BucketLock`].

/// The Object Lock retention mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Users with the `s3:BypassGovernanceRetention` permission may delete
    /// or shorten the lock; everyone else is refused.
    Governance,
    /// No one, the account's root user included, may delete a version or
    /// shorten its lock before its retain-until date.
    Compliance,
}

impl LockMode {
    /// `governance` or `compliance`, in any case (S3 answers `COMPLIANCE`).
    pub fn parse(s: &str) -> Option<LockMode> {
        if s.eq_ignore_ascii_case("governance") {
            Some(LockMode::Governance)
        } else if s.eq_ignore_ascii_case("compliance") {
            Some(LockMode::Compliance)
        } else {
            None
        }
    }

    /// The setting's word: `governance` or `compliance`.
    pub fn as_str(self) -> &'static str {
        match self {
            LockMode::Governance => "governance",
            LockMode::Compliance => "compliance",
        }
    }
}

impl std::fmt::Display for LockMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The lock every object pg_ark stores gets: `mode`, retained until `days`
/// days after the upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectLock {
    pub mode: LockMode,
    pub days: u32,
}

impl ObjectLock {
    /// The lock the settings ask for: `mode` (`None`: off) for `days`,
    /// never shorter than the recovery window (so a backup retention still
    /// needs is never unlocked first), and at least a day.
    pub fn of_settings(
        mode: Option<LockMode>,
        days: u32,
        recovery_window_days: u32,
    ) -> Option<ObjectLock> {
        mode.map(|mode| ObjectLock {
            mode,
            days: days.max(recovery_window_days).max(1),
        })
    }

    /// The retain-until date (epoch seconds) of an object stored at `now`.
    pub fn retain_until(&self, now: i64) -> i64 {
        now.saturating_add(i64::from(self.days) * 86_400)
    }
}

/// What a bucket offers for Object Lock (see `S3Storage::bucket_lock`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketLock {
    /// Object Lock is enabled on the bucket.
    pub enabled: bool,
    /// Versioning is enabled (Object Lock turns it on for good on AWS).
    pub versioning: bool,
    /// The default retention's mode, for objects stored without a lock.
    pub default_mode: Option<LockMode>,
    /// The default retention's period in days (its years count 365 days).
    pub default_days: Option<u32>,
}

/// Warnings, in words, about a bucket that does not fit pg_ark's lock
/// settings (`wanted`, `None` when they are off) and the recovery window
/// (`recovery_window_days`, when retention keeps backups by age):
/// - lock settings on, but the bucket has no Object Lock or no versioning;
/// - the bucket's default retention is shorter than the lock pg_ark asks
///   for (objects stored without pg_ark's lock headers get the default);
/// - the lock (pg_ark's, else the bucket's default) is shorter than the
///   recovery window, so backups still needed lose their lock first;
/// - the bucket locks objects by default while pg_ark's settings are off, so
///   pg_ark's deletes and rewrites are not what it expects.
///
/// An empty list means nothing to warn about.
pub fn lock_warnings(
    bucket: &BucketLock,
    wanted: Option<&ObjectLock>,
    recovery_window_days: Option<u32>,
) -> Vec<String> {
    let mut out = Vec::new();
    let default = match (bucket.enabled, bucket.default_days) {
        (true, Some(d)) => Some((d, bucket.default_mode)),
        _ => None,
    };
    let default_text = |days: u32, mode: Option<LockMode>| match mode {
        Some(m) => format!("{days} days, {m}"),
        None => format!("{days} days"),
    };
    match wanted {
        Some(w) => {
            if !bucket.enabled {
                out.push(format!(
                    "Object Lock is set ({}, {} days), but the bucket has no Object Lock: \
                     nothing pg_ark stores is protected",
                    w.mode, w.days
                ));
            } else if !bucket.versioning {
                out.push(
                    "Object Lock is set, but the bucket's versioning is not enabled".to_string(),
                );
            }
            if let Some((d, mode)) = default {
                if d < w.days {
                    out.push(format!(
                        "the bucket's default retention ({}) is shorter than pg_ark's lock \
                         ({} days): objects stored without pg_ark's lock get the shorter one",
                        default_text(d, mode),
                        w.days
                    ));
                }
            }
            if let Some(r) = recovery_window_days {
                if w.days < r {
                    out.push(format!(
                        "the lock period ({} days) is shorter than the recovery window ({r} days): \
                         backups still needed for recovery lose their lock before they expire",
                        w.days
                    ));
                }
            }
        }
        None => {
            if let Some((d, mode)) = default {
                out.push(format!(
                    "the bucket locks every new object by default ({}), but pg_ark's Object Lock \
                     settings are off: its deletes only add delete markers and its rewrites add \
                     versions; turn the Object Lock settings on",
                    default_text(d, mode)
                ));
                if let Some(r) = recovery_window_days.filter(|r| d < *r) {
                    out.push(format!(
                        "the bucket's default retention ({}) is shorter than the recovery window \
                         ({r} days): backups still needed for recovery lose their lock before \
                         they expire",
                        default_text(d, mode)
                    ));
                }
            }
        }
    }
    out
}

/// `secs` (seconds since the epoch) as UTC in RFC 3339, for messages:
/// `2026-12-07T00:00:00Z`.
pub fn utc(secs: i64) -> String {
    match chrono::DateTime::from_timestamp(secs, 0) {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        None => format!("{secs} s after the epoch"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_settings_lock_covers_the_recovery_window() {
        assert_eq!(ObjectLock::of_settings(None, 30, 7), None);
        let c = Some(LockMode::Compliance);
        assert_eq!(ObjectLock::of_settings(c, 30, 7).unwrap().days, 30);
        assert_eq!(ObjectLock::of_settings(c, 14, 35).unwrap().days, 35);
        assert_eq!(ObjectLock::of_settings(c, 0, 0).unwrap().days, 1);
        assert_eq!(
            ObjectLock::of_settings(c, 1, 0).unwrap().retain_until(1000),
            1000 + 86_400
        );
    }

    fn bucket(enabled: bool, default: Option<(LockMode, u32)>) -> BucketLock {
        BucketLock {
            enabled,
            versioning: enabled,
            default_mode: default.map(|d| d.0),
            default_days: default.map(|d| d.1),
        }
    }

    const COMPLIANCE_30: ObjectLock = ObjectLock {
        mode: LockMode::Compliance,
        days: 30,
    };

    #[test]
    fn modes_parse_and_print() {
        assert_eq!(LockMode::parse("governance"), Some(LockMode::Governance));
        assert_eq!(LockMode::parse("COMPLIANCE"), Some(LockMode::Compliance));
        assert_eq!(LockMode::parse("off"), None);
        assert_eq!(LockMode::parse(""), None);
        for m in [LockMode::Governance, LockMode::Compliance] {
            assert_eq!(LockMode::parse(m.as_str()), Some(m));
            assert_eq!(m.to_string(), m.as_str());
        }
    }

    #[test]
    fn retain_until_is_days_after_the_upload() {
        assert_eq!(COMPLIANCE_30.retain_until(1_000), 1_000 + 30 * 86_400);
        assert_eq!(COMPLIANCE_30.retain_until(i64::MAX), i64::MAX);
    }

    #[test]
    fn a_fitting_bucket_gives_no_warning() {
        let b = bucket(true, Some((LockMode::Compliance, 30)));
        assert!(lock_warnings(&b, Some(&COMPLIANCE_30), Some(30)).is_empty());
        let b = bucket(true, None);
        assert!(lock_warnings(&b, Some(&COMPLIANCE_30), Some(7)).is_empty());
        assert!(lock_warnings(&b, None, Some(7)).is_empty());
        assert!(lock_warnings(&bucket(false, None), None, None).is_empty());
    }

    #[test]
    fn lock_settings_on_a_bucket_without_lock() {
        let w = lock_warnings(&bucket(false, None), Some(&COMPLIANCE_30), None);
        assert_eq!(
            w,
            [
                "Object Lock is set (compliance, 30 days), but the bucket has no Object Lock: \
              nothing pg_ark stores is protected"
            ]
        );
        let mut b = bucket(true, None);
        b.versioning = false;
        let w = lock_warnings(&b, Some(&COMPLIANCE_30), None);
        assert_eq!(
            w,
            ["Object Lock is set, but the bucket's versioning is not enabled"]
        );
    }

    #[test]
    fn short_periods_are_named() {
        let b = bucket(true, Some((LockMode::Governance, 7)));
        let w = lock_warnings(&b, Some(&COMPLIANCE_30), Some(45));
        assert_eq!(w.len(), 2, "{w:?}");
        assert_eq!(
            w[0],
            "the bucket's default retention (7 days, governance) is shorter than pg_ark's lock \
             (30 days): objects stored without pg_ark's lock get the shorter one"
        );
        assert_eq!(
            w[1],
            "the lock period (30 days) is shorter than the recovery window (45 days): backups \
             still needed for recovery lose their lock before they expire"
        );
        // A default retention on a bucket without Object Lock means nothing.
        let mut b = bucket(false, None);
        b.default_days = Some(1);
        let w = lock_warnings(&b, Some(&COMPLIANCE_30), None);
        assert_eq!(w.len(), 1, "{w:?}");
    }

    #[test]
    fn a_locking_bucket_with_lock_settings_off() {
        let b = bucket(true, Some((LockMode::Compliance, 7)));
        let w = lock_warnings(&b, None, Some(14));
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].starts_with("the bucket locks every new object by default (7 days, compliance)"),
            "{}",
            w[0]
        );
        assert_eq!(
            w[1],
            "the bucket's default retention (7 days, compliance) is shorter than the recovery \
             window (14 days): backups still needed for recovery lose their lock before they expire"
        );
        assert_eq!(lock_warnings(&b, None, Some(7)).len(), 1);
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_796_601_600), "2026-12-07T00:00:00Z");
    }
}
