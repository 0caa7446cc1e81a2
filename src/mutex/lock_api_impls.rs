//! `lock_api`'s raw-mutex traits for [`RawMutex`], so `lock_api::Mutex<proxy_lock::RawMutex, T>`
//! works. Not under loom: the traits need a const `INIT`, and loom's atomics have no const
//! constructors.

use crate::loom::not_under_loom;

not_under_loom! {
    use crate::word::RawMutex;
    use crate::Policy;
    use std::time::Instant;

    // SAFETY: `lock`/`try_lock` only return having installed the caller's record in the word,
    // so at most one context holds the lock; unlock is only called by that context (the trait's
    // contract), and the guard marker keeps guards on their thread.
    unsafe impl lock_api::RawMutex for RawMutex {
        #[allow(clippy::declare_interior_mutable_const)]
        const INIT: RawMutex = RawMutex::with_policy(Policy::Adaptive);
        type GuardMarker = lock_api::GuardNoSend;

        #[inline]
        fn lock(&self) {
            self.lock_as(crate::task::current());
        }

        #[inline]
        fn try_lock(&self) -> bool {
            self.try_lock_as(crate::task::current()).is_some()
        }

        #[inline]
        unsafe fn unlock(&self) {
            // SAFETY: the trait requires the lock to be held in this context.
            unsafe { self.unlock_as(crate::task::current()) }
        }

        #[inline]
        fn is_locked(&self) -> bool {
            RawMutex::is_locked(self)
        }
    }

    // SAFETY: as for RawMutex; a fair unlock differs only in who owns the lock next.
    unsafe impl lock_api::RawMutexFair for RawMutex {
        #[inline]
        unsafe fn unlock_fair(&self) {
            // SAFETY: the trait requires the lock to be held in this context.
            unsafe { self.unlock_fair_as(crate::task::current()) }
        }

        #[inline]
        unsafe fn bump(&self) {
            if self.has_waiters() {
                let me = crate::task::current();
                // SAFETY: the trait requires the lock to be held in this context.
                unsafe { self.unlock_fair_as(me) };
                self.lock_as(me);
            }
        }
    }

    // SAFETY: timed locks take the lock only as `lock` does.
    unsafe impl lock_api::RawMutexTimed for RawMutex {
        type Duration = std::time::Duration;
        type Instant = Instant;

        fn try_lock_for(&self, timeout: std::time::Duration) -> bool {
            self.lock_until_as(crate::task::current(), Instant::now().checked_add(timeout))
                .is_some()
        }

        fn try_lock_until(&self, deadline: Instant) -> bool {
            self.lock_until_as(crate::task::current(), Some(deadline))
                .is_some()
        }
    }
}
