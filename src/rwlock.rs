//! `RwLock<T>` and its guards: std's API on top of the lock protocol in [`raw`].

mod lock_api_impls;
pub(crate) mod raw;

use crate::LockId;
use crate::loom::const_fn;
use crate::mutex::poison::{self, Poison, map_result};
use crate::task;
use raw::RawRwLock;
use std::cell::UnsafeCell;
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::panic::{RefUnwindSafe, UnwindSafe};
use std::ptr::NonNull;
use std::sync::{LockResult, PoisonError, TryLockError, TryLockResult};
use std::time::{Duration, Instant};

/// A reader-writer lock with the API and behaviour of [`std::sync::RwLock`], poisoning
/// included: any number of readers, or one writer.
///
/// **Who goes first.** A reader waits while a writer holds the lock or waits for it, so
/// readers whose holds overlap cannot starve a writer. A writer's unlock hands the lock to all
/// the readers waiting at that moment at once, before the next writer, so writers cannot
/// starve readers either. Writers that find the lock free may take it ahead of sleeping
/// writers. A thread that holds a read lock and calls `read` again while a writer waits can
/// never get it (the writer waits for the first read lock, the second read for the writer):
/// it **panics** with the cycle named, as with any deadlock (std's may deadlock or panic,
/// parking_lot's deadlocks); if that writer waits with a timeout, the read just waits for it
/// to give up. A thread that holds the write lock and calls `read` or `write` panics too.
///
/// **Donation.** On Linux a writer about to sleep lends its scheduling attributes to every
/// thread that holds the lock for reading, and readers about to sleep lend to the writer that
/// holds it, as [`Mutex`](crate::Mutex) waiters lend to its owner; each loan ends at the
/// holder's unlock, and chains pass through rwlocks to mutexes and back. Readers record the
/// locks they hold in their own thread's record (up to four at a time), which costs the read
/// path a thread-local load and a store. [`snapshot`](crate::snapshot) shows readers and the
/// writers waiting for them.
///
/// ```
/// use proxy_lock::RwLock;
/// use std::sync::Arc;
///
/// let config = Arc::new(RwLock::new(String::from("v1")));
/// let readers: Vec<_> = (0..4)
///     .map(|_| {
///         let c = Arc::clone(&config);
///         std::thread::spawn(move || c.read().unwrap().len())
///     })
///     .collect();
/// *config.write().unwrap() = String::from("v2");
/// for r in readers {
///     assert_eq!(r.join().unwrap(), 2);
/// }
/// assert_eq!(*config.read().unwrap(), "v2");
/// ```
pub struct RwLock<T: ?Sized> {
    /// The lock word, which also carries the poison bit.
    raw: RawRwLock,
    data: UnsafeCell<T>,
}

// SAFETY: as std: sending the lock sends `T`.
unsafe impl<T: ?Sized + Send> Send for RwLock<T> {}
// SAFETY: as std: readers share `&T` between threads (`T: Sync`), and a writer's `&mut T` may
// be on any thread (`T: Send`).
unsafe impl<T: ?Sized + Send + Sync> Sync for RwLock<T> {}

// As std: poisoning is how the lock reports a panic, so it is unwind safe whatever `T` is.
impl<T: ?Sized> UnwindSafe for RwLock<T> {}
impl<T: ?Sized> RefUnwindSafe for RwLock<T> {}

/// Shared access to a read-locked [`RwLock`]; releases the read lock when dropped. `!Send`, as
/// std's.
///
/// ```
/// let lock = proxy_lock::RwLock::new(vec![1, 2]);
/// let (a, b) = (lock.read().unwrap(), lock.read().unwrap());
/// assert_eq!(a.len() + b.len(), 4);
/// assert_eq!(format!("{a:?}"), "[1, 2]");
/// ```
#[must_use = "if unused the RwLock will immediately unlock"]
#[clippy::has_significant_drop]
pub struct RwLockReadGuard<'a, T: ?Sized + 'a> {
    /// A pointer rather than a reference to the lock, so that the guard is covariant in `T`,
    /// as std's is.
    data: NonNull<T>,
    raw: &'a RawRwLock,
}

// SAFETY: as std: a shared read guard only hands out `&T`.
unsafe impl<T: ?Sized + Sync> Sync for RwLockReadGuard<'_, T> {}

/// Exclusive access to a write-locked [`RwLock`]; releases the lock when dropped. `!Send`, as
/// std's.
///
/// ```
/// let lock = proxy_lock::RwLock::new(String::from("a"));
/// let mut guard = lock.write().unwrap();
/// guard.push('b');
/// assert_eq!(format!("{guard} {guard:?}"), "ab \"ab\"");
/// ```
#[must_use = "if unused the RwLock will immediately unlock"]
#[clippy::has_significant_drop]
pub struct RwLockWriteGuard<'a, T: ?Sized + 'a> {
    lock: &'a RwLock<T>,
    /// The writer, and whether it was panicking when it locked.
    held: poison::Guard,
    _not_send: PhantomData<*const ()>,
}

// SAFETY: as std: a shared write guard only hands out `&T`.
unsafe impl<T: ?Sized + Sync> Sync for RwLockWriteGuard<'_, T> {}

impl Poison for RawRwLock {
    fn poison(&self) {
        RawRwLock::poison(self)
    }
}

impl<T> RwLock<T> {
    const_fn! {
        /// A new unlocked lock.
        ///
        /// ```
        /// static TABLE: proxy_lock::RwLock<Vec<u8>> = proxy_lock::RwLock::new(Vec::new());
        /// TABLE.write().unwrap().push(1);
        /// assert_eq!(TABLE.read().unwrap()[0], 1);
        /// ```
        pub fn new(value: T) -> RwLock<T> {
            RwLock {
                raw: RawRwLock::new(),
                data: UnsafeCell::new(value),
            }
        }
    }

    /// Consumes the lock and returns the data, as an error if the lock is poisoned.
    ///
    /// ```
    /// let lock = proxy_lock::RwLock::new(7);
    /// assert_eq!(lock.into_inner().unwrap(), 7);
    /// ```
    pub fn into_inner(self) -> LockResult<T> {
        let poisoned = self.raw.is_poisoned();
        let value = self.data.into_inner();
        poison::result(poisoned, value)
    }
}

impl<T: ?Sized> RwLock<T> {
    /// Locks for reading, waiting while a writer holds the lock or waits for it. An error if
    /// the lock is poisoned (the guard is inside it).
    ///
    /// Panics if the calling thread holds the write lock.
    ///
    /// ```
    /// let lock = proxy_lock::RwLock::new(1);
    /// let (a, b) = (lock.read().unwrap(), lock.read().unwrap());
    /// assert_eq!(*a + *b, 2);
    /// ```
    #[inline]
    pub fn read(&self) -> LockResult<RwLockReadGuard<'_, T>> {
        let poisoned = self.raw.read(crate::task::current());
        // SAFETY: we just took a read lock.
        unsafe { self.read_guard(poisoned) }
    }

    /// Locks for reading if that is possible right now (no writer holds the lock or waits for
    /// it); `WouldBlock` otherwise.
    ///
    /// ```
    /// use std::sync::TryLockError;
    /// let lock = proxy_lock::RwLock::new(1);
    /// let w = lock.write().unwrap();
    /// assert!(matches!(lock.try_read(), Err(TryLockError::WouldBlock)));
    /// drop(w);
    /// assert_eq!(*lock.try_read().unwrap(), 1);
    /// ```
    #[inline]
    pub fn try_read(&self) -> TryLockResult<RwLockReadGuard<'_, T>> {
        match self.raw.try_read(crate::task::current()) {
            // SAFETY: we just took a read lock.
            Some(poisoned) => Ok(unsafe { self.read_guard(poisoned) }?),
            None => Err(TryLockError::WouldBlock),
        }
    }

    /// Locks for reading, waiting at most `timeout`. Beyond std (parking_lot has it).
    ///
    /// ```
    /// use std::time::Duration;
    /// let lock = proxy_lock::RwLock::new(1);
    /// let w = lock.write().unwrap();
    /// assert!(lock.try_read_for(Duration::from_millis(1)).is_err());
    /// drop(w);
    /// assert_eq!(*lock.try_read_for(Duration::from_millis(1)).unwrap(), 1);
    /// ```
    pub fn try_read_for(&self, timeout: Duration) -> TryLockResult<RwLockReadGuard<'_, T>> {
        self.read_until(Instant::now().checked_add(timeout))
    }

    /// Locks for reading, waiting at most until `deadline`. Beyond std.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// let lock = proxy_lock::RwLock::new(1);
    /// let r = lock.try_read_until(Instant::now() + Duration::from_millis(1)).unwrap();
    /// assert_eq!(*r, 1);
    /// ```
    pub fn try_read_until(&self, deadline: Instant) -> TryLockResult<RwLockReadGuard<'_, T>> {
        self.read_until(Some(deadline))
    }

    fn read_until(&self, deadline: Option<Instant>) -> TryLockResult<RwLockReadGuard<'_, T>> {
        match self.raw.read_until(crate::task::current(), deadline) {
            // SAFETY: we just took a read lock.
            Some(poisoned) => Ok(unsafe { self.read_guard(poisoned) }?),
            None => Err(TryLockError::WouldBlock),
        }
    }

    /// Locks for writing, waiting for every reader and writer to leave. An error if the lock
    /// is poisoned (the guard is inside it).
    ///
    /// Panics if the calling thread holds the write lock already. A thread that holds a read
    /// lock and asks for the write lock deadlocks, as with std's.
    ///
    /// ```
    /// let lock = proxy_lock::RwLock::new(1);
    /// *lock.write().unwrap() += 1;
    /// assert_eq!(*lock.read().unwrap(), 2);
    /// ```
    #[inline]
    pub fn write(&self) -> LockResult<RwLockWriteGuard<'_, T>> {
        let me = task::current();
        let poisoned = self.raw.write(me);
        // SAFETY: `me` just took the write lock.
        unsafe { self.write_guard(me, poisoned) }
    }

    /// Locks for writing if the lock is free right now; `WouldBlock` otherwise.
    ///
    /// ```
    /// use std::sync::TryLockError;
    /// let lock = proxy_lock::RwLock::new(1);
    /// let r = lock.read().unwrap();
    /// assert!(matches!(lock.try_write(), Err(TryLockError::WouldBlock)));
    /// drop(r);
    /// *lock.try_write().unwrap() = 2;
    /// ```
    #[inline]
    pub fn try_write(&self) -> TryLockResult<RwLockWriteGuard<'_, T>> {
        let me = task::current();
        match self.raw.try_write(me) {
            // SAFETY: `me` just took the write lock.
            Some(poisoned) => Ok(unsafe { self.write_guard(me, poisoned) }?),
            None => Err(TryLockError::WouldBlock),
        }
    }

    /// Locks for writing, waiting at most `timeout`. Beyond std (parking_lot has it).
    ///
    /// ```
    /// use std::time::Duration;
    /// let lock = proxy_lock::RwLock::new(1);
    /// let r = lock.read().unwrap();
    /// assert!(lock.try_write_for(Duration::from_millis(1)).is_err());
    /// drop(r);
    /// *lock.try_write_for(Duration::from_millis(1)).unwrap() = 2;
    /// ```
    pub fn try_write_for(&self, timeout: Duration) -> TryLockResult<RwLockWriteGuard<'_, T>> {
        self.write_until(Instant::now().checked_add(timeout))
    }

    /// Locks for writing, waiting at most until `deadline`. Beyond std.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// let lock = proxy_lock::RwLock::new(1);
    /// *lock.try_write_until(Instant::now() + Duration::from_millis(1)).unwrap() = 2;
    /// ```
    pub fn try_write_until(&self, deadline: Instant) -> TryLockResult<RwLockWriteGuard<'_, T>> {
        self.write_until(Some(deadline))
    }

    fn write_until(&self, deadline: Option<Instant>) -> TryLockResult<RwLockWriteGuard<'_, T>> {
        let me = task::current();
        match self.raw.write_until(me, deadline) {
            // SAFETY: `me` just took the write lock.
            Some(poisoned) => Ok(unsafe { self.write_guard(me, poisoned) }?),
            None => Err(TryLockError::WouldBlock),
        }
    }

    /// Whether a writer panicked while holding the lock (and nobody cleared it since).
    ///
    /// ```
    /// let lock = std::sync::Arc::new(proxy_lock::RwLock::new(0));
    /// let l = std::sync::Arc::clone(&lock);
    /// let _ = std::thread::spawn(move || {
    ///     let _w = l.write().unwrap();
    ///     panic!("poison it");
    /// })
    /// .join();
    /// assert!(lock.is_poisoned());
    /// ```
    #[inline]
    pub fn is_poisoned(&self) -> bool {
        self.raw.is_poisoned()
    }

    /// Clears the poisoned state, as std's `clear_poison`.
    ///
    /// ```
    /// let lock = std::sync::Arc::new(proxy_lock::RwLock::new(0));
    /// let l = std::sync::Arc::clone(&lock);
    /// let _ = std::thread::spawn(move || {
    ///     let _w = l.write().unwrap();
    ///     panic!("poison it");
    /// })
    /// .join();
    /// lock.clear_poison();
    /// assert!(!lock.is_poisoned());
    /// ```
    #[inline]
    pub fn clear_poison(&self) {
        self.raw.clear_poison();
    }

    /// A mutable reference to the data, without locking (the `&mut` proves nobody else has
    /// the lock); an error if the lock is poisoned.
    ///
    /// ```
    /// let mut lock = proxy_lock::RwLock::new(0);
    /// *lock.get_mut().unwrap() = 10;
    /// assert_eq!(*lock.read().unwrap(), 10);
    /// ```
    pub fn get_mut(&mut self) -> LockResult<&mut T> {
        let data = self.data.get_mut();
        poison::result(self.raw.is_poisoned(), data)
    }

    /// The lock's identity in diagnostics.
    ///
    /// ```
    /// let (a, b) = (proxy_lock::RwLock::new(()), proxy_lock::RwLock::new(()));
    /// assert_ne!(a.id(), b.id());
    /// ```
    pub fn id(&self) -> LockId {
        self.raw.id()
    }

    #[cfg(loom)]
    pub(crate) fn raw(&self) -> &RawRwLock {
        &self.raw
    }

    /// # Safety
    /// The caller just took a read lock on `self`.
    #[inline]
    unsafe fn read_guard(&self, poisoned: bool) -> LockResult<RwLockReadGuard<'_, T>> {
        let guard = RwLockReadGuard {
            // SAFETY: `UnsafeCell::get` never returns null.
            data: unsafe { NonNull::new_unchecked(self.data.get()) },
            raw: &self.raw,
        };
        poison::result(poisoned, guard)
    }

    /// # Safety
    /// `me` just took the write lock on `self`.
    #[inline]
    unsafe fn write_guard(
        &self,
        me: task::Me,
        poisoned: bool,
    ) -> LockResult<RwLockWriteGuard<'_, T>> {
        map_result(poison::guard(me, poisoned), |held| RwLockWriteGuard {
            lock: self,
            held,
            _not_send: PhantomData,
        })
    }
}

impl<'a, T: ?Sized> RwLockWriteGuard<'a, T> {
    /// Turns the write lock into a read lock without letting another writer in between;
    /// readers that were waiting join it, unless a writer waits too. As std's `downgrade`.
    ///
    /// ```
    /// use proxy_lock::{RwLock, RwLockWriteGuard};
    /// let lock = RwLock::new(1);
    /// let mut w = lock.write().unwrap();
    /// *w = 2;
    /// let r = RwLockWriteGuard::downgrade(w);
    /// assert_eq!(*r, 2);
    /// assert_eq!(*lock.read().unwrap(), 2);
    /// ```
    pub fn downgrade(guard: Self) -> RwLockReadGuard<'a, T> {
        let guard = std::mem::ManuallyDrop::new(guard);
        let lock = guard.lock;
        poison::done(&lock.raw, guard.held);
        // SAFETY: the guard proves its thread holds the write lock, and ManuallyDrop keeps
        // Drop from releasing it.
        unsafe { lock.raw.downgrade(guard.held.me()) };
        // SAFETY: we now hold a read lock; a poisoned lock still hands out the guard, as std.
        unsafe { lock.read_guard(false) }.unwrap_or_else(PoisonError::into_inner)
    }
}

impl<T: ?Sized> Deref for RwLockReadGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: a read lock is held, so no `&mut T` exists.
        unsafe { self.data.as_ref() }
    }
}

impl<T: ?Sized> Drop for RwLockReadGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: the guard holds one read lock, released once.
        unsafe { self.raw.read_unlock(crate::task::current()) };
    }
}

impl<T: ?Sized> Deref for RwLockWriteGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the write lock is held, so no other reference exists.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T: ?Sized> DerefMut for RwLockWriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the write lock is held, and `&mut self` makes this the only access.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T: ?Sized> Drop for RwLockWriteGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        poison::done(&self.lock.raw, self.held);
        // SAFETY: the guard proves its holder holds the write lock, and it is dropped once.
        unsafe { self.lock.raw.write_unlock(self.held.me()) };
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for RwLockReadGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: ?Sized + fmt::Display> fmt::Display for RwLockReadGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (**self).fmt(f)
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for RwLockWriteGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: ?Sized + fmt::Display> fmt::Display for RwLockWriteGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (**self).fmt(f)
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for RwLock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("RwLock");
        match self.try_read() {
            Ok(guard) => d.field("data", &&*guard),
            Err(TryLockError::Poisoned(err)) => d.field("data", &&**err.get_ref()),
            Err(TryLockError::WouldBlock) => d.field("data", &format_args!("<locked>")),
        };
        d.field("poisoned", &self.raw.is_poisoned());
        d.finish_non_exhaustive()
    }
}

impl<T: Default> Default for RwLock<T> {
    fn default() -> RwLock<T> {
        RwLock::new(T::default())
    }
}

impl<T> From<T> for RwLock<T> {
    fn from(value: T) -> RwLock<T> {
        RwLock::new(value)
    }
}
