//! A pthread mutex with `PTHREAD_PRIO_INHERIT` and a pthread condition variable, in std's
//! shape: the kernel's strict handoff (`FUTEX_UNLOCK_PI` makes the top waiter the owner), the
//! honest reference for `Policy::Handoff`, and the PI row of the inversion demo.

use std::cell::UnsafeCell;
use std::ops::{Deref, DerefMut};
use std::sync::LockResult;

/// A mutex over `T` on a pthread PI mutex. Boxed, so it never moves after
/// `pthread_mutex_init`.
pub struct PiMutex<T> {
    raw: Box<UnsafeCell<libc::pthread_mutex_t>>,
    data: UnsafeCell<T>,
}

// SAFETY: a pthread mutex is made to be shared between threads, and it gives one thread at a
// time access to `T`, which `T: Send` allows.
unsafe impl<T: Send> Send for PiMutex<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for PiMutex<T> {}

pub struct PiGuard<'a, T> {
    lock: &'a PiMutex<T>,
}

impl<T> PiMutex<T> {
    pub fn new(value: T) -> PiMutex<T> {
        let m = PiMutex {
            raw: Box::new(UnsafeCell::new(libc::PTHREAD_MUTEX_INITIALIZER)),
            data: UnsafeCell::new(value),
        };
        // SAFETY: attr is initialised by pthread_mutexattr_init before use and destroyed
        // after; the mutex is boxed and initialised once.
        unsafe {
            let mut attr: libc::pthread_mutexattr_t = std::mem::zeroed();
            assert_eq!(libc::pthread_mutexattr_init(&mut attr), 0);
            assert_eq!(
                libc::pthread_mutexattr_setprotocol(&mut attr, libc::PTHREAD_PRIO_INHERIT),
                0,
                "this libc has no PTHREAD_PRIO_INHERIT"
            );
            assert_eq!(libc::pthread_mutex_init(m.raw.get(), &attr), 0);
            libc::pthread_mutexattr_destroy(&mut attr);
        }
        m
    }

    /// Never poisoned: the `LockResult` only gives it std's shape.
    pub fn lock(&self) -> LockResult<PiGuard<'_, T>> {
        // SAFETY: initialised in `new`, not moved since (boxed).
        let rc = unsafe { libc::pthread_mutex_lock(self.raw.get()) };
        assert_eq!(rc, 0, "pthread_mutex_lock: {rc}");
        Ok(PiGuard { lock: self })
    }
}

impl<T> Drop for PiMutex<T> {
    fn drop(&mut self) {
        // SAFETY: initialised, and unlocked (a guard borrows the mutex).
        unsafe { libc::pthread_mutex_destroy(self.raw.get()) };
    }
}

impl<T> Deref for PiGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard holds the lock.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T> DerefMut for PiGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard holds the lock, and `&mut self` makes this the only access.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T> Drop for PiGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: locked by this thread (guards are made by `lock` and not sent).
        unsafe { libc::pthread_mutex_unlock(self.lock.raw.get()) };
    }
}

/// A pthread condition variable, used with a [`PiMutex`].
pub struct PiCondvar(Box<UnsafeCell<libc::pthread_cond_t>>);

// SAFETY: a pthread condition variable is made to be shared between threads; boxed, it never
// moves after initialisation.
unsafe impl Send for PiCondvar {}
// SAFETY: as above.
unsafe impl Sync for PiCondvar {}

impl PiCondvar {
    pub fn new() -> PiCondvar {
        PiCondvar(Box::new(UnsafeCell::new(libc::PTHREAD_COND_INITIALIZER)))
    }

    pub fn wait_while<'a, T>(
        &self,
        mut guard: PiGuard<'a, T>,
        mut condition: impl FnMut(&mut T) -> bool,
    ) -> LockResult<PiGuard<'a, T>> {
        while condition(&mut guard) {
            // SAFETY: the guard proves this thread holds the mutex; both are initialised and
            // boxed.
            let rc = unsafe { libc::pthread_cond_wait(self.0.get(), guard.lock.raw.get()) };
            assert_eq!(rc, 0, "pthread_cond_wait: {rc}");
        }
        Ok(guard)
    }

    pub fn notify_one(&self) {
        // SAFETY: initialised (boxed, never moved).
        unsafe { libc::pthread_cond_signal(self.0.get()) };
    }
}

impl Drop for PiCondvar {
    fn drop(&mut self) {
        // SAFETY: initialised, and nobody waits on it (waiters borrow it).
        unsafe { libc::pthread_cond_destroy(self.0.get()) };
    }
}
