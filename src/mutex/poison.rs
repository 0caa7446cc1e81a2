//! Poisoning, with std's rules: a guard dropped while its thread panics (and that was not already
//! panicking when it locked) poisons the mutex; the data stays reachable through `PoisonError`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LockResult, PoisonError};
use std::thread;

/// The poison bit of one mutex. Not a lock protocol (loom has nothing to check here), so it is a
/// plain std atomic and keeps `Mutex::new` const.
pub(crate) struct Flag(AtomicBool);

/// What a guard remembers to decide, when dropped, whether it poisons.
pub(crate) struct Guard {
    panicking: bool,
}

impl Flag {
    pub(crate) const fn new() -> Flag {
        Flag(AtomicBool::new(false))
    }

    /// Called right after acquiring: the guard, wrapped in `Err` if the mutex is poisoned.
    #[inline]
    pub(crate) fn guard(&self) -> LockResult<Guard> {
        let guard = Guard {
            panicking: thread::panicking(),
        };
        if self.get() {
            Err(PoisonError::new(guard))
        } else {
            Ok(guard)
        }
    }

    /// Called right before releasing.
    #[inline]
    pub(crate) fn done(&self, guard: &Guard) {
        if !guard.panicking && thread::panicking() {
            self.set();
        }
    }

    #[inline]
    pub(crate) fn get(&self) -> bool {
        // Relaxed: under the lock, the acquire of the lock orders it; outside the lock it is a
        // snapshot, as with std.
        self.0.load(Ordering::Relaxed)
    }

    /// Poisons the mutex: a guard dropped while panicking, or a section run by `Mutex::run`
    /// panicked. Called with the lock held.
    pub(crate) fn set(&self) {
        // Relaxed: written while the lock is held; the unlock's Release publishes it.
        self.0.store(true, Ordering::Relaxed);
    }

    pub(crate) fn clear(&self) {
        // Relaxed: as in `get`.
        self.0.store(false, Ordering::Relaxed)
    }
}

/// Maps the value inside a `LockResult`, keeping its poisoned-ness.
pub(crate) fn map_result<T, U>(result: LockResult<T>, f: impl FnOnce(T) -> U) -> LockResult<U> {
    match result {
        Ok(t) => Ok(f(t)),
        Err(e) => Err(PoisonError::new(f(e.into_inner()))),
    }
}
