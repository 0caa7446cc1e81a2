//! A thread's donation state, kept in its task record. Only the donation layer (`crate::donor`)
//! reads or writes it; what each field means for the ledger is documented there and here.

use crate::loom::{AtomicBool, AtomicU8, CacheU64};

/// Per-thread donation state, kept in the thread's task record.
pub(crate) struct TaskDonor {
    /// The thread is listed in the ledger as a waiter. Set under the ledger lock (by the thread
    /// or by a walker that found it asleep further down a chain, inside the walker handshake),
    /// read by the thread after its wait ended (after `clear_blocked_on`, so after any walker).
    pub(crate) listed: AtomicBool,
    /// Donation syscalls may be aimed at this thread; see `on_thread_exit`. Set under the ledger
    /// lock before any (`ledger::claim_target`), cleared under it when the thread gives its
    /// loans back itself (`Ledger::let_go_of`).
    pub(crate) target: AtomicBool,
    /// The thread is exiting; no syscall may reach it any more.
    pub(crate) exiting: AtomicBool,
    /// `Attrs::hint` of the thread's base attributes, `Attrs::cpus_hint` of its affinity, and
    /// when they were read (`monotonic_us`, 0 = never). A cache for the quick check only.
    pub(crate) hint: CacheU64,
    pub(crate) cpus_hint: CacheU64,
    pub(crate) hint_stamp: CacheU64,
    /// When the thread last read its own policy into `hint` (`refresh_own_hint`, coarse µs,
    /// 0 = never). Its own: `hint_stamp` dates only what other threads read.
    pub(crate) own_stamp: CacheU64,
    /// How many of the thread's own reads in a row found the same attributes (saturating).
    /// Written and read only by the thread itself.
    pub(crate) own_reads_alike: AtomicU8,
    /// The unlocker that handed this thread, asleep, the lock it was listed on will give its
    /// own loans back itself, and was boosted when it chose it (`donor::preferred_waiter`):
    /// the end of this wait changes nobody's loans but that unlocker's, unless other waiters
    /// are listed on the lock by the time this thread unlists (`ledger::unlist_after_handoff`).
    /// Set by that unlocker while this thread is parked, read and cleared by this thread when
    /// its wait ends.
    pub(crate) settled: AtomicBool,
    /// `Attrs::hint` of what the thread has while boosted, 0 when it is not boosted.
    pub(crate) lent_hint: CacheU64,
    /// Whether the thread, passing on its last lock, restores itself afterwards
    /// (`before_passing_on`): `NOT_RESTORING`, `WILL_RESTORE`, or `SKIPPED` once a reconcile
    /// that found nothing lent to it left it alone on that promise. The thread sets
    /// `WILL_RESTORE` and clears it when it is done: under the ledger lock, as it lets go of
    /// its loans (`ledger::restore_self`), if it is boosted; otherwise with a swap, which
    /// tells it whether a reconcile skipped it meanwhile (then it restores itself after all).
    /// Reconciles turn `WILL_RESTORE` into `SKIPPED` with an RMW, so of that and the swap one
    /// comes first in the atomic's order.
    pub(crate) restores_self: AtomicU8,
}

/// `TaskDonor::restores_self`: the thread is not passing on its last lock.
pub(crate) const NOT_RESTORING: u8 = 0;
/// `TaskDonor::restores_self`: it is, and will restore itself if it is boosted.
pub(crate) const WILL_RESTORE: u8 = 1;
/// `TaskDonor::restores_self`: a reconcile left its restore to it.
pub(crate) const SKIPPED: u8 = 2;

impl TaskDonor {
    crate::loom::const_fn! {
        pub(crate) fn new() -> TaskDonor {
            TaskDonor {
                listed: AtomicBool::new(false),
                target: AtomicBool::new(false),
                exiting: AtomicBool::new(false),
                hint: CacheU64::new(0),
                cpus_hint: CacheU64::new(0),
                hint_stamp: CacheU64::new(0),
                own_stamp: CacheU64::new(0),
                own_reads_alike: AtomicU8::new(0),
                settled: AtomicBool::new(false),
                lent_hint: CacheU64::new(0),
                restores_self: AtomicU8::new(NOT_RESTORING),
            }
        }
    }
}
