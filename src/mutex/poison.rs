//! Poisoning, with std's rules: a guard dropped while its thread panics (and that was not already
//! panicking when it locked) poisons the lock; the data stays reachable through `PoisonError`.
//! The poison bit itself lives in the lock word (`word::POISONED`, and the `RwLock`'s own). Only
//! guards that may write poison: a `RwLock`'s readers never do, as in std.

use crate::task::{Me, MeAndFlag};
use crate::word::RawMutex;
use std::sync::{LockResult, PoisonError};
use std::thread;

/// What a guard remembers: the holder's record, so that unlock needs no thread-local lookup
/// (and which makes the guard `!Send`, as the lock word requires: the owner recorded there
/// must be the unlocker), and whether that thread was already panicking when it locked, in
/// which case dropping the guard does not poison. One word (`MeAndFlag`).
#[derive(Clone, Copy)]
pub(crate) struct Guard(MeAndFlag);

impl Guard {
    #[cold]
    fn locked_while_panicking(me: Me) -> Guard {
        Guard(MeAndFlag::new(me, true))
    }

    /// The thread that holds the lock.
    #[inline]
    pub(crate) fn me(self) -> Me {
        self.0.me()
    }
}

/// Called right after `me` acquired a lock that is `poisoned` or not: the guard, wrapped in
/// `Err` if the mutex is poisoned.
#[inline]
pub(crate) fn guard(me: Me, poisoned: bool) -> LockResult<Guard> {
    // The flag only where it is set, out of line: an `or` of a computed flag cost the
    // uncontended path instructions.
    let guard = if thread::panicking() {
        Guard::locked_while_panicking(me)
    } else {
        Guard(MeAndFlag::new(me, false))
    };
    if poisoned {
        Err(PoisonError::new(guard))
    } else {
        Ok(guard)
    }
}

/// A lock word with a poison bit.
pub(crate) trait Poison {
    /// Sets the bit. Called by the holder, before it releases the lock.
    fn poison(&self);
}

impl Poison for RawMutex {
    fn poison(&self) {
        RawMutex::poison(self)
    }
}

/// Called right before releasing `raw`: poisons it if the thread started panicking since it
/// locked. The common answer (no panic anywhere) is one read of std's panic count.
#[inline]
pub(crate) fn done(raw: &impl Poison, guard: Guard) {
    if thread::panicking() && !guard.0.flag() {
        raw.poison();
    }
}

/// `value`, as an error if the lock it came from is `poisoned` (std's `into_inner`, `get_mut`).
pub(crate) fn result<T>(poisoned: bool, value: T) -> LockResult<T> {
    if poisoned {
        Err(PoisonError::new(value))
    } else {
        Ok(value)
    }
}

/// Maps the value inside a `LockResult`, keeping its poisoned-ness.
pub(crate) fn map_result<T, U>(result: LockResult<T>, f: impl FnOnce(T) -> U) -> LockResult<U> {
    match result {
        Ok(t) => Ok(f(t)),
        Err(e) => Err(PoisonError::new(f(e.into_inner()))),
    }
}
