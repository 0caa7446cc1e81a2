//! The lock protocol: taking and releasing the lock word (`crate::word`) under the three
//! unlock policies.
//!
//! # Policies
//!
//! * `Spin`: unlock frees the word, then wakes one waiter, which competes with anyone arriving.
//! * `Handoff`: unlock with waiters writes a waiter's record into the word; the word never
//!   shows "free" while anyone waits, so nobody barges. A waiter spinning on a CPU is chosen
//!   before a sleeping one: handing to a sleeper leaves the lock idle for a whole wake-up, and
//!   with more threads than CPUs the waiters convoy behind those idle gaps (the kernel's
//!   strict handoff pays for the same reason). So that sleepers cannot starve behind
//!   spinners, once the queue has waited about 1 ms the next unlock serves its first sleeper
//!   instead.
//! * `Adaptive`: as `Spin`, but when the parking lot reports that the queue's fairness timer
//!   expired (on average every 0.5 ms, never more than 1 ms) the unlock hands off instead, so no
//!   waiter waits behind barging for longer than about a millisecond.

mod handoff;

use super::wait::wait_for;
use crate::Policy;
use crate::chain::Deadlock;
use crate::donor::Spin;
use crate::loom::{
    FilterOp, Ordering, ParkResult, ParkToken, UnparkResult, UnparkToken, monotonic_us, park,
    unpark_filter,
};
use crate::proxy::{Served, Wakes};
use crate::spin::SpinWait;
use crate::task::{Me, WakeInFlight};
use crate::word::{
    DONATED, FLAGS, KEPT_BY_RELEASE, PARKED, POISONED, REQUESTS, RawMutex, SPINNING, UNLOCKED,
    owner_of,
};
use handoff::Spinner;
use std::time::Instant;

/// After how many spin rounds a waiter checks whether it outranks the owner (and then lends
/// instead of spinning on); see `spin_once_more`. Three rounds are 14 spin hints.
const LEND_CHECK_AFTER_ROUNDS: u32 = 3;

/// Unpark token: the lock is free again, try to take it.
const TOKEN_RETRY: UnparkToken = UnparkToken(0);
/// Unpark token: the lock was handed to you; the word already names you as owner.
pub(crate) const TOKEN_HANDOFF: UnparkToken = UnparkToken(1);

/// Whether a lock just taken is poisoned (`POISONED`).
pub(crate) type Poisoned = bool;

/// What an unlock's slow path did with the lock.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Passed {
    /// Kept it, to serve sections published meanwhile (`RawMutex::release_or_keep`).
    Kept,
    /// Freed it, or handed it to a waiter on a CPU.
    Left,
    /// Handed it to a parked waiter, which owns it from now on but has yet to wake up.
    ToSleeper,
}

impl RawMutex {
    /// Takes the lock for `me`, sleeping as long as needed. Returns whether it is poisoned.
    #[inline]
    pub(crate) fn lock_as(&self, me: Me) -> Poisoned {
        if self.try_lock_fast(me) {
            return false;
        }
        self.lock_contended(me)
    }

    /// `lock_as` once the fast path failed.
    #[cold]
    pub(crate) fn lock_contended(&self, me: Me) -> Poisoned {
        self.lock_slow(me, None).unwrap_or_else(|d| d.raise());
        self.is_poisoned()
    }

    /// Takes the lock for `me`, or reports the deadlock cycle that makes that impossible (for
    /// a `run` caller, which must withdraw its section before it panics).
    pub(crate) fn lock_or_deadlock(&self, me: Me) -> Result<(), Deadlock> {
        if self.try_lock_fast(me) {
            return Ok(());
        }
        self.lock_slow(me, None).map(drop)
    }

    /// Takes the lock for `me` if that is possible without waiting; whether it is poisoned.
    #[inline]
    pub(crate) fn try_lock_as(&self, me: Me) -> Option<Poisoned> {
        if self.try_lock_fast(me) {
            Some(false)
        } else {
            self.try_barge(me).then(|| self.is_poisoned())
        }
    }

    /// Takes the lock for `me` if it is free, or becomes free while we spin briefly and
    /// nobody waits or has published a section (a `run` caller: with tiny sections the
    /// holder is gone within a few pauses, and running our own section beats having it run
    /// for us, which moves the section's cache lines to the holder and back). Whether it is
    /// poisoned; `None` if it did not take it.
    pub(crate) fn try_lock_spinning(&self, me: Me) -> Option<Poisoned> {
        let mut spin = SpinWait::with_budget(crate::tuning::RUN_SPIN_ROUNDS);
        loop {
            if let Some(poisoned) = self.try_lock_as(me) {
                return Some(poisoned);
            }
            // Relaxed: a hint; `try_lock_as` validates.
            let word = self.word.load(Ordering::Relaxed);
            // Queued or spinning guard waiters get the lock first, and published sections
            // are served first: publishing is the faster way in then.
            if word & (PARKED | SPINNING | REQUESTS) != 0 || !spin.spin() {
                return None;
            }
        }
    }

    /// Takes the lock for `me` unless `deadline` passes first; whether it is poisoned.
    #[inline]
    pub(crate) fn lock_until_as(&self, me: Me, deadline: Option<Instant>) -> Option<Poisoned> {
        if self.try_lock_fast(me) {
            return Some(false);
        }
        let taken = self.lock_slow(me, deadline).unwrap_or_else(|d| d.raise());
        taken.then(|| self.is_poisoned())
    }

    /// Releases the lock `me` holds.
    ///
    /// # Safety
    /// `me` holds this lock.
    #[inline]
    pub(crate) unsafe fn unlock_as(&self, me: Me) {
        // SAFETY: forwarded.
        unsafe { self.release(me, false, true) }
    }

    /// Releases the lock `me` holds without running published sections: a Condvar parking
    /// (inside the parking lot's `before_sleep`, where user code must not run) passes them on.
    ///
    /// # Safety
    /// `me` holds this lock.
    pub(crate) unsafe fn unlock_without_serving_as(&self, me: Me) {
        // SAFETY: forwarded.
        unsafe { self.release(me, false, false) }
    }

    /// Releases the lock `me` holds and, if anyone waits, hands it to the first waiter.
    ///
    /// # Safety
    /// `me` holds this lock.
    pub(crate) unsafe fn unlock_fair_as(&self, me: Me) {
        // SAFETY: forwarded.
        unsafe { self.release(me, true, true) }
    }

    /// # Safety
    /// `me` holds this lock.
    #[inline]
    unsafe fn release(&self, me: Me, fair: bool, serve: bool) {
        me.released();
        // Release: the critical section happens-before the next owner's acquiring CAS. Any
        // flag in the word makes the CAS fail and sends us to the slow path.
        if let Err(word) =
            self.word
                .compare_exchange(me.addr(), UNLOCKED, Ordering::Release, Ordering::Relaxed)
        {
            self.unlock_slow(me, fair, serve, word);
        }
    }

    /// Panics if `me` holds this lock (a `run` caller about to publish would wait for itself).
    pub(crate) fn assert_not_held_by(&self, me: Me) {
        // Relaxed: only `me` can make itself the owner, so this cannot change under us.
        if owner_of(self.word.load(Ordering::Relaxed)) == me.addr() {
            self_deadlock(me);
        }
    }

    /// A `run` caller pushed a section: make sure it is served. True if the lock was free and
    /// `me` took it (its unlock serves the stack); false if the holder will serve it.
    pub(crate) fn flag_requests_or_take(&self, me: Me) -> bool {
        // Relaxed load: every path below re-validates with a CAS.
        let mut word = self.word.load(Ordering::Relaxed);
        loop {
            if owner_of(word) == 0 {
                if self.try_barge(me) {
                    // Our unlock must not take the fast path past our own section.
                    self.set_requests_flag();
                    return true;
                }
                // Relaxed: as above.
                word = self.word.load(Ordering::Relaxed);
                continue;
            }
            // An RMW even when the bit is set already, and Release: against the holder's
            // Acquire clear-then-take (`clear_requests_flag`), either the holder's take sees our
            // push or our RMW comes after its clear and sets the bit again (module docs of
            // `proxy`). Acquire is not needed: we read nothing the holder wrote.
            match self.word.compare_exchange_weak(
                word,
                word | REQUESTS,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return false,
                Err(now) => word = now,
            }
        }
    }

    /// Runs the sections published on this lock, which `me` holds and keeps holding (up to the
    /// budget; the rest are passed on).
    pub(crate) fn serve_published(&self, me: Me) {
        // Relaxed: a hint; `serve` clears the bit with Acquire before it looks.
        if self.word.load(Ordering::Relaxed) & REQUESTS != 0 {
            let mut wakes = Wakes::new(me);
            let _ = crate::proxy::serve(self, me, &mut crate::proxy::budget(), &mut wakes);
        }
    }

    /// One try that succeeds only from a completely free word: the uncontended path. Such a
    /// lock is not poisoned.
    #[inline]
    pub(crate) fn try_lock_fast(&self, me: Me) -> bool {
        // Acquire: the previous owner's critical section happens-before ours. Release: a chain
        // walker that reads our address from the word (Acquire) and then reads our task record
        // must see the record initialised; this CAS publishes it (free on x86, where every CAS
        // is a full barrier). Relaxed on failure: we learn nothing that needs ordering.
        let taken = self
            .word
            .compare_exchange(UNLOCKED, me.addr(), Ordering::AcqRel, Ordering::Relaxed)
            .is_ok();
        if taken {
            me.acquired();
        }
        taken
    }

    /// Takes a free lock even if others are queued (barging), keeping `PARKED`. Returns false if
    /// the lock is held.
    fn try_barge(&self, me: Me) -> bool {
        // Relaxed load: the CAS below re-validates and carries the Acquire.
        let mut word = self.word.load(Ordering::Relaxed);
        while owner_of(word) == 0 {
            // Acquire: the previous owner's critical section happens-before ours. Release: a
            // waiter that slept cleared its `blocked_on` before this; whoever sees us as owner
            // must see that too (free on x86, where every CAS is a full barrier).
            match self.word.compare_exchange_weak(
                word,
                me.addr() | (word & FLAGS),
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    me.acquired();
                    if word & DONATED != 0 {
                        // The waiters' loans now belong to us.
                        crate::donor::took_donated_lock(me);
                    }
                    return true;
                }
                Err(now) => word = now,
            }
        }
        false
    }

    /// Spins while that may pay, then parks until the lock is ours or `deadline` passes.
    #[cold]
    fn lock_slow(&self, me: Me, deadline: Option<Instant>) -> Result<bool, Deadlock> {
        let mut spin = SpinWait::default();
        let handoff = self.policy() == Policy::Handoff;
        // Handoff: whether this waiter has had its turn as the spinner since it last slept.
        let mut spun = false;
        loop {
            if self.try_barge(me) {
                return Ok(true);
            }
            // Relaxed: only decides between spinning, flagging and parking; each of those
            // re-validates with a CAS or under the queue lock.
            let word = self.word.load(Ordering::Relaxed);
            if owner_of(word) == 0 {
                continue;
            }
            if owner_of(word) == me.addr() {
                if deadline.is_some() {
                    // A timed lock on a lock we hold could only time out; say so at once.
                    return Ok(false);
                }
                self_deadlock(me);
            }
            if handoff {
                if !spun {
                    spun = true;
                    if self.spin_for_handoff(me) {
                        return Ok(true);
                    }
                    continue;
                }
            } else if word & PARKED == 0 && self.spin_once_more(me, &mut spin) {
                // Spinning pays only while nobody sleeps: with sleepers, the lock goes to them.
                continue;
            }
            if word & PARKED == 0 && !self.set_parked(word) {
                continue;
            }
            let timed = deadline.is_some();
            let spin_first = |plan: Spin| {
                if plan == Spin::No {
                    None
                } else if self.spin_while_owner_runs(me, deadline, plan) {
                    Some(ParkResult::Unparked(TOKEN_HANDOFF))
                } else if owner_of(self.word.load(Ordering::Relaxed)) == UNLOCKED {
                    // Freed while we spun: go and take it. Parking would only find that out
                    // under the queue's bucket lock, which a preempted unlocker may still
                    // hold. Relaxed: a routing hint; the barge validates.
                    Some(ParkResult::Invalid)
                } else {
                    // Held, perhaps by a new owner since the spin: lend to whoever that is
                    // before sleeping (`park` validates the word again).
                    None
                }
            };
            let parked = wait_for(me, self.into(), timed, spin_first, || {
                self.park(me, deadline)
            })?;
            match parked {
                ParkResult::Unparked(TOKEN_HANDOFF) => {
                    me.acquired();
                    return Ok(true);
                }
                ParkResult::TimedOut => return Ok(false),
                ParkResult::Unparked(_) | ParkResult::Invalid => {
                    spin = SpinWait::default();
                    spun = false;
                }
            }
        }
    }

    /// One more round of spinning, if the budget allows and spinning can still pay. After a
    /// few short rounds a waiter that outranks the owner stops: its loan is what gets a
    /// preempted or low-priority owner going, and the rest of the budget (about 6 µs) only
    /// delayed it. Not at once, so that contention between equals, most of which the first
    /// rounds settle, does not pay for the check.
    fn spin_once_more(&self, me: Me, spin: &mut SpinWait) -> bool {
        if spin.rounds() == LEND_CHECK_AFTER_ROUNDS && crate::donor::outranks_owner(me, self) {
            spin.give_up();
            return false;
        }
        spin.spin()
    }

    /// Sets `PARKED` on a held word, unless the word changed since `seen`.
    fn set_parked(&self, seen: usize) -> bool {
        // Relaxed: the flag is read under the queue lock by `park`'s validation and the unlock
        // slow path; the queue lock orders them.
        self.word
            .compare_exchange_weak(seen, seen | PARKED, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    fn park(&self, me: Me, deadline: Option<Instant>) -> ParkResult {
        // Sleep only if the lock is still held and flagged; checked under the queue lock, so an
        // unlocker that clears PARKED after this check will find us in the queue.
        let validate = || {
            let word = self.word.load(Ordering::Relaxed);
            owner_of(word) != 0 && word & PARKED != 0
        };
        let timed_out = |_key, was_last: bool| {
            if was_last {
                // Relaxed: under the queue lock, like every other change to PARKED.
                self.word.fetch_and(!PARKED, Ordering::Relaxed);
            }
        };
        if self.policy() == Policy::Handoff {
            // Our patience as a sleeper passed over for spinners starts now (`handoff`).
            me.task().set_parked_at_us(monotonic_us() as u32);
        }
        // SAFETY: the key is this lock's address, which only this crate parks on; the callbacks
        // do not panic.
        let result = unsafe {
            park(
                self.addr(),
                validate,
                || {},
                timed_out,
                ParkToken(me.addr()),
                deadline,
            )
        };
        if result == ParkResult::Unparked(TOKEN_HANDOFF) {
            // The unparker's store and the parking lot's wake-up order the handoff; the check
            // documents the invariant and catches a broken one in debug builds.
            debug_assert_eq!(owner_of(self.word.load(Ordering::Acquire)), me.addr());
        }
        result
    }

    /// The unlock slow path: passes the lock on (`pass_on`), and around that gives back the
    /// loans of a boosted unlocker that will hold no lock (`donor::before_passing_on`).
    #[cold]
    fn unlock_slow(&self, me: Me, force_fair: bool, serve: bool, word: usize) {
        // A poisoned lock nobody waits for: free it as the fast path would, poison kept.
        // Release: as the fast path's.
        if word == me.addr() | POISONED
            && self
                .word
                .compare_exchange(word, POISONED, Ordering::Release, Ordering::Relaxed)
                .is_ok()
        {
            return;
        }
        // Decided before the lock passes: the donor that takes it must know whether to leave
        // our restore to us.
        let restoring = crate::donor::before_passing_on(me, serve);
        let (passed, to_donor) = self.pass_on(me, force_fair, serve, word);
        let stepped_aside = crate::donor::after_passing_on(me, restoring, to_donor);
        if passed == Passed::ToSleeper
            && self.policy() == Policy::Handoff
            && serve
            && !stepped_aside
        {
            // Under Handoff the lock now belongs to a thread that has yet to run, and every
            // other waiter queues behind it: give it our CPU, in case it was woken here. (A
            // Condvar waiter, `serve` false, is about to sleep anyway.)
            crate::loom::step_aside();
        }
    }

    /// First the published sections (`crate::proxy::serve`, up to its budget), then the
    /// waiters (`pass_lock`). Sections published after our last take keep the lock with us,
    /// and we serve them too: freed, the word would leave them to whoever took it next, and
    /// their callers sleep on their slots, not on the lock. (This once freed the word and took
    /// it back after: an unlocker preempted in between, by a thread that outranked it before
    /// its waiters lent to it, left the sections there for as long as it was off its CPU.)
    /// `word` is what the failed fast-path CAS saw. Returns how the lock left us, and whether
    /// it went to its lenders (`pass_lock`).
    fn pass_on(&self, me: Me, force_fair: bool, serve: bool, mut word: usize) -> (Passed, bool) {
        // The budget and the wake list, set up by the first pass that finds sections: most slow
        // unlocks (guard waiters queued) have none, and need not fill a 512-byte buffer. Callers
        // whose sections ran are woken when this drops, after the lock is passed on.
        let mut serving: Option<(u32, Wakes)> = None;
        loop {
            // A routing hint; `serve` clears the bit with Acquire before it looks.
            let served = word & REQUESTS != 0;
            let passed = served && {
                let (budget, wakes) = serving.get_or_insert_with(|| {
                    // A panicking thread passes sections on instead of running user code
                    // while it unwinds.
                    let budget = if serve && !std::thread::panicking() {
                        crate::proxy::budget()
                    } else {
                        0
                    };
                    (budget, Wakes::new(me))
                });
                crate::proxy::serve(self, me, budget, wakes) == Served::Passed
            };
            // With the sections served, the word may carry no flag any more: free it as the
            // fast path would (Release: our sections and the ones we ran come first).
            if served
                && !passed
                && self
                    .word
                    .compare_exchange(me.addr(), UNLOCKED, Ordering::Release, Ordering::Relaxed)
                    .is_ok()
            {
                return (Passed::Left, false);
            }
            // A holder that passed the sections on woke a caller to serve them: it may free the
            // word with sections still published.
            let (how, to_donor) = self.pass_lock(me, force_fair, !passed);
            if how != Passed::Kept {
                return (how, to_donor);
            }
            // Relaxed: a routing hint, as the fast path's failed CAS was.
            word = self.word.load(Ordering::Relaxed);
        }
    }

    /// Passes the lock on: to a spinning waiter (Handoff), else by waking one sleeper and
    /// handing the lock over (Handoff, a fair unlock, or Adaptive's fairness timer), else by
    /// freeing it for the woken sleeper to compete for (Spin, Adaptive otherwise). Returns
    /// how: `Kept` instead of freed (`release_or_keep`, with `keep_for_requests`), and whether
    /// donors waited.
    fn pass_lock(&self, me: Me, force_fair: bool, keep_for_requests: bool) -> (Passed, bool) {
        // Relaxed: a routing hint; `unlock_to_donor` works under the queue lock.
        if self.word.load(Ordering::Relaxed) & DONATED != 0 {
            // The donor may not be queued yet (it is on its way to sleep, or was preempted on
            // the way): then serve whoever is.
            let how = self
                .unlock_to_donor(me, force_fair, keep_for_requests)
                .unwrap_or_else(|| self.unlock_to_queue(me, force_fair, keep_for_requests));
            return (how, true);
        }
        (
            self.unlock_to_queue(me, force_fair, keep_for_requests),
            false,
        )
    }

    /// The unlock slow path without lenders: a spinner first (Handoff), else the first
    /// sleeper, handed the lock or woken to compete for it as the policy says.
    fn unlock_to_queue(&self, me: Me, force_fair: bool, keep_for_requests: bool) -> Passed {
        let policy = self.policy();
        if policy == Policy::Handoff && !force_fair && self.try_spinner_first() {
            return Passed::Left;
        }
        // Until the woken sleeper is awake, chain walks that reach it go on to us.
        let wake = WakeInFlight::new(me);
        let how = std::cell::Cell::new(Passed::Left);
        // A Handoff lock's next sleeper waits its patience from now (`handoff`), so one
        // sleeper is served per patience: each served one restamps the one behind it.
        let restamp = (policy == Policy::Handoff).then(|| monotonic_us() as u32);
        // The filter runs before the callback, both under the queue lock.
        let first_waiter = std::cell::Cell::new(0);
        let filter = |token: ParkToken| {
            if first_waiter.get() == 0 {
                first_waiter.set(token.0);
                return FilterOp::Unpark;
            }
            if let Some(now) = restamp {
                // SAFETY: a token on this lock's queue is the record of a queued thread, alive
                // under the queue lock. Stamped even if the first is not handed the lock: that
                // only delays this one's turn by one patience.
                unsafe { crate::task::record_at(token.0) }.set_parked_at_us(now);
            }
            FilterOp::Stop
        };
        let callback = |result: UnparkResult| {
            if result.unparked_threads != 0 {
                // SAFETY: the token is the record of the thread we are unparking, still queued.
                unsafe { wake.mark(first_waiter.get()) };
            }
            let still_parked = if result.have_more_threads { PARKED } else { 0 };
            let hand_over = result.unparked_threads != 0
                && (force_fair
                    || match policy {
                        Policy::Handoff => true,
                        Policy::Adaptive => result.be_fair,
                        Policy::Spin => false,
                    });
            if hand_over {
                how.set(Passed::ToSleeper);
                // SAFETY: the token is the record of the thread we are unparking, still queued.
                unsafe { self.hand_to_parked(first_waiter.get(), still_parked) }
            } else if result.unparked_threads == 0
                && self.hand_to_spinner(false, None) == Spinner::Handed
            {
                // Nobody was really asleep (a stale PARKED); a spinner takes the lock.
                TOKEN_RETRY
            } else {
                how.set(self.release_or_keep(me, still_parked, keep_for_requests));
                TOKEN_RETRY
            }
        };
        // SAFETY: the key is this lock's address; the callbacks do not panic.
        unsafe { unpark_filter(self.addr(), filter, callback) };
        how.get()
    }

    /// Unlock of a lock with listed lenders: wake the best of them (`donor::preferred_waiter`,
    /// the kernel's `blocked_donor`) and, under Handoff and Adaptive or a fair unlock, hand it
    /// the lock; under Spin, free the lock for it to compete for. Spinners are passed over: the
    /// lender outranks them. `None` if the preferred waiter is no longer queued (then the
    /// ordinary path serves the queue) or none is listed; else how the lock left us.
    #[cold]
    fn unlock_to_donor(&self, me: Me, force_fair: bool, keep_for_requests: bool) -> Option<Passed> {
        let preferred = crate::donor::preferred_waiter(me, self)?;
        let (settles, preferred) = (preferred.settles, preferred.token);
        let hand_over = force_fair || self.policy() != Policy::Spin;
        // A donor spinning while we ran (`spin_while_owner_runs`) takes the lock where it is,
        // without a wake-up.
        if hand_over && self.hand_to_spinner(false, Some(preferred)) == Spinner::Handed {
            return Some(Passed::Left);
        }
        let filter = |token: ParkToken| {
            if token.0 == preferred {
                FilterOp::Unpark
            } else {
                FilterOp::Skip
            }
        };
        let wake = WakeInFlight::new(me);
        let served = std::cell::Cell::new(None);
        let callback = |result: UnparkResult| {
            if result.unparked_threads == 0 {
                return TOKEN_RETRY; // not queued (any more): the caller falls back
            }
            // SAFETY: the token is the record of the thread we are unparking, still queued.
            unsafe { wake.mark(preferred) };
            let still_parked = if result.have_more_threads { PARKED } else { 0 };
            if hand_over {
                served.set(Some(Passed::ToSleeper));
                if settles {
                    // SAFETY: the token is the record of the thread we are unparking.
                    unsafe { crate::donor::handed_over_settled(preferred) };
                }
                // SAFETY: the token is the record of the thread we are unparking, still queued.
                unsafe { self.hand_to_parked(preferred, still_parked) }
            } else {
                served.set(Some(self.release_or_keep(
                    me,
                    still_parked,
                    keep_for_requests,
                )));
                TOKEN_RETRY
            }
        };
        // SAFETY: the key is this lock's address; the callbacks do not panic.
        unsafe { unpark_filter(self.addr(), filter, callback) };
        served.get()
    }

    /// Makes the parked thread whose record is `waiter` the owner: its wait ends (blocked_on
    /// cleared) before the word names it, so no reader sees an owner waiting on its own lock.
    /// Returns the token that tells it so.
    ///
    /// # Safety
    /// As `task::clear_blocked_on_of_waiter`: `waiter` is the token of a thread being unparked
    /// from this lock's queue, under the queue lock.
    unsafe fn hand_to_parked(&self, waiter: usize, parked: usize) -> UnparkToken {
        // SAFETY: forwarded.
        unsafe { crate::task::clear_blocked_on_of_waiter(waiter) };
        self.release_to(waiter, parked);
        crate::stats::count_handoff();
        TOKEN_HANDOFF
    }

    /// Stores `owner | parked` into the word, keeping `SPINNING` (and the spinner registered),
    /// `DONATED`, `REQUESTS` and `POISONED`. Called by the owner under the queue lock.
    fn release_to(&self, owner: usize, parked: usize) {
        self.release_with(parked, |_| owner);
    }

    /// Frees the word as `release_to` does, for a woken sleeper or nobody; but if
    /// `keep_for_requests` and sections are published (`REQUESTS`), keeps it for `me`, still
    /// with `parked` as the queue's new state (`Kept`): `me` serves them next. Decided in the
    /// same read-modify-write that would free the word, so a publisher's flag is either seen
    /// here or set on a word it found free (and then it takes the lock itself). Under the
    /// queue lock.
    fn release_or_keep(&self, me: Me, parked: usize, keep_for_requests: bool) -> Passed {
        let keeps = |word: usize| keep_for_requests && word & REQUESTS != 0;
        let before = self.release_with(parked, |w| if keeps(w) { me.addr() } else { UNLOCKED });
        if keeps(before) {
            Passed::Kept
        } else {
            Passed::Left
        }
    }

    /// Stores `owner(word) | parked` into the word, keeping its `KEPT_BY_RELEASE` flags;
    /// returns the word it replaced.
    fn release_with(&self, parked: usize, owner: impl Fn(usize) -> usize) -> usize {
        // Release: the critical section happens-before whoever takes the lock next (when the
        // word names us again, it orders nothing we need). A CAS loop, not a store: a spinner
        // may register or withdraw, the ledger may set or clear DONATED, and a `run` caller may
        // set REQUESTS, concurrently.
        self.word
            .fetch_update(Ordering::Release, Ordering::Relaxed, |w| {
                Some(owner(w) | parked | (w & KEPT_BY_RELEASE))
            })
            .unwrap_or_else(|w| w)
    }
}

#[cold]
#[inline(never)]
fn self_deadlock(me: Me) -> ! {
    panic!(
        "proxy_lock: deadlock: thread {} tried to lock a mutex it already holds",
        me.task().tid()
    )
}
