//! A process's memory, as Linux reports it in `/proc/<pid>/status`: what a
//! job's result and the benchmarks report, measured rather than assumed.
//!
//! - `VmHWM`: the peak resident set. For a backend or background worker it
//!   counts the shared-buffer pages the process touched, so it grows with
//!   `shared_buffers` whatever pg_ark does. Writing `5` to
//!   `/proc/self/clear_refs` resets it (Linux 4.0 and later).
//! - `RssAnon`: the resident private memory, the honest figure for what
//!   pg_ark allocates. The kernel keeps no peak of it, so [`PeakSampler`]
//!   samples it.
use std::sync::atomic::{AtomicU64, Ordering};

/// One reading of a process's memory, in KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Memory {
    /// `VmHWM`: the peak resident set since the process started or its
    /// peak was last reset.
    pub hwm_kib: u64,
    /// `RssAnon`: the resident anonymous (private) memory now.
    pub rss_anon_kib: u64,
}

/// The `VmHWM` and `RssAnon` lines of a `/proc/<pid>/status` text; `None`
/// when either is missing (not Linux, or a kernel before 4.5 for
/// `RssAnon`).
pub fn parse_status(text: &str) -> Option<Memory> {
    let field = |name: &str| {
        text.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix(':')?;
            let kib = rest.trim().strip_suffix("kB")?.trim();
            kib.parse::<u64>().ok()
        })
    };
    Some(Memory {
        hwm_kib: field("VmHWM")?,
        rss_anon_kib: field("RssAnon")?,
    })
}

/// This process's memory now; `None` where `/proc` does not say.
pub fn current() -> Option<Memory> {
    parse_status(&std::fs::read_to_string("/proc/self/status").ok()?)
}

/// The memory of process `pid` now (for a benchmark watching a child).
pub fn of_pid(pid: u32) -> Option<Memory> {
    parse_status(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// Reset this process's `VmHWM` to its current resident set, so the next
/// reading's peak is this job's own; `false` where the kernel refuses.
pub fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// The highest `RssAnon` seen by [`PeakSampler::sample`] since the last
/// [`PeakSampler::reset`]. Shared between threads: any thread may sample.
#[derive(Debug, Default)]
pub struct PeakSampler {
    peak_kib: AtomicU64,
}

impl PeakSampler {
    pub const fn new() -> PeakSampler {
        PeakSampler {
            peak_kib: AtomicU64::new(0),
        }
    }

    pub fn reset(&self) {
        self.peak_kib.store(0, Ordering::Relaxed);
    }

    /// Read this process's memory and keep the highest `RssAnon`.
    pub fn sample(&self) -> Option<Memory> {
        let now = current()?;
        self.peak_kib.fetch_max(now.rss_anon_kib, Ordering::Relaxed);
        Some(now)
    }

    /// The peak so far (0 before the first sample).
    pub fn peak_kib(&self) -> u64 {
        self.peak_kib.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_fields_are_read_in_kib() {
        let text =
            "Name:\tpostgres\nVmPeak:\t  300000 kB\nVmHWM:\t   45120 kB\nVmRSS:\t   40000 kB\n\
                    RssAnon:\t    6144 kB\nRssFile:\t   20000 kB\nRssShmem:\t   13856 kB\n";
        assert_eq!(
            parse_status(text),
            Some(Memory {
                hwm_kib: 45120,
                rss_anon_kib: 6144
            })
        );
        // A prefix of another field's name is not the field.
        assert_eq!(parse_status("VmHWMx:\t1 kB\nRssAnon:\t2 kB\n"), None);
        assert_eq!(parse_status("VmHWM:\t1 kB\n"), None);
    }

    /// Against this very process: allocating and touching 256 MiB raises
    /// `RssAnon` by about that much (other tests running beside it would
    /// have to free 64 MiB at that moment to hide it), and the sampler keeps the peak after
    /// the memory is freed.
    #[test]
    fn the_sampler_keeps_the_peak_of_this_process() {
        let Some(before) = current() else {
            panic!("/proc/self/status has no VmHWM or RssAnon on this machine");
        };
        let sampler = PeakSampler::new();
        sampler.sample();
        let block = std::hint::black_box(vec![1u8; 256 << 20]);
        let during = sampler.sample().expect("a reading");
        assert!(
            during.rss_anon_kib >= before.rss_anon_kib + 192 * 1024,
            "before {before:?}, during {during:?}"
        );
        assert!(during.hwm_kib >= during.rss_anon_kib);
        drop(std::hint::black_box(block));
        sampler.sample();
        assert!(sampler.peak_kib() >= during.rss_anon_kib);
        sampler.reset();
        assert_eq!(sampler.peak_kib(), 0);
    }
}
