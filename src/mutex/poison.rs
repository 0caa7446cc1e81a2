//! Poisoning, with std's rules: a guard dropped while its thread panics (and that was not already
//! panicking when it locked) poisons the mutex; the data stays reachable through `PoisonError`.
//! The poison bit itself lives in the lock word (`raw::POISONED`).

use crate::word::RawMutex;
use std::sync::{LockResult, PoisonError};
use std::thread;

/// What a guard remembers to decide, when dropped, whether it poisons.
pub(crate) struct Guard {
    panicking: bool,
}

/// Called right after acquiring a lock that is `poisoned` or not: the guard, wrapped in `Err`
/// if the mutex is poisoned.
#[inline]
pub(crate) fn guard(poisoned: bool) -> LockResult<Guard> {
    let guard = Guard {
        panicking: thread::panicking(),
    };
    if poisoned {
        Err(PoisonError::new(guard))
    } else {
        Ok(guard)
    }
}

/// Called right before releasing `raw`: poisons it if the thread started panicking since it
/// locked. The common answer (no panic anywhere) is one read of std's panic count.
#[inline]
pub(crate) fn done(raw: &RawMutex, guard: &Guard) {
    if thread::panicking() && !guard.panicking {
        raw.poison();
    }
}

/// Maps the value inside a `LockResult`, keeping its poisoned-ness.
pub(crate) fn map_result<T, U>(result: LockResult<T>, f: impl FnOnce(T) -> U) -> LockResult<U> {
    match result {
        Ok(t) => Ok(f(t)),
        Err(e) => Err(PoisonError::new(f(e.into_inner()))),
    }
}
