//! Loom's primitives: loom atomics, the shared parking table (`park_table`) on loom's mutex
//! and condvar, a fake clock, fake thread ids and a recording "kernel" that keeps each fake
//! thread's scheduling attributes. Loom has no clock, so a timed park may time out at any
//! point after it queued until someone unparks it; loom explores both outcomes.

use super::{FilterOp, ParkResult, ParkToken, RequeueOp, UnparkResult, UnparkToken};
use std::time::Instant;

use crate::sys::attrs::{Attrs, CpuMask, Sched};
pub(crate) use loom::sync::atomic::{
    AtomicBool, AtomicU8, AtomicU32, AtomicUsize, Ordering, fence,
};
use std::collections::HashMap;

/// Errors never happen in the recording backend.
pub(crate) type Errno = i32;

/// The recording scheduler backend: each (fake) tid's attributes, as the ledger wrote them.
/// A thread nobody wrote yet has the default: nice 0 on CPUs 0 and 1.
fn default_attrs() -> Attrs {
    let mut cpus = CpuMask::EMPTY;
    cpus.insert(0);
    cpus.insert(1);
    Attrs {
        sched: Sched::DEFAULT,
        util: (0, 1024),
        cpus,
    }
}

/// One syscall of the backend. The kernel orders a read after the write it sees (its own
/// locks), but loom does not know about the std mutex SCHED: a model whose property
/// depends on that order (the rescue's, where a write outside the ledger lock must not
/// pass for the holder's own attributes) sets `ORDER_SYSCALLS`, which makes each syscall
/// an AcqRel step on one loom atomic. Off by default: it adds a scheduling point to every
/// syscall.
fn syscall() {
    // Relaxed: a per-execution setting, written before the model's threads start.
    if ORDER_SYSCALLS.load(std::sync::atomic::Ordering::Relaxed) {
        SYSCALLS.fetch_add(1, Ordering::AcqRel);
    }
}

pub(crate) fn read_attrs(tid: crate::Tid) -> Result<Attrs, Errno> {
    syscall();
    Ok(SCHED
        .lock()
        .unwrap()
        .get(&tid)
        .copied()
        .unwrap_or_else(default_attrs))
}

pub(crate) fn read_sched(tid: crate::Tid) -> Result<(Sched, (u32, u32)), Errno> {
    read_attrs(tid).map(|a| (a.sched, a.util))
}

fn update(tid: crate::Tid, f: impl FnOnce(&mut Attrs)) -> Result<(), Errno> {
    syscall();
    let mut table = SCHED.lock().unwrap();
    f(table.entry(tid).or_insert_with(default_attrs));
    Ok(())
}

pub(crate) fn write_sched(tid: crate::Tid, sched: &Sched) -> Result<(), Errno> {
    SCHED_WRITERS
        .lock()
        .unwrap()
        .push((crate::current_tid(), tid, sched.nice));
    update(tid, |a| a.sched = *sched)
}

pub(crate) fn write_util(tid: crate::Tid, util: (u32, u32)) -> Result<(), Errno> {
    update(tid, |a| a.util = util)
}

pub(crate) fn write_cpus(tid: crate::Tid, cpus: &CpuMask) -> Result<(), Errno> {
    update(tid, |a| a.cpus = *cpus)
}

/// A model thread "runs" on the lowest CPU of its recorded affinity.
pub(crate) fn current_cpu() -> Option<u32> {
    let attrs = read_attrs(crate::current_tid()).ok()?;
    (0..64).find(|&c| attrs.cpus.contains(c))
}

// The real thread plumbing is not used under loom; naming it keeps it compiled and checked.
const _: fn() -> crate::Tid = crate::sys::gettid;
const _: fn() -> u64 = crate::sys::monotonic_us;
const _: fn() -> u64 = crate::sys::coarse_monotonic_us;
const _: fn(*mut (), unsafe fn(*mut ())) = crate::sys::on_thread_exit;
const _: fn(crate::Tid, &Sched) -> Result<(), Errno> = crate::sys::sched::set_sched;
const _: fn() -> Option<u32> = crate::sys::sched::current_cpu;
const _: fn(crate::Tid) -> Option<u64> = crate::sys::sched::thread_cpu_time_ns;
const _: fn(&std::sync::atomic::AtomicU32, u32, std::time::Duration) = crate::sys::futex_wait_for;
const _: fn(&std::sync::atomic::AtomicU32) = crate::sys::futex_wake_one;

pub(crate) fn spin_hint() {
    loom::thread::yield_now()
}

pub(crate) fn yield_now() {
    loom::thread::yield_now()
}

/// Nothing: scheduling hints have no state for a model to check.
pub(crate) fn step_aside() {}

/// Nothing: models do not reclaim records.
pub(crate) fn thread_exiting() {}

/// No test hooks under loom (see the normal build's).
pub(crate) fn after_spinner_claim() {}

/// Loom has no clock. Each call advances a per-execution counter by 600 µs, so successive
/// fairness checks alternate between "patient" and "waited too long" and models reach both.
pub(crate) fn monotonic_us() -> u64 {
    CLOCK.fetch_add(600, std::sync::atomic::Ordering::Relaxed)
}

/// The fake clock serves the coarse one too.
pub(crate) fn coarse_us() -> u64 {
    monotonic_us()
}

/// A model owner always "runs": its CPU time is the fake clock, which every read
/// advances, so only `OWNER_SPIN_CAP_US` (two reads of the fake clock) ends a model's spin.
pub(crate) fn thread_cpu_time_ns(_tid: crate::Tid) -> Option<u64> {
    Some(monotonic_us())
}

/// Loom has no clock: a deadline never passes on its own (a timed park may time out at any
/// point anyway, see above).
pub(crate) fn deadline_passed(_deadline: Instant) -> bool {
    false
}

pub(crate) fn current_tid() -> crate::Tid {
    use std::sync::atomic::{AtomicI32, Ordering::Relaxed};
    // Loom threads share one OS thread; hand out fake ids. Relaxed: only uniqueness matters.
    static NEXT: AtomicI32 = AtomicI32::new(1);
    NEXT.fetch_add(1, Relaxed)
}

/// Under loom, thread exit does nothing: records are leaked anyway, and loom tears its
/// statics down before the main thread's locals, so a hook could not reach the registry.
pub(crate) fn on_thread_exit(_arg: *mut (), _hook: unsafe fn(*mut ())) {}

/// Under loom, retired records are leaked: a model is short and readers need no protection.
pub(crate) unsafe fn retire<T>(_ptr: *mut T) {}

/// Stands in for an epoch guard.
pub(crate) struct Pinned;

pub(crate) type Pin = Pinned;

pub(crate) fn pin() -> Pinned {
    Pinned
}

loom::lazy_static! {
    // Whether the backend's syscalls are ordered for loom, and the atomic that orders them
    // (see `syscall`). Per execution, as every lazy static here: models run side by side.
    static ref ORDER_SYSCALLS: std::sync::atomic::AtomicBool =
        std::sync::atomic::AtomicBool::new(false);
    static ref SYSCALLS: AtomicUsize = AtomicUsize::new(0);
    // The "kernel" of the recording backend. A std mutex, not a loom one: syscalls are
    // atomic with respect to each other, so there is nothing to model in them, and leaving
    // them out of loom's schedule keeps the models small. Reset for every execution.
    static ref SCHED: std::sync::Mutex<HashMap<crate::Tid, Attrs>> =
        std::sync::Mutex::new(HashMap::new());
    // (writer, target, nice) of every `write_sched`, in order, for
    // `test_hooks::sched_writers_of`. Reset for every execution, as SCHED is.
    static ref SCHED_WRITERS: std::sync::Mutex<Vec<(crate::Tid, crate::Tid, i32)>> =
        std::sync::Mutex::new(Vec::new());
    // A plain (unmodelled) atomic: a fake clock, reset for every execution.
    static ref CLOCK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
}

/// The shared parking table (`park_table`), with loom's types.
pub(crate) unsafe fn park(
    key: usize,
    validate: impl FnOnce() -> bool,
    before_sleep: impl FnOnce(),
    timed_out: impl FnOnce(usize, bool),
    token: ParkToken,
    deadline: Option<Instant>,
) -> ParkResult {
    super::park_table::park(key, validate, before_sleep, timed_out, token, deadline)
}

/// Whether a thread sleeps under `key` (test hooks).
pub(crate) fn is_parked_on(key: usize) -> bool {
    super::park_table::is_parked_on(key)
}

/// See [`park`].
pub(crate) unsafe fn unpark_filter(
    key: usize,
    filter: impl FnMut(ParkToken) -> FilterOp,
    callback: impl FnOnce(UnparkResult) -> UnparkToken,
) -> UnparkResult {
    super::park_table::unpark_filter(key, filter, callback)
}

/// A futex wait from the model's parking table, keyed by the word's address. It may time
/// out (at any point, as timed parks do here) only as often as `test_hooks::futex_timeouts`
/// allows: without timeouts, a lost wake-up leaves the model's threads asleep for good,
/// which loom reports, and with unlimited ones a sleeper could time out for ever.
pub(crate) fn futex_wait_for(word: &AtomicU32, expected: u32, _timeout: std::time::Duration) {
    let key = word as *const AtomicU32 as usize;
    // Relaxed: a plain counter, see `FUTEX_TIMEOUTS`.
    let may_time_out = FUTEX_TIMEOUTS
        .fetch_update(
            std::sync::atomic::Ordering::Relaxed,
            std::sync::atomic::Ordering::Relaxed,
            |left| left.checked_sub(1),
        )
        .is_ok();
    let deadline = may_time_out.then(Instant::now);
    // SAFETY: the key is the address of a word this crate owns; the callbacks do not panic.
    unsafe {
        park(
            key,
            // Relaxed: read under the table lock, which the waker takes after its store,
            // as the kernel's futex compares under its bucket lock.
            || word.load(Ordering::Relaxed) == expected,
            || {},
            |_, _| {},
            ParkToken(0),
            deadline,
        )
    };
}

pub(crate) fn futex_wake_one(word: &AtomicU32) {
    let key = word as *const AtomicU32 as usize;
    let mut woken = false;
    let wake_first = |_| {
        if std::mem::replace(&mut woken, true) {
            FilterOp::Stop
        } else {
            FilterOp::Unpark
        }
    };
    // SAFETY: as in `futex_wait_for`.
    unsafe { unpark_filter(key, wake_first, |_| UnparkToken(0)) };
}

/// How many more model futex waits may time out (`test_hooks::futex_timeouts`); each wait
/// that may uses one up, whether it then times out or is woken. A plain atomic, set at the
/// start of each execution: the count only follows the schedule loom chose, it is not a
/// choice loom explores.
static FUTEX_TIMEOUTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// See [`park`].
pub(crate) unsafe fn unpark_requeue(
    from: usize,
    to: usize,
    validate: impl FnOnce() -> RequeueOp,
    callback: impl FnOnce(RequeueOp, UnparkResult) -> UnparkToken,
) -> UnparkResult {
    super::park_table::unpark_requeue(from, to, validate, callback)
}
/// A plain lock for the crate's own tables: loom's, so models see the happens-before it makes.
pub(crate) use loom::sync::{Mutex, MutexGuard};

/// Models never fork.
pub(crate) fn use_parking_table_after_fork(_parent_threads: usize) {}

/// The recording kernel's controls, for the models' hooks (`crate::test_hooks`).
pub(crate) mod kernel {
    use super::*;

    /// Replaces thread `tid`'s recorded attributes through `f`, without counting a writer.
    pub(crate) fn set(tid: crate::Tid, f: impl FnOnce(&mut Attrs)) {
        update(tid, f).unwrap();
    }

    /// Thread `tid`'s recorded attributes.
    pub(crate) fn get(tid: crate::Tid) -> Attrs {
        read_attrs(tid).unwrap()
    }

    /// Lets up to `count` model futex waits time out in the execution that calls it.
    pub(crate) fn futex_timeouts(count: usize) {
        FUTEX_TIMEOUTS.store(count, std::sync::atomic::Ordering::Relaxed);
    }

    /// (writer, target, nice) of every `write_sched` so far, in order.
    pub(crate) fn sched_writes() -> Vec<(crate::Tid, crate::Tid, i32)> {
        SCHED_WRITERS.lock().unwrap().clone()
    }

    /// Makes every syscall of this execution a step on one loom atomic (see `syscall`), and
    /// takes one such step now.
    pub(crate) fn order_syscalls() {
        // Relaxed: read by this execution's threads, which start after this.
        ORDER_SYSCALLS.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// One step on the syscalls' atomic, as a syscall takes when they are ordered.
    pub(crate) fn syscall_step() {
        syscall();
    }
}
