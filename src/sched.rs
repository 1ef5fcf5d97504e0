//! How the kernel schedules lore's threads: a short time slice for the
//! threads that generate, so one that wakes takes its core back at once,
//! and a lower priority for the server's work threads (searches,
//! ingestion), so a generation gets the cores first under load.

/// The time slice asked for the threads that generate: Linux's shortest.
const GENERATION_SLICE_NS: u64 = 100_000;

/// Asks Linux (6.12 or later, whose EEVDF scheduler honours a thread's
/// requested slice) for a short time slice for the calling thread, which
/// the threads it starts inherit. A thread with a shorter slice has an
/// earlier deadline, so when it wakes it preempts a thread with the
/// default slice instead of waiting for that slice to run out: a decoding
/// thread waits on its partner hundreds of times a token. Older kernels
/// accept the request and ignore it; a refusal is logged.
pub fn short_slice() {
    #[cfg(target_os = "linux")]
    {
        /// `struct sched_attr` up to its first version's fields.
        #[repr(C)]
        struct SchedAttr {
            size: u32,
            policy: u32,
            flags: u64,
            nice: i32,
            priority: u32,
            runtime: u64,
            deadline: u64,
            period: u64,
        }
        // SAFETY: system calls about the calling thread, with a fully
        // initialised attribute block of the size it states. errno is
        // cleared first because -1 is also a valid priority.
        let failed = unsafe {
            let tid = libc::gettid();
            *libc::__errno_location() = 0;
            let nice = libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t);
            if nice == -1 && *libc::__errno_location() != 0 {
                true
            } else {
                let attr = SchedAttr {
                    size: std::mem::size_of::<SchedAttr>() as u32,
                    policy: libc::SCHED_OTHER as u32,
                    flags: 0,
                    nice,
                    priority: 0,
                    runtime: GENERATION_SLICE_NS,
                    deadline: 0,
                    period: 0,
                };
                libc::syscall(libc::SYS_sched_setattr, tid, &raw const attr, 0) != 0
            }
        };
        if failed {
            tracing::warn!(
                error = %std::io::Error::last_os_error(),
                "cannot shorten the time slice of a generating thread; under load it may wait longer for a core"
            );
        }
    }
}

/// Starts candle's barrier pool (the threads that share a decoded token's
/// products and attention, `kernels::matvec_int8`) from a thread
/// with a short slice and the process's own priority, which its workers
/// inherit. Done once, before any thread of lowered priority exists.
pub fn start_decoding_threads() {
    let started = std::thread::Builder::new()
        .name("lore-start".into())
        .spawn(|| {
            short_slice();
            candle_core::utils::barrier_pool();
        })
        .and_then(|thread| {
            thread
                .join()
                .map_err(|_| std::io::Error::other("the thread that starts them panicked"))
        });
    if let Err(error) = started {
        tracing::warn!(%error, "cannot start the decoding threads ahead; they start on first use");
    }
}

/// Lowers the calling thread's priority by `nice` steps below what it
/// inherited (at most to 19). Linux applies it to the one thread; elsewhere
/// it would apply to the whole process, so it is not done.
pub fn lower_priority(nice: i32) {
    if nice == 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        // SAFETY: system calls about the calling thread; no memory is
        // passed. The thread id is positive, so it fits an id_t. errno is
        // cleared first because -1 is also a valid priority.
        let failed = unsafe {
            let tid = libc::gettid() as libc::id_t;
            *libc::__errno_location() = 0;
            let now = libc::getpriority(libc::PRIO_PROCESS, tid);
            if now == -1 && *libc::__errno_location() != 0 {
                true
            } else {
                libc::setpriority(libc::PRIO_PROCESS, tid, (now + nice).min(19)) != 0
            }
        };
        if failed {
            tracing::warn!(
                nice,
                error = %std::io::Error::last_os_error(),
                "cannot lower the priority of a work thread; searches share the cores with generations"
            );
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// This thread's slice as the kernel reports it, where it does.
    fn slice() -> Option<u64> {
        let sched = std::fs::read_to_string("/proc/thread-self/sched").ok()?;
        let line = sched.lines().find(|l| l.starts_with("se.slice"))?;
        line.split(':').nth(1)?.trim().parse().ok()
    }

    fn kernel_at_least(major: u32, minor: u32) -> bool {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let mut parts = release.split(|c: char| !c.is_ascii_digit());
        let found: (u32, u32) = (
            parts.next().and_then(|p| p.parse().ok()).unwrap_or(0),
            parts.next().and_then(|p| p.parse().ok()).unwrap_or(0),
        );
        found >= (major, minor)
    }

    #[test]
    fn a_generating_thread_gets_a_short_slice_and_passes_it_on() {
        std::thread::spawn(|| {
            short_slice();
            if !kernel_at_least(6, 12) || slice().is_none() {
                return; // the kernel neither honours nor reports slices
            }
            assert_eq!(slice(), Some(GENERATION_SLICE_NS));
            let child = std::thread::spawn(slice).join().unwrap();
            assert_eq!(
                child,
                Some(GENERATION_SLICE_NS),
                "a thread it starts inherits it"
            );
        })
        .join()
        .unwrap();
    }

    #[test]
    fn lowering_a_threads_priority_leaves_the_others() {
        std::thread::spawn(|| {
            // SAFETY: reads this thread's priority.
            let nice =
                || unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) };
            let before = nice();
            let lowered = std::thread::spawn(move || {
                lower_priority(3);
                nice()
            })
            .join()
            .unwrap();
            assert_eq!(lowered, (before + 3).min(19));
            assert_eq!(nice(), before);
        })
        .join()
        .unwrap();
    }
}
