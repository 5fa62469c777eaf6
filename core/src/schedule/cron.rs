//! Cron schedules for pg_ark's scheduler: parsing crontab expressions and
//! finding the next time a schedule is due, in a named IANA time zone.
//!
//! # Syntax
//!
//! Five fields, separated by white space, as in crontab(5):
//!
//! | field        | values                                   |
//! |--------------|------------------------------------------|
//! | minute       | 0-59                                     |
//! | hour         | 0-23                                     |
//! | day-of-month | 1-31                                     |
//! | month        | 1-12 or JAN-DEC                          |
//! | day-of-week  | 0-7 or SUN-SAT (0 and 7 are both Sunday) |
//!
//! Each field is a comma-separated list of items; an item is `*`, a value
//! `a`, or a range `a-b`, optionally followed by a step `/n` (`*/15`,
//! `0-30/10`; `a/n` means `a-MAX/n`, as in cronie). Names are case-insensitive
//! and may appear wherever a number may, also in ranges (`MON-FRI`); as the
//! upper end of a day-of-week range `SUN` means 7, so `FRI-SUN` is Friday to
//! Sunday. A reversed range (`5-2`) and a step that leaves only the first
//! value (`*/60` in the minute field) are rejected rather than silently
//! accepted. The macros `@hourly`, `@daily` (= `@midnight`), `@weekly`,
//! `@monthly` and `@yearly` (= `@annually`) stand for `0 * * * *`,
//! `0 0 * * *`, `0 0 * * 0`, `0 0 1 * *` and `0 0 1 1 *`. `@reboot`, a seconds
//! field and a year field (6 or 7 fields) are refused: schedules have minute
//! resolution and run at times of day.
//!
//! Every field is validated here, so an error names the field and the exact
//! value at fault (`minute field "75" is out of range 0-59`). An expression
//! that can never match (`0 0 30 2 *`) is refused at parse time, so the
//! scheduler never holds a schedule without a next run.
//!
//! # Day-of-month and day-of-week (the Vixie cron rule)
//!
//! As in Vixie cron, cronie and POSIX: when both day fields are restricted, a
//! day matches if EITHER matches (`0 0 1,15 * 1` runs on the 1st, the 15th and
//! every Monday). When either field is unrestricted, both must match (which
//! reduces to the other field). Exactly like Vixie cron, a field counts as
//! unrestricted when its text starts with `*`, so `*/2` is unrestricted:
//! `0 0 */2 * 1` runs on Mondays that fall on odd days of the month.
//!
//! # Time zone and daylight saving time
//!
//! Expressions are matched against the local wall-clock time of a named IANA
//! zone (`ark.cron_timezone`, default `UTC`; see [`parse_timezone`]). Each
//! matching local time L runs at one instant:
//!
//! * L exists once: at that instant.
//! * L falls in a spring-forward gap (02:30 on the day clocks jump from 02:00
//!   to 03:00): at the first instant after the gap, i.e. 03:00 new time, like
//!   Vixie cron's handling of skipped fixed-time jobs. Several matching times
//!   in one gap (`*/15 * * * *` at 02:00, 02:15, ...) therefore collapse with
//!   each other and with 03:00 itself into ONE run at 03:00.
//! * L occurs twice (fall-back overlap, 02:30 on the day clocks go from 03:00
//!   back to 02:00): only at its first occurrence. This holds for every local
//!   time, so a schedule that matches every minute or hour has no runs during
//!   the repeated hour's second pass (e.g. `0 * * * *` in Europe/Berlin runs at
//!   02:00 CEST and next at 03:00 CET).
//!
//! Mapping local times to instants this way is monotonic, so "the next run"
//! is well defined: [`CronSchedule::next_after`] returns the earliest such
//! instant strictly after the given one.
//!
//! # Catch-up
//!
//! The scheduler stores each schedule's `next_run` (UTC). [`due`] says what to
//! do when it wakes at `now`: if `next_run <= now`, enqueue ONE run (due at
//! the stored `next_run`) and move `next_run` to the first occurrence strictly
//! after `now` — not after the old `next_run` — so a server that was down
//! across several periods runs the schedule once, not once per missed
//! period. A new schedule, or one whose expression or time zone changed,
//! starts with `next_run = next_after(now)`.
//!
//! # Why not the `cron` crate
//!
//! The evaluator (bit sets and a day-by-day search) is written here instead
//! of using the `cron` crate: that crate uses a seconds field (and an optional
//! year field), intersects day-of-month and day-of-week instead of following
//! the Vixie OR rule, and its treatment of nonexistent and repeated local
//! times is its own, not the rules above. All three would have needed working
//! around, and its error messages do not say which field is wrong. Evaluating
//! ourselves makes the DST rules explicit (chrono-tz reports gaps and overlaps
//! directly) and keeps the search provably bounded: it looks at most 400 years
//! ahead, one cheap date check per day, and returns `None` instead of looping.
use chrono::{
    DateTime, Datelike, Days, LocalResult, NaiveDate, NaiveDateTime, Offset, TimeZone, Utc,
};
use chrono_tz::{GapInfo, Tz};
use std::fmt;
use std::str::FromStr;
use thiserror::Error;

/// Days searched ahead of the start: 400 Gregorian years, the period after
/// which the calendar (weekdays included) repeats. Any satisfiable expression
/// matches within it.
const SEARCH_DAYS: u32 = 146_097 + 3;

/// Days looked back from the local date of `after`: a local time may map to
/// an instant after `after` even though it reads earlier on the wall clock
/// (a fall-back transition; the largest, Pacific/Apia in 1892, repeated a whole
/// day).
const LOOKBEHIND_DAYS: u64 = 2;

const MONTH_NAMES: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// One of the five fields of a crontab expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CronField {
    Minute,
    Hour,
    DayOfMonth,
    Month,
    DayOfWeek,
}

impl CronField {
    const ALL: [CronField; 5] = [
        CronField::Minute,
        CronField::Hour,
        CronField::DayOfMonth,
        CronField::Month,
        CronField::DayOfWeek,
    ];

    /// The name used in messages (`day-of-month`).
    pub fn name(self) -> &'static str {
        match self {
            CronField::Minute => "minute",
            CronField::Hour => "hour",
            CronField::DayOfMonth => "day-of-month",
            CronField::Month => "month",
            CronField::DayOfWeek => "day-of-week",
        }
    }

    /// Smallest value allowed.
    pub fn min(self) -> u32 {
        match self {
            CronField::DayOfMonth | CronField::Month => 1,
            _ => 0,
        }
    }

    /// Largest value allowed (7 for day-of-week: 7 is Sunday too).
    pub fn max(self) -> u32 {
        match self {
            CronField::Minute => 59,
            CronField::Hour => 23,
            CronField::DayOfMonth => 31,
            CronField::Month => 12,
            CronField::DayOfWeek => 7,
        }
    }

    /// What a value of this field may be, for messages.
    fn expected_value(self) -> &'static str {
        match self {
            CronField::Month => "a number or a month name (JAN-DEC)",
            CronField::DayOfWeek => "a number or a weekday name (SUN-SAT)",
            _ => "a number",
        }
    }
}

impl fmt::Display for CronField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The part of a field an error is about: the whole field, or one value or
/// list item inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPart {
    pub field: CronField,
    /// The offending text (a value, a range or a list item).
    pub item: String,
    /// The whole field as written.
    pub text: String,
}

impl fmt::Display for FieldPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.item == self.text {
            write!(f, "{} field {:?}", self.field, self.text)
        } else {
            write!(f, "{:?} in {} field {:?}", self.item, self.field, self.text)
        }
    }
}

/// Why a cron expression or a time zone name was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CronError {
    #[error("cron expression is empty; expected 5 fields (minute hour day-of-month month day-of-week) or a macro such as @daily")]
    Empty,

    #[error("cron expression {expr:?} has {count} fields; expected 5 (minute hour day-of-month month day-of-week) or a macro such as @daily")]
    FieldCount { expr: String, count: usize },

    /// 6 or 7 fields: a seconds field and maybe a year field, which we refuse.
    #[error("cron expression {expr:?} has {count} fields; expected 5 (minute hour day-of-month month day-of-week) or a macro such as @daily: pg_ark does not accept a seconds or year field")]
    SecondsOrYearField { expr: String, count: usize },

    #[error("cron macro \"@reboot\" is not supported: pg_ark schedules run at times of day, not at server start")]
    Reboot,

    #[error("unknown cron macro {name:?}; expected @hourly, @daily, @midnight, @weekly, @monthly, @yearly or @annually")]
    UnknownMacro { name: String },

    #[error(
        "cron macro {name:?} must stand alone, but cron expression {expr:?} has more after it"
    )]
    MacroWithFields { expr: String, name: String },

    #[error("{field} field {text:?} has an empty list item")]
    EmptyItem { field: CronField, text: String },

    #[error(
        "{at} is malformed: expected a value, a range a-b or *, optionally followed by a step /n"
    )]
    Malformed { at: FieldPart },

    #[error("{at} is not {}", .at.field.expected_value())]
    NotAValue { at: FieldPart },

    #[error("{at} is out of range {min}-{max}")]
    OutOfRange { at: FieldPart, min: u32, max: u32 },

    #[error("{at} is a reversed range: {low} is greater than {high}")]
    ReversedRange { at: FieldPart, low: u32, high: u32 },

    #[error("{at} has step 0; a step must be at least 1")]
    ZeroStep { at: FieldPart },

    #[error("{at} has a step larger than its range {low}-{high}, so it would match only {low}")]
    StepTooLarge { at: FieldPart, low: u32, high: u32 },

    /// Day-of-month and month (which must both match) never coincide.
    #[error("cron expression {expr:?} never matches: no month in month field {months:?} has a day in day-of-month field {days:?}")]
    NeverMatches {
        expr: String,
        days: String,
        months: String,
    },

    #[error("time zone name is empty")]
    EmptyTimeZone,

    #[error("unknown time zone {name:?}")]
    UnknownTimeZone { name: String },
}

impl CronError {
    /// What the user can do about it.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            CronError::Empty | CronError::FieldCount { .. } => {
                "Examples: \"0 3 * * *\" (daily at 03:00), \"*/15 * * * *\" (every 15 minutes), \
                 \"30 2 * * SUN\" (Sundays at 02:30), @daily."
                    .into()
            }
            CronError::SecondsOrYearField { .. } => {
                "Schedules have minute resolution: remove the leading seconds field (and a trailing \
                 year field, if any)."
                    .into()
            }
            CronError::Reboot => {
                "Use a time-based schedule such as @daily; the scheduler catches up once after \
                 downtime."
                    .into()
            }
            CronError::NotAValue { at } if at.item.contains(['?', 'L', 'W', 'l', 'w', '#']) => {
                "Only standard crontab syntax is accepted; the extensions ?, L, W and # are not \
                 supported."
                    .into()
            }
            CronError::OutOfRange { at, .. } if at.field == CronField::DayOfWeek => {
                "Days of the week are 0-7, where 0 and 7 are both Sunday, or SUN-SAT.".into()
            }
            CronError::ReversedRange { at, low, high } => {
                let (min, max) = (at.field.min(), at.field.max());
                format!("A range cannot wrap around; write it as two ranges: \"{low}-{max},{min}-{high}\".")
            }
            CronError::StepTooLarge { low, .. } => {
                format!("Write \"{low}\" if that is what you mean, or use a smaller step.")
            }
            CronError::NeverMatches { .. } => {
                "February has at most 29 days; April, June, September and November have 30.".into()
            }
            CronError::EmptyTimeZone | CronError::UnknownTimeZone { .. } => {
                "Use an IANA time zone name such as UTC, Europe/Berlin or America/New_York; for a \
                 fixed offset use Etc/GMT-2 (meaning UTC+2: the sign is inverted)."
                    .into()
            }
            _ => return None,
        })
    }
}

/// How the day-of-month and day-of-week fields combine (the Vixie rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DayRule {
    /// One of the fields starts with `*`: both must match.
    Both,
    /// Both fields are restricted: either may match.
    Either,
}

/// A parsed cron expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronSchedule {
    expression: String,
    /// Bit n set: minute n matches.
    minutes: u64,
    /// Bit n set: hour n matches.
    hours: u64,
    /// Bit n set: day n (1-31) of the month matches.
    days_of_month: u64,
    /// Bit n set: month n (1-12) matches.
    months: u64,
    /// Bit n set: weekday n (0 = Sunday .. 6) matches.
    days_of_week: u64,
    day_rule: DayRule,
}

impl CronSchedule {
    /// Parse a 5-field crontab expression or a macro such as `@daily`.
    pub fn parse(expr: &str) -> Result<CronSchedule, CronError> {
        let fields: Vec<&str> = expr.split_whitespace().collect();
        let normalized = fields.join(" ");
        match fields.as_slice() {
            [] => Err(CronError::Empty),
            [first, ..] if first.starts_with('@') => parse_macro(first, &normalized, fields.len()),
            [minute, hour, dom, month, dow] => {
                Self::from_fields([*minute, *hour, *dom, *month, *dow], normalized)
            }
            _ if fields.len() == 6 || fields.len() == 7 => Err(CronError::SecondsOrYearField {
                expr: normalized,
                count: fields.len(),
            }),
            _ => Err(CronError::FieldCount {
                expr: normalized,
                count: fields.len(),
            }),
        }
    }

    /// The expression as written, with white space normalized to single
    /// spaces and a macro in lowercase.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The first time this schedule runs strictly after `after`, evaluated in
    /// `tz` with the DST rules of the module documentation. `None` only if
    /// there is no run within 400 years or before the end of chrono's calendar.
    pub fn next_after(&self, after: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        let offset = tz.offset_from_utc_datetime(&after.naive_utc()).fix();
        let local_date = after.naive_utc().checked_add_offset(offset)?.date();
        let mut date = local_date
            .checked_sub_days(Days::new(LOOKBEHIND_DAYS))
            .unwrap_or(local_date);
        for _ in 0..SEARCH_DAYS {
            if self.day_matches(date) {
                if let Some(run) = self.first_run_on(date, after, tz) {
                    return Some(run);
                }
            }
            date = date.succ_opt()?;
        }
        None
    }

    /// [`CronSchedule::next_after`] on Unix epoch seconds.
    pub fn next_after_epoch(&self, after_epoch_secs: i64, tz: Tz) -> Option<i64> {
        let after = DateTime::from_timestamp(after_epoch_secs, 0)?;
        self.next_after(after, tz).map(|t| t.timestamp())
    }

    fn from_fields(texts: [&str; 5], expression: String) -> Result<CronSchedule, CronError> {
        let [_, _, dom, month, dow] = texts;
        let mut masks = [0u64; 5];
        for ((mask, field), text) in masks.iter_mut().zip(CronField::ALL).zip(texts) {
            *mask = parse_field(field, text)?;
        }
        let [minutes, hours, days_of_month, months, dow_mask] = masks;
        // Day-of-week 7 is Sunday, as 0 is.
        let days_of_week = (dow_mask | (dow_mask >> 7)) & 0x7f;
        let day_rule = if dom.starts_with('*') || dow.starts_with('*') {
            DayRule::Both
        } else {
            DayRule::Either
        };
        let schedule = CronSchedule {
            expression,
            minutes,
            hours,
            days_of_month,
            months,
            days_of_week,
            day_rule,
        };
        if day_rule == DayRule::Both && !schedule.some_month_has_a_day() {
            return Err(CronError::NeverMatches {
                expr: schedule.expression,
                days: dom.to_string(),
                months: month.to_string(),
            });
        }
        Ok(schedule)
    }

    /// Whether some allowed month has some allowed day of the month (February
    /// counted with 29 days). With both day fields required to match this
    /// decides whether the expression ever matches: every valid date falls on
    /// every weekday within 400 years.
    fn some_month_has_a_day(&self) -> bool {
        (1..=12u32)
            .filter(|m| has_bit(self.months, *m))
            .any(|m| (1..=max_days_in_month(m)).any(|d| has_bit(self.days_of_month, d)))
    }

    /// Whether the schedule runs on this (local) date at all.
    fn day_matches(&self, date: NaiveDate) -> bool {
        if !has_bit(self.months, date.month()) {
            return false;
        }
        let dom = has_bit(self.days_of_month, date.day());
        let dow = has_bit(self.days_of_week, date.weekday().num_days_from_sunday());
        match self.day_rule {
            DayRule::Both => dom && dow,
            DayRule::Either => dom || dow,
        }
    }

    /// The first run on local `date` strictly after `after`, if any. Since
    /// run instants grow with local time, a whole day (or hour) whose last
    /// candidate is not after `after` is skipped with one conversion.
    fn first_run_on(&self, date: NaiveDate, after: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        let last_hour = highest_bit(self.hours)?;
        let last_minute = highest_bit(self.minutes)?;
        if run_instant(date, last_hour, last_minute, tz).is_some_and(|t| t <= after) {
            return None;
        }
        for hour in bits(self.hours) {
            if run_instant(date, hour, last_minute, tz).is_some_and(|t| t <= after) {
                continue;
            }
            for minute in bits(self.minutes) {
                if let Some(t) = run_instant(date, hour, minute, tz).filter(|t| *t > after) {
                    return Some(t);
                }
            }
        }
        None
    }
}

impl FromStr for CronSchedule {
    type Err = CronError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CronSchedule::parse(s)
    }
}

impl fmt::Display for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.expression)
    }
}

/// Parse an IANA time zone name (`UTC`, `Europe/Berlin`), ignoring case and
/// surrounding white space as PostgreSQL does for its `timezone` setting.
pub fn parse_timezone(name: &str) -> Result<Tz, CronError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(CronError::EmptyTimeZone);
    }
    if let Ok(tz) = name.parse::<Tz>() {
        return Ok(tz);
    }
    chrono_tz::TZ_VARIANTS
        .iter()
        .copied()
        .find(|tz| tz.name().eq_ignore_ascii_case(name))
        .ok_or_else(|| CronError::UnknownTimeZone {
            name: name.to_string(),
        })
}

fn parse_macro(
    name: &str,
    normalized: &str,
    field_count: usize,
) -> Result<CronSchedule, CronError> {
    let lower = name.to_ascii_lowercase();
    let fields: [&str; 5] = match lower.as_str() {
        "@hourly" => ["0", "*", "*", "*", "*"],
        "@daily" | "@midnight" => ["0", "0", "*", "*", "*"],
        "@weekly" => ["0", "0", "*", "*", "0"],
        "@monthly" => ["0", "0", "1", "*", "*"],
        "@yearly" | "@annually" => ["0", "0", "1", "1", "*"],
        "@reboot" => return Err(CronError::Reboot),
        _ => {
            return Err(CronError::UnknownMacro {
                name: name.to_string(),
            })
        }
    };
    if field_count > 1 {
        return Err(CronError::MacroWithFields {
            expr: normalized.to_string(),
            name: lower,
        });
    }
    CronSchedule::from_fields(fields, lower)
}

/// Parse one field into a bit mask of its values (day-of-week: bits 0-7).
fn parse_field(field: CronField, text: &str) -> Result<u64, CronError> {
    let mut mask = 0u64;
    for item in text.split(',') {
        if item.is_empty() {
            return Err(CronError::EmptyItem {
                field,
                text: text.to_string(),
            });
        }
        mask |= parse_item(field, text, item)?;
    }
    Ok(mask)
}

/// Parse one list item: `*`, `a`, `a-b`, each optionally with `/n`.
fn parse_item(field: CronField, text: &str, item: &str) -> Result<u64, CronError> {
    let at = |part: &str| FieldPart {
        field,
        item: part.to_string(),
        text: text.to_string(),
    };
    let malformed = || CronError::Malformed { at: at(item) };
    let (base, step) = match item.split_once('/') {
        Some((base, step)) => (base, Some(step)),
        None => (item, None),
    };
    let step = match step {
        None => None,
        Some(s) if s.is_empty() || s.contains('/') => return Err(malformed()),
        // Too many digits for a u32 is too large a step all the same.
        Some(s) if is_number(s) => Some(s.parse::<u32>().unwrap_or(u32::MAX)),
        Some(s) => return Err(CronError::NotAValue { at: at(s) }),
    };
    let (low, high) = if base == "*" {
        (field.min(), field.max())
    } else {
        match base.split_once('-') {
            Some((a, b)) if a.is_empty() || b.is_empty() || b.contains('-') => {
                return Err(malformed())
            }
            Some((a, b)) => {
                let low = parse_value(field, a, &at)?;
                let mut high = parse_value(field, b, &at)?;
                // `FRI-SUN`: as the upper end of a range, SUN is 7.
                if field == CronField::DayOfWeek && high == 0 && low > 0 && !is_number(b) {
                    high = 7;
                }
                if low > high {
                    return Err(CronError::ReversedRange {
                        at: at(item),
                        low,
                        high,
                    });
                }
                (low, high)
            }
            None if base.is_empty() => return Err(malformed()),
            None => {
                let value = parse_value(field, base, &at)?;
                // `a/n` means `a-MAX/n`; a plain value is just itself.
                (value, if step.is_some() { field.max() } else { value })
            }
        }
    };
    let step = match step {
        None => 1,
        Some(0) => return Err(CronError::ZeroStep { at: at(item) }),
        Some(n) if n > high - low => {
            return Err(CronError::StepTooLarge {
                at: at(item),
                low,
                high,
            })
        }
        Some(n) => n,
    };
    Ok((low..=high)
        .step_by(step as usize)
        .fold(0u64, |mask, v| mask | (1u64 << v)))
}

/// Parse a value: a number, or for month and day-of-week a 3-letter name.
fn parse_value(
    field: CronField,
    token: &str,
    at: &dyn Fn(&str) -> FieldPart,
) -> Result<u32, CronError> {
    let value = if is_number(token) {
        // Too many digits for a u32 is out of range all the same.
        token.parse().unwrap_or(u32::MAX)
    } else {
        name_value(field, token).ok_or_else(|| CronError::NotAValue { at: at(token) })?
    };
    if value < field.min() || value > field.max() {
        return Err(CronError::OutOfRange {
            at: at(token),
            min: field.min(),
            max: field.max(),
        });
    }
    Ok(value)
}

/// Whether `token` is a run of ASCII digits (no sign, no white space).
fn is_number(token: &str) -> bool {
    !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit())
}

/// The value of a month (1-12) or weekday (0-6) name, case-insensitively.
fn name_value(field: CronField, token: &str) -> Option<u32> {
    let (names, first): (&[&str], u32) = match field {
        CronField::Month => (&MONTH_NAMES, 1),
        CronField::DayOfWeek => (&WEEKDAY_NAMES, 0),
        _ => return None,
    };
    let index = names.iter().position(|n| n.eq_ignore_ascii_case(token))?;
    u32::try_from(index).ok().map(|i| i + first)
}

/// The instant at which local `date hour:minute` in `tz` runs: its only
/// instant, the first of two (fall-back), or the end of the gap it falls in
/// (spring-forward). `None` if it cannot be represented.
fn run_instant(date: NaiveDate, hour: u32, minute: u32, tz: Tz) -> Option<DateTime<Utc>> {
    let local = date.and_hms_opt(hour, minute, 0)?;
    resolve_local(local, tz)
}

fn resolve_local(local: NaiveDateTime, tz: Tz) -> Option<DateTime<Utc>> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
        LocalResult::Ambiguous(a, b) => Some(a.with_timezone(&Utc).min(b.with_timezone(&Utc))),
        LocalResult::None => GapInfo::new(&local, &tz)?
            .end
            .map(|t| t.with_timezone(&Utc)),
    }
}

/// Days in `month`, February counted as 29.
fn max_days_in_month(month: u32) -> u32 {
    match month {
        2 => 29,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn has_bit(mask: u64, n: u32) -> bool {
    n < 64 && mask & (1u64 << n) != 0
}

fn highest_bit(mask: u64) -> Option<u32> {
    (mask != 0).then(|| 63 - mask.leading_zeros())
}

/// The set bits of `mask`, lowest first.
fn bits(mask: u64) -> impl Iterator<Item = u32> {
    (0..64u32).filter(move |n| has_bit(mask, *n))
}

#[cfg(test)]
mod tests;
