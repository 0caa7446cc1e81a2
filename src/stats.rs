//! Counters of what the lock did: donations, restores, failures, handoffs. Plain relaxed
//! counters in statics, touched only on slow paths.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

// These are statistics, not synchronisation: every access is Relaxed, and they use the core
// atomics even under loom, which need not model them.
static DONATIONS: AtomicU64 = AtomicU64::new(0);
static RESTORES: AtomicU64 = AtomicU64::new(0);
static SKIPPED: AtomicU64 = AtomicU64::new(0);
static FAILED_PERMISSION: AtomicU64 = AtomicU64::new(0);
static FAILED_GONE: AtomicU64 = AtomicU64::new(0);
static FAILED_OTHER: AtomicU64 = AtomicU64::new(0);
static LAST_ERRNO: AtomicU64 = AtomicU64::new(0);
static HANDOFFS: AtomicU64 = AtomicU64::new(0);
static HINT_READS: AtomicU64 = AtomicU64::new(0);
static PROXIED: AtomicU64 = AtomicU64::new(0);

/// What proxy-lock has done in this process so far, for diagnostics and benchmarks.
///
/// ```
/// let before = proxy_lock::counters();
/// let m = proxy_lock::Mutex::new(0);
/// *m.lock().unwrap() += 1; // uncontended: nothing to count
/// let after = proxy_lock::counters();
/// assert_eq!(after.donations, before.donations);
/// println!("{after}");
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counters {
    /// Attribute writes that lent a waiter's policy, nice, priority, util clamp or CPU to an
    /// owner (one per part written).
    pub donations: u64,
    /// Attribute writes that gave an owner its own attributes back.
    pub restores: u64,
    /// Waiters that went to sleep without lending, because no owner on their chain was worse
    /// than they were. Between equal threads every sleep lands here, without a syscall.
    pub skipped: u64,
    /// Writes refused for lack of privilege (EPERM, EACCES); see [`crate::capabilities`].
    pub failed_permission: u64,
    /// Loans to a thread that had exited or was exiting (ESRCH, or the exit hook came first).
    pub failed_gone: u64,
    /// Writes that failed otherwise (EINVAL, EBUSY for SCHED_DEADLINE admission, ...).
    pub failed_other: u64,
    /// The errno of the latest failure, 0 if none.
    pub last_errno: i32,
    /// Unlocks that passed ownership straight to a waiter.
    pub handoffs: u64,
    /// Reads of a thread's attributes for the summaries the lock-free check compares: an
    /// owner's (`sched_getattr` plus `sched_getaffinity`, at most once per thread per 10 ms),
    /// and a waiter's own policy (`sched_getattr`, at most once per thread per 10 ms, and
    /// again when it is about to lend). Between equal threads this grows with time, not with
    /// the number of waits: compare it with [`Counters::skipped`].
    pub attribute_reads: u64,
    /// Sections published with [`crate::Mutex::run`] that another thread (the lock holder)
    /// ran on the caller's behalf.
    pub proxied: u64,
}

impl Counters {
    /// All failures together.
    ///
    /// ```
    /// let c = proxy_lock::counters();
    /// assert_eq!(c.failed(), c.failed_permission + c.failed_gone + c.failed_other);
    /// ```
    pub fn failed(&self) -> u64 {
        self.failed_permission + self.failed_gone + self.failed_other
    }
}

/// A snapshot of the process-wide [`Counters`]. Take two and subtract to count one piece of
/// work.
///
/// ```
/// let before = proxy_lock::counters();
/// // ... work ...
/// let after = proxy_lock::counters();
/// assert!(after.skipped >= before.skipped);
/// ```
pub fn counters() -> Counters {
    Counters {
        donations: DONATIONS.load(Relaxed),
        restores: RESTORES.load(Relaxed),
        skipped: SKIPPED.load(Relaxed),
        failed_permission: FAILED_PERMISSION.load(Relaxed),
        failed_gone: FAILED_GONE.load(Relaxed),
        failed_other: FAILED_OTHER.load(Relaxed),
        last_errno: LAST_ERRNO.load(Relaxed) as i32,
        handoffs: HANDOFFS.load(Relaxed),
        attribute_reads: HINT_READS.load(Relaxed),
        proxied: PROXIED.load(Relaxed),
    }
}

impl std::fmt::Display for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "donations {}, restores {}, skipped {}, failed {} (permission {}, gone {}, other {}",
            self.donations,
            self.restores,
            self.skipped,
            self.failed(),
            self.failed_permission,
            self.failed_gone,
            self.failed_other
        )?;
        if self.last_errno != 0 {
            write!(
                f,
                "; last: {}",
                std::io::Error::from_raw_os_error(self.last_errno)
            )?;
        }
        write!(
            f,
            "), handoffs {}, attribute reads {}, sections run by proxy {}",
            self.handoffs, self.attribute_reads, self.proxied
        )
    }
}

pub(crate) fn count_donation() {
    DONATIONS.fetch_add(1, Relaxed);
}

pub(crate) fn count_restore() {
    RESTORES.fetch_add(1, Relaxed);
}

pub(crate) fn count_skipped() {
    SKIPPED.fetch_add(1, Relaxed);
}

pub(crate) fn count_attribute_read() {
    HINT_READS.fetch_add(1, Relaxed);
}

pub(crate) fn count_proxied(n: u64) {
    if n != 0 {
        PROXIED.fetch_add(n, Relaxed);
    }
}

pub(crate) fn count_handoff() {
    HANDOFFS.fetch_add(1, Relaxed);
}

pub(crate) fn count_failure(errno: i32) {
    let counter = match errno {
        libc::EPERM | libc::EACCES => &FAILED_PERMISSION,
        libc::ESRCH => &FAILED_GONE,
        _ => &FAILED_OTHER,
    };
    counter.fetch_add(1, Relaxed);
    LAST_ERRNO.store(errno as u64, Relaxed);
}
