//! The lock word and the three unlock policies.
//!
//! # The lock word
//!
//! One `usize`: the address of the owner's task record, with flag bits in the low bits that the
//! record's alignment leaves free (as the kernel's `mutex::owner`).
//!
//! ```text
//!   bits 63..6            bit 4      bit 3      bit 2     bit 1      bit 0
//!  +---------------------+----------+----------+---------+----------+------+
//!  | owner record (or 0) | POISONED | REQUESTS | DONATED | SPINNING |PARKED|
//!  +---------------------+----------+----------+---------+----------+------+
//! ```
//!
//! * owner 0: the lock is free. Owner `p`: the thread whose record is at `p` holds it.
//! * `PARKED`: threads may be asleep in the parking lot under this lock's address. Set by a
//!   waiter before it parks; cleared only under the parking lot's queue lock, by whoever sees the
//!   queue become empty (an unlocker that woke the last waiter, or the last waiter timing out).
//!   A stale `PARKED` with an empty queue is harmless: it only sends the next unlock down the
//!   slow path.
//! * `SPINNING`: a waiter may be spinning on a CPU, registered in the `spinner` slot, ready to
//!   be handed the lock: a `Handoff` waiter before it sleeps, or under any policy a waiter that
//!   would lend or is real-time, while the owner runs. It only sends unlocks to the slow
//!   path, which looks at the slot; a stale bit costs one slow unlock, never correctness.
//! * `DONATED`: some waiter on this lock is listed in the donation ledger (`donor`), so the
//!   owner may be boosted. Set and cleared only under the ledger lock, and kept across owners.
//!   While it is set, no unlock takes the fast path: the slow path hands the lock to the best
//!   lender (`blocked_donor`), and whoever takes the lock next reconciles.
//! * `REQUESTS`: sections published by `Mutex::run` may wait on the `requests` stack. Set by a
//!   publisher (an RMW on a held word), cleared by the holder right before it takes the stack,
//!   kept by every handover. Its unlock runs them first (`crate::proxy`), and a word is never
//!   left free with it set and nobody on the way to serve: an unlock that freed such a word
//!   takes it back, and a holder that ran out of budget woke a caller to come and serve.
//! * `POISONED`: the `Mutex` is poisoned (a holder panicked; std's rules, `mutex::poison`).
//!   Set by the holder, cleared by anyone (`clear_poison`), kept by every handover and
//!   release. Keeping it in the word costs the unpoisoned fast path nothing: a lock taken
//!   from the exact `UNLOCKED` word was not poisoned, so only the slow path reads the bit. A
//!   bare `RawMutex` (`lock_api`) never sets it.
//!
//! # The spinner slot
//!
//! `spinner` is 0 or a waiter's record address `A` (A spins). The slot, not the word,
//! arbitrates between the spinner and an unlocker: the spinner withdraws with `A -> 0`, an
//! unlocker claims it with the same `A -> 0`, and exactly one of the two CASes wins, so a
//! spinner whose withdrawal fails knows it was chosen. If A withdraws and registers again in
//! between, the claim still succeeds, which is right: A is again waiting for this very lock.
//! The unlocker dereferences `A` only after its claim won (it clears A's `blocked_on`, then
//! writes A into the word), so a waiter that withdraws and exits cannot be touched after it is
//! gone. The claim empties the slot, so the next waiter (typically the unlocker itself, coming
//! back for the lock) can register while A is still on its way in: a slot that stayed taken
//! until A noticed its handoff sent that waiter to sleep, and made every later handoff a
//! wake-up. Invariant: the owner is never in the slot. A claimed spinner whose wait is
//! published (`blocked_on`) and sees it cleared writes itself into the word if the unlocker
//! has not yet: an unlocker preempted between its claim and its write must not hold up the
//! spinner, and its own write is conditioned on its still owning the lock.
//!
//! Taking the lock is a CAS that installs the taker's record address, so the owner is recorded
//! in the same instruction that acquires: there is no instant at which the lock is held by
//! "nobody knows".
//!
//! # Policies
//!
//! * `Spin`: unlock frees the word, then wakes one waiter, which competes with anyone arriving.
//! * `Handoff`: unlock with waiters writes a waiter's record into the word; the word never
//!   shows "free" while anyone waits, so nobody barges. A waiter spinning on a CPU is chosen
//!   before a sleeping one: handing to a sleeper leaves the lock idle for a whole wake-up, and
//!   with more threads than CPUs that convoy made strict handoff up to 470x slower than
//!   spinning here (the same effect cost the kernel's handoff 6-13x on `perf bench sched messaging`).
//!   So that sleepers cannot starve behind spinners, once the queue has waited about 1 ms the
//!   next unlock serves its first sleeper instead.
//! * `Adaptive`: as `Spin`, but when the parking lot reports that the queue's fairness timer
//!   expired (on average every 0.5 ms, never more than 1 ms) the unlock hands off instead, so no
//!   waiter waits behind barging for longer than about a millisecond.

mod handoff;

use super::spin::SpinWait;
use crate::chain::Deadlock;
use crate::donor::Spin;
use crate::loom::{
    AtomicU8, AtomicU32, AtomicUsize, FilterOp, Ordering, ParkResult, ParkToken, Pin, UnparkResult,
    UnparkToken, const_fn, monotonic_us, park, unpark_filter,
};
use crate::proxy::{Requests, Served, Wakes};
use crate::task::{Me, TASK_ALIGN, Task, WakeInFlight};
use crate::{LockId, Policy, Tid};
use handoff::Spinner;
use std::time::Instant;

/// Threads may be parked on this lock.
const PARKED: usize = 1;
/// A waiter may be spinning, registered in `RawMutex::spinner` (Handoff only).
const SPINNING: usize = 2;
/// Waiters listed in the donation ledger lend to this lock's owner.
const DONATED: usize = 4;
/// Sections published by `Mutex::run` may be waiting on the `requests` stack. A holder never
/// frees the word with this bit set, unless it has passed the sections on (`proxy`'s bound)
/// and woken the caller that takes over: it keeps the lock and serves them instead
/// (`RawMutex::release_or_keep`).
const REQUESTS: usize = 8;
/// The `Mutex` is poisoned.
const POISONED: usize = 16;
/// Every flag bit. Must stay below the record alignment so an address never overlaps a flag.
const FLAGS: usize = PARKED | SPINNING | DONATED | REQUESTS | POISONED;
/// The flags that stay with the lock whoever holds it, and when it is freed.
const KEPT_BY_RELEASE: usize = SPINNING | DONATED | REQUESTS | POISONED;
const _: () = assert!(FLAGS < TASK_ALIGN);
/// The word of a free lock nobody waits for.
const UNLOCKED: usize = 0;

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

#[inline]
fn owner_of(word: usize) -> usize {
    word & !FLAGS
}

/// The raw lock: no data, no poisoning. Usable with `lock_api`.
///
/// ```
/// use lock_api::RawMutex as _;
/// type Mutex<T> = lock_api::Mutex<proxy_lock::RawMutex, T>;
///
/// let m = Mutex::new(1);
/// *m.lock() += 1;
/// assert_eq!(*m.lock(), 2);
/// ```
///
/// Layout: `repr(C)` with the lock word last, so it sits next to what follows it in a `Mutex`
/// (the poison flag and the data), and 32 bytes in all. A `Mutex<u64>` that straddled two cache
/// lines measured 10-15% slower under contention than one that did not, and the smaller the
/// struct, the rarer the straddle.
#[repr(C)]
pub struct RawMutex {
    /// The spinner slot; see the module docs.
    spinner: AtomicUsize,
    /// Sections published by `Mutex::run`, newest first (`crate::proxy`).
    requests: Requests,
    /// When the current sleepers started waiting, or when one was last served: the low 32 bits
    /// of `monotonic_us`, compared with wrapping arithmetic. Written by the waiter that sets
    /// `PARKED` and by unlockers; read by unlockers.
    sleepers_since: AtomicU32,
    /// Spinner handoffs since the last fairness check. Touched only by the lock holder.
    handoffs_unchecked: AtomicU8,
    policy: Policy,
    /// The lock word; see the module docs.
    word: AtomicUsize,
}

impl RawMutex {
    const_fn! {
        /// A free lock with the given unlock policy.
        ///
        /// ```
        /// use proxy_lock::{Policy, RawMutex};
        /// static RAW: RawMutex = RawMutex::with_policy(Policy::Handoff);
        /// assert_eq!(RAW.policy(), Policy::Handoff);
        /// ```
        pub fn with_policy(policy: Policy) -> RawMutex {
            RawMutex {
                word: AtomicUsize::new(UNLOCKED),
                spinner: AtomicUsize::new(0),
                requests: Requests::new(),
                sleepers_since: AtomicU32::new(0),
                handoffs_unchecked: AtomicU8::new(0),
                policy,
            }
        }
    }

    /// This lock's unlock policy.
    ///
    /// ```
    /// use lock_api::RawMutex as _;
    /// assert_eq!(proxy_lock::RawMutex::INIT.policy(), proxy_lock::Policy::Adaptive);
    /// ```
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// An identity for diagnostics: the lock's address.
    ///
    /// ```
    /// let m = proxy_lock::Mutex::new(());
    /// assert_eq!(m.raw().id(), m.id());
    /// ```
    pub fn id(&self) -> LockId {
        LockId(self.addr())
    }

    /// Whether some thread holds the lock right now (a snapshot; it may change at once).
    ///
    /// ```
    /// let m = proxy_lock::Mutex::new(());
    /// let g = m.lock().unwrap();
    /// assert!(m.raw().is_locked());
    /// drop(g);
    /// assert!(!m.raw().is_locked());
    /// ```
    pub fn is_locked(&self) -> bool {
        // Relaxed: a snapshot that orders nothing.
        owner_of(self.word.load(Ordering::Relaxed)) != 0
    }

    /// Kernel tid of the thread holding the lock, or `None` when it is free. A snapshot.
    ///
    /// ```
    /// let m = proxy_lock::Mutex::new(());
    /// let _g = m.lock().unwrap();
    /// assert_eq!(m.raw().owner_tid(), Some(proxy_lock::current_tid()));
    /// ```
    pub fn owner_tid(&self) -> Option<Tid> {
        self.owner_record(&crate::loom::pin()).map(Task::tid)
    }

    /// The owner's task record, readable for as long as `pin` lives; `None` when free. The one
    /// place that turns an owner address from the word into a record.
    pub(crate) fn owner_record<'p>(&self, _pin: &'p Pin) -> Option<&'p Task> {
        // Acquire pairs with the acquiring CAS or handoff store, so the record the address names
        // is fully initialised for us.
        let owner = owner_of(self.word.load(Ordering::Acquire));
        // SAFETY: the word was read while pinned, so a nonzero owner is a record that is alive
        // until the pin drops (records are retired through the epoch once their thread released
        // every lock), or forever because its thread exited holding this lock (see `task`).
        (owner != 0).then(|| unsafe { &*(owner as *const Task) })
    }

    #[inline]
    fn addr(&self) -> usize {
        self as *const Self as usize
    }

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
        let mut spin = SpinWait::with_budget(crate::loom::RUN_SPIN_ROUNDS);
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

    /// Whether the lock is poisoned (`Mutex` poisoning; a snapshot when not held).
    #[inline]
    pub(crate) fn is_poisoned(&self) -> bool {
        // Relaxed: under the lock, the acquire of the lock orders it; outside the lock it is a
        // snapshot, as with std.
        self.word.load(Ordering::Relaxed) & POISONED != 0
    }

    /// Poisons the lock: a guard dropped while panicking, or a section run by `Mutex::run`
    /// panicked. Called by the holder; its release then takes the slow path, which keeps it.
    pub(crate) fn poison(&self) {
        // Relaxed: written while the lock is held; the unlock's Release publishes it.
        self.word.fetch_or(POISONED, Ordering::Relaxed);
    }

    /// Clears the poisoned state.
    pub(crate) fn clear_poison(&self) {
        // Relaxed: as in `is_poisoned`; an RMW, since others change the word's other bits.
        self.word.fetch_and(!POISONED, Ordering::Relaxed);
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

    /// Whether threads are queued on this lock (a snapshot).
    pub(crate) fn has_parked(&self) -> bool {
        // Relaxed: a hint; a wrong answer only costs or skips one wait for a spinner.
        self.word.load(Ordering::Relaxed) & PARKED != 0
    }

    /// Whether anyone waits: queued, or spinning for a handoff (a snapshot, for `bump`).
    pub(crate) fn has_waiters(&self) -> bool {
        // Relaxed: a hint; a wrong answer only costs or skips one fair unlock.
        self.word.load(Ordering::Relaxed) & FLAGS != 0
    }

    /// Marks the lock as having parked threads if it is held, for a Condvar about to requeue its
    /// waiters onto this lock's queue. Returns whether it is held. Called under the parking lot's
    /// queue locks of both addresses.
    pub(crate) fn mark_parked_if_locked(&self) -> bool {
        // Relaxed: against a concurrent fast-path unlock, the word's modification order decides:
        // either the unlock's CAS sees PARKED and takes the slow path, which then waits for the
        // queue lock we hold and finds the requeued threads, or we see the lock already free.
        // Against everything else the queue lock orders us.
        self.word
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| {
                (owner_of(w) != 0).then_some(w | PARKED)
            })
            .is_ok()
    }

    /// Marks the lock as having parked threads (a Condvar requeued some onto it).
    pub(crate) fn mark_parked(&self) {
        // Relaxed: as in `mark_parked_if_locked`.
        self.word.fetch_or(PARKED, Ordering::Relaxed);
    }

    /// True if the word shows "free" while sections are flagged as published (`REQUESTS`). An
    /// unlock never leaves that behind unless it reached the combining bound, so loom models
    /// use it to show that a published section never waits behind a free word.
    #[doc(hidden)]
    pub fn free_with_published_sections(&self) -> bool {
        // Relaxed: a snapshot for tests.
        let word = self.word.load(Ordering::Relaxed);
        owner_of(word) == 0 && word & REQUESTS != 0
    }

    /// True if the word shows "free" while threads are flagged as parked. `Handoff` never
    /// produces this on its own (only a Condvar waking one waiter and moving the rest does), so
    /// loom models use it to show that nobody can barge past a queued waiter.
    #[doc(hidden)]
    pub fn free_with_parked_waiters(&self) -> bool {
        // Relaxed: a snapshot for tests.
        let word = self.word.load(Ordering::Relaxed);
        owner_of(word) == 0 && word & PARKED != 0
    }

    /// Whether a waiter is registered in the spinner slot, and whether sections are flagged
    /// as published (`REQUESTS`): what a fork test checks its child inherited.
    #[doc(hidden)]
    pub fn spinner_and_published_sections(&self) -> (bool, bool) {
        // Relaxed: a snapshot for tests.
        let spinner = self.spinner.load(Ordering::Relaxed) != 0;
        (spinner, self.word.load(Ordering::Relaxed) & REQUESTS != 0)
    }

    /// True if the owner named by the word is also registered in the spinner slot, read in
    /// that order. The slot is emptied by the claim that chooses a spinner, before the word
    /// names it, and an owner never registers, so this never holds for a thread that locks
    /// once; loom models use it to show that a handoff leaves the slot free for the next
    /// waiter at once (module docs).
    #[doc(hidden)]
    pub fn owner_in_spinner_slot(&self) -> bool {
        // Acquire, then the slot: a slot entry older than the owner we saw is visible.
        let owner = owner_of(self.word.load(Ordering::Acquire));
        owner != 0 && self.spinner.load(Ordering::Acquire) == owner
    }

    /// Sets `DONATED` (the ledger listed a waiter on this lock). Under the ledger lock.
    pub(crate) fn mark_donated(&self) {
        // Relaxed: the ledger lock orders the bookkeeping; the bit only has to be in the
        // word's modification order before the owner's next unlock CAS, which then fails.
        self.word.fetch_or(DONATED, Ordering::Relaxed);
    }

    /// Clears `DONATED` (the ledger's last waiter on this lock left). Under the ledger lock.
    pub(crate) fn clear_donated(&self) {
        // Relaxed: as in `mark_donated`; a late clear costs one slow unlock.
        self.word.fetch_and(!DONATED, Ordering::Relaxed);
    }

    /// The stack of sections published on this lock.
    pub(crate) fn requests(&self) -> &Requests {
        &self.requests
    }

    /// Whether waiters lend to this lock's owner (a snapshot, for `donor::after_wait`).
    pub(crate) fn is_donated(&self) -> bool {
        // Relaxed: a routing hint; the ledger decides under its own lock.
        self.word.load(Ordering::Relaxed) & DONATED != 0
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

    /// The holder is about to take the request stack: clear `REQUESTS` first, so a section
    /// pushed after the take sets it again.
    pub(crate) fn clear_requests_flag(&self) {
        // Acquire: pairs with a publisher's Release RMW, so its push is visible to our take.
        self.word.fetch_and(!REQUESTS, Ordering::Acquire);
    }

    /// The holder put sections back on the stack: its release must not take the fast path.
    pub(crate) fn set_requests_flag(&self) {
        // Relaxed: only the holder's own unlock, later in its program order, reads it.
        self.word.fetch_or(REQUESTS, Ordering::Relaxed);
    }

    /// The parking-lot key of this lock.
    pub(crate) fn park_key(&self) -> usize {
        self.addr()
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
            if self.policy == Policy::Handoff {
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
            me.set_blocked_on(self.addr(), deadline.is_some());
            let plan = crate::donor::before_spinning(me, self, deadline.is_some())?;
            let spins = plan != Spin::No;
            let parked = if spins && self.spin_while_owner_runs(me, deadline, plan) {
                ParkResult::Unparked(TOKEN_HANDOFF)
            } else if spins && owner_of(self.word.load(Ordering::Relaxed)) == UNLOCKED {
                // Freed while we spun (a fifth to two fifths of the spins that end without
                // a handoff, in the demo's `chain` and `direct`): go and take it. Parking would
                // only find that out under the queue's bucket lock, which the unlocker may
                // still hold, and a SCHED_IDLE unlocker preempted there left the foreground
                // asleep on that lock, having lent nothing, for a whole 22-25 ms hog burst
                // (traced twice in `chain`). Relaxed: a routing hint; the barge validates.
                ParkResult::Invalid
            } else {
                // Held, perhaps by a new owner since the spin: lend to whoever that is before
                // sleeping (`park` validates the word again).
                if spins {
                    crate::donor::before_sleep(me, self, deadline.is_some(), true)?;
                }
                self.park(me, deadline)
            };
            me.clear_blocked_on();
            crate::donor::after_wait(me, self.is_donated());
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
        let set = self
            .word
            .compare_exchange_weak(seen, seen | PARKED, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok();
        if set && self.policy == Policy::Handoff {
            // Relaxed: a fairness hint; a stale value only shifts when a sleeper is served.
            self.sleepers_since
                .store(monotonic_us() as u32, Ordering::Relaxed);
        }
        set
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
        if passed == Passed::ToSleeper && self.policy == Policy::Handoff && serve && !stepped_aside
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
        if self.policy == Policy::Handoff && !force_fair && self.try_spinner_first() {
            return Passed::Left;
        }
        // Until the woken sleeper is awake, chain walks that reach it go on to us.
        let wake = WakeInFlight::new(me);
        let how = std::cell::Cell::new(Passed::Left);
        // The filter runs before the callback, both under the queue lock.
        let first_waiter = std::cell::Cell::new(0);
        let filter = |token: ParkToken| {
            if first_waiter.get() == 0 {
                first_waiter.set(token.0);
                FilterOp::Unpark
            } else {
                FilterOp::Stop
            }
        };
        let callback = |result: UnparkResult| {
            if result.unparked_threads != 0 {
                // SAFETY: the token is the record of the thread we are unparking, still queued.
                unsafe { wake.mark(first_waiter.get()) };
            }
            let still_parked = if result.have_more_threads { PARKED } else { 0 };
            let hand_over = result.unparked_threads != 0
                && (force_fair
                    || match self.policy {
                        Policy::Handoff => true,
                        Policy::Adaptive => result.be_fair,
                        Policy::Spin => false,
                    });
            if hand_over {
                if self.policy == Policy::Handoff && result.have_more_threads {
                    // The remaining sleepers' patience starts again.
                    self.sleepers_since
                        .store(monotonic_us() as u32, Ordering::Relaxed);
                }
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
        let preferred = crate::donor::preferred_waiter(self)?;
        let hand_over = force_fair || self.policy != Policy::Spin;
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

impl std::fmt::Debug for RawMutex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawMutex")
            .field("policy", &self.policy)
            .field("owner_tid", &self.owner_tid())
            .finish()
    }
}
