//! Threads that pg_ark's core starts inside a PostgreSQL process must never
//! receive PostgreSQL's signals: handlers like SIGTERM's or SIGUSR1's assume
//! they run on the backend's own thread. Every thread the core creates is
//! created inside `with_signals_blocked`, and inherits the blocked mask.

/// Run `f` with every signal blocked in the calling thread; threads created
/// meanwhile inherit the blocked mask. The caller's mask is restored after.
pub fn with_signals_blocked<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: sigfillset/pthread_sigmask on local, initialized sets.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let r = f();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_started_inside_have_every_signal_blocked() {
        let blocked = with_signals_blocked(|| {
            std::thread::spawn(|| unsafe {
                let mut cur: libc::sigset_t = std::mem::zeroed();
                libc::pthread_sigmask(libc::SIG_SETMASK, std::ptr::null(), &mut cur);
                [
                    libc::SIGTERM,
                    libc::SIGHUP,
                    libc::SIGUSR1,
                    libc::SIGINT,
                    libc::SIGQUIT,
                ]
                .iter()
                .all(|&s| libc::sigismember(&cur, s) == 1)
            })
            .join()
            .unwrap()
        });
        assert!(blocked);
        // and the caller's own mask is back as it was
        let caller_blocked = unsafe {
            let mut cur: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_SETMASK, std::ptr::null(), &mut cur);
            libc::sigismember(&cur, libc::SIGTERM) == 1
        };
        assert!(!caller_blocked);
    }
}
