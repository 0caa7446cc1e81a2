//! `Mutex<T>` and `MutexGuard`: std's API on top of the lock protocol in [`raw`], the
//! waiter's protocol in `wait`, and `Mutex::run` in `run`.

mod lock_api_impls;
pub(crate) mod poison;
pub(crate) mod raw;
mod run;
pub(crate) mod wait;

use crate::loom::const_fn;
use crate::task::{self, Me};
use crate::word::RawMutex;
use crate::{LockId, Policy, Tid};
use poison::map_result;
use std::cell::UnsafeCell;
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::panic::{RefUnwindSafe, UnwindSafe};
use std::sync::{LockResult, PoisonError, TryLockError, TryLockResult};
use std::time::{Duration, Instant};

/// A mutual-exclusion lock with the API and behaviour of [`std::sync::Mutex`], poisoning
/// included, that records its owner in the lock word and chooses its unlock [`Policy`].
///
/// ```
/// use proxy_lock::Mutex;
/// use std::sync::Arc;
///
/// let counter = Arc::new(Mutex::new(0));
/// let handles: Vec<_> = (0..4)
///     .map(|_| {
///         let c = Arc::clone(&counter);
///         std::thread::spawn(move || *c.lock().unwrap() += 1)
///     })
///     .collect();
/// for h in handles {
///     h.join().unwrap();
/// }
/// assert_eq!(*counter.lock().unwrap(), 4);
/// ```
pub struct Mutex<T: ?Sized> {
    /// The lock word, which also carries the poison bit.
    pub(crate) raw: RawMutex,
    pub(crate) data: UnsafeCell<T>,
}

// SAFETY: as std: the lock gives one thread at a time access to `T`, so sending or sharing the
// mutex only ever moves `T` between threads, which `T: Send` allows.
unsafe impl<T: ?Sized + Send> Send for Mutex<T> {}
// SAFETY: as above.
unsafe impl<T: ?Sized + Send> Sync for Mutex<T> {}

// As std: poisoning is how a mutex reports a panic, so it is unwind safe whatever `T` is.
impl<T: ?Sized> UnwindSafe for Mutex<T> {}
impl<T: ?Sized> RefUnwindSafe for Mutex<T> {}

/// The holder's access to a locked [`Mutex`]; unlocks when dropped. `!Send`, as std's.
///
/// ```
/// let m = proxy_lock::Mutex::new(String::from("a"));
/// let mut guard = m.lock().unwrap();
/// guard.push('b');
/// assert_eq!(format!("{guard} {guard:?}"), "ab \"ab\"");
/// ```
#[must_use = "if unused the Mutex will immediately unlock"]
#[clippy::has_significant_drop]
pub struct MutexGuard<'a, T: ?Sized + 'a> {
    lock: &'a Mutex<T>,
    /// The holder, and whether it was panicking when it locked.
    held: poison::Guard,
    _not_send: PhantomData<*const ()>,
}

// SAFETY: as std: a shared guard only hands out `&T`.
unsafe impl<T: ?Sized + Sync> Sync for MutexGuard<'_, T> {}

impl<T> Mutex<T> {
    const_fn! {
        /// A new unlocked mutex with the default policy ([`Policy::Adaptive`]).
        ///
        /// ```
        /// static M: proxy_lock::Mutex<Vec<u8>> = proxy_lock::Mutex::new(Vec::new());
        /// M.lock().unwrap().push(1);
        /// ```
        pub fn new(value: T) -> Mutex<T> {
            Mutex::with_policy(value, Policy::Adaptive)
        }
    }

    const_fn! {
        /// A new unlocked mutex with the given unlock policy.
        ///
        /// ```
        /// use proxy_lock::{Mutex, Policy};
        /// let m = Mutex::with_policy(0, Policy::Handoff);
        /// assert_eq!(m.policy(), Policy::Handoff);
        /// ```
        pub fn with_policy(value: T, policy: Policy) -> Mutex<T> {
            Mutex {
                raw: RawMutex::with_policy(policy),
                data: UnsafeCell::new(value),
            }
        }
    }

    /// Consumes the mutex and returns the data, as an error if the mutex is poisoned.
    ///
    /// ```
    /// let m = proxy_lock::Mutex::new(7);
    /// assert_eq!(m.into_inner().unwrap(), 7);
    /// ```
    pub fn into_inner(self) -> LockResult<T> {
        let poisoned = self.raw.is_poisoned();
        let value = self.data.into_inner();
        poison::result(poisoned, value)
    }
}

impl<T: ?Sized> Mutex<T> {
    /// Blocks until the lock is ours. `Err` carries the guard if the mutex is poisoned.
    ///
    /// # Panics
    ///
    /// If the calling thread already holds this mutex (std allows a panic or a deadlock here;
    /// a panic that says so beats hanging forever).
    ///
    /// ```
    /// let m = proxy_lock::Mutex::new(1);
    /// *m.lock().unwrap() += 1;
    /// assert_eq!(*m.lock().unwrap(), 2);
    /// ```
    #[inline]
    pub fn lock(&self) -> LockResult<MutexGuard<'_, T>> {
        let me = task::current();
        if self.raw.try_lock_fast(me) {
            // SAFETY: `me` just acquired the lock, from a free word: not poisoned.
            return unsafe { self.guard(me, false) };
        }
        let poisoned = self.raw.lock_contended(me);
        // SAFETY: `me` just acquired the lock.
        unsafe { self.guard(me, poisoned) }
    }

    /// Takes the lock if that is possible without blocking.
    ///
    /// ```
    /// use std::sync::TryLockError;
    /// let m = proxy_lock::Mutex::new(());
    /// let g = m.try_lock().unwrap();
    /// assert!(matches!(m.try_lock(), Err(TryLockError::WouldBlock)));
    /// drop(g);
    /// assert!(m.try_lock().is_ok());
    /// ```
    #[inline]
    pub fn try_lock(&self) -> TryLockResult<MutexGuard<'_, T>> {
        let me = task::current();
        match self.raw.try_lock_as(me) {
            // SAFETY: `me` just acquired the lock.
            Some(poisoned) => Ok(unsafe { self.guard(me, poisoned) }?),
            None => Err(TryLockError::WouldBlock),
        }
    }

    /// Takes the lock, waiting at most `timeout`.
    ///
    /// Returns `WouldBlock` when the time runs out, and at once when the caller already holds
    /// the lock (waiting could only time out).
    ///
    /// ```
    /// use std::time::Duration;
    /// let m = proxy_lock::Mutex::new(0);
    /// let g = m.lock().unwrap();
    /// std::thread::scope(|s| {
    ///     s.spawn(|| assert!(m.try_lock_for(Duration::from_millis(5)).is_err()));
    /// });
    /// drop(g);
    /// assert!(m.try_lock_for(Duration::from_millis(5)).is_ok());
    /// ```
    pub fn try_lock_for(&self, timeout: Duration) -> TryLockResult<MutexGuard<'_, T>> {
        self.lock_until(Instant::now().checked_add(timeout))
    }

    /// Takes the lock, waiting at most until `deadline`. See [`Mutex::try_lock_for`].
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// let m = proxy_lock::Mutex::new(0);
    /// assert!(m.try_lock_until(Instant::now() + Duration::from_millis(1)).is_ok());
    /// ```
    pub fn try_lock_until(&self, deadline: Instant) -> TryLockResult<MutexGuard<'_, T>> {
        self.lock_until(Some(deadline))
    }

    fn lock_until(&self, deadline: Option<Instant>) -> TryLockResult<MutexGuard<'_, T>> {
        let me = task::current();
        match self.raw.lock_until_as(me, deadline) {
            // SAFETY: `me` just acquired the lock.
            Some(poisoned) => Ok(unsafe { self.guard(me, poisoned) }?),
            None => Err(TryLockError::WouldBlock),
        }
    }

    /// Whether a holder panicked (a snapshot, as std's).
    ///
    /// ```
    /// let m = std::sync::Arc::new(proxy_lock::Mutex::new(0));
    /// let m2 = m.clone();
    /// let _ = std::thread::spawn(move || {
    ///     let _g = m2.lock().unwrap();
    ///     panic!("poison it");
    /// })
    /// .join();
    /// assert!(m.is_poisoned());
    /// ```
    #[inline]
    pub fn is_poisoned(&self) -> bool {
        self.raw.is_poisoned()
    }

    /// Clears the poisoned state.
    ///
    /// ```
    /// let m = std::sync::Arc::new(proxy_lock::Mutex::new(0));
    /// let m2 = m.clone();
    /// let _ = std::thread::spawn(move || {
    ///     let _g = m2.lock().unwrap();
    ///     panic!("poison it");
    /// })
    /// .join();
    /// let _ = m.lock().map_err(|e| {
    ///     *e.into_inner() = 1;
    ///     m.clear_poison();
    /// });
    /// assert!(!m.is_poisoned());
    /// ```
    #[inline]
    pub fn clear_poison(&self) {
        self.raw.clear_poison();
    }

    /// Mutable access without locking: `&mut self` proves nobody else can hold the lock.
    ///
    /// ```
    /// let mut m = proxy_lock::Mutex::new(1);
    /// *m.get_mut().unwrap() = 2;
    /// assert_eq!(*m.lock().unwrap(), 2);
    /// ```
    pub fn get_mut(&mut self) -> LockResult<&mut T> {
        let data = self.data.get_mut();
        poison::result(self.raw.is_poisoned(), data)
    }

    /// This mutex's unlock policy.
    ///
    /// ```
    /// use proxy_lock::{Mutex, Policy};
    /// assert_eq!(Mutex::new(()).policy(), Policy::Adaptive);
    /// assert_eq!(Mutex::with_policy((), Policy::Spin).policy(), Policy::Spin);
    /// ```
    pub fn policy(&self) -> Policy {
        self.raw.policy()
    }

    /// Kernel tid of the thread holding the lock, or `None` when it is free. A snapshot.
    ///
    /// ```
    /// let m = proxy_lock::Mutex::new(());
    /// assert_eq!(m.owner_tid(), None);
    /// let _g = m.lock().unwrap();
    /// assert_eq!(m.owner_tid(), Some(proxy_lock::current_tid()));
    /// ```
    pub fn owner_tid(&self) -> Option<Tid> {
        self.raw.owner_tid()
    }

    /// This lock's identity in diagnostics (see [`crate::thread_blocked_on`]).
    ///
    /// ```
    /// let m = proxy_lock::Mutex::new(());
    /// assert_eq!(m.id().addr(), m.raw() as *const proxy_lock::RawMutex as usize);
    /// ```
    pub fn id(&self) -> LockId {
        self.raw.id()
    }

    /// The raw lock underneath (policy, owner, state), e.g. for diagnostics.
    ///
    /// ```
    /// let m = proxy_lock::Mutex::new(());
    /// assert!(!m.raw().is_locked());
    /// ```
    pub fn raw(&self) -> &RawMutex {
        &self.raw
    }

    /// Wraps the lock `me` now holds in a guard, reporting poisoning as std does.
    ///
    /// # Safety
    /// `me` holds `self.raw`, which it found `poisoned` or not.
    #[inline]
    unsafe fn guard(&self, me: Me, poisoned: bool) -> LockResult<MutexGuard<'_, T>> {
        map_result(poison::guard(me, poisoned), |held| MutexGuard {
            lock: self,
            held,
            _not_send: PhantomData,
        })
    }
}

impl<'a, T: ?Sized> MutexGuard<'a, T> {
    /// Unlocks and, if threads wait, hands the lock straight to the first of them, whatever the
    /// mutex's policy (as parking_lot's `unlock_fair`).
    ///
    /// ```
    /// let m = proxy_lock::Mutex::new(0);
    /// let g = m.lock().unwrap();
    /// proxy_lock::MutexGuard::unlock_fair(g);
    /// assert!(m.try_lock().is_ok());
    /// ```
    pub fn unlock_fair(guard: Self) {
        let guard = std::mem::ManuallyDrop::new(guard);
        poison::done(&guard.lock.raw, guard.held);
        // SAFETY: the guard proves its holder holds the lock, and ManuallyDrop keeps Drop from
        // unlocking a second time.
        unsafe { guard.lock.raw.unlock_fair_as(guard.held.me()) };
    }

    /// If threads wait, lets the first of them run its critical section, then takes the lock
    /// back (as parking_lot's `bump`). Does nothing when nobody waits.
    ///
    /// ```
    /// let m = proxy_lock::Mutex::new(0);
    /// let mut g = m.lock().unwrap();
    /// proxy_lock::MutexGuard::bump(&mut g);
    /// *g += 1;
    /// ```
    pub fn bump(guard: &mut Self) {
        if guard.lock.raw.has_waiters() {
            poison::done(&guard.lock.raw, guard.held);
            let me = guard.held.me();
            // SAFETY: the guard proves `me` holds the lock; we take it back before returning.
            unsafe { guard.lock.raw.unlock_fair_as(me) };
            let poisoned = guard.lock.raw.lock_as(me);
            guard.held = poison::guard(me, poisoned).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// The mutex this guard locks.
    pub(crate) fn mutex(guard: &Self) -> &'a Mutex<T> {
        guard.lock
    }

    /// The holder's record.
    pub(crate) fn me(guard: &Self) -> Me {
        guard.held.me()
    }
}

impl<T: ?Sized> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard holds the lock, so no `&mut T` exists elsewhere.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T: ?Sized> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard holds the lock, and `&mut self` makes this the only access.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T: ?Sized> Drop for MutexGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        poison::done(&self.lock.raw, self.held);
        // SAFETY: the guard proves its holder holds the lock, and it is dropped once.
        unsafe { self.lock.raw.unlock_as(self.held.me()) };
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: ?Sized + fmt::Display> fmt::Display for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (**self).fmt(f)
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for Mutex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Mutex");
        match self.try_lock() {
            Ok(guard) => d.field("data", &&*guard),
            Err(TryLockError::Poisoned(err)) => d.field("data", &&**err.get_ref()),
            Err(TryLockError::WouldBlock) => d.field("data", &format_args!("<locked>")),
        };
        d.field("poisoned", &self.raw.is_poisoned());
        d.finish_non_exhaustive()
    }
}

impl<T: Default> Default for Mutex<T> {
    fn default() -> Mutex<T> {
        Mutex::new(T::default())
    }
}

impl<T> From<T> for Mutex<T> {
    fn from(value: T) -> Mutex<T> {
        Mutex::new(value)
    }
}
