//! The normal build's primitives: core atomics, the kernel's scheduling calls and clocks
//! (`crate::sys`), parking_lot_core for sleeping (or the crate's own table in a forked child),
//! and crossbeam-epoch for reclaiming task records.

use super::{FilterOp, ParkResult, ParkToken, RequeueOp, UnparkResult, UnparkToken};
use std::time::{Duration, Instant};

use crate::sys::attrs::{Attrs, CpuMask, Sched};
pub(crate) use crate::sys::sched::Errno;
pub(crate) use core::sync::atomic::{
    AtomicBool, AtomicU8, AtomicU32, AtomicUsize, Ordering, fence,
};

/// Thread `tid`'s scheduling attributes, from the kernel.
pub(crate) fn read_attrs(tid: crate::Tid) -> Result<Attrs, Errno> {
    let (sched, util) = read_sched(tid)?;
    let cpus = crate::sys::sched::get_affinity(tid)?;
    Ok(Attrs { sched, util, cpus })
}

/// Thread `tid`'s policy, priority and utilization clamps, from the kernel.
pub(crate) fn read_sched(tid: crate::Tid) -> Result<(Sched, (u32, u32)), Errno> {
    crate::sys::sched::get_sched(tid)
}

pub(crate) fn write_sched(tid: crate::Tid, sched: &Sched) -> Result<(), Errno> {
    crate::sys::sched::set_sched(tid, sched)
}

pub(crate) fn write_util(tid: crate::Tid, util: (u32, u32)) -> Result<(), Errno> {
    crate::sys::sched::set_util_clamp(tid, util)
}

pub(crate) fn write_cpus(tid: crate::Tid, cpus: &CpuMask) -> Result<(), Errno> {
    crate::sys::sched::set_affinity(tid, cpus)
}

/// The CPU the calling thread runs on.
pub(crate) fn current_cpu() -> Option<u32> {
    crate::sys::sched::current_cpu()
}

#[inline]
pub(crate) fn spin_hint() {
    core::hint::spin_loop()
}

#[inline]
pub(crate) fn yield_now() {
    std::thread::yield_now()
}

/// Gives this thread's CPU to whatever is runnable, for a moment: an unlocker that just
/// handed its lock to a thread it woke lets that thread run. A no-op in loom models, where
/// it changes no state and would only add interleavings.
#[inline]
pub(crate) fn step_aside() {
    std::thread::yield_now()
}

/// Microseconds on the monotonic clock.
pub(crate) fn monotonic_us() -> u64 {
    crate::sys::monotonic_us()
}

/// Microseconds on the coarse monotonic clock (tick resolution; for long timers).
pub(crate) fn coarse_us() -> u64 {
    crate::sys::coarse_monotonic_us()
}

/// Kernel thread id of the calling thread.
pub(crate) fn current_tid() -> crate::Tid {
    crate::sys::gettid()
}

/// CPU time thread `tid` has used, in nanoseconds; it grows while the thread is on a CPU.
pub(crate) fn thread_cpu_time_ns(tid: crate::Tid) -> Option<u64> {
    crate::sys::sched::thread_cpu_time_ns(tid)
}

/// Whether `deadline` has passed.
pub(crate) fn deadline_passed(deadline: Instant) -> bool {
    Instant::now() >= deadline
}

/// Runs `hook(arg)` when the calling thread exits, after every Rust thread-local destructor.
pub(crate) fn on_thread_exit(arg: *mut (), hook: unsafe fn(*mut ())) {
    crate::sys::on_thread_exit(arg, hook)
}

/// Frees a boxed `T` once no pinned reader can still hold a pointer to it.
///
/// # Safety
/// `ptr` came from `Box::into_raw`, is no longer reachable for new readers, and is retired once.
pub(crate) unsafe fn retire<T>(ptr: *mut T) {
    if EXITING.with(std::cell::Cell::get) {
        // SAFETY: forwarded.
        unsafe { leave_to_next_pin(ptr) };
        return;
    }
    let guard = pin();
    // SAFETY: the caller guarantees the pointer is unreachable for readers that pin after now
    // and came from a Box; readers pinned before now keep it alive until they unpin.
    unsafe { guard.defer_destroy(crossbeam_epoch::Shared::from(ptr as *const T)) };
}

/// What `pin` returns: while it lives, no record retired after it was taken is freed.
pub(crate) type Pin = crossbeam_epoch::Guard;

/// Keeps every record retired from now on alive until the guard drops.
#[inline]
pub(crate) fn pin() -> crossbeam_epoch::Guard {
    if EXITING.with(std::cell::Cell::get) {
        return exiting_pin();
    }
    let guard = crossbeam_epoch::pin();
    // Relaxed: a hint; `defer_exited` takes the list with an Acquire swap.
    if !EXITED.load(Ordering::Relaxed).is_null() {
        defer_exited(&guard);
    }
    guard
}

/// A record retired by a thread in its exit hook, waiting for another thread's pin to hand it
/// to the epoch (`defer_exited`).
struct Exited {
    ptr: *mut (),
    free: unsafe fn(*mut ()),
    next: *mut Exited,
}

/// The records left by exit hooks, newest first (pushed with Release, taken whole with an
/// Acquire swap, so no node is ever popped alone and there is no ABA).
static EXITED: std::sync::atomic::AtomicPtr<Exited> =
    std::sync::atomic::AtomicPtr::new(std::ptr::null_mut());

/// In an exit hook: leaves `ptr` for the next pin of a live thread to retire. Pinning here
/// would register a participant of its own (`exiting_pin`), and crossbeam's first pin of a
/// participant walks every participant to advance the epoch: with a thousand threads alive,
/// that walk was a tenth of the CPU time of a 1,024-deep chain's unwind. The records wait for
/// the next pin of any thread (a contended wait, `owner_tid`, a snapshot), but no longer than
/// `EXITED_BATCH` exits: threads that only ever lock uncontended never pin, and without a
/// bound a process that keeps starting such threads grew by a record per thread.
///
/// # Safety
/// As `retire`.
unsafe fn leave_to_next_pin<T>(ptr: *mut T) {
    unsafe fn free<T>(ptr: *mut ()) {
        // SAFETY: `ptr` is the `Box<T>` that `leave_to_next_pin::<T>` was given.
        drop(unsafe { Box::from_raw(ptr as *mut T) });
    }
    let node = Box::into_raw(Box::new(Exited {
        ptr: ptr as *mut (),
        free: free::<T>,
        next: std::ptr::null_mut(),
    }));
    let mut head = EXITED.load(Ordering::Relaxed);
    loop {
        // SAFETY: our own node, not yet published.
        unsafe { (*node).next = head };
        // Release: publishes the node and everything the exit hook did before (the record
        // unlinked from the registry), to the Acquire swap in `defer_exited`.
        match EXITED.compare_exchange_weak(head, node, Ordering::Release, Ordering::Relaxed) {
            Ok(_) => break,
            Err(now) => head = now,
        }
    }
    // Relaxed: a count that only decides when to pay for a pin; `defer_exited` takes the list
    // itself with Acquire.
    if EXITED_LEN.fetch_add(1, Ordering::Relaxed) + 1 >= EXITED_BATCH {
        let guard = exiting_pin();
        defer_exited(&guard);
        // To the collector now: this participant goes away with the guard.
        guard.flush();
    }
}

/// How many records may wait on `EXITED` before an exiting thread hands them to the epoch
/// itself: the participant walk of its own pin, paid once per this many exits.
const EXITED_BATCH: usize = 64;

/// About how many records wait on `EXITED` (reset when a pin takes them).
static EXITED_LEN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Hands every record left by exit hooks to the epoch, under `guard`: each is freed once no
/// reader pinned before now is still pinned, as `retire` does for a live thread's.
#[cold]
fn defer_exited(guard: &crossbeam_epoch::Guard) {
    // Acquire: pairs with the Release pushes, so the nodes and the records' unlinking are seen.
    let mut node = EXITED.swap(std::ptr::null_mut(), Ordering::Acquire);
    // Relaxed: see `EXITED_LEN`; a push between the swap and this store is counted late.
    EXITED_LEN.store(0, Ordering::Relaxed);
    while !node.is_null() {
        // SAFETY: taken off the list whole by the swap above, so ours alone; made by
        // `leave_to_next_pin` from `Box::into_raw`.
        let exited = unsafe { Box::from_raw(node) };
        node = exited.next;
        let record = SendPtr(exited.ptr);
        let free = exited.free;
        // SAFETY: the record is unreachable for new readers (its exit hook unlinked it before
        // the push that the swap above saw), and is deferred once; readers pinned before now
        // keep it alive until they unpin.
        unsafe {
            guard.defer_unchecked(move || {
                let record = record;
                free(record.0)
            })
        };
    }
}

/// A record pointer moved into a deferred free (`defer_exited`).
struct SendPtr(*mut ());
// SAFETY: the pointee is a task record, which is Send and Sync, and only its free runs there.
unsafe impl Send for SendPtr {}

std::thread_local! {
    /// The calling thread is in its exit hook (`thread_exiting`). Const, without a
    /// destructor: readable after the thread's other thread-locals are gone.
    static EXITING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The calling thread has reached its exit hook, which runs after every Rust thread-local
/// destructor. From here on its pins register with the collector for their own duration:
/// crossbeam's per-thread handle is a thread-local too, and one first created this late
/// would never be dropped, leaving its record in the collector's list for good (and every
/// later thread exit walking that growing list).
pub(crate) fn thread_exiting() {
    EXITING.with(|e| e.set(true));
}

/// A pin through a registration of its own, released when the guard drops (crossbeam
/// finalizes a participant once its last handle and guard are gone).
#[cold]
fn exiting_pin() -> crossbeam_epoch::Guard {
    crossbeam_epoch::default_collector().register().pin()
}

/// See `parking_lot_core::park`.
///
/// # Safety
/// `key` is the address of a lock object this crate owns; the callbacks must not panic.
#[inline]
pub(crate) unsafe fn park(
    key: usize,
    validate: impl FnOnce() -> bool,
    before_sleep: impl FnOnce(),
    timed_out: impl FnOnce(usize, bool),
    token: ParkToken,
    deadline: Option<Instant>,
) -> ParkResult {
    if super::park_table::in_use() {
        return super::park_table::park(key, validate, before_sleep, timed_out, token, deadline);
    }
    // SAFETY: forwarded contract.
    unsafe { parking_lot_core::park(key, validate, before_sleep, timed_out, token, deadline) }
}

/// See `parking_lot_core::unpark_filter`.
///
/// # Safety
/// As for [`park`].
#[inline]
pub(crate) unsafe fn unpark_filter(
    key: usize,
    filter: impl FnMut(ParkToken) -> FilterOp,
    callback: impl FnOnce(UnparkResult) -> UnparkToken,
) -> UnparkResult {
    #[cfg(test)]
    let callback = |result| {
        let token = callback(result);
        if let Some(hook) = AFTER_UNPARK_CHOICE.take() {
            hook();
        }
        token
    };
    if super::park_table::in_use() {
        return super::park_table::unpark_filter(key, filter, callback);
    }
    // SAFETY: forwarded contract.
    unsafe { parking_lot_core::unpark_filter(key, filter, callback) }
}

/// Right after an unlocker claimed a lock's spinner. Unit tests: runs this thread's
/// `AFTER_SPINNER_CLAIM` hook, if set, once; otherwise nothing.
#[inline]
pub(crate) fn after_spinner_claim() {
    #[cfg(test)]
    if let Some(hook) = AFTER_SPINNER_CLAIM.take() {
        hook();
    }
}

#[cfg(test)]
std::thread_local! {
    /// Unit tests: runs once, on this thread, right after its next claim of a lock's
    /// spinner, before it ends the spinner's wait: it widens that window.
    pub(crate) static AFTER_SPINNER_CLAIM: std::cell::Cell<Option<Box<dyn FnOnce()>>> =
        const { std::cell::Cell::new(None) };
    /// Unit tests: runs once, on this thread, at the end of its next `unpark_filter`
    /// callback. Still under the queue lock, but after the lock changed hands: it widens
    /// the window in which the chosen sleeper waits for its wake-up.
    pub(crate) static AFTER_UNPARK_CHOICE: std::cell::Cell<Option<Box<dyn FnOnce()>>> =
        const { std::cell::Cell::new(None) };
}

/// Sleeps while `word` holds `expected`, `timeout` at most; see `sys::futex_wait_for`. Not
/// the parking lot: the ledger lock that uses it is taken inside the parking lot's
/// `before_sleep` too (a Condvar waiter releasing its mutex), where parking again would
/// reuse the thread's queue entry.
pub(crate) fn futex_wait_for(word: &AtomicU32, expected: u32, timeout: Duration) {
    crate::sys::futex_wait_for(word, expected, timeout)
}

/// Wakes one thread asleep in [`futex_wait_for`] on `word`.
pub(crate) fn futex_wake_one(word: &AtomicU32) {
    crate::sys::futex_wake_one(word)
}

/// See `parking_lot_core::unpark_requeue`.
///
/// # Safety
/// As for [`park`].
#[inline]
pub(crate) unsafe fn unpark_requeue(
    from: usize,
    to: usize,
    validate: impl FnOnce() -> RequeueOp,
    callback: impl FnOnce(RequeueOp, UnparkResult) -> UnparkToken,
) -> UnparkResult {
    if super::park_table::in_use() {
        return super::park_table::unpark_requeue(from, to, validate, callback);
    }
    // SAFETY: forwarded contract.
    unsafe { parking_lot_core::unpark_requeue(from, to, validate, callback) }
}

/// A plain lock for the crate's own tables (the registry of records, the models' ledger).
pub(crate) use std::sync::{Mutex, MutexGuard};

/// In a forked child: sleep on the crate's own parking table if the parent had other threads
/// (`park_table::use_after_fork`).
pub(crate) fn use_parking_table_after_fork(parent_threads: usize) {
    super::park_table::use_after_fork(parent_threads)
}
