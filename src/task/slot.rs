//! A thread's request slot for `Mutex::run`: where it publishes one critical section for the
//! lock's holder to run. The states and who moves a slot between them are described in
//! `crate::proxy`, which serves published slots.

use crate::loom::{AtomicU32, AtomicUsize, Ordering};

/// Slot phase: not linked anywhere; free.
pub(crate) const IDLE: u32 = 0;
/// Slot phase: linked on a lock's stack, waiting for a holder.
pub(crate) const QUEUED: u32 = 1;
/// Slot phase: a holder claimed the section and is running it.
pub(crate) const RUNNING: u32 = 2;
/// Slot phase: the section ran and its outcome is written; free.
pub(crate) const DONE: u32 = 3;
/// Slot phase: still linked; a holder that reached the bound asks the caller to take the lock
/// and serve.
pub(crate) const RETRY: u32 = 4;
/// Slot phase: the caller gave up (deadlock) and left; the next holder unlinks it unrun.
pub(crate) const CANCELLED: u32 = 5;
/// Slot phase: unlinked by the holder of another lock whose requests share the table bucket
/// (`proxy::requests`); the caller owns it again, and takes its lock to run the section itself.
pub(crate) const RETURNED: u32 = 6;
pub(crate) const PHASE: u32 = 7;
/// Or-ed into `QUEUED`/`RUNNING`: the caller parks (or is about to) on the slot's address.
pub(crate) const SLEEPER: u32 = 8;

/// A thread's request slot, in its task record.
pub(crate) struct Slot {
    /// The next slot on the lock's stack (older), or 0. Written by the publisher before its
    /// push, and afterwards only by the lock holder that took the stack.
    pub(crate) next: AtomicUsize,
    /// Phase and `SLEEPER`; see the module docs.
    pub(crate) state: AtomicU32,
    /// Address of the published [`SectionHead`](crate::proxy::SectionHead). Written before the
    /// push, read by the holder.
    pub(crate) section: AtomicUsize,
    /// Address of the lock the section is published on: stacks are shared by the locks that
    /// hash to one bucket, and a holder runs only its own lock's sections. Written before the
    /// push.
    pub(crate) lock: AtomicUsize,
}

impl Slot {
    crate::loom::const_fn! {
        pub(crate) fn new() -> Slot {
            Slot {
                next: AtomicUsize::new(0),
                state: AtomicU32::new(IDLE),
                section: AtomicUsize::new(0),
                lock: AtomicUsize::new(0),
            }
        }
    }

    pub(crate) fn addr(&self) -> usize {
        self as *const Slot as usize
    }

    /// Whether the slot is still linked on a lock's stack (a cancelled request that no holder
    /// has unlinked yet). Its task record must then outlive the thread.
    pub(crate) fn is_linked(&self) -> bool {
        // Relaxed: read by the slot's own thread at exit; a holder's later unlink only makes
        // the answer conservative.
        !matches!(self.state.load(Ordering::Relaxed) & PHASE, IDLE | DONE)
    }

    /// In a forked child, for a record whose thread the child does not have: a section it had
    /// published and no holder had claimed is withdrawn, so that no holder in the child runs
    /// it (its closure lives on a stack the child's new threads may be given) or waits for its
    /// caller to take over. The next holder unlinks it unrun.
    pub(crate) fn cancel_after_fork(&self) {
        // Relaxed: the child has one thread.
        let _ = self
            .state
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
                matches!(s & PHASE, QUEUED | RETRY).then_some(CANCELLED)
            });
    }
}

/// # Safety
/// `addr` is a slot that is linked on a stack the caller owns (holds the lock of), or that the
/// caller otherwise knows to be alive: a linked slot's thread is waiting for it, and a thread
/// that exits with a cancelled slot still linked keeps its record forever.
pub(crate) unsafe fn slot<'a>(addr: usize) -> &'a Slot {
    // SAFETY: forwarded.
    unsafe { &*(addr as *const Slot) }
}
