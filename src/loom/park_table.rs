//! A parking table with parking_lot_core's contract, built from one mutex and a condition
//! variable per sleeper: `validate`, `timed_out` and the unpark callbacks run under the table
//! lock, `before_sleep` runs outside it, and each sleeper gets its token exactly once.
//!
//! Two users, one code:
//!
//! * The loom models sleep on it, built from loom's types (per execution, as loom's statics
//!   are). Loom has no clock, so there a timed park may time out at any point after it queued,
//!   until someone unparks it; loom explores both outcomes.
//! * A process forked from a multithreaded one sleeps on it, built from std's types
//!   ([`use_after_fork`]). parking_lot_core's table is not fork-safe: in the child it still
//!   links the queue entries of the parent's sleeping threads, which live in thread stacks
//!   that the child's new threads get (glibc reuses the stacks of the threads a fork left
//!   behind), and a new thread's entry overwrote a linked one: children that went on locking
//!   hung or crashed in `unpark_filter`. This table is the crate's own, so the child starts it
//!   empty.
//!
//! One lock for the whole table, and a linear scan: it serves a forked child correctly, not
//! as fast as parking_lot_core serves everyone else.

use super::{FilterOp, ParkResult, ParkToken, RequeueOp, UnparkResult, UnparkToken};
use std::collections::VecDeque;
use std::time::Instant;

#[cfg(loom)]
use loom::sync::{Arc, Condvar, Mutex, MutexGuard};
#[cfg(not(loom))]
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

struct Sleeper {
    key: usize,
    token: ParkToken,
    wake: Arc<Wake>,
}

/// Where an unparker leaves a sleeper's token.
struct Wake {
    token: Mutex<Option<UnparkToken>>,
    cv: Condvar,
}

/// Takes a std or loom lock. Nothing panics while holding one of ours, so poison is only
/// passed over.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Wake {
    fn deliver(&self, token: UnparkToken) {
        *lock(&self.token) = Some(token);
        self.cv.notify_one();
    }

    /// Waits for the token.
    fn wait(&self) -> UnparkToken {
        let mut slot = lock(&self.token);
        loop {
            if let Some(token) = *slot {
                return token;
            }
            slot = self.cv.wait(slot).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Waits for the token until `deadline`; `None` if it has not come by then.
    #[cfg(not(loom))]
    fn wait_until(&self, deadline: Instant) -> Option<UnparkToken> {
        let mut slot = lock(&self.token);
        loop {
            if let Some(token) = *slot {
                return Some(token);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            slot = self
                .cv
                .wait_timeout(slot, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Loom has no clock: the deadline may pass at once.
    #[cfg(loom)]
    fn wait_until(&self, _deadline: Instant) -> Option<UnparkToken> {
        None
    }
}

pub(crate) struct Table {
    sleepers: VecDeque<Sleeper>,
    /// When the next unpark is fair (`UnparkResult::be_fair`), as parking_lot_core's eventual
    /// fairness: at most every half millisecond. `None`: the next one is.
    #[cfg(not(loom))]
    fair_after: Option<Instant>,
    /// Counts unparks, so that `be_fair` alternates: models get both the barging and the
    /// fair path.
    #[cfg(loom)]
    unparks: usize,
}

impl Table {
    pub(crate) const fn new() -> Table {
        Table {
            sleepers: VecDeque::new(),
            #[cfg(not(loom))]
            fair_after: None,
            #[cfg(loom)]
            unparks: 0,
        }
    }

    fn has_key(&self, key: usize) -> bool {
        self.sleepers.iter().any(|s| s.key == key)
    }

    #[cfg(not(loom))]
    fn be_fair(&mut self) -> bool {
        let now = Instant::now();
        let fair = self.fair_after.is_none_or(|t| now >= t);
        if fair {
            self.fair_after = Some(now + std::time::Duration::from_micros(500));
        }
        fair
    }

    #[cfg(loom)]
    fn be_fair(&mut self) -> bool {
        self.unparks += 1;
        self.unparks.is_multiple_of(2)
    }
}

#[cfg(loom)]
loom::lazy_static! {
    static ref TABLE: Mutex<Table> = Mutex::new(Table::new());
}

#[cfg(loom)]
fn table() -> MutexGuard<'static, Table> {
    lock(&TABLE)
}

#[cfg(not(loom))]
mod fork_side {
    use super::{Mutex, Table};
    use core::sync::atomic::{AtomicBool, Ordering};
    use std::cell::UnsafeCell;

    /// The table of a forked child, put back to empty by each fork (`use_after_fork`).
    pub(super) struct Resettable(pub(super) UnsafeCell<Mutex<Table>>);

    // SAFETY: the cell is written only by `use_after_fork`, in a child's only thread, when no
    // reference to the mutex is in use; otherwise it is only read, and the mutex is Sync.
    unsafe impl Sync for Resettable {}

    pub(super) static TABLE: Resettable = Resettable(UnsafeCell::new(Mutex::new(Table::new())));

    /// Whether this process sleeps on this table rather than parking_lot_core's.
    pub(super) static IN_USE: AtomicBool = AtomicBool::new(false);

    /// Whether to use this table: see `in_use`.
    pub(crate) fn in_use() -> bool {
        // Relaxed: set in a child before it has a second thread, and thread creation orders
        // the threads it starts after that.
        IN_USE.load(Ordering::Relaxed)
    }
}

#[cfg(not(loom))]
pub(crate) use fork_side::in_use;

/// In a forked child, before it has a second thread: from now on this process sleeps on this
/// table, started empty (whatever a thread of the parent's left in it, if the parent was a
/// forked child itself). `parent_threads` is how many threads the parent had at the fork:
/// with one, parking_lot_core's table holds nobody else's state and stays in use.
#[cfg(not(loom))]
pub(crate) fn use_after_fork(parent_threads: usize) {
    if parent_threads == 1 && !fork_side::in_use() {
        return;
    }
    // SAFETY: the child's only thread, outside every table call (fork is never called under
    // the table lock): nobody holds a reference into the cell. The old table is forgotten,
    // not dropped: its entries name threads this process does not have.
    unsafe { fork_side::TABLE.0.get().write(Mutex::new(Table::new())) };
    // Relaxed: see `in_use`.
    fork_side::IN_USE.store(true, core::sync::atomic::Ordering::Relaxed);
}

#[cfg(not(loom))]
fn table() -> MutexGuard<'static, Table> {
    // SAFETY: only `use_after_fork` writes the cell, when no other thread exists.
    lock(unsafe { &*fork_side::TABLE.0.get() })
}

/// Whether a thread sleeps under `key` (models' test hooks).
#[cfg(loom)]
pub(crate) fn is_parked_on(key: usize) -> bool {
    table().has_key(key)
}

/// See `parking_lot_core::park`.
pub(crate) fn park(
    key: usize,
    validate: impl FnOnce() -> bool,
    before_sleep: impl FnOnce(),
    timed_out: impl FnOnce(usize, bool),
    token: ParkToken,
    deadline: Option<Instant>,
) -> ParkResult {
    let wake = Arc::new(Wake {
        token: Mutex::new(None),
        cv: Condvar::new(),
    });
    {
        let mut table = table();
        if !validate() {
            return ParkResult::Invalid;
        }
        table.sleepers.push_back(Sleeper {
            key,
            token,
            wake: wake.clone(),
        });
    }
    before_sleep();
    if let Some(deadline) = deadline {
        if let Some(token) = wake.wait_until(deadline) {
            return ParkResult::Unparked(token);
        }
        let mut table = table();
        if let Some(i) = table
            .sleepers
            .iter()
            .position(|s| Arc::ptr_eq(&s.wake, &wake))
        {
            let sleeper = table.sleepers.remove(i).unwrap();
            let was_last = !table.has_key(sleeper.key);
            timed_out(sleeper.key, was_last);
            return ParkResult::TimedOut;
        }
        // Unparked meanwhile: the token is on its way.
    }
    ParkResult::Unparked(wake.wait())
}

/// See `parking_lot_core::unpark_filter`.
pub(crate) fn unpark_filter(
    key: usize,
    mut filter: impl FnMut(ParkToken) -> FilterOp,
    callback: impl FnOnce(UnparkResult) -> UnparkToken,
) -> UnparkResult {
    let mut table = table();
    let mut result = UnparkResult::default();
    let mut woken = Vec::new();
    let mut i = 0;
    while i < table.sleepers.len() {
        if table.sleepers[i].key != key {
            i += 1;
            continue;
        }
        match filter(table.sleepers[i].token) {
            FilterOp::Unpark => woken.push(table.sleepers.remove(i).unwrap().wake),
            FilterOp::Skip => {
                result.have_more_threads = true;
                i += 1;
            }
            FilterOp::Stop => {
                result.have_more_threads = true;
                break;
            }
        }
    }
    result.unparked_threads = woken.len();
    if !woken.is_empty() {
        result.be_fair = table.be_fair();
    }
    let token = callback(result);
    drop(table);
    for wake in woken {
        wake.deliver(token);
    }
    result
}

/// See `parking_lot_core::unpark_requeue`.
pub(crate) fn unpark_requeue(
    from: usize,
    to: usize,
    validate: impl FnOnce() -> RequeueOp,
    callback: impl FnOnce(RequeueOp, UnparkResult) -> UnparkToken,
) -> UnparkResult {
    let mut table = table();
    let mut result = UnparkResult::default();
    let op = validate();
    if op == RequeueOp::Abort {
        return result;
    }
    let (mut woken, mut moved) = (None, VecDeque::new());
    let mut i = 0;
    while i < table.sleepers.len() {
        if table.sleepers[i].key != from {
            i += 1;
            continue;
        }
        let mut sleeper = table.sleepers.remove(i).unwrap();
        let wake_this =
            woken.is_none() && matches!(op, RequeueOp::UnparkOne | RequeueOp::UnparkOneRequeueRest);
        if wake_this {
            woken = Some(sleeper.wake);
        } else {
            sleeper.key = to;
            moved.push_back(sleeper);
        }
        if matches!(op, RequeueOp::UnparkOne | RequeueOp::RequeueOne) {
            result.have_more_threads = table.has_key(from);
            break;
        }
    }
    result.unparked_threads = usize::from(woken.is_some());
    result.requeued_threads = moved.len();
    table.sleepers.extend(moved);
    if woken.is_some() {
        result.be_fair = table.be_fair();
    }
    let token = callback(op, result);
    drop(table);
    if let Some(wake) = woken {
        wake.deliver(token);
    }
    result
}
