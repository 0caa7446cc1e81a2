//! `lock_api`'s raw reader-writer traits for [`RawRwLock`], so
//! `lock_api::RwLock<proxy_lock::RawRwLock, T>` works. Not under loom: the traits need a const
//! `INIT`, and loom's atomics have no const constructors.

use crate::loom::not_under_loom;

not_under_loom! {
    use super::RawRwLock;
    use std::time::{Duration, Instant};

    // SAFETY: `lock_exclusive`/`try_lock_exclusive` return only having installed the caller's
    // record with WRITER in an otherwise empty word, and `lock_shared` only having counted a
    // reader in a word without WRITER, so a writer excludes everyone; unlocks are called by
    // the holding context (the trait's contract), and the guard marker keeps guards on their
    // thread (a write unlock compares the record).
    unsafe impl lock_api::RawRwLock for RawRwLock {
        #[allow(clippy::declare_interior_mutable_const)]
        const INIT: RawRwLock = RawRwLock::new();
        type GuardMarker = lock_api::GuardNoSend;

        #[inline]
        fn lock_shared(&self) {
            self.read(crate::task::current());
        }

        #[inline]
        fn try_lock_shared(&self) -> bool {
            self.try_read(crate::task::current()).is_some()
        }

        #[inline]
        unsafe fn unlock_shared(&self) {
            // SAFETY: the trait requires a read lock held in this context.
            unsafe { self.read_unlock(crate::task::current()) }
        }

        #[inline]
        fn lock_exclusive(&self) {
            self.write(crate::task::current());
        }

        #[inline]
        fn try_lock_exclusive(&self) -> bool {
            self.try_write(crate::task::current()).is_some()
        }

        #[inline]
        unsafe fn unlock_exclusive(&self) {
            // SAFETY: the trait requires the write lock held in this context.
            unsafe { self.write_unlock(crate::task::current()) }
        }

        #[inline]
        fn is_locked(&self) -> bool {
            RawRwLock::is_locked(self)
        }

        #[inline]
        fn is_locked_exclusive(&self) -> bool {
            RawRwLock::is_locked_exclusive(self)
        }
    }

    // SAFETY: a downgrade turns the caller's write lock into one read lock in a single RMW.
    unsafe impl lock_api::RawRwLockDowngrade for RawRwLock {
        #[inline]
        unsafe fn downgrade(&self) {
            // SAFETY: the trait requires the write lock held in this context.
            unsafe { RawRwLock::downgrade(self, crate::task::current()) }
        }
    }

    // SAFETY: timed locks take the lock only as the untimed ones do.
    unsafe impl lock_api::RawRwLockTimed for RawRwLock {
        type Duration = Duration;
        type Instant = Instant;

        fn try_lock_shared_for(&self, timeout: Duration) -> bool {
            let me = crate::task::current();
            self.read_until(me, Instant::now().checked_add(timeout)).is_some()
        }

        fn try_lock_shared_until(&self, deadline: Instant) -> bool {
            self.read_until(crate::task::current(), Some(deadline))
                .is_some()
        }

        fn try_lock_exclusive_for(&self, timeout: Duration) -> bool {
            let me = crate::task::current();
            self.write_until(me, Instant::now().checked_add(timeout)).is_some()
        }

        fn try_lock_exclusive_until(&self, deadline: Instant) -> bool {
            self.write_until(crate::task::current(), Some(deadline)).is_some()
        }
    }
}
