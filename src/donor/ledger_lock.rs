//! The ledger's lock: a futex word, as small mutexes are, except that a sleeper does not wait
//! for its wake-up for ever: it looks at the word again every `RECHECK_AFTER`. Not the parking
//! lot: the lock is also taken inside the parking lot's `before_sleep` (a Condvar waiter
//! releasing its mutex restores itself), where parking again would reuse the thread's queue
//! entry.
//!
//! Why the timeout: the threads that sleep on this lock differ in what they can do next. A
//! SCHED_IDLE owner that has just passed its lock on sleeps here to reconcile, and so does a
//! boosted owner a waiter has just moved onto a free CPU. An unlock wakes one of them, the one
//! that slept first; if that is the SCHED_IDLE thread on a hog's CPU, it does not run, so it
//! does not take the lock, and the boosted one sleeps on with the lock free for as long as the
//! SCHED_IDLE thread waits for its CPU. Waking every sleeper instead did worse
//! (`docs/design.md#the-ledger-lock`). With the recheck, a wake-up that went to the wrong
//! thread costs a sleeper one `RECHECK_AFTER`. The recheck also gives the waiter a new round
//! of its own ([`LedgerLock::lock_waiting`]): the holder may have changed meanwhile and need a
//! rescue of its own (`donor::rescue`).

use crate::loom::{AtomicU32, Ordering, futex_wait_for, futex_wake_one};
use std::time::Duration;

/// Nobody holds the lock.
const FREE: u32 = 0;
/// Held, and nobody went to sleep for it since it was taken.
const HELD: u32 = 1;
/// Held, and threads may be asleep on the word: its unlock wakes one. A thread that has
/// waited takes the lock in this state too (with the swap that also announces it as a
/// sleeper), as it cannot tell whether others still sleep; at worst its unlock then wakes
/// nobody.
const HELD_WITH_SLEEPERS: u32 = 2;

/// How long a sleeper waits for a wake-up before it looks at the word again. A holder is done
/// in 5-40 µs (a few syscalls) unless it was preempted, so a sleeper past this long is either
/// behind a preempted holder (and rechecks cheaply) or was passed over by a wake-up that went
/// to a thread that cannot run.
const RECHECK_AFTER: Duration = Duration::from_micros(100);

/// The lock that guards the donation ledger (`crate::loom::with_ledger`).
pub(crate) struct LedgerLock {
    state: AtomicU32,
}

impl LedgerLock {
    crate::loom::const_fn! {
        pub(crate) fn new() -> LedgerLock {
            LedgerLock { state: AtomicU32::new(FREE) }
        }
    }

    /// Takes the lock if it is free.
    #[inline]
    pub(crate) fn try_lock(&self) -> bool {
        self.try_lock_in_round(false)
    }

    /// Takes the lock, sleeping on the word while someone else holds it.
    #[cfg(all(test, not(loom), donates))]
    pub(crate) fn lock_sleeping(&self) {
        self.lock_waiting(|_, _| false);
    }

    /// Takes the lock, in rounds: each round first runs `before_sleep(self, slept)` (`slept`:
    /// whether an earlier round slept), which may take the lock with [`Self::try_lock_in_round`]
    /// and say so; if it did not, the round sleeps on the word until an unlock wakes it or
    /// `RECHECK_AFTER` has passed. The caller's part is what the recheck is for besides a
    /// passed-over wake-up: the holder may have changed while we slept, and a new holder off a
    /// CPU needs a rescue of its own (`crate::loom`'s ledger wait).
    pub(crate) fn lock_waiting(&self, mut before_sleep: impl FnMut(&Self, bool) -> bool) {
        let mut slept = false;
        loop {
            if before_sleep(self, slept) {
                return;
            }
            // Acquire: as in `try_lock_in_round`, when the swap finds the lock free.
            if self.state.swap(HELD_WITH_SLEEPERS, Ordering::Acquire) == FREE {
                return;
            }
            // The kernel compares the word with HELD_WITH_SLEEPERS atomically with queueing us:
            // an unlock that frees it first makes the wait return at once, and one that frees
            // it later finds us queued and may wake us; if it wakes another, the timeout
            // sends us round again.
            futex_wait_for(&self.state, HELD_WITH_SLEEPERS, RECHECK_AFTER);
            slept = true;
        }
    }

    /// Takes the lock if it is free, inside a round of [`Self::lock_waiting`]. A thread that
    /// has slept takes it as `HELD_WITH_SLEEPERS`: others may still sleep, and it cannot tell.
    #[inline]
    pub(crate) fn try_lock_in_round(&self, slept: bool) -> bool {
        let taken = if slept { HELD_WITH_SLEEPERS } else { HELD };
        // Acquire: pairs with the Release of the previous holder's unlock, so its writes to
        // the ledger are seen. Relaxed on failure: nothing is read.
        self.state
            .compare_exchange(FREE, taken, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// Releases the lock, waking one thread asleep on it.
    pub(crate) fn unlock(&self) {
        // Release: the holder's writes to the ledger happen-before the next holder's Acquire.
        if self.state.swap(FREE, Ordering::Release) == HELD_WITH_SLEEPERS {
            futex_wake_one(&self.state);
        }
    }
}

#[cfg(all(test, not(loom), donates))]
mod tests {
    use super::LedgerLock;
    use crate::sys::attrs::{Sched, SchedPolicy};
    use crate::sys::sched::set_sched;
    use crate::sys::test_threads::{busy_for, has_two_cpus, pin_to, wait_until_asleep};
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    /// The case the recheck exists for: the unlock wakes the sleeper that slept first, which
    /// cannot run (a SCHED_FIFO hog holds its CPU), so it does not take the lock; the other
    /// sleeper, on a free CPU, must not sleep on until the hog stops. It takes the lock on its
    /// own recheck. A plain wake-one lock (the recheck set to 100 s) made it wait for the hog's
    /// whole burst. Needs the right to use SCHED_FIFO, and two CPUs; says so and skips without.
    #[test]
    fn a_sleeper_passed_over_by_the_wake_up_takes_the_lock_on_its_recheck() {
        if !has_two_cpus("the starved sleeper's and the other's") {
            return;
        }
        const HOG_BURST: Duration = Duration::from_millis(400);
        let lock: &'static LedgerLock = Box::leak(Box::new(LedgerLock::new()));
        assert!(lock.try_lock());
        let (tid_of_starved, starved_tid) = mpsc::channel();
        let starved = std::thread::spawn(move || {
            tid_of_starved.send(crate::sys::gettid()).unwrap();
            pin_to(0);
            lock.lock_sleeping();
            lock.unlock();
        });
        // It must be queued first on the futex, so that the unlock wakes it.
        wait_until_asleep(starved_tid.recv().unwrap());
        let (got_it, when) = mpsc::channel();
        let (tid_of_other, other_tid) = mpsc::channel();
        let other = std::thread::spawn(move || {
            tid_of_other.send(crate::sys::gettid()).unwrap();
            pin_to(1);
            lock.lock_sleeping();
            got_it.send(Instant::now()).unwrap();
            lock.unlock();
        });
        wait_until_asleep(other_tid.recv().unwrap());
        let (hog_ready, hog_running) = mpsc::channel();
        let hog = std::thread::spawn(move || {
            pin_to(0);
            let fifo_1 = Sched {
                policy: SchedPolicy::Fifo,
                rt_priority: 1,
                ..Sched::DEFAULT
            };
            let fifo = set_sched(crate::sys::gettid(), &fifo_1).is_ok();
            hog_ready.send(fifo).unwrap();
            if fifo {
                busy_for(HOG_BURST);
            }
        });
        let fifo = hog_running.recv().unwrap();
        let released = Instant::now();
        lock.unlock();
        let waited = when.recv().unwrap() - released;
        hog.join().unwrap();
        other.join().unwrap();
        starved.join().unwrap();
        if !fifo {
            crate::sys::test_threads::skip(
                "SCHED_FIFO not allowed, so nothing starves the first sleeper",
            );
            return;
        }
        assert!(
            waited < HOG_BURST / 4,
            "the sleeper on the free CPU waited {waited:?} for a free lock"
        );
    }
}
