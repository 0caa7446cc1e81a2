//! The registry of task records: every live record, plus the records of threads that exited
//! holding a lock. Records created since it was last read wait on a lock-free stack
//! (`announce`). Its lock is taken only when a thread retires its record, around `fork()` and by
//! diagnostics, never on a lock path. Also the registry's side of `fork()`.

use super::Task;
use crate::loom::{MODEL, Mutex, MutexGuard, Ordering, const_thread_local, global};
use std::cell::Cell;

global! { fn registry() -> Mutex<Vec<usize>> = Mutex::new(Vec::new()); }

/// Runs `f` on the registry of task records, under its lock.
pub(crate) fn with_registry<R>(f: impl FnOnce(&mut Vec<usize>) -> R) -> R {
    // Nothing panics while holding it, but a poisoned registry must never break locking.
    f(&mut registry().lock().unwrap_or_else(|e| e.into_inner()))
}

/// Runs `f` on the registry if its lock is free right now; `None` if another thread holds it.
/// For lock paths (an `RwLock` waiter looking for readers): the registry lock does not lend,
/// and a waiter must not sleep behind a preempted holder of it.
pub(crate) fn try_with_registry<R>(f: impl FnOnce(&mut Vec<usize>) -> R) -> Option<R> {
    let mut registry = match registry().try_lock() {
        Ok(guard) => guard,
        Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
        Err(std::sync::TryLockError::WouldBlock) => return None,
    };
    Some(f(&mut registry))
}

/// The head of the lock-free stack of records not yet in the registry. Unused in models, where
/// records go straight into the registry.
static ANNOUNCED: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

/// Announces a new record to the registry without taking the registry lock: a thread's first
/// lock never waits for that lock, which a preempted low-priority thread may hold. Under loom
/// the record goes straight into the (loom) registry lock instead, so loom sees the
/// happens-before from a record's creation to its readers.
pub(super) fn announce(task: *mut Task) {
    if MODEL {
        with_registry(|r| r.push(task as usize));
        return;
    }
    // SAFETY: the record was just allocated by this thread and is alive.
    let link = &unsafe { &*task }.next_new;
    // Relaxed load: the CAS below validates it.
    let mut top = ANNOUNCED.load(Ordering::Relaxed);
    loop {
        // Relaxed: published by the Release CAS below.
        link.store(top, Ordering::Relaxed);
        // Release: the record's initialisation and link happen-before the Acquire swap that
        // takes the stack.
        match ANNOUNCED.compare_exchange_weak(
            top,
            task as usize,
            Ordering::Release,
            Ordering::Relaxed,
        ) {
            Ok(_) => return,
            Err(now) => top = now,
        }
    }
}

/// Moves every announced record into the registry. Called under the registry lock, before
/// anything reads or removes entries. Taking the whole stack with one swap has no ABA problem:
/// nobody pops single records.
pub(super) fn adopt_new_records(registry: &mut Vec<usize>) {
    // Acquire: pairs with `announce`'s Release.
    let mut record = ANNOUNCED.swap(0, Ordering::Acquire);
    while record != 0 {
        registry.push(record);
        // SAFETY: an announced record is alive until its thread retires it, and retiring
        // takes the registry lock and adopts the announcements first.
        let task = unsafe { &*(record as *const Task) };
        // Relaxed: ordered by the Acquire that took the stack.
        record = task.next_new.load(Ordering::Relaxed);
    }
}

const_thread_local! {
    /// The registry lock's guard, held by the forking thread across `fork()` (`before_fork`).
    static FORK_REGISTRY: Cell<Option<MutexGuard<'static, Vec<usize>>>> = Cell::new(None);
}

/// `fork()` is about to run on this thread: it takes the registry lock, so that no other
/// thread is halfway through the registry when the child is made.
pub(crate) fn before_fork() {
    let registry = registry().lock().unwrap_or_else(|e| e.into_inner());
    FORK_REGISTRY.with(|r| r.set(Some(registry)));
}

/// The parent side of `fork()`: lets go of the registry lock.
pub(crate) fn after_fork_in_parent() {
    FORK_REGISTRY.with(|r| drop(r.take()));
}

/// In a forked child, under the registry lock taken by `before_fork`, which it lets go: the
/// calling thread's record takes the child's tid, and every
/// other record, whose thread does not exist here, counts as exited (`orphaned` runs on it:
/// nothing lends to it, nothing writes to its tid, which is still the parent's; no holder runs
/// a section it published; no unlock hands it a lock it was spinning for). Those records stay:
/// lock words in the child's memory may name them, as a lock held by another thread at the
/// fork stays held in the child.
pub(crate) fn after_fork_in_child(orphaned: impl Fn(&Task)) {
    let Some(mut registry) = FORK_REGISTRY.with(|r| r.take()) else {
        return;
    };
    adopt_new_records(&mut registry);
    let me = super::CURRENT.with(Cell::get);
    for &record in registry.iter() {
        // SAFETY: registry records are alive while we hold its lock (`retire_current`).
        let task = unsafe { &*(record as *const Task) };
        if record == me as usize {
            task.tid.store(
                crate::loom::current_tid(),
                core::sync::atomic::Ordering::Relaxed,
            );
        } else {
            // Relaxed: the child has one thread; see `Task::has_exited`.
            task.exited.store(true, Ordering::Relaxed);
            orphaned(task);
            task.slot.cancel_after_fork();
        }
    }
}
