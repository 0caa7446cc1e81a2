//! The one way to the donation ledger: [`with_ledger`], under the ledger lock, which names its
//! holder so that a waiter can spin while the holder runs and rescue it when it does not
//! (`rescue`). Also the ledger's side of `fork()`.
//!
//! Under loom the ledger is guarded by a loom mutex instead: the donation models check the
//! bookkeeping, and the ledger lock's own atomics would multiply their interleavings. The lock
//! and the rescue are modelled on their own (`test_hooks::pass_through_ledger`,
//! `test_hooks::rescue_round`).

use super::{Ledger, LedgerLock, Rescue, RescueSlot};
use crate::loom::{MODEL, Mutex, Ordering, const_thread_local, global, spin_hint};
use crate::spin::OnCpuWatch;
use crate::task::Task;
use crate::tuning::UNNAMED_HOLDER_ROUNDS;
use core::sync::atomic::AtomicI32;
use std::cell::{Cell, UnsafeCell};

/// The donation ledger, reachable only through `with_ledger`, under the ledger lock.
struct LedgerCell(UnsafeCell<Ledger>);
// SAFETY: the ledger inside is only touched by the thread that holds the ledger lock (or, in
// models, the model mutex).
unsafe impl Sync for LedgerCell {}

global! { fn ledger() -> LedgerCell = LedgerCell(UnsafeCell::new(Ledger::new())); }
global! { fn ledger_lock() -> LedgerLock = LedgerLock::new(); }
global! {
    /// The ledger lock's rescue slot (`donor::rescue`).
    pub(crate) fn rescue_slot() -> RescueSlot = RescueSlot::new();
}
global! { fn model_ledger_lock() -> Mutex<()> = Mutex::new(()); }

/// The tid of the thread in the ledger lock, 0 when it is free (or between holders). A plain
/// atomic: only a hint for waiters, never read in models.
static LEDGER_HOLDER: AtomicI32 = AtomicI32::new(0);

/// Runs `f` on the donation ledger, under its lock; `holder` is the calling thread's record.
pub(crate) fn with_ledger<R>(holder: &Task, f: impl FnOnce(&mut Ledger) -> R) -> R {
    if MODEL {
        let _held = model_ledger_lock()
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // SAFETY: we hold the model's ledger mutex until `_held` drops, after `f` is done.
        return f(unsafe { &mut *ledger().0.get() });
    }
    /// Lets go of the ledger when `f` returns, or unwinds (nothing panics in there, but a
    /// ledger left locked would stop every donation).
    struct Held;
    impl Drop for Held {
        fn drop(&mut self) {
            release_ledger();
        }
    }
    acquire_ledger(holder);
    let _held = Held;
    // SAFETY: we hold the ledger lock until `_held` drops, after `f` is done with the
    // reference; `f` never calls `with_ledger` again.
    f(unsafe { &mut *ledger().0.get() })
}

/// Takes the ledger lock for `holder`, the calling thread's record, and names it holder.
fn acquire_ledger(holder: &Task) {
    // Before the lock: a thread's first call makes a syscall, whose return is where the kernel
    // preempts a thread it has marked, and a holder not yet named is spun for only briefly and
    // cannot be rescued. So the instructions between taking the lock and naming the holder
    // make no syscall.
    let tid = holder_tid();
    let rescue = if ledger_lock().try_lock() {
        None
    } else {
        wait_for_ledger(holder)
    };
    // Relaxed: a hint for `wait_for_ledger`; the lock itself orders the ledger's data.
    LEDGER_HOLDER.store(tid, Ordering::Relaxed);
    rescue_slot().holding(holder);
    if let Some(rescue) = rescue {
        rescue.undo();
    }
}

fn release_ledger() {
    // Relaxed: as in `acquire_ledger`.
    LEDGER_HOLDER.store(0, Ordering::Relaxed);
    rescue_slot().releasing();
    ledger_lock().unlock();
}

/// Waits for the ledger lock, spinning while its holder runs: a holder is in the middle of a
/// few syscalls, and a waiter that slept behind it would wake up well after the lock was free.
/// A holder that is off a CPU (preempted, perhaps SCHED_IDLE) is not spun for: it is lent to
/// (`donor::rescue`), and the rescue this returns is undone once we hold the lock. Every
/// recheck of the sleep goes round again, spin and rescue included, because the holder we slept
/// behind may have let go to another that is off a CPU.
#[cold]
fn wait_for_ledger(me: &Task) -> Option<Rescue> {
    let mut rescue = None;
    ledger_lock().lock_waiting(|lock, slept| {
        if spin_while_ledger_holder_runs(lock, slept) {
            return true;
        }
        // One rescue at a time: once ours stands, it is undone when we hold the lock.
        if rescue.is_none() {
            rescue = rescue_slot().try_rescue(me);
        }
        false
    });
    rescue
}

/// Spins while the ledger lock's holder runs; true if it took the lock meanwhile (`slept`: see
/// `LedgerLock::try_lock_in_round`).
fn spin_while_ledger_holder_runs(lock: &LedgerLock, slept: bool) -> bool {
    let mut watch: Option<(crate::Tid, OnCpuWatch)> = None;
    let mut unnamed_rounds = 0;
    loop {
        // Relaxed: a hint, see `LEDGER_HOLDER`.
        let holder = LEDGER_HOLDER.load(Ordering::Relaxed);
        if holder != 0 && watch.as_ref().is_none_or(|(tid, _)| *tid != holder) {
            watch = Some((holder, OnCpuWatch::new(holder, 0)));
        }
        // A holder of 0 is one that is about to let go or has just taken the lock: spin a
        // little without a watch and look again, but not for long (it may be preempted right
        // there).
        let spinning = match watch.as_mut() {
            Some((_, w)) if holder != 0 => w.still_running(|| Some((holder, None))),
            _ => {
                spin_hint();
                unnamed_rounds += 1;
                unnamed_rounds < UNNAMED_HOLDER_ROUNDS
            }
        };
        if !spinning {
            return false;
        }
        // Try only when the holder seems gone: a failed try still pulls the lock's line away
        // from the holder.
        if (holder == 0 || LEDGER_HOLDER.load(Ordering::Relaxed) == 0)
            && lock.try_lock_in_round(slept)
        {
            return true;
        }
    }
}

const_thread_local! {
    /// The calling thread's tid, for `holder_tid`. Const, without a destructor: usable in the
    /// exit hook too.
    static HOLDER_TID: Cell<crate::Tid> = Cell::new(0);
}

/// The calling thread's tid, cached: the ledger lock names its holder with it.
fn holder_tid() -> crate::Tid {
    HOLDER_TID.with(|t| {
        if t.get() == 0 {
            t.set(crate::sys::gettid());
        }
        t.get()
    })
}

/// `fork()` is about to run on this thread (`holder`): it takes the ledger lock, so that no
/// other thread is halfway through the ledger when the child is made. A child that inherited a
/// lock held by a thread that does not exist in it would wait for it forever.
pub(crate) fn before_fork(holder: &Task) {
    acquire_ledger(holder);
}

/// The parent side of `fork()`: lets go of what `before_fork` took.
pub(crate) fn after_fork_in_parent() {
    release_ledger();
}

/// The child side of `fork()`: the child's only thread, `me`, still holds the ledger lock
/// (`before_fork`). It forgets the parent's listings and loans, takes a fresh holder name and
/// rescue slot, and lets go.
pub(crate) fn after_fork_in_child(me: &Task) {
    HOLDER_TID.with(|t| t.set(crate::sys::gettid()));
    // SAFETY: we hold the ledger lock (taken in `before_fork`), and the child has no other
    // thread.
    super::ledger::after_fork_in_child(me, unsafe { &mut *ledger().0.get() });
    rescue_slot().reset_after_fork();
    release_ledger();
}
