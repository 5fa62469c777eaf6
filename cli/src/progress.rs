//! Progress of the long commands (`restore`, `verify`, `restore-logical`),
//! always on stderr: stdout carries the results.
//!
//! On a terminal, an `indicatif` bar. Otherwise (a log, CI, a pipe, a test)
//! plain `pg_ark: ...` lines, few of them: one per phase, or one every
//! [`LINE_EVERY`] during a long one. `--quiet`: nothing. indicatif would
//! hide itself off a terminal, but then print nothing at all, so the choice
//! between the two is made here, once, by [`Mode::choose`].
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use pg_ark_core::restore::plan::human_bytes;
use std::io::IsTerminal;
use std::time::Duration;

/// How often a plain progress line is printed during one long phase.
pub const LINE_EVERY: Duration = Duration::from_secs(10);

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// An indicatif bar on stderr, a terminal.
    Bar,
    /// Plain lines on stderr.
    Lines,
    /// Nothing (`--quiet`).
    Off,
}

impl Mode {
    /// The mode for `--quiet`, whether stderr is a terminal, and `TERM`
    /// (a `dumb` terminal, such as an editor's shell buffer, cannot move
    /// its cursor: it gets lines).
    pub fn choose(quiet: bool, stderr_is_terminal: bool, term: Option<&str>) -> Mode {
        if quiet {
            Mode::Off
        } else if stderr_is_terminal && term != Some("dumb") {
            Mode::Bar
        } else {
            Mode::Lines
        }
    }

    /// The mode for this process's stderr.
    pub fn of_stderr(quiet: bool) -> Mode {
        let term = std::env::var("TERM").ok();
        Mode::choose(quiet, std::io::stderr().is_terminal(), term.as_deref())
    }
}

/// The rebuild of a restore: bytes, files, rate, time left.
pub const RESTORE: &str =
    "{spinner} [{wide_bar}] {percent:>3}% {binary_bytes}/{binary_total_bytes}, {msg}, {binary_bytes_per_sec}, {eta} left";
/// The rebuild, finished.
pub const RESTORE_DONE: &str =
    "{spinner} [{wide_bar}] {percent:>3}% {binary_bytes}/{binary_total_bytes}, {msg}";
/// Verification, one step per backup.
pub const VERIFY: &str = "{spinner} [{bar:20}] {pos}/{len} backup(s), {elapsed}: {wide_msg}";
/// The download of a logical dump.
pub const DOWNLOAD: &str =
    "{spinner} [{wide_bar}] {binary_bytes}/{binary_total_bytes}, {msg}, {binary_bytes_per_sec}, {eta} left";
/// The download, finished.
pub const DOWNLOAD_DONE: &str =
    "{spinner} [{wide_bar}] {binary_bytes}/{binary_total_bytes}, {msg}, in {elapsed}";
/// A phase without a measure (waiting for recovery).
pub const WAIT: &str = "{spinner} {elapsed}: {wide_msg}";

/// A bar of `len` steps on stderr, drawn with `template` and `message`,
/// which keeps ticking (its spinner and times move) when its position
/// does not.
pub fn bar(len: u64, template: &str, message: String) -> ProgressBar {
    bar_at(len, 0, template, message)
}

/// [`bar`], begun at `position`.
pub fn bar_at(len: u64, position: u64, template: &str, message: String) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr())
        .with_style(style(template))
        .with_position(position)
        .with_message(message);
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

/// Finish `bar`, left drawn with `template` (without what only a running
/// bar needs, such as the time left).
pub fn finish_with(bar: &ProgressBar, template: &str) {
    bar.set_style(style(template));
    bar.finish();
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .expect("the progress templates are valid (unit-tested)")
        .progress_chars("#>-")
        .tick_chars("|/-\\ ")
}

/// A plain progress line.
pub fn line(message: &str) {
    eprintln!("pg_ark: {message}");
}

/// The plain line of a restore's rebuild (the same since the first
/// release: logs and scripts may read it).
pub fn restore_line(
    done: u64,
    total: u64,
    files_done: u64,
    files_total: u64,
    elapsed: Duration,
) -> String {
    let total = total.max(1);
    let secs = elapsed.as_secs_f64().max(0.001);
    let rate = done as f64 / secs;
    let left = if rate > 0.0 {
        (total.saturating_sub(done)) as f64 / rate
    } else {
        0.0
    };
    format!(
        "{:>3}% {} of {}, {} of {} files, {}/s, {:.0} s left",
        done * 100 / total,
        human_bytes(done),
        human_bytes(total),
        files_done,
        files_total,
        human_bytes(rate as u64),
        left
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bar_only_on_a_terminal_that_can_draw_one_and_nothing_when_quiet() {
        use Mode::*;
        for term in [None, Some("xterm-256color"), Some("dumb")] {
            assert_eq!(Mode::choose(true, true, term), Off);
            assert_eq!(Mode::choose(true, false, term), Off);
            assert_eq!(Mode::choose(false, false, term), Lines);
        }
        assert_eq!(Mode::choose(false, true, Some("xterm-256color")), Bar);
        assert_eq!(Mode::choose(false, true, None), Bar);
        assert_eq!(Mode::choose(false, true, Some("dumb")), Lines);
    }

    #[test]
    fn the_templates_are_valid() {
        for t in [RESTORE, RESTORE_DONE, VERIFY, DOWNLOAD, DOWNLOAD_DONE, WAIT] {
            ProgressStyle::with_template(t).unwrap_or_else(|e| panic!("{t}: {e}"));
            style(t);
        }
    }

    #[test]
    fn the_plain_restore_line_is_unchanged() {
        assert_eq!(
            restore_line(512 << 20, 2 << 30, 10, 40, Duration::from_secs(4)),
            " 25% 512.0 MiB of 2.0 GiB, 10 of 40 files, 128.0 MiB/s, 12 s left"
        );
        // Nothing known yet: no division by zero.
        assert_eq!(
            restore_line(0, 0, 0, 0, Duration::ZERO),
            "  0% 0 B of 1 B, 0 of 0 files, 0 B/s, 0 s left"
        );
    }
}
