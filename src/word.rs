//! The lock word: `RawMutex`'s state, what each bit means, and who owns the lock. The protocol
//! that takes and releases it lives in `mutex::raw`; the layers in between (chains, donation,
//! the proxy's serving side) read the owner and flip the flags they own through the methods
//! here.
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
//! `spinner` is 0 or a waiter's record address `A` (A spins), or-ed with the lock's `Policy`
//! in its two low bits, which never change (`SpinnerSlot`). The slot, not the word,
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

use crate::loom::{AtomicUsize, Ordering, Pin, const_fn};
use crate::task::{TASK_ALIGN, Task, WAIT_KIND};
use rw::{RwWord, WAITS_TO_READ, WAITS_TO_WRITE};

pub(crate) mod rw;
use crate::{LockId, Policy, Tid};

/// Threads may be parked on this lock.
pub(crate) const PARKED: usize = 1;
/// A waiter may be spinning, registered in `RawMutex::spinner` (Handoff only).
pub(crate) const SPINNING: usize = 2;
/// Waiters listed in the donation ledger lend to this lock's owner.
pub(crate) const DONATED: usize = 4;
/// Sections published by `Mutex::run` may be waiting on the `requests` stack. A holder never
/// frees the word with this bit set, unless it has passed the sections on (`proxy`'s bound)
/// and woken the caller that takes over: it keeps the lock and serves them instead
/// (`RawMutex::release_or_keep`).
pub(crate) const REQUESTS: usize = 8;
/// The `Mutex` is poisoned.
pub(crate) const POISONED: usize = 16;
/// Every flag bit. Must stay below the record alignment so an address never overlaps a flag.
pub(crate) const FLAGS: usize = PARKED | SPINNING | DONATED | REQUESTS | POISONED;
/// The flags that stay with the lock whoever holds it, and when it is freed.
pub(crate) const KEPT_BY_RELEASE: usize = SPINNING | DONATED | REQUESTS | POISONED;
const _: () = assert!(FLAGS < TASK_ALIGN);
/// The word of a free lock nobody waits for.
pub(crate) const UNLOCKED: usize = 0;

#[inline]
pub(crate) fn owner_of(word: usize) -> usize {
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
/// Layout: two words, the spinner slot (with the policy) and the lock word, `repr(C)` with the
/// lock word last, so it sits next to what follows it in a `Mutex` (the data). Everything else
/// a contended lock needs lives elsewhere, found by its address: sleepers in the parking lot,
/// published sections in `proxy`'s table, lenders in the donation ledger.
#[repr(C)]
pub struct RawMutex {
    /// The spinner slot and the policy; see the module docs.
    pub(crate) spinner: SpinnerSlot,
    /// The lock word; see the module docs.
    pub(crate) word: AtomicUsize,
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
                spinner: SpinnerSlot::new(policy),
                word: AtomicUsize::new(UNLOCKED),
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
        self.spinner.policy()
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
    pub(crate) fn addr(&self) -> usize {
        self as *const Self as usize
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
    pub(crate) fn free_with_published_sections(&self) -> bool {
        // Relaxed: a snapshot for tests.
        let word = self.word.load(Ordering::Relaxed);
        owner_of(word) == 0 && word & REQUESTS != 0
    }

    /// True if the word shows "free" while threads are flagged as parked. `Handoff` never
    /// produces this on its own (only a Condvar waking one waiter and moving the rest does), so
    /// loom models use it to show that nobody can barge past a queued waiter.
    pub(crate) fn free_with_parked_waiters(&self) -> bool {
        // Relaxed: a snapshot for tests.
        let word = self.word.load(Ordering::Relaxed);
        owner_of(word) == 0 && word & PARKED != 0
    }

    /// Whether a waiter is registered in the spinner slot, and whether sections are flagged
    /// as published (`REQUESTS`): what a fork test checks its child inherited.
    pub(crate) fn spinner_and_published_sections(&self) -> (bool, bool) {
        // Relaxed: a snapshot for tests.
        let spinner = self.spinner.spinner(Ordering::Relaxed) != 0;
        (spinner, self.word.load(Ordering::Relaxed) & REQUESTS != 0)
    }

    /// True if the owner named by the word is also registered in the spinner slot, read in
    /// that order. The slot is emptied by the claim that chooses a spinner, before the word
    /// names it, and an owner never registers, so this never holds for a thread that locks
    /// once; loom models use it to show that a handoff leaves the slot free for the next
    /// waiter at once (module docs).
    pub(crate) fn owner_in_spinner_slot(&self) -> bool {
        // Acquire, then the slot: a slot entry older than the owner we saw is visible.
        let owner = owner_of(self.word.load(Ordering::Acquire));
        owner != 0 && self.spinner.spinner(Ordering::Acquire) == owner
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

    /// Whether waiters lend to this lock's owner (a snapshot, for `donor::after_wait`).
    pub(crate) fn is_donated(&self) -> bool {
        // Relaxed: a routing hint; the ledger decides under its own lock.
        self.word.load(Ordering::Relaxed) & DONATED != 0
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
}

impl std::fmt::Debug for RawMutex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawMutex")
            .field("policy", &self.policy())
            .field("owner_tid", &self.owner_tid())
            .finish()
    }
}

/// The spinner slot: 0 or the record address of the registered spinner, or-ed with the
/// lock's policy in the bits the record alignment leaves free. The policy bits never change, so
/// every CAS on the slot carries them through unchanged.
pub(crate) struct SpinnerSlot {
    slot: AtomicUsize,
    /// Models only: the policy again, readable without a model step: a loom load of the slot
    /// at every policy check multiplied the interleavings of the donation models, for a value
    /// that never changes.
    #[cfg(loom)]
    policy: Policy,
}

/// The slot's policy bits: `Policy as usize`.
const POLICY_BITS: usize = 3;
const _: () = assert!(POLICY_BITS < TASK_ALIGN);
const _: () = assert!((Policy::Spin as usize) <= POLICY_BITS);
const _: () = assert!((Policy::Handoff as usize) <= POLICY_BITS);
const _: () = assert!((Policy::Adaptive as usize) <= POLICY_BITS);

impl SpinnerSlot {
    const_fn! {
        fn new(policy: Policy) -> SpinnerSlot {
            SpinnerSlot {
                slot: AtomicUsize::new(policy as usize),
                #[cfg(loom)]
                policy,
            }
        }
    }

    /// The lock's unlock policy.
    #[inline]
    pub(crate) fn policy(&self) -> Policy {
        match self.policy_bits() {
            0 => Policy::Spin,
            1 => Policy::Handoff,
            _ => Policy::Adaptive,
        }
    }

    /// The slot's policy bits, which every CAS on the slot carries through.
    #[inline]
    fn policy_bits(&self) -> usize {
        #[cfg(loom)]
        return self.policy as usize;
        // Relaxed: the bits are written once, before the lock is shared.
        #[cfg(not(loom))]
        return self.slot.load(Ordering::Relaxed) & POLICY_BITS;
    }

    /// The registered spinner's record address, or 0.
    pub(crate) fn spinner(&self, order: Ordering) -> usize {
        self.slot.load(order) & !POLICY_BITS
    }

    /// Registers `me` if the slot is empty. AcqRel on success: Acquire orders the registrant
    /// after the previous spinner's withdrawal; Release makes its record visible to a claim.
    pub(crate) fn register(&self, me: usize) -> bool {
        let policy = self.policy_bits();
        self.slot
            .compare_exchange(policy, me | policy, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    /// Empties the slot if `spinner` is registered: a withdrawal by the spinner or a claim by
    /// an unlocker, of which exactly one wins (module docs).
    pub(crate) fn take(&self, spinner: usize, success: Ordering) -> bool {
        let policy = self.policy_bits();
        self.slot
            .compare_exchange(spinner | policy, policy, success, Ordering::Relaxed)
            .is_ok()
    }
}

/// A lock a thread waits for, with how it waits: what `blocked_on` names (its address, with
/// the kind in `task::WAIT_KIND`), and what chain walks and the ledger follow to its holders.
#[derive(Clone, Copy)]
pub(crate) enum LockRef<'a> {
    Mutex(&'a RawMutex),
    /// An `RwLock`, waited for by a reader.
    Read(&'a RwWord),
    /// An `RwLock`, waited for by a writer.
    Write(&'a RwWord),
}

impl<'a> From<&'a RawMutex> for LockRef<'a> {
    fn from(lock: &'a RawMutex) -> LockRef<'a> {
        LockRef::Mutex(lock)
    }
}

impl<'a> LockRef<'a> {
    /// The value `blocked_on` and the ledger keep for this wait.
    pub(crate) fn tagged(self) -> usize {
        match self {
            LockRef::Mutex(m) => m.addr(),
            LockRef::Read(w) => w.addr() | WAITS_TO_READ,
            LockRef::Write(w) => w.addr() | WAITS_TO_WRITE,
        }
    }

    /// The lock `tagged` names.
    ///
    /// # Safety
    /// `tagged` came from `LockRef::tagged` of a lock that is alive for `'a`.
    pub(crate) unsafe fn from_tagged(tagged: usize) -> LockRef<'a> {
        let addr = tagged & !WAIT_KIND;
        // SAFETY: by the caller's contract, `addr` is a live lock of the kind the tag says
        // (an `RwWord` is the first and only field of a `RawRwLock`, at its address).
        unsafe {
            match tagged & WAIT_KIND {
                WAITS_TO_READ => LockRef::Read(&*(addr as *const RwWord)),
                WAITS_TO_WRITE => LockRef::Write(&*(addr as *const RwWord)),
                _ => LockRef::Mutex(&*(addr as *const RawMutex)),
            }
        }
    }

    pub(crate) fn id(self) -> LockId {
        match self {
            LockRef::Mutex(m) => m.id(),
            LockRef::Read(w) | LockRef::Write(w) => w.id(),
        }
    }

    /// The threads this wait waits for, readable while `pin` lives, into `out` (emptied
    /// first): a mutex's owner; an `RwLock`'s writer, readers or parked writers
    /// (`RwWord::owners`).
    pub(crate) fn owners<'p>(self, pin: &'p Pin, out: &mut Vec<&'p Task>) {
        out.clear();
        match self {
            LockRef::Mutex(m) => out.extend(m.owner_record(pin)),
            LockRef::Read(w) => w.owners(false, pin, out),
            LockRef::Write(w) => w.owners(true, pin, out),
        }
    }

    /// The first of `owners`, and the others into `rest` (emptied first). A mutex has one
    /// owner at most, so a walk that passes only mutexes never touches `rest` and allocates
    /// nothing.
    pub(crate) fn first_owner<'p>(
        self,
        pin: &'p Pin,
        rest: &mut Vec<&'p Task>,
    ) -> Option<&'p Task> {
        rest.clear();
        match self {
            LockRef::Mutex(m) => m.owner_record(pin),
            LockRef::Read(w) | LockRef::Write(w) => {
                w.owners(matches!(self, LockRef::Write(_)), pin, rest);
                (!rest.is_empty()).then(|| rest.remove(0))
            }
        }
    }

    /// Sets `DONATED` (the ledger listed a waiter on this lock). Under the ledger lock.
    pub(crate) fn mark_donated(self) {
        match self {
            LockRef::Mutex(m) => m.mark_donated(),
            LockRef::Read(w) | LockRef::Write(w) => w.mark_donated(),
        }
    }

    /// Clears `DONATED` (the ledger's last waiter on this lock left). Under the ledger lock.
    pub(crate) fn clear_donated(self) {
        match self {
            LockRef::Mutex(m) => m.clear_donated(),
            LockRef::Read(w) | LockRef::Write(w) => w.clear_donated(),
        }
    }

    /// Whether waiters lend to this lock's holders (a snapshot, for `donor::after_wait`).
    pub(crate) fn is_donated(self) -> bool {
        match self {
            LockRef::Mutex(m) => m.is_donated(),
            LockRef::Read(w) | LockRef::Write(w) => w.is_donated(),
        }
    }
}

impl Task {
    /// Runs `f` on the lock this thread sleeps on (`blocked_on`), inside the walker handshake
    /// (`Task::with_blocked_on`), which keeps the lock alive while `f` runs.
    pub(crate) fn with_blocked_lock<R>(&self, f: impl FnOnce(LockRef<'_>) -> R) -> Option<R> {
        // SAFETY: `with_blocked_on` passes the tagged address of the lock the thread is waiting
        // for, stored by `Me::set_blocked_on` from a `LockRef`, alive until the handshake ends
        // (after `f`).
        self.with_blocked_on(|lock| f(unsafe { LockRef::from_tagged(lock) }))
    }
}
