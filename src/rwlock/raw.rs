//! `RawRwLock`: the reader-writer lock word and the protocol that takes and releases it.
//!
//! The word's layout, its bits and who holds it are `word::rw`'s: chain walks and the
//! donation ledger read it too.
//!
//! # Who gets the lock
//!
//! Nobody is handed a lock while asleep, except for fairness: a lock held by threads still
//! waking up is a convoy (the kernel's switch to strict handoff made messaging 6-13x slower).
//! Unlocks free the word and wake threads to compete for it, as std's and parking_lot's do:
//!
//! * The last reader out wakes one parked writer.
//! * A writer's unlock wakes one parked writer if any, else every parked reader.
//! * A woken writer leaves `WRITERS_PARKED` set until it holds the lock (it is a writer on its
//!   way), so readers that arrive meanwhile still wait for it: overlapping readers cannot
//!   starve a writer.
//! * Readers cannot be starved by writers either: a writer that unlocks while the first parked
//!   reader has waited `RW_READER_PATIENCE_US` (about a millisecond) hands the lock to every
//!   parked reader at once, written into the word under their queue's lock before they run.
//! * Writers that find the lock free take it even when others are parked; readers never pass
//!   a parked writer.
//!
//! A thread that holds a read lock and reads again while a writer is parked can never get it;
//! its wait goes through the deadlock check like any other (`word::rw`: it waits behind the
//! parked writer, which waits for the readers), which reports the cycle.

use crate::donor::Spin;
use crate::loom::{
    FilterOp, Ordering, ParkResult, ParkToken, UnparkResult, UnparkToken, const_fn, park,
    unpark_filter,
};
use crate::mutex::wait::wait_for;
use crate::spin::{ChainEndWatch, SpinWait};
use crate::task::Me;
use crate::tuning::RW_READER_PATIENCE_US;
use crate::word::LockRef;
use crate::word::rw::{
    DONATED, KEPT, ONE_READER, POISONED, READERS_FULL, READERS_PARKED, RwWord, UNLOCKED, WRITER,
    WRITERS_PARKED, holders, readable,
};
use std::cell::Cell;
use std::time::Instant;

/// A woken waiter was handed the lock (readers, for fairness).
const TOKEN_HANDOFF: UnparkToken = UnparkToken(1);
/// A woken waiter competes for the lock again.
const TOKEN_RETRY: UnparkToken = UnparkToken(0);

/// The raw reader-writer lock: no data, no poisoning API. Usable with `lock_api`.
///
/// ```
/// use lock_api::RawRwLock as _;
/// type RwLock<T> = lock_api::RwLock<proxy_lock::RawRwLock, T>;
///
/// let lock = RwLock::new(1);
/// assert_eq!(*lock.read() + *lock.read(), 2);
/// *lock.write() += 1;
/// assert_eq!(*lock.read(), 2);
/// ```
///
/// Layout: the lock word alone; sleepers live in the parking lot, found by its address.
pub struct RawRwLock {
    /// The lock word; see `word::rw`.
    word: RwWord,
}

impl RawRwLock {
    const_fn! {
        /// A free lock.
        ///
        /// ```
        /// static RAW: proxy_lock::RawRwLock = proxy_lock::RawRwLock::new();
        /// # use lock_api::RawRwLock as _;
        /// assert!(!RAW.is_locked());
        /// ```
        pub fn new() -> RawRwLock {
            RawRwLock {
                word: RwWord::new(),
            }
        }
    }

    fn readers_key(&self) -> usize {
        self.word.addr()
    }

    /// The writers' queue: one past the word, an address no other lock parks on.
    fn writers_key(&self) -> usize {
        self.readers_key() + 1
    }

    /// One attempt at a read lock: `Some(poisoned)` if taken. Fails if the lock is not
    /// readable, and also if another thread changed the word meanwhile.
    #[inline]
    fn read_once(&self) -> Option<bool> {
        // Relaxed: the CAS below is what takes the lock.
        let word = self.word.load(Ordering::Relaxed);
        if word & (WRITER | WRITERS_PARKED | READERS_FULL) != 0 {
            return None;
        }
        let new = word + ONE_READER;
        // Acquire: pairs with the Release of the writer that last released the lock, so its
        // writes to the data are seen.
        self.word
            .compare_exchange(word, new, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| word & POISONED != 0)
    }

    /// Takes a read lock if it is readable right now: other readers coming and going do not
    /// make it fail, as with std's. `Some(poisoned)` if taken.
    #[inline]
    pub(crate) fn try_read(&self, me: Me) -> Option<bool> {
        loop {
            if let Some(poisoned) = self.read_once() {
                me.read_acquired(self.word.addr());
                return Some(poisoned);
            }
            // Relaxed: only decides whether to try again.
            let word = self.word.load(Ordering::Relaxed);
            if !readable(word) || word & READERS_FULL != 0 {
                return None;
            }
        }
    }

    /// Takes a read lock, waiting as long as it takes; returns whether it is poisoned.
    #[inline]
    pub(crate) fn read(&self, me: Me) -> bool {
        let poisoned = match self.read_once() {
            Some(poisoned) => poisoned,
            None => return self.read_slow(me, None).unwrap_or(false),
        };
        me.read_acquired(self.word.addr());
        poisoned
    }

    /// Takes a read lock unless `deadline` passes first: `Some(poisoned)` if taken.
    pub(crate) fn read_until(&self, me: Me, deadline: Option<Instant>) -> Option<bool> {
        match self.read_once() {
            Some(poisoned) => {
                me.read_acquired(self.word.addr());
                Some(poisoned)
            }
            None => self.read_slow(me, deadline),
        }
    }

    #[cold]
    fn read_slow(&self, me: Me, deadline: Option<Instant>) -> Option<bool> {
        let mut spin = SpinWait::default();
        loop {
            // Relaxed: only decides between taking, spinning and parking; each re-validates.
            let word = self.word.load(Ordering::Relaxed);
            if readable(word) {
                assert!(
                    word & READERS_FULL == 0,
                    "proxy_lock::RwLock: too many readers"
                );
                let new = word + ONE_READER;
                // Acquire: as in `try_read`.
                if self
                    .word
                    .compare_exchange_weak(word, new, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return Some(self.took(me, word, false));
                }
                continue;
            }
            if word & WRITER != 0 && holders(word) == me.addr() | WRITER {
                if deadline.is_some() {
                    // A timed lock on a lock we hold for writing could only time out.
                    return None;
                }
                self_deadlock(me);
            }
            if word & READERS_PARKED == 0 && spin.spin() {
                continue;
            }
            if !self.raise_flag(word, READERS_PARKED) {
                continue;
            }
            // The park time, for the writers' unlock to judge the readers' patience.
            let token = ParkToken(crate::loom::monotonic_us() as usize);
            let blocked = |word| !readable(word);
            let park = || self.park_flagged(READERS_PARKED, token, deadline, blocked);
            match self.wait_as(me, LockRef::Read(&self.word), deadline, blocked, park) {
                // Handed the lock for fairness. Acquire: the hand-over was written by the
                // unlocker, which the wake orders before us; the poison bit is as it left it.
                Some(ParkResult::Unparked(TOKEN_HANDOFF)) => {
                    let word = self.word.load(Ordering::Acquire);
                    return Some(self.took(me, word, false));
                }
                Some(ParkResult::TimedOut) => return None,
                Some(_) => spin = SpinWait::default(),
                None => {}
            }
        }
    }

    /// `me` took the lock (`write`, or a read) from `word`, on a slow path: notes it, and if
    /// waiters lend to the lock's holders (`DONATED`), takes its share of their loans (the
    /// ledger reconciles). Returns whether the lock is poisoned.
    fn took(&self, me: Me, word: usize, write: bool) -> bool {
        if write {
            me.acquired();
        } else {
            me.read_acquired(self.word.addr());
        }
        if word & DONATED != 0 {
            crate::donor::took_donated_lock(me);
        }
        word & POISONED != 0
    }

    /// Sets `flag` (READERS_PARKED or WRITERS_PARKED) in the word, which was `word`, unless it
    /// is up already. False if the word changed first (the caller looks again).
    fn raise_flag(&self, word: usize, flag: usize) -> bool {
        // Relaxed: the flag is read under that kind's queue lock by `park`'s validation and by
        // whoever wakes the queue; that lock orders them.
        word & flag != 0
            || self
                .word
                .compare_exchange_weak(word, word | flag, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// One wait of `me` for this lock, as `waits` says (`mutex::wait::wait_for`): publishes it,
    /// lends to the holders if they are worse off, spins while the one thread it waits for runs
    /// (if only one), then lends its CPU and sleeps with `park`. `None` if the lock stopped
    /// being `blocked` while it spun (the caller looks again). Panics on a deadlock cycle.
    fn wait_as(
        &self,
        me: Me,
        waits: LockRef<'_>,
        deadline: Option<Instant>,
        blocked: impl Fn(usize) -> bool,
        park: impl FnOnce() -> ParkResult,
    ) -> Option<ParkResult> {
        // Relaxed: a hint for the spin; the caller re-validates what it saw.
        let still_blocked = || blocked(self.word.load(Ordering::Relaxed));
        let spin = |plan: Spin| {
            if plan != Spin::No
                && let Some(mut watch) = ChainEndWatch::new(waits, me, plan.start_grace_us())
            {
                while still_blocked() && watch.still_running() {}
            }
            (!still_blocked()).then_some(None)
        };
        match wait_for(me, waits, deadline.is_some(), spin, || Some(park())) {
            Ok(parked) => parked,
            Err(deadlock) => deadlock.raise(),
        }
    }

    /// Parks as a reader (`flag` READERS_PARKED) or a writer (WRITERS_PARKED), whose flag is
    /// up, in that kind's queue while the flag stays up and the lock is `blocked` for it.
    fn park_flagged(
        &self,
        flag: usize,
        token: ParkToken,
        deadline: Option<Instant>,
        blocked: impl Fn(usize) -> bool,
    ) -> ParkResult {
        let validate = || {
            // Relaxed: under the queue lock (see `raise_flag`).
            let word = self.word.load(Ordering::Relaxed);
            word & flag != 0 && blocked(word)
        };
        let timed_out = |_, last: bool| {
            if last {
                // Relaxed: under the queue lock, which it empties.
                self.word.fetch_and(!flag, Ordering::Relaxed);
            }
        };
        let key = if flag == READERS_PARKED {
            self.readers_key()
        } else {
            self.writers_key()
        };
        // SAFETY: the key is this lock's address (readers) or one past it (writers), which
        // only this lock's waiters park on; the callbacks do not panic.
        unsafe { park(key, validate, || {}, timed_out, token, deadline) }
    }

    /// Releases a read lock held by `me`.
    ///
    /// # Safety
    /// `me` holds a read lock on `self`.
    #[inline]
    pub(crate) unsafe fn read_unlock(&self, me: Me) {
        // The note goes first: a lender that sees this release sees it gone (`word::rw`).
        me.read_releasing(self.word.addr());
        // Release: the reader's reads of the data come before a writer's later writes, and the
        // note's clear before a lender's Acquire mark.
        let word = self.word.fetch_sub(ONE_READER, Ordering::Release);
        debug_assert!(word & WRITER == 0 && holders(word) >= ONE_READER);
        if holders(word) == ONE_READER && word & WRITERS_PARKED != 0 {
            self.wake_a_writer(UNLOCKED);
        }
        if word & DONATED != 0 {
            released_donated(me);
        }
    }

    /// Takes the write lock if it is free right now (a flag changing meanwhile does not make it
    /// fail); `Some(poisoned)` if taken.
    #[inline]
    pub(crate) fn try_write(&self, me: Me) -> Option<bool> {
        // Relaxed: the CAS below is what takes the lock.
        let mut word = self.word.load(Ordering::Relaxed);
        while holders(word) == UNLOCKED {
            // Acquire: pairs with the Release of whoever released the lock last (the writer's
            // writes, the readers' reads). Release: a chain walker that reads our address from
            // the word (Acquire) then reads our task record, which this publishes (free on x86,
            // where every CAS is a full barrier), as the mutex's acquiring CAS does.
            match self.word.compare_exchange_weak(
                word,
                word | me.addr() | WRITER,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(self.took(me, word, true)),
                Err(now) => word = now,
            }
        }
        None
    }

    /// Takes the write lock, waiting as long as it takes; returns whether it is poisoned.
    #[inline]
    pub(crate) fn write(&self, me: Me) -> bool {
        // AcqRel: as in `try_write`.
        if self
            .word
            .compare_exchange(
                UNLOCKED,
                me.addr() | WRITER,
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_ok()
        {
            me.acquired();
            return false;
        }
        self.write_slow(me, None).unwrap_or(false)
    }

    /// Takes the write lock unless `deadline` passes first: `Some(poisoned)` if taken.
    pub(crate) fn write_until(&self, me: Me, deadline: Option<Instant>) -> Option<bool> {
        self.try_write(me).or_else(|| self.write_slow(me, deadline))
    }

    #[cold]
    fn write_slow(&self, me: Me, deadline: Option<Instant>) -> Option<bool> {
        let mut spin = SpinWait::default();
        loop {
            // Relaxed: only decides between taking, spinning and parking; each re-validates.
            let word = self.word.load(Ordering::Relaxed);
            if holders(word) == UNLOCKED {
                // AcqRel: as in `try_write`.
                if self
                    .word
                    .compare_exchange_weak(
                        word,
                        word | me.addr() | WRITER,
                        Ordering::AcqRel,
                        Ordering::Relaxed,
                    )
                    .is_ok()
                {
                    return Some(self.took(me, word, true));
                }
                continue;
            }
            if holders(word) == me.addr() | WRITER {
                if deadline.is_some() {
                    // As in `read_slow`.
                    return None;
                }
                self_deadlock(me);
            }
            if word & WRITERS_PARKED == 0 && spin.spin() {
                continue;
            }
            // The flag goes up before the wait is published: from then on no reader comes in,
            // so the readers a lender finds are all the writer waits for.
            if !self.raise_flag(word, WRITERS_PARKED) {
                continue;
            }
            let blocked = |word| holders(word) != UNLOCKED;
            let token = ParkToken(me.addr());
            let park = || self.park_flagged(WRITERS_PARKED, token, deadline, blocked);
            match self.wait_as(me, LockRef::Write(&self.word), deadline, blocked, park) {
                Some(ParkResult::TimedOut) => {
                    // The last writer to leave cleared WRITERS_PARKED: readers parked behind
                    // it may go now.
                    self.wake_readers_if_readable();
                    return None;
                }
                Some(_) => spin = SpinWait::default(),
                None => {}
            }
        }
    }

    /// Releases the write lock held by `me`.
    ///
    /// # Safety
    /// `me` holds the write lock on `self`.
    #[inline]
    pub(crate) unsafe fn write_unlock(&self, me: Me) {
        me.released();
        // Release: the writer's writes come before the next holder's accesses.
        if self
            .word
            .compare_exchange(
                me.addr() | WRITER,
                UNLOCKED,
                Ordering::Release,
                Ordering::Relaxed,
            )
            .is_err()
        {
            self.write_unlock_slow(me);
        }
    }

    #[cold]
    fn write_unlock_slow(&self, me: Me) {
        if self.release_write(me.addr() | WRITER) & DONATED != 0 {
            released_donated(me);
        }
    }

    /// Releases the write lock held as `mine` (the writer's holders bits) and wakes whom the
    /// policy says; returns the word its release replaced (for `DONATED`).
    fn release_write(&self, mine: usize) -> usize {
        loop {
            // Relaxed: a routing hint; each wake re-reads the word under its queue lock, and
            // the releases below are CASes on exactly this word.
            let word = self.word.load(Ordering::Relaxed);
            if word & READERS_PARKED != 0 {
                if word & WRITERS_PARKED == 0 {
                    // Only readers wait: free the lock and let them all in.
                    // Release: as in `write_unlock`.
                    if self
                        .word
                        .compare_exchange(word, word & KEPT, Ordering::Release, Ordering::Relaxed)
                        .is_ok()
                    {
                        self.wake_readers_if_readable();
                        return word;
                    }
                    continue;
                }
                if let Some(released) = self.hand_to_patient_readers(mine) {
                    return released;
                }
            }
            if word & WRITERS_PARKED != 0 {
                return self.wake_a_writer(mine);
            }
            // Nobody parked: release, keeping the poison. A waiter that set its flag since the
            // load makes this fail, and is woken on the next turn: a plain store would leave it
            // asleep on a free lock.
            // Release: as in `write_unlock`.
            if self
                .word
                .compare_exchange(
                    word,
                    word & (POISONED | DONATED),
                    Ordering::Release,
                    Ordering::Relaxed,
                )
                .is_ok()
            {
                return word;
            }
        }
    }

    /// Turns `me`'s write lock into a read lock, without letting a writer in between; wakes
    /// the parked readers to join it unless a writer waits.
    ///
    /// # Safety
    /// `me` holds the write lock on `self`.
    pub(crate) unsafe fn downgrade(&self, me: Me) {
        // A read lock does not name its holder in the word: the note does.
        me.released();
        me.read_acquired(self.word.addr());
        // Release: the writer's writes come before the readers that join now; the flags stay.
        let word = self
            .word
            .fetch_sub((me.addr() | WRITER) - ONE_READER, Ordering::Release);
        debug_assert_eq!(holders(word), me.addr() | WRITER);
        if word & READERS_PARKED != 0 {
            self.wake_readers_if_readable();
        }
    }

    /// Frees the lock if `from` holds it (`from` is a writer's holders bits, or `UNLOCKED` when
    /// the last reader has just left) and wakes one parked writer to take it. The woken writer
    /// keeps `WRITERS_PARKED` set until it holds the lock; if none was parked the flag goes, and
    /// the readers it held back are woken.
    fn wake_a_writer(&self, from: usize) -> usize {
        let first = Cell::new(true);
        let released = Cell::new(UNLOCKED);
        let filter = |_| {
            if first.replace(false) {
                FilterOp::Unpark
            } else {
                FilterOp::Stop
            }
        };
        let callback = |result: UnparkResult| {
            let writers = if result.unparked_threads > 0 || result.have_more_threads {
                WRITERS_PARKED
            } else {
                0
            };
            // Relaxed first read: the CAS below decides.
            let mut word = self.word.load(Ordering::Relaxed);
            loop {
                // Ours to free, or still free, or taken by a writer that barged in.
                let left = if holders(word) == from {
                    UNLOCKED
                } else {
                    holders(word)
                };
                let new = left | (word & (READERS_PARKED | POISONED | DONATED)) | writers;
                // Release: the unlocker's writes (or the last reader's reads) come before the
                // next holder's accesses.
                match self.word.compare_exchange_weak(
                    word,
                    new,
                    Ordering::Release,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        released.set(word);
                        return TOKEN_RETRY;
                    }
                    Err(now) => word = now,
                }
            }
        };
        // SAFETY: the writers' key of this lock; the callbacks do not panic.
        let result = unsafe { unpark_filter(self.writers_key(), filter, callback) };
        if result.unparked_threads == 0 {
            self.wake_readers_if_readable();
        }
        released.get()
    }

    /// Hands the lock, write-held as `from`, to every parked reader at once if the first of
    /// them has waited `RW_READER_PATIENCE_US`, and returns the word it replaced. `None` if it
    /// has not, or none is parked (the lock is still `from`'s).
    fn hand_to_patient_readers(&self, from: usize) -> Option<usize> {
        let first = Cell::new(true);
        let released = Cell::new(None);
        let patient = Cell::new(false);
        let filter = |token: ParkToken| {
            if first.replace(false) {
                // Read under the queue lock, so after the reader took its stamp. In `usize`,
                // which wraps after 71 minutes on 32-bit targets: a difference of the wrapped
                // values is still right.
                let now = crate::loom::monotonic_us() as usize;
                let waited = now.wrapping_sub(token.0);
                patient.set(waited as u64 >= RW_READER_PATIENCE_US);
            }
            if patient.get() {
                FilterOp::Unpark
            } else {
                FilterOp::Stop
            }
        };
        let callback = |result: UnparkResult| {
            let readers = result.unparked_threads * ONE_READER;
            if readers == 0 && result.have_more_threads {
                return TOKEN_RETRY; // not patient yet: nothing changes
            }
            // Relaxed first read: the CAS below decides.
            let mut word = self.word.load(Ordering::Relaxed);
            loop {
                debug_assert_eq!(holders(word), from);
                // No reader parked after all: the flag goes, the lock stays `from`'s.
                let new = if readers == 0 {
                    word & !READERS_PARKED
                } else {
                    readers | (word & KEPT & !READERS_PARKED)
                };
                // Release: the writer's writes come before the readers it wakes (the wake also
                // orders them).
                match self.word.compare_exchange_weak(
                    word,
                    new,
                    Ordering::Release,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        released.set(Some(word));
                        return TOKEN_HANDOFF;
                    }
                    Err(now) => word = now,
                }
            }
        };
        // SAFETY: the readers' key of this lock; the callbacks do not panic.
        let result = unsafe { unpark_filter(self.readers_key(), filter, callback) };
        released.get().filter(|_| result.unparked_threads > 0)
    }

    /// If the lock is readable and readers are parked, wakes them all to take it; they were
    /// waiting only for that.
    fn wake_readers_if_readable(&self) {
        // Relaxed: a routing hint; the waking clears the flag under the queue lock.
        let word = self.word.load(Ordering::Relaxed);
        if word & READERS_PARKED == 0 || !readable(word) {
            return;
        }
        let callback = |_| {
            // Relaxed: under the readers' queue lock, which this empties.
            self.word.fetch_and(!READERS_PARKED, Ordering::Relaxed);
            TOKEN_RETRY
        };
        // SAFETY: the readers' key of this lock; the callbacks do not panic.
        unsafe { unpark_filter(self.readers_key(), |_| FilterOp::Unpark, callback) };
    }

    /// Whether any thread holds the lock.
    pub(crate) fn is_locked(&self) -> bool {
        // Relaxed: a snapshot for the caller, who can order nothing by it.
        holders(self.word.load(Ordering::Relaxed)) != UNLOCKED
    }

    /// Whether a writer sleeps on the lock (models' `test_hooks`).
    #[cfg(loom)]
    pub(crate) fn writer_asleep(&self) -> bool {
        crate::loom::is_parked_on(self.writers_key())
    }

    /// Whether a writer holds the lock.
    pub(crate) fn is_locked_exclusive(&self) -> bool {
        // Relaxed: as in `is_locked`.
        self.word.load(Ordering::Relaxed) & WRITER != 0
    }

    pub(crate) fn is_poisoned(&self) -> bool {
        // Relaxed: as std's poison flag; the lock orders the data, not the flag.
        self.word.load(Ordering::Relaxed) & POISONED != 0
    }

    pub(crate) fn clear_poison(&self) {
        // Relaxed: as in `is_poisoned`.
        self.word.fetch_and(!POISONED, Ordering::Relaxed);
    }

    /// Marks the lock poisoned. Called by the writer that holds it.
    pub(crate) fn poison(&self) {
        // Relaxed: as in `is_poisoned`.
        self.word.fetch_or(POISONED, Ordering::Relaxed);
    }

    /// The lock's identity in diagnostics.
    pub(crate) fn id(&self) -> crate::LockId {
        crate::LockId(self.readers_key())
    }
}

/// `me` released a hold (read or write) of a lock whose word carried `DONATED`: waiters may
/// have lent to it (`donor::after_releasing_donated`).
#[cold]
fn released_donated(me: Me) {
    crate::donor::after_releasing_donated(me);
}

#[cold]
fn self_deadlock(me: Me) -> ! {
    panic!(
        "proxy_lock: deadlock: thread {} tried to lock an RwLock it already holds for writing",
        me.task().tid()
    )
}

impl Default for RawRwLock {
    fn default() -> RawRwLock {
        RawRwLock::new()
    }
}

impl std::fmt::Debug for RawRwLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawRwLock")
            .field("locked", &self.is_locked())
            .field("exclusive", &self.is_locked_exclusive())
            .finish()
    }
}
