//! `Condvar`: std's API, with notifications that move waiters onto the mutex's queue instead of
//! waking them to fight over it (wait morphing).
//!
//! # State
//!
//! One word, `state`: the address of the `RawMutex` the current waiters use, or 0 when nobody
//! waits, and in its low bits (free by the mutex's alignment) the best waiter's rank band (see
//! below). Set by the first waiter, raised by later ones, and cleared, always under the parking
//! lot's queue lock, by whoever empties the queue: a notifier, or the last waiter timing out. A
//! waiter that brings a different mutex while others wait gets a panic, as with parking_lot.
//!
//! ```text
//!   bits ..2                     bits 1..0
//!  +----------------------------+-----------------------------------------+
//!  | RawMutex address (or 0)    | best waiter's band (`donor::waiter_band`) |
//!  +----------------------------+-----------------------------------------+
//! ```
//!
//! # Notification
//!
//! * `notify_one`: if the mutex is held, the first waiter is moved to the mutex's queue; its
//!   owner's unlock wakes it later. Otherwise it is woken.
//! * `notify_all`: every waiter is moved to the mutex's queue (one is woken first when the mutex
//!   is free), so they take the mutex one at a time instead of all waking at once.
//!
//! A moved waiter sleeps on the mutex without having published `blocked_on` itself, so it could
//! not lend its attributes to the mutex's owner. So each waiter records the band of its
//! scheduling rank in `state` before it sleeps (the highest since the queue was last empty),
//! and when that band may beat the owner's rank, a notification wakes instead of moving: the
//! woken waiter then waits for the mutex itself, lending as it goes to sleep. Bands are exact
//! for the usual rank (SCHED_OTHER at nice 0), so between equal threads at nice 0 nothing
//! changes; between equal threads of another rank a notification wakes where it could have
//! moved. The band never drops while waiters remain, so it may overstate (a better waiter
//! left), which costs at most a wake-up instead of a move.

use crate::loom::{
    AtomicUsize, FilterOp, Ordering, ParkResult, ParkToken, RequeueOp, UnparkResult, UnparkToken,
    const_fn, park, unpark_filter, unpark_requeue,
};
use crate::mutex::MutexGuard;
use crate::mutex::poison::map_result;
use crate::mutex::raw::TOKEN_HANDOFF;
use crate::word::RawMutex;
use std::fmt;
use std::sync::{LockResult, PoisonError};
use std::time::{Duration, Instant};

/// Unpark token for a waiter woken straight from the condvar queue: it must lock the mutex.
const TOKEN_NOTIFIED: UnparkToken = UnparkToken(0);

/// A condition variable for [`crate::Mutex`], with std's API.
///
/// ```
/// use proxy_lock::{Condvar, Mutex};
/// use std::sync::Arc;
///
/// let pair = Arc::new((Mutex::new(false), Condvar::new()));
/// let pair2 = Arc::clone(&pair);
/// std::thread::spawn(move || {
///     let (lock, cvar) = &*pair2;
///     *lock.lock().unwrap() = true;
///     cvar.notify_one();
/// });
/// let (lock, cvar) = &*pair;
/// let started = cvar.wait_while(lock.lock().unwrap(), |started| !*started).unwrap();
/// assert!(*started);
/// ```
pub struct Condvar {
    /// The waiters' mutex and their best rank band; see the module docs.
    state: AtomicUsize,
}

/// The low bits of `Condvar::state` that hold the band: a `RawMutex` address leaves them free.
const BAND_BITS: usize = 0b11;
const _: () = assert!(std::mem::align_of::<RawMutex>() > BAND_BITS);

/// Whether a timed wait returned because the time ran out, as std's.
#[derive(Debug, PartialEq, Eq, Copy, Clone)]
pub struct WaitTimeoutResult(bool);

impl WaitTimeoutResult {
    /// True if the wait ended because the time ran out.
    ///
    /// ```
    /// use std::time::Duration;
    /// let m = proxy_lock::Mutex::new(());
    /// let cv = proxy_lock::Condvar::new();
    /// let (_g, r) = cv.wait_timeout(m.lock().unwrap(), Duration::from_millis(1)).unwrap();
    /// assert!(r.timed_out());
    /// ```
    pub fn timed_out(&self) -> bool {
        self.0
    }
}

impl Condvar {
    const_fn! {
        /// A condition variable nobody waits on.
        ///
        /// ```
        /// static CV: proxy_lock::Condvar = proxy_lock::Condvar::new();
        /// CV.notify_all();
        /// ```
        pub fn new() -> Condvar {
            Condvar { state: AtomicUsize::new(0) }
        }
    }

    /// Unlocks, sleeps until notified, and locks again. Spurious wake-ups are possible, as
    /// with std; `Err` if the mutex is poisoned when the guard comes back.
    ///
    /// # Panics
    ///
    /// If another thread waits on this condvar with a different mutex.
    ///
    /// ```
    /// use proxy_lock::{Condvar, Mutex};
    /// let m = Mutex::new(0);
    /// let cv = Condvar::new();
    /// std::thread::scope(|s| {
    ///     s.spawn(|| {
    ///         *m.lock().unwrap() = 1;
    ///         cv.notify_all();
    ///     });
    ///     let mut g = m.lock().unwrap();
    ///     while *g == 0 {
    ///         g = cv.wait(g).unwrap();
    ///     }
    /// });
    /// ```
    pub fn wait<'a, T: ?Sized>(&self, guard: MutexGuard<'a, T>) -> LockResult<MutexGuard<'a, T>> {
        let (guard, _) = self.wait_until(guard, None);
        relock_result(guard)
    }

    /// Waits while `condition` holds. See [`Condvar::wait`].
    ///
    /// ```
    /// use proxy_lock::{Condvar, Mutex};
    /// let m = Mutex::new(0);
    /// let cv = Condvar::new();
    /// std::thread::scope(|s| {
    ///     s.spawn(|| {
    ///         *m.lock().unwrap() = 3;
    ///         cv.notify_one();
    ///     });
    ///     let g = cv.wait_while(m.lock().unwrap(), |v| *v != 3).unwrap();
    ///     assert_eq!(*g, 3);
    /// });
    /// ```
    pub fn wait_while<'a, T: ?Sized, F>(
        &self,
        mut guard: MutexGuard<'a, T>,
        mut condition: F,
    ) -> LockResult<MutexGuard<'a, T>>
    where
        F: FnMut(&mut T) -> bool,
    {
        while condition(&mut *guard) {
            guard = self.wait(guard)?;
        }
        Ok(guard)
    }

    /// Waits at most `dur`. See [`Condvar::wait`].
    ///
    /// ```
    /// use std::time::Duration;
    /// let m = proxy_lock::Mutex::new(());
    /// let cv = proxy_lock::Condvar::new();
    /// let (_g, r) = cv.wait_timeout(m.lock().unwrap(), Duration::from_millis(2)).unwrap();
    /// assert!(r.timed_out());
    /// ```
    pub fn wait_timeout<'a, T: ?Sized>(
        &self,
        guard: MutexGuard<'a, T>,
        dur: Duration,
    ) -> LockResult<(MutexGuard<'a, T>, WaitTimeoutResult)> {
        let (guard, timed_out) = self.wait_until(guard, Instant::now().checked_add(dur));
        map_result(relock_result(guard), |g| (g, WaitTimeoutResult(timed_out)))
    }

    /// Waits at most `ms` milliseconds, as std's deprecated method.
    #[deprecated(note = "replaced by `Condvar::wait_timeout`, as in std")]
    pub fn wait_timeout_ms<'a, T: ?Sized>(
        &self,
        guard: MutexGuard<'a, T>,
        ms: u32,
    ) -> LockResult<(MutexGuard<'a, T>, bool)> {
        map_result(
            self.wait_timeout(guard, Duration::from_millis(ms.into())),
            |(g, r)| (g, !r.timed_out()),
        )
    }

    /// Waits while `condition` holds, for at most `dur` in all. The result says whether the time
    /// ran out with the condition still true.
    ///
    /// ```
    /// use std::time::Duration;
    /// let m = proxy_lock::Mutex::new(false);
    /// let cv = proxy_lock::Condvar::new();
    /// let (g, r) = cv
    ///     .wait_timeout_while(m.lock().unwrap(), Duration::from_millis(2), |ready| !*ready)
    ///     .unwrap();
    /// assert!(r.timed_out() && !*g);
    /// ```
    pub fn wait_timeout_while<'a, T: ?Sized, F>(
        &self,
        mut guard: MutexGuard<'a, T>,
        dur: Duration,
        mut condition: F,
    ) -> LockResult<(MutexGuard<'a, T>, WaitTimeoutResult)>
    where
        F: FnMut(&mut T) -> bool,
    {
        let start = Instant::now();
        loop {
            if !condition(&mut *guard) {
                return Ok((guard, WaitTimeoutResult(false)));
            }
            let Some(left) = dur.checked_sub(start.elapsed()) else {
                return Ok((guard, WaitTimeoutResult(true)));
            };
            guard = self.wait_timeout(guard, left)?.0;
        }
    }

    /// Wakes one waiter, or moves it to the mutex's queue if the mutex is held.
    ///
    /// ```
    /// let cv = proxy_lock::Condvar::new();
    /// cv.notify_one(); // nobody waits: nothing happens
    /// ```
    #[inline]
    pub fn notify_one(&self) {
        // Relaxed: a waiter stores this before it releases the mutex, and a notifier that
        // cannot see it cannot have observed the waiter's predicate change either (std's
        // contract); the slow path re-checks under the queue lock.
        let state = self.state.load(Ordering::Relaxed);
        if state != 0 {
            self.notify_slow(state, false);
        }
    }

    /// Wakes every waiter, moving them onto the mutex's queue so they get it one at a time.
    ///
    /// ```
    /// let cv = proxy_lock::Condvar::new();
    /// cv.notify_all(); // nobody waits: nothing happens
    /// ```
    #[inline]
    pub fn notify_all(&self) {
        // Relaxed: see notify_one.
        let state = self.state.load(Ordering::Relaxed);
        if state != 0 {
            self.notify_slow(state, true);
        }
    }

    #[cold]
    fn notify_slow(&self, state: usize, all: bool) {
        let mutex = state & !BAND_BITS;
        // SAFETY: `mutex` is the address of the RawMutex of a thread that is waiting here: it
        // was stored by a waiter and is only cleared, under the queue lock, when the queue
        // empties, and a waiter's mutex outlives its wait (the waiter borrows it).
        let raw = || unsafe { &*(mutex as *const RawMutex) };
        // The band as the notify's first load saw it: a hint; a stale one only picks waking
        // over moving, or the reverse for a waiter that came after this notification.
        let wake = crate::donor::band_may_lend_to_owner(raw(), state & BAND_BITS);
        if wake && all {
            self.wake_all();
            return;
        }
        let validate = || {
            // Relaxed: under the queue lock, which orders every change to `self.state`.
            if self.state.load(Ordering::Relaxed) & !BAND_BITS != mutex {
                // Everyone we saw was woken or timed out, and newer waiters use another mutex.
                return RequeueOp::Abort;
            }
            // Waking (as if the mutex were free) lets a better waiter lend to the owner.
            let held = !wake && raw().mark_parked_if_locked();
            match (all, held) {
                (false, true) => RequeueOp::RequeueOne,
                (false, false) => RequeueOp::UnparkOne,
                (true, true) => RequeueOp::RequeueAll,
                (true, false) => RequeueOp::UnparkOneRequeueRest,
            }
        };
        let callback = |op: RequeueOp, result: UnparkResult| {
            let emptied = match op {
                RequeueOp::UnparkOne | RequeueOp::RequeueOne => !result.have_more_threads,
                _ => true,
            };
            if emptied {
                // Relaxed: under the queue lock, as above.
                self.state.store(0, Ordering::Relaxed);
            }
            if op == RequeueOp::UnparkOneRequeueRest && result.requeued_threads != 0 {
                raw().mark_parked();
            }
            TOKEN_NOTIFIED
        };
        // SAFETY: both keys are addresses of this crate's objects (this condvar, a live mutex);
        // the callbacks do not panic.
        unsafe { unpark_requeue(self.key(), raw().park_key(), validate, callback) };
    }

    /// Wakes every waiter, each to lock the mutex itself (and lend as it waits for it).
    #[cold]
    fn wake_all(&self) {
        let callback = |result: UnparkResult| {
            if !result.have_more_threads {
                // Relaxed: under the queue lock, like every change to it.
                self.state.store(0, Ordering::Relaxed);
            }
            TOKEN_NOTIFIED
        };
        // SAFETY: the key is this condvar's address; the callbacks do not panic.
        unsafe { unpark_filter(self.key(), |_| FilterOp::Unpark, callback) };
    }

    fn key(&self) -> usize {
        self as *const Self as usize
    }

    /// The wait itself: releases the mutex as the thread goes to sleep, and owns it again on
    /// return. Returns the guard and whether the deadline passed.
    fn wait_until<'a, T: ?Sized>(
        &self,
        guard: MutexGuard<'a, T>,
        deadline: Option<Instant>,
    ) -> (MutexGuard<'a, T>, bool) {
        let raw = MutexGuard::mutex(&guard).raw();
        let me = MutexGuard::me(&guard);
        let mutex_addr = raw as *const RawMutex as usize;
        let mut wrong_mutex = false;
        let mut requeued = false;
        // We are on a CPU holding the mutex: run the sections published on it before we
        // sleep, rather than leaving them to a caller that would have to be woken for them.
        raw.serve_published(me);
        // Computed before the queue lock is taken: it may read the kernel.
        let my_band = crate::donor::waiter_band(me);
        let validate = || {
            // Relaxed, load and store: under the queue lock, like the reset when the queue
            // empties, so the band of every queued waiter is in it.
            let state = self.state.load(Ordering::Relaxed);
            let mutex = state & !BAND_BITS;
            if mutex != 0 && mutex != mutex_addr {
                wrong_mutex = true;
                return false;
            }
            let band = (state & BAND_BITS).max(my_band);
            if mutex == 0 || band != state & BAND_BITS {
                self.state.store(mutex_addr | band, Ordering::Relaxed);
            }
            true
        };
        // SAFETY: `me` holds the mutex (we have its guard); the guard is kept, not dropped, and
        // is valid again once we relock below.
        // Without serving: user code must not run inside the parking lot's `before_sleep`.
        // Sections published meanwhile are passed on to their callers.
        let before_sleep = || unsafe { raw.unlock_without_serving_as(me) };
        let timed_out = |key: usize, was_last: bool| {
            // A waiter moved to the mutex's queue was notified; it did not time out.
            requeued = key != self.key();
            if !requeued && was_last {
                // Relaxed: under the queue lock.
                self.state.store(0, Ordering::Relaxed);
            }
        };
        // SAFETY: the key is this condvar's address; the callbacks do not panic, and
        // `before_sleep` only unparks.
        let result = unsafe {
            park(
                self.key(),
                validate,
                before_sleep,
                timed_out,
                ParkToken(me.addr()),
                deadline,
            )
        };
        if wrong_mutex {
            panic!("proxy_lock::Condvar: used with more than one Mutex at the same time");
        }
        if result == ParkResult::Unparked(TOKEN_HANDOFF) {
            // Moved to the mutex's queue and handed the mutex by its unlocker.
            me.acquired();
        } else {
            raw.lock_as(me);
        }
        (guard, result == ParkResult::TimedOut && !requeued)
    }
}

/// The guard after a wait, as std reports it: `Err` if the mutex is now poisoned.
fn relock_result<T: ?Sized>(guard: MutexGuard<'_, T>) -> LockResult<MutexGuard<'_, T>> {
    if MutexGuard::mutex(&guard).is_poisoned() {
        Err(PoisonError::new(guard))
    } else {
        Ok(guard)
    }
}

impl Default for Condvar {
    fn default() -> Condvar {
        Condvar::new()
    }
}

impl fmt::Debug for Condvar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Condvar").finish_non_exhaustive()
    }
}
