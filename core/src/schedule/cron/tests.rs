use super::*;
use chrono::{NaiveTime, Timelike, Weekday};
use chrono_tz::America::New_York;
use chrono_tz::Europe::Berlin;

fn utc(text: &str) -> DateTime<Utc> {
    text.parse().expect("a UTC time")
}

fn sched(expr: &str) -> CronSchedule {
    CronSchedule::parse(expr).expect("a valid expression")
}

fn err(expr: &str) -> CronError {
    CronSchedule::parse(expr).expect_err("an invalid expression")
}

fn msg(expr: &str) -> String {
    err(expr).to_string()
}

fn values(mask: u64) -> Vec<u32> {
    bits(mask).collect()
}

/// The next `n` runs after `after`, as UTC `YYYY-MM-DDTHH:MMZ`.
fn runs(expr: &str, tz: Tz, after: &str, n: usize) -> Vec<String> {
    let schedule = sched(expr);
    let mut t = utc(after);
    let mut out = Vec::new();
    for _ in 0..n {
        t = schedule.next_after(t, tz).expect("a next run");
        out.push(t.format("%Y-%m-%dT%H:%MZ").to_string());
    }
    out
}

/// The next `n` runs after `after`, as local `YYYY-MM-DD HH:MM ABBR`.
fn local_runs(expr: &str, tz: Tz, after: &str, n: usize) -> Vec<String> {
    let schedule = sched(expr);
    let mut t = utc(after);
    let mut out = Vec::new();
    for _ in 0..n {
        t = schedule.next_after(t, tz).expect("a next run");
        out.push(t.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z").to_string());
    }
    out
}

fn same_evaluation(a: &CronSchedule, b: &CronSchedule) -> bool {
    (
        a.minutes,
        a.hours,
        a.days_of_month,
        a.months,
        a.days_of_week,
        a.day_rule,
    ) == (
        b.minutes,
        b.hours,
        b.days_of_month,
        b.months,
        b.days_of_week,
        b.day_rule,
    )
}

// ---- parsing -------------------------------------------------------

#[test]
fn parses_stars() {
    let s = sched("* * * * *");
    assert_eq!(values(s.minutes), (0..=59).collect::<Vec<_>>());
    assert_eq!(values(s.hours), (0..=23).collect::<Vec<_>>());
    assert_eq!(values(s.days_of_month), (1..=31).collect::<Vec<_>>());
    assert_eq!(values(s.months), (1..=12).collect::<Vec<_>>());
    assert_eq!(values(s.days_of_week), (0..=6).collect::<Vec<_>>());
    assert_eq!(s.day_rule, DayRule::Both);
}

#[test]
fn parses_values_lists_ranges_and_steps() {
    let s = sched("5,10-12,40-50/5 */6 1,15,31 */3 1/2");
    assert_eq!(values(s.minutes), [5, 10, 11, 12, 40, 45, 50]);
    assert_eq!(values(s.hours), [0, 6, 12, 18]);
    assert_eq!(values(s.days_of_month), [1, 15, 31]);
    assert_eq!(values(s.months), [1, 4, 7, 10]);
    // 1/2 is 1-7/2 = 1,3,5,7 and 7 is Sunday.
    assert_eq!(values(s.days_of_week), [0, 1, 3, 5]);
    assert_eq!(s.day_rule, DayRule::Either);

    let s = sched("*/20 9-17/4 * * *");
    assert_eq!(values(s.minutes), [0, 20, 40]);
    assert_eq!(values(s.hours), [9, 13, 17]);
    assert_eq!(values(sched("5/20 * * * *").minutes), [5, 25, 45]);
    assert_eq!(values(sched("0-59/1 * * * *").minutes).len(), 60);
    assert_eq!(values(sched("59 23 31 12 *").minutes), [59]);
}

#[test]
fn parses_month_names_case_insensitively() {
    assert_eq!(values(sched("0 0 1 jan,Mar,DEC *").months), [1, 3, 12]);
    assert_eq!(values(sched("0 0 1 JAN-MAR *").months), [1, 2, 3]);
    assert_eq!(values(sched("0 0 1 feb-4 *").months), [2, 3, 4]);
    assert_eq!(values(sched("0 0 1 Jun/3 *").months), [6, 9, 12]);
}

#[test]
fn parses_weekdays_and_sunday_as_0_or_7() {
    assert_eq!(
        values(sched("0 0 * * MON-FRI").days_of_week),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(values(sched("0 0 * * sun").days_of_week), [0]);
    assert_eq!(values(sched("0 0 * * 7").days_of_week), [0]);
    assert_eq!(values(sched("0 0 * * 0,7").days_of_week), [0]);
    assert_eq!(values(sched("0 0 * * 5-7").days_of_week), [0, 5, 6]);
    assert_eq!(values(sched("0 0 * * FRI-SUN").days_of_week), [0, 5, 6]);
    assert_eq!(values(sched("0 0 * * sat,Sun").days_of_week), [0, 6]);
    assert_eq!(
        values(sched("0 0 * * SUN-SAT").days_of_week),
        [0, 1, 2, 3, 4, 5, 6]
    );
    assert_eq!(values(sched("0 0 * * */2").days_of_week), [0, 2, 4, 6]);
    assert_eq!(values(sched("0 0 * * */7").days_of_week), [0]);
}

#[test]
fn normalizes_the_expression_text() {
    let s = sched("  0   3 * *\tMON ");
    assert_eq!(s.expression(), "0 3 * * MON");
    assert_eq!(s.to_string(), "0 3 * * MON");
    let parsed: CronSchedule = "0 3 * * MON".parse().expect("valid");
    assert_eq!(parsed, s);
    assert_eq!(sched(" @DAILY ").expression(), "@daily");
}

#[test]
fn macros_equal_their_expansions() {
    for (mac, expansion) in [
        ("@hourly", "0 * * * *"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@weekly", "0 0 * * 0"),
        ("@monthly", "0 0 1 * *"),
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@Weekly", "0 0 * * 0"),
    ] {
        let m = sched(mac);
        assert!(same_evaluation(&m, &sched(expansion)), "{mac}");
        assert_eq!(m.expression(), mac.to_ascii_lowercase());
    }
    assert_eq!(
        runs("@weekly", Tz::UTC, "2024-05-01T00:00:00Z", 2),
        ["2024-05-05T00:00Z", "2024-05-12T00:00Z"]
    );
}

// ---- errors --------------------------------------------------------

const FIELDS: &str =
    "expected 5 (minute hour day-of-month month day-of-week) or a macro such as @daily";

#[test]
fn field_count_errors() {
    let expected = "cron expression is empty; expected 5 fields (minute hour day-of-month \
                    month day-of-week) or a macro such as @daily";
    assert_eq!(msg(""), expected);
    assert_eq!(err(" \t "), CronError::Empty);
    assert_eq!(
        msg("* * *"),
        format!("cron expression \"* * *\" has 3 fields; {FIELDS}")
    );
    assert_eq!(
        msg("0 0 1 1"),
        format!("cron expression \"0 0 1 1\" has 4 fields; {FIELDS}")
    );
    assert_eq!(
        msg("* * * * * * * *"),
        format!("cron expression \"* * * * * * * *\" has 8 fields; {FIELDS}")
    );
    assert_eq!(
        msg("0 0 3 * * *"),
        format!(
            "cron expression \"0 0 3 * * *\" has 6 fields; {FIELDS}: pg_ark does not \
             accept a seconds or year field"
        )
    );
    assert_eq!(
        err("0 0 3 * * * 2030"),
        CronError::SecondsOrYearField {
            expr: "0 0 3 * * * 2030".into(),
            count: 7
        }
    );
    assert!(err("0 0 3 * * *")
        .hint()
        .is_some_and(|h| h.contains("seconds")));
    assert!(err("* * *").hint().is_some());
}

#[test]
fn macro_errors() {
    let reboot = "cron macro \"@reboot\" is not supported: pg_ark schedules run at times \
                  of day, not at server start";
    assert_eq!(msg("@reboot"), reboot);
    assert_eq!(msg("@REBOOT"), reboot);
    assert!(err("@reboot").hint().is_some());
    assert_eq!(
        msg("@often"),
        "unknown cron macro \"@often\"; expected @hourly, @daily, @midnight, @weekly, \
         @monthly, @yearly or @annually"
    );
    assert_eq!(
        msg("@daily  0"),
        "cron macro \"@daily\" must stand alone, but cron expression \"@daily 0\" has more after it"
    );
}

#[test]
fn out_of_range_errors() {
    assert_eq!(
        msg("75 * * * *"),
        "minute field \"75\" is out of range 0-59"
    );
    assert_eq!(
        msg("0-75 * * * *"),
        "\"75\" in minute field \"0-75\" is out of range 0-59"
    );
    assert_eq!(msg("* 24 * * *"), "hour field \"24\" is out of range 0-23");
    assert_eq!(
        msg("* * 0 * *"),
        "day-of-month field \"0\" is out of range 1-31"
    );
    assert_eq!(
        msg("* * 1,32 * *"),
        "\"32\" in day-of-month field \"1,32\" is out of range 1-31"
    );
    assert_eq!(msg("* * * 13 *"), "month field \"13\" is out of range 1-12");
    assert_eq!(
        msg("* * * 0-3 *"),
        "\"0\" in month field \"0-3\" is out of range 1-12"
    );
    assert_eq!(
        msg("* * * * 8"),
        "day-of-week field \"8\" is out of range 0-7"
    );
    assert_eq!(
        msg("99999999999 * * * *"),
        "minute field \"99999999999\" is out of range 0-59"
    );
    assert!(err("* * * * 8")
        .hint()
        .is_some_and(|h| h.contains("Sunday")));
    assert_eq!(err("75 * * * *").hint(), None);
    assert_eq!(
        err("* * * * 1-9"),
        CronError::OutOfRange {
            at: FieldPart {
                field: CronField::DayOfWeek,
                item: "9".into(),
                text: "1-9".into()
            },
            min: 0,
            max: 7
        }
    );
}

#[test]
fn not_a_value_errors() {
    assert_eq!(msg("x * * * *"), "minute field \"x\" is not a number");
    assert_eq!(
        msg("* * JAN * *"),
        "day-of-month field \"JAN\" is not a number"
    );
    assert_eq!(
        msg("* * * FOO *"),
        "month field \"FOO\" is not a number or a month name (JAN-DEC)"
    );
    assert_eq!(
        msg("* * * * MONDAY"),
        "day-of-week field \"MONDAY\" is not a number or a weekday name (SUN-SAT)"
    );
    assert_eq!(
        msg("* * * * MON-FRIDAY"),
        "\"FRIDAY\" in day-of-week field \"MON-FRIDAY\" is not a number or a weekday name (SUN-SAT)"
    );
    assert_eq!(
        msg("*/x * * * *"),
        "\"x\" in minute field \"*/x\" is not a number"
    );
    assert_eq!(
        msg("5-* * * * *"),
        "\"*\" in minute field \"5-*\" is not a number"
    );
    assert_eq!(msg("+5 * * * *"), "minute field \"+5\" is not a number");
    for quartz in [
        "0 0 L * *",
        "0 0 ? * 1",
        "0 0 * * MON#2",
        "0 0 15W * *",
        "0 0 * * 5L",
    ] {
        let hint = err(quartz).hint().unwrap_or_default();
        assert!(hint.contains("?, L, W and #"), "{quartz}: {hint}");
    }
    assert_eq!(err("x * * * *").hint(), None);
}

#[test]
fn list_and_shape_errors() {
    assert_eq!(
        msg("1,,2 * * * *"),
        "minute field \"1,,2\" has an empty list item"
    );
    assert_eq!(
        msg("* 1, * * *"),
        "hour field \"1,\" has an empty list item"
    );
    assert_eq!(
        msg("* * * ,1 *"),
        "month field \",1\" has an empty list item"
    );
    let shape =
        "is malformed: expected a value, a range a-b or *, optionally followed by a step /n";
    assert_eq!(msg("1- * * * *"), format!("minute field \"1-\" {shape}"));
    assert_eq!(msg("-1 * * * *"), format!("minute field \"-1\" {shape}"));
    assert_eq!(msg("*/ * * * *"), format!("minute field \"*/\" {shape}"));
    assert_eq!(msg("/5 * * * *"), format!("minute field \"/5\" {shape}"));
    assert_eq!(
        msg("1-2-3 * * * *"),
        format!("minute field \"1-2-3\" {shape}")
    );
    assert_eq!(
        msg("0,*/2/3 * * * *"),
        format!("\"*/2/3\" in minute field \"0,*/2/3\" {shape}")
    );
}

#[test]
fn range_and_step_errors() {
    assert_eq!(
        msg("5-2 * * * *"),
        "minute field \"5-2\" is a reversed range: 5 is greater than 2"
    );
    assert_eq!(
        err("* 22-2 * * *").hint().as_deref(),
        Some("A range cannot wrap around; write it as two ranges: \"22-23,0-2\".")
    );
    assert_eq!(
        msg("* * * * FRI-MON"),
        "day-of-week field \"FRI-MON\" is a reversed range: 5 is greater than 1"
    );
    assert_eq!(
        msg("*/0 * * * *"),
        "minute field \"*/0\" has step 0; a step must be at least 1"
    );
    assert_eq!(
        msg("*/60 * * * *"),
        "minute field \"*/60\" has a step larger than its range 0-59, so it would match only 0"
    );
    assert_eq!(
        msg("* 1,2-4/2,20-22/5 * * *"),
        "\"20-22/5\" in hour field \"1,2-4/2,20-22/5\" has a step larger than its range 20-22, \
         so it would match only 20"
    );
    assert_eq!(
        msg("*/99999999999 * * * *"),
        "minute field \"*/99999999999\" has a step larger than its range 0-59, so it would match only 0"
    );
    assert_eq!(
        msg("* * * */12 *"),
        "month field \"*/12\" has a step larger than its range 1-12, so it would match only 1"
    );
    assert!(err("*/60 * * * *")
        .hint()
        .is_some_and(|h| h.contains("\"0\"")));
}

#[test]
fn impossible_dates_are_refused() {
    assert_eq!(
        msg("0 0 30 2 *"),
        "cron expression \"0 0 30 2 *\" never matches: no month in month field \"2\" has a \
         day in day-of-month field \"30\""
    );
    assert!(matches!(
        err("0 0 31 APR,JUN,SEP,NOV *"),
        CronError::NeverMatches { .. }
    ));
    // Day-of-week starting with `*` makes both fields required.
    assert!(matches!(
        err("0 0 31 2 */2"),
        CronError::NeverMatches { .. }
    ));
    assert!(err("0 0 30 2 *").hint().is_some());
    // Possible: some month has the day, or the Vixie OR rule applies.
    for ok in [
        "0 0 31 1-2 *",
        "0 0 29 2 *",
        "0 0 30 2 1",
        "0 0 30-31 2,4 *",
    ] {
        assert!(CronSchedule::parse(ok).is_ok(), "{ok}");
    }
    assert_eq!(
        runs("0 0 30 2 1", Tz::UTC, "2024-01-31T00:00:00Z", 2),
        ["2024-02-05T00:00Z", "2024-02-12T00:00Z"]
    );
}

// ---- the Vixie day rule --------------------------------------------

#[test]
fn restricted_day_fields_match_either() {
    // 2024-01-01 is a Monday.
    assert_eq!(
        runs("0 0 1,15 * 1", Tz::UTC, "2024-01-01T00:00:00Z", 9),
        [
            "2024-01-08T00:00Z",
            "2024-01-15T00:00Z",
            "2024-01-22T00:00Z",
            "2024-01-29T00:00Z",
            "2024-02-01T00:00Z",
            "2024-02-05T00:00Z",
            "2024-02-12T00:00Z",
            "2024-02-15T00:00Z",
            "2024-02-19T00:00Z",
        ]
    );
    assert_eq!(
        runs("0 0 13 * FRI", Tz::UTC, "2024-01-01T00:00:00Z", 4),
        [
            "2024-01-05T00:00Z",
            "2024-01-12T00:00Z",
            "2024-01-13T00:00Z",
            "2024-01-19T00:00Z"
        ]
    );
    // A restricted field covering every day still takes part in the OR.
    assert_eq!(
        runs("0 0 1-31 * 1", Tz::UTC, "2024-01-01T00:00:00Z", 2),
        ["2024-01-02T00:00Z", "2024-01-03T00:00Z"]
    );
}

#[test]
fn a_star_prefixed_day_field_makes_both_required() {
    assert_eq!(sched("0 0 */2 * 1").day_rule, DayRule::Both);
    // Mondays that are odd days of the month.
    assert_eq!(
        runs("0 0 */2 * 1", Tz::UTC, "2024-01-01T00:00:00Z", 4),
        [
            "2024-01-15T00:00Z",
            "2024-01-29T00:00Z",
            "2024-02-05T00:00Z",
            "2024-02-19T00:00Z"
        ]
    );
    assert_eq!(
        runs("0 0 * * 1", Tz::UTC, "2024-01-01T00:00:00Z", 2),
        ["2024-01-08T00:00Z", "2024-01-15T00:00Z"]
    );
    assert_eq!(
        runs("0 0 15 * *", Tz::UTC, "2024-01-01T00:00:00Z", 2),
        ["2024-01-15T00:00Z", "2024-02-15T00:00Z"]
    );
    // 15th of the month AND Monday (day-of-week */1 starts with `*`).
    assert_eq!(
        runs("0 0 15 * */1", Tz::UTC, "2024-01-01T00:00:00Z", 1),
        ["2024-01-15T00:00Z"]
    );
}

// ---- next_after ----------------------------------------------------

#[test]
fn next_after_is_strictly_after() {
    let hourly = sched("0 * * * *");
    let next = |t: &str| hourly.next_after(utc(t), Tz::UTC);
    assert_eq!(
        next("2024-05-05T10:00:00Z"),
        Some(utc("2024-05-05T11:00:00Z"))
    );
    assert_eq!(
        next("2024-05-05T10:00:30Z"),
        Some(utc("2024-05-05T11:00:00Z"))
    );
    assert_eq!(
        next("2024-05-05T09:59:59Z"),
        Some(utc("2024-05-05T10:00:00Z"))
    );
    assert_eq!(
        runs("* * * * *", Tz::UTC, "2024-05-05T10:00:00Z", 2),
        ["2024-05-05T10:01Z", "2024-05-05T10:02Z"]
    );
}

#[test]
fn next_after_crosses_month_and_year_ends() {
    assert_eq!(
        runs("0 0 31 * *", Tz::UTC, "2024-01-31T00:00:00Z", 4),
        [
            "2024-03-31T00:00Z",
            "2024-05-31T00:00Z",
            "2024-07-31T00:00Z",
            "2024-08-31T00:00Z"
        ]
    );
    assert_eq!(
        runs("59 23 31 12 *", Tz::UTC, "2024-12-31T23:59:00Z", 1),
        ["2025-12-31T23:59Z"]
    );
    assert_eq!(
        runs("@yearly", Tz::UTC, "2024-12-31T23:59:59Z", 2),
        ["2025-01-01T00:00Z", "2026-01-01T00:00Z"]
    );
    assert_eq!(
        runs("@monthly", Tz::UTC, "2024-12-15T00:00:00Z", 2),
        ["2025-01-01T00:00Z", "2025-02-01T00:00Z"]
    );
    assert_eq!(
        runs("*/15 9-17 * * MON-FRI", Tz::UTC, "2024-05-03T17:50:00Z", 2),
        ["2024-05-06T09:00Z", "2024-05-06T09:15Z"]
    );
}

#[test]
fn next_after_handles_leap_years() {
    assert_eq!(
        runs("0 0 29 2 *", Tz::UTC, "2023-03-01T00:00:00Z", 2),
        ["2024-02-29T00:00Z", "2028-02-29T00:00Z"]
    );
    // 2100 is not a leap year.
    assert_eq!(
        runs("0 0 29 2 *", Tz::UTC, "2096-02-29T00:00:00Z", 1),
        ["2104-02-29T00:00Z"]
    );
    // February 29th that is also a Sunday: rare, found all the same.
    let next = sched("0 0 29 2 */7")
        .next_after(utc("2024-03-01T00:00:00Z"), Tz::UTC)
        .expect("a run");
    assert_eq!(next, utc("2032-02-29T00:00:00Z"));
    assert_eq!(next.weekday(), Weekday::Sun);
}

#[test]
fn next_after_in_utc_and_other_zones() {
    assert_eq!(
        runs("0 3 * * *", Tz::UTC, "2024-06-01T03:00:00Z", 2),
        ["2024-06-02T03:00Z", "2024-06-03T03:00Z"]
    );
    // 03:00 in Berlin in summer is 01:00 UTC; in New York 07:00 UTC.
    assert_eq!(
        runs("0 3 * * *", Berlin, "2024-06-01T12:00:00Z", 1),
        ["2024-06-02T01:00Z"]
    );
    assert_eq!(
        runs("0 3 * * *", New_York, "2024-06-01T12:00:00Z", 1),
        ["2024-06-02T07:00Z"]
    );
    // Day-of-week is that of the local date: Monday 00:30 in Tokyo is Sunday in UTC.
    assert_eq!(
        runs(
            "30 0 * * MON",
            chrono_tz::Asia::Tokyo,
            "2024-06-01T00:00:00Z",
            1
        ),
        ["2024-06-02T15:30Z"]
    );
}

#[test]
fn next_after_never_panics_at_the_edges() {
    for tz in [
        Tz::UTC,
        Berlin,
        chrono_tz::Pacific::Kiritimati,
        chrono_tz::Etc::GMTPlus12,
    ] {
        for expr in ["* * * * *", "0 0 29 2 *", "@yearly"] {
            let s = sched(expr);
            assert_eq!(s.next_after(DateTime::<Utc>::MAX_UTC, tz), None);
            let _ = s.next_after(DateTime::<Utc>::MIN_UTC, tz);
            assert_eq!(s.next_after_epoch(i64::MAX, tz), None);
            assert_eq!(s.next_after_epoch(i64::MIN, tz), None);
        }
    }
}

#[test]
fn epoch_convenience() {
    let s = sched("0 * * * *");
    // 2024-01-01T00:00:00Z = 1704067200.
    assert_eq!(
        s.next_after_epoch(1_704_067_200, Tz::UTC),
        Some(1_704_070_800)
    );
    assert_eq!(
        s.next_after_epoch(1_704_067_199, Tz::UTC),
        Some(1_704_067_200)
    );
}

// ---- daylight saving time ------------------------------------------

#[test]
fn berlin_spring_forward_runs_a_missing_time_once_at_the_end_of_the_gap() {
    // 2024-03-31: 02:00 CET jumps to 03:00 CEST (01:00 UTC).
    assert_eq!(
        local_runs("30 2 * * *", Berlin, "2024-03-29T12:00:00Z", 3),
        [
            "2024-03-30 02:30 CET",
            "2024-03-31 03:00 CEST",
            "2024-04-01 02:30 CEST"
        ]
    );
    assert_eq!(
        runs("30 2 * * *", Berlin, "2024-03-29T12:00:00Z", 3),
        [
            "2024-03-30T01:30Z",
            "2024-03-31T01:00Z",
            "2024-04-01T00:30Z"
        ]
    );
    assert_eq!(
        runs("0 2 * * *", Berlin, "2024-03-30T12:00:00Z", 1),
        ["2024-03-31T01:00Z"]
    );
    assert_eq!(
        runs("59 2 * * *", Berlin, "2024-03-30T12:00:00Z", 1),
        ["2024-03-31T01:00Z"]
    );
    // 02:00 and 02:30 (missing) and 03:00 collapse into one run at 03:00.
    assert_eq!(
        local_runs("*/30 * * * *", Berlin, "2024-03-31T00:00:00Z", 3),
        [
            "2024-03-31 01:30 CET",
            "2024-03-31 03:00 CEST",
            "2024-03-31 03:30 CEST"
        ]
    );
}

#[test]
fn berlin_fall_back_runs_a_repeated_time_once_at_its_first_occurrence() {
    // 2024-10-27: 03:00 CEST goes back to 02:00 CET (01:00 UTC).
    assert_eq!(
        local_runs("30 2 * * *", Berlin, "2024-10-26T12:00:00Z", 2),
        ["2024-10-27 02:30 CEST", "2024-10-28 02:30 CET"]
    );
    // Asked again from between the two 02:30s, it does not run the second.
    assert_eq!(
        runs("30 2 * * *", Berlin, "2024-10-27T00:45:00Z", 1),
        ["2024-10-28T01:30Z"]
    );
    // Hourly: 02:00 CEST, then 03:00 CET; the second 02:00 is the same local time.
    assert_eq!(
        local_runs("0 * * * *", Berlin, "2024-10-26T23:30:00Z", 3),
        [
            "2024-10-27 02:00 CEST",
            "2024-10-27 03:00 CET",
            "2024-10-27 04:00 CET"
        ]
    );
}

#[test]
fn new_york_spring_forward_and_fall_back() {
    // 2024-03-10: 02:00 EST jumps to 03:00 EDT (07:00 UTC).
    assert_eq!(
        local_runs("30 2 * * *", New_York, "2024-03-09T00:00:00Z", 3),
        [
            "2024-03-09 02:30 EST",
            "2024-03-10 03:00 EDT",
            "2024-03-11 02:30 EDT"
        ]
    );
    assert_eq!(
        runs("30 2 * * *", New_York, "2024-03-09T00:00:00Z", 3),
        [
            "2024-03-09T07:30Z",
            "2024-03-10T07:00Z",
            "2024-03-11T06:30Z"
        ]
    );
    // 2024-11-03: 02:00 EDT goes back to 01:00 EST (06:00 UTC).
    assert_eq!(
        runs("30 1 * * *", New_York, "2024-11-02T12:00:00Z", 2),
        ["2024-11-03T05:30Z", "2024-11-04T06:30Z"]
    );
    assert_eq!(
        local_runs("*/20 * * * *", New_York, "2024-11-03T05:00:00Z", 3),
        [
            "2024-11-03 01:20 EDT",
            "2024-11-03 01:40 EDT",
            "2024-11-03 02:00 EST"
        ]
    );
}

#[test]
fn a_skipped_day_runs_at_the_end_of_the_gap() {
    // Pacific/Apia skipped 2011-12-30 entirely (UTC-10 to UTC+14).
    let apia = chrono_tz::Pacific::Apia;
    assert_eq!(
        local_runs("0 12 * * *", apia, "2011-12-29T00:00:00Z", 3),
        [
            "2011-12-29 12:00 -10",
            "2011-12-31 00:00 +14",
            "2011-12-31 12:00 +14"
        ]
    );
}

/// Reference: every matching local minute in a window, mapped to its run
/// instant, minute by minute, with no skipping.
fn brute_force(
    schedule: &CronSchedule,
    tz: Tz,
    after: DateTime<Utc>,
    horizon: DateTime<Utc>,
) -> Vec<DateTime<Utc>> {
    let local_after = after.with_timezone(&tz).naive_local();
    let mut local = local_after.date().and_time(NaiveTime::MIN) - chrono::TimeDelta::days(2);
    let end = local_after + chrono::TimeDelta::days(4);
    let mut out = Vec::new();
    while local < end {
        let matches = schedule.day_matches(local.date())
            && has_bit(schedule.hours, local.hour())
            && has_bit(schedule.minutes, local.minute());
        if matches {
            if let Some(t) = resolve_local(local, tz).filter(|t| *t > after && *t <= horizon) {
                out.push(t);
            }
        }
        local += chrono::TimeDelta::minutes(1);
    }
    out.sort();
    out.dedup();
    out
}

#[test]
fn next_after_agrees_with_a_minute_by_minute_scan() {
    let zones = [
        Tz::UTC,
        Berlin,
        New_York,
        chrono_tz::Australia::Lord_Howe,
        chrono_tz::Asia::Kathmandu,
        chrono_tz::America::Havana,
        chrono_tz::America::Santiago,
    ];
    let exprs = [
        "*/7 * * * *",
        "30 2 * * *",
        "0 */3 * * *",
        "15,45 0-3 * * *",
        "0 0 * * 0",
        "*/20 0-3 * 3,4,9,10,11 1-5",
        "45 1 1-10 * SAT,SUN",
    ];
    let afters = [
        "2024-03-09T20:00:00Z",
        "2024-03-30T20:10:00Z",
        "2024-04-06T10:00:00Z",
        "2024-09-07T12:00:00Z",
        "2024-10-05T14:00:00Z",
        "2024-10-26T20:00:00Z",
        "2024-11-02T20:00:30Z",
    ];
    for tz in zones {
        for expr in exprs {
            let schedule = sched(expr);
            for after in afters {
                let after = utc(after);
                let horizon = after + chrono::TimeDelta::days(2);
                let expected = brute_force(&schedule, tz, after, horizon);
                let mut got = Vec::new();
                let mut t = after;
                while let Some(next) = schedule.next_after(t, tz).filter(|n| *n <= horizon) {
                    assert!(next > t);
                    got.push(next);
                    t = next;
                }
                assert_eq!(got, expected, "{expr} in {tz} after {after}");
            }
        }
    }
}

// ---- time zones ----------------------------------------------------

#[test]
fn parses_time_zone_names() {
    assert_eq!(parse_timezone("UTC"), Ok(Tz::UTC));
    assert_eq!(parse_timezone("Europe/Berlin"), Ok(Berlin));
    assert_eq!(parse_timezone("europe/berlin"), Ok(Berlin));
    assert_eq!(parse_timezone(" America/New_York "), Ok(New_York));
    assert_eq!(parse_timezone("utc"), Ok(Tz::UTC));
}

#[test]
fn rejects_unknown_time_zones() {
    let e = parse_timezone("Europe/Berln").expect_err("unknown");
    assert_eq!(e.to_string(), "unknown time zone \"Europe/Berln\"");
    assert!(e.hint().is_some_and(|h| h.contains("IANA")));
    assert_eq!(
        parse_timezone("+02:00").map_err(|e| e.to_string()),
        Err("unknown time zone \"+02:00\"".into())
    );
    let e = parse_timezone("  ").expect_err("empty");
    assert_eq!(e, CronError::EmptyTimeZone);
    assert_eq!(e.to_string(), "time zone name is empty");
    assert!(e.hint().is_some());
}
