//! `RawRwLock`: the reader-writer lock word and the protocol that takes and releases it.
//!
//! # The lock word
//!
//! One `usize`. Its high bits hold the writer's task record address while a writer holds the
//! lock, or the number of readers otherwise; the low bits, which the record's alignment leaves
//! free, hold flags.
//!
//! ```text
//!   bits 63..6                          bit 3      bit 2    bit 1           bit 0
//!  +-----------------------------------+----------+--------+---------------+---------------+
//!  | writer record, or reader count    | POISONED | WRITER | WRITERS_PARKED| READERS_PARKED|
//!  +-----------------------------------+----------+--------+---------------+---------------+
//! ```
//!
//! * `WRITER` set: the thread whose record is at the high bits holds the lock for writing.
//!   `WRITER` clear: the high bits count the readers (`ONE_READER` each); zero is a free lock.
//! * `READERS_PARKED`: readers may be asleep in the parking lot under the lock's address. Set
//!   by a reader before it parks; cleared under that queue's lock by whoever empties the queue.
//!   Readers only park while the lock is not readable (see below), so whoever makes it readable
//!   again with this bit set wakes them.
//! * `WRITERS_PARKED`: writers may be asleep under the lock's address plus one. Set by a writer
//!   before it parks; cleared under that queue's lock by whoever empties it. While it is set the
//!   lock is not readable: new readers wait, so readers whose holds overlap cannot starve a
//!   writer.
//! * `POISONED`: a writer panicked (std's rules, `mutex::poison`). Kept by every handover and
//!   release, so only the slow paths read it: a lock taken from the exact `UNLOCKED` word was
//!   not poisoned.
//! * Bits 4 and 5 are unused.
//!
//! **Readable** means neither `WRITER` nor `WRITERS_PARKED`.
//!
//! # Who gets the lock
//!
//! * A writer's unlock hands the lock to every parked reader at once (they waited while it
//!   wrote), else to one parked writer, else frees it.
//! * The last reader's unlock hands the lock to one parked writer.
//! * A handover writes the new holders into the word under the wakee queue's lock, before they
//!   run: nobody can take the lock in between, and a woken thread finds itself the holder.
//! * Writers that find the lock free take it even when others are parked (as `Policy::Adaptive`
//!   lets waiters barge); readers never pass a parked writer.
//!
//! So a stream of readers cannot starve a writer, and a stream of writers cannot starve the
//! readers: under contention the two take turns. A thread that holds a read lock and reads
//! again while a writer waits deadlocks, as with parking_lot's `read`.

use crate::loom::{
    AtomicUsize, FilterOp, Ordering, ParkResult, ParkToken, UnparkResult, UnparkToken, const_fn,
    park, unpark_filter,
};
use crate::spin::SpinWait;
use crate::task::{Me, TASK_ALIGN};
use std::cell::Cell;
use std::time::Instant;

/// Readers may be parked under the lock's address.
const READERS_PARKED: usize = 1;
/// Writers may be parked under the lock's address plus one.
const WRITERS_PARKED: usize = 2;
/// A writer holds the lock; the high bits are its record.
const WRITER: usize = 4;
/// A writer panicked while holding the lock.
const POISONED: usize = 8;
/// One reader in the count.
const ONE_READER: usize = 64;
/// The flags that stay with the lock whoever holds it.
const KEPT: usize = READERS_PARKED | WRITERS_PARKED | POISONED;
/// Every flag bit: they sit below the count and below any record address.
const FLAGS: usize = KEPT | WRITER;
const _: () = assert!(FLAGS < ONE_READER && ONE_READER <= TASK_ALIGN);
/// The word of a free lock nobody waits for.
const UNLOCKED: usize = 0;

/// A woken waiter was handed the lock.
const TOKEN_HANDOFF: UnparkToken = UnparkToken(1);
/// A woken waiter must try again.
const TOKEN_RETRY: UnparkToken = UnparkToken(0);

/// Who holds the lock, from a word: the writer's record address with `WRITER`, the reader
/// count, or 0.
#[inline]
fn holders(word: usize) -> usize {
    word & !KEPT
}

#[inline]
fn readable(word: usize) -> bool {
    word & (WRITER | WRITERS_PARKED) == 0
}

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
    /// The lock word; see the module docs.
    word: AtomicUsize,
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
                word: AtomicUsize::new(UNLOCKED),
            }
        }
    }

    fn readers_key(&self) -> usize {
        &self.word as *const AtomicUsize as usize
    }

    /// The writers' queue: one past the word, an address no other lock parks on.
    fn writers_key(&self) -> usize {
        self.readers_key() + 1
    }

    /// Takes a read lock if it is readable right now; `Some(poisoned)` if taken.
    #[inline]
    pub(crate) fn try_read(&self) -> Option<bool> {
        // Relaxed: the CAS below is what takes the lock.
        let word = self.word.load(Ordering::Relaxed);
        if !readable(word) {
            return None;
        }
        let new = word.checked_add(ONE_READER)?;
        // Acquire: pairs with the Release of the writer that last released the lock, so its
        // writes to the data are seen.
        self.word
            .compare_exchange(word, new, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| word & POISONED != 0)
    }

    /// Takes a read lock, waiting as long as it takes; returns whether it is poisoned.
    #[inline]
    pub(crate) fn read(&self) -> bool {
        match self.try_read() {
            Some(poisoned) => poisoned,
            None => self.read_slow(None).unwrap_or(false),
        }
    }

    /// Takes a read lock unless `deadline` passes first: `Some(poisoned)` if taken.
    pub(crate) fn read_until(&self, deadline: Option<Instant>) -> Option<bool> {
        self.try_read().or_else(|| self.read_slow(deadline))
    }

    #[cold]
    fn read_slow(&self, deadline: Option<Instant>) -> Option<bool> {
        let mut spin = SpinWait::default();
        loop {
            // Relaxed: only decides between taking, spinning and parking; each re-validates.
            let word = self.word.load(Ordering::Relaxed);
            if readable(word) {
                let new = word
                    .checked_add(ONE_READER)
                    .expect("proxy_lock::RwLock: too many readers");
                // Acquire: as in `try_read`.
                if self
                    .word
                    .compare_exchange_weak(word, new, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return Some(word & POISONED != 0);
                }
                continue;
            }
            if word & WRITER != 0 && written_by_me(word) {
                if deadline.is_some() {
                    // A timed lock on a lock we hold for writing could only time out.
                    return None;
                }
                self_deadlock(crate::task::current());
            }
            if word & READERS_PARKED == 0 && spin.spin() {
                continue;
            }
            // Relaxed: the flag is read under the readers' queue lock by `park`'s validation
            // and by whoever wakes them; that lock orders them.
            if word & READERS_PARKED == 0
                && self
                    .word
                    .compare_exchange_weak(
                        word,
                        word | READERS_PARKED,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    )
                    .is_err()
            {
                continue;
            }
            let validate = || {
                // Relaxed: under the queue lock (see above).
                let word = self.word.load(Ordering::Relaxed);
                word & READERS_PARKED != 0 && !readable(word)
            };
            let timed_out = |_, last: bool| {
                if last {
                    // Relaxed: under the queue lock, which it empties.
                    self.word.fetch_and(!READERS_PARKED, Ordering::Relaxed);
                }
            };
            // SAFETY: the key is this lock's address, which only its readers park on; the
            // callbacks do not panic.
            let parked = unsafe {
                park(
                    self.readers_key(),
                    validate,
                    || {},
                    timed_out,
                    ParkToken(0),
                    deadline,
                )
            };
            match parked {
                // Acquire: the hand-over was written by the unlocker, which the wake orders
                // before us; the poison bit is as it left it.
                ParkResult::Unparked(TOKEN_HANDOFF) => {
                    return Some(self.word.load(Ordering::Acquire) & POISONED != 0);
                }
                ParkResult::TimedOut => return None,
                _ => spin = SpinWait::default(),
            }
        }
    }

    /// Releases a read lock.
    ///
    /// # Safety
    /// The caller holds a read lock on `self`.
    #[inline]
    pub(crate) unsafe fn read_unlock(&self) {
        // Release: the reader's reads of the data come before a writer's later writes.
        let word = self.word.fetch_sub(ONE_READER, Ordering::Release);
        debug_assert!(word & WRITER == 0 && holders(word) >= ONE_READER);
        if holders(word) == ONE_READER && word & WRITERS_PARKED != 0 {
            self.hand_to_a_writer(UNLOCKED);
        }
    }

    /// Takes the write lock if it is free right now; `Some(poisoned)` if taken.
    #[inline]
    pub(crate) fn try_write(&self, me: Me) -> Option<bool> {
        // Relaxed: the CAS below is what takes the lock.
        let word = self.word.load(Ordering::Relaxed);
        if holders(word) != UNLOCKED {
            return None;
        }
        // Acquire: pairs with the Release of whoever released the lock last (the writer's
        // writes, the readers' reads).
        self.word
            .compare_exchange(
                word,
                word | me.addr() | WRITER,
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .ok()
            .map(|_| word & POISONED != 0)
    }

    /// Takes the write lock, waiting as long as it takes; returns whether it is poisoned.
    #[inline]
    pub(crate) fn write(&self, me: Me) -> bool {
        // Acquire: as in `try_write`.
        if self
            .word
            .compare_exchange(
                UNLOCKED,
                me.addr() | WRITER,
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .is_ok()
        {
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
                // Acquire: as in `try_write`.
                if self
                    .word
                    .compare_exchange_weak(
                        word,
                        word | me.addr() | WRITER,
                        Ordering::Acquire,
                        Ordering::Relaxed,
                    )
                    .is_ok()
                {
                    return Some(word & POISONED != 0);
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
            // Relaxed: as for READERS_PARKED in `read_slow`, with the writers' queue lock.
            if word & WRITERS_PARKED == 0
                && self
                    .word
                    .compare_exchange_weak(
                        word,
                        word | WRITERS_PARKED,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    )
                    .is_err()
            {
                continue;
            }
            let validate = || {
                // Relaxed: under the queue lock.
                let word = self.word.load(Ordering::Relaxed);
                word & WRITERS_PARKED != 0 && holders(word) != UNLOCKED
            };
            let timed_out = |_, last: bool| {
                if last {
                    // Relaxed: under the queue lock, which it empties.
                    self.word.fetch_and(!WRITERS_PARKED, Ordering::Relaxed);
                }
            };
            // SAFETY: the key is one past this lock's address, which only its writers park on;
            // the callbacks do not panic.
            let parked = unsafe {
                park(
                    self.writers_key(),
                    validate,
                    || {},
                    timed_out,
                    ParkToken(me.addr()),
                    deadline,
                )
            };
            match parked {
                // Acquire: as in `read_slow`.
                ParkResult::Unparked(TOKEN_HANDOFF) => {
                    return Some(self.word.load(Ordering::Acquire) & POISONED != 0);
                }
                ParkResult::TimedOut => {
                    // The last writer to leave cleared WRITERS_PARKED: readers parked behind
                    // it may go now.
                    self.wake_readers_if_readable();
                    return None;
                }
                _ => spin = SpinWait::default(),
            }
        }
    }

    /// Releases the write lock held by `me`.
    ///
    /// # Safety
    /// `me` holds the write lock on `self`.
    #[inline]
    pub(crate) unsafe fn write_unlock(&self, me: Me) {
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
        let mine = me.addr() | WRITER;
        loop {
            // Relaxed: a routing hint; each hand-over re-reads the word under its queue lock,
            // and the release below is a CAS on exactly this word.
            let word = self.word.load(Ordering::Relaxed);
            if word & READERS_PARKED != 0 {
                if self.hand_to_readers(mine) {
                    return;
                }
                // Nobody was queued after all, and the flag is gone: look again.
                continue;
            }
            if word & WRITERS_PARKED != 0 {
                self.hand_to_a_writer(mine);
                return;
            }
            // Nobody parked: release, keeping the poison. A waiter that set its flag since the
            // load makes this fail, and is handed the lock on the next turn; a free word would
            // leave it asleep on a lock nobody releases again.
            // Release: as in `write_unlock`.
            if self
                .word
                .compare_exchange(word, word & POISONED, Ordering::Release, Ordering::Relaxed)
                .is_ok()
            {
                return;
            }
        }
    }

    /// Turns `me`'s write lock into a read lock, without letting a writer in between; wakes
    /// the parked readers to join it unless a writer waits.
    ///
    /// # Safety
    /// `me` holds the write lock on `self`.
    pub(crate) unsafe fn downgrade(&self, me: Me) {
        // Release: the writer's writes come before the readers that join now; the flags stay.
        let word = self
            .word
            .fetch_sub((me.addr() | WRITER) - ONE_READER, Ordering::Release);
        debug_assert_eq!(holders(word), me.addr() | WRITER);
        if word & READERS_PARKED != 0 {
            self.wake_readers_if_readable();
        }
    }

    /// Hands the lock, held by `from` (a writer's holders bits) or free (`UNLOCKED`: the last
    /// reader has just left), to one parked writer, or frees it if none is parked. A writer that
    /// barged into a free lock meanwhile keeps it, and the woken writer tries again.
    fn hand_to_a_writer(&self, from: usize) {
        let chosen = Cell::new(0usize);
        let filter = |token: ParkToken| {
            if chosen.get() == 0 {
                chosen.set(token.0);
                FilterOp::Unpark
            } else {
                FilterOp::Stop
            }
        };
        let handed = Cell::new(false);
        let callback = |result: UnparkResult| {
            let more = if result.have_more_threads {
                WRITERS_PARKED
            } else {
                0
            };
            // Relaxed first read: the CAS below decides.
            let mut word = self.word.load(Ordering::Relaxed);
            loop {
                let ours = holders(word) == from;
                let (new, token) = if result.unparked_threads == 0 {
                    // Nobody parked: the flag goes, and the lock too if it was ours to pass.
                    let left = if ours { UNLOCKED } else { holders(word) };
                    (left | (word & KEPT & !WRITERS_PARKED), TOKEN_RETRY)
                } else if ours {
                    let kept = word & (READERS_PARKED | POISONED);
                    (chosen.get() | WRITER | kept | more, TOKEN_HANDOFF)
                } else {
                    // A writer barged into the free lock: its unlock sees WRITERS_PARKED, and
                    // the one woken here tries again.
                    return TOKEN_RETRY;
                };
                // AcqRel: Acquire sees the readers' Release decrements before the lock changes
                // hands; Release passes the unlocker's writes on to the writer it wakes (the
                // wake also orders them).
                match self.word.compare_exchange_weak(
                    word,
                    new,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        handed.set(token == TOKEN_HANDOFF);
                        return token;
                    }
                    Err(now) => word = now,
                }
            }
        };
        // SAFETY: the writers' key of this lock; the callbacks do not panic.
        unsafe { unpark_filter(self.writers_key(), filter, callback) };
        if !handed.get() {
            // Released, or left to a barger: readers parked behind writers may go.
            self.wake_readers_if_readable();
        }
    }

    /// Hands the lock, write-held as `from`, to every parked reader at once. False if no reader
    /// was parked (the lock is still `from`'s).
    fn hand_to_readers(&self, from: usize) -> bool {
        let callback = |result: UnparkResult| {
            let readers = result.unparked_threads * ONE_READER;
            // Relaxed first read: the CAS below decides.
            let mut word = self.word.load(Ordering::Relaxed);
            loop {
                debug_assert_eq!(holders(word), from);
                let (new, token) = if readers == 0 {
                    (word & !READERS_PARKED, TOKEN_RETRY)
                } else {
                    (readers | (word & KEPT & !READERS_PARKED), TOKEN_HANDOFF)
                };
                // Release: the writer's writes come before the readers it wakes (the wake also
                // orders them).
                match self.word.compare_exchange_weak(
                    word,
                    new,
                    Ordering::Release,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return token,
                    Err(now) => word = now,
                }
            }
        };
        // SAFETY: the readers' key of this lock; the callbacks do not panic.
        let result = unsafe { unpark_filter(self.readers_key(), |_| FilterOp::Unpark, callback) };
        result.unparked_threads > 0
    }

    /// If the lock is readable and readers are parked, wakes them all with the lock handed to
    /// them (joining whatever readers hold it); they were waiting only for that.
    fn wake_readers_if_readable(&self) {
        // Relaxed: a routing hint; the callback re-reads under the queue lock.
        let word = self.word.load(Ordering::Relaxed);
        if word & READERS_PARKED == 0 || !readable(word) {
            return;
        }
        let callback = |result: UnparkResult| {
            let readers = result.unparked_threads * ONE_READER;
            // Relaxed first read: the CAS below decides.
            let mut word = self.word.load(Ordering::Relaxed);
            loop {
                let (new, token) = if readers > 0 && readable(word) {
                    ((word + readers) & !READERS_PARKED, TOKEN_HANDOFF)
                } else {
                    // A writer got in first: the woken readers wait again.
                    (word & !READERS_PARKED, TOKEN_RETRY)
                };
                // Acquire: joining readers follow the last writer's release, which this
                // load-and-swap sees (the wake orders the rest).
                match self.word.compare_exchange_weak(
                    word,
                    new,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return token,
                    Err(now) => word = now,
                }
            }
        };
        // SAFETY: the readers' key of this lock; the callbacks do not panic.
        unsafe { unpark_filter(self.readers_key(), |_| FilterOp::Unpark, callback) };
    }

    /// Whether any thread holds the lock.
    pub(crate) fn is_locked(&self) -> bool {
        // Relaxed: a snapshot for the caller, who can order nothing by it.
        holders(self.word.load(Ordering::Relaxed)) != UNLOCKED
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

/// Whether the write lock in `word` is the calling thread's own.
#[cold]
fn written_by_me(word: usize) -> bool {
    holders(word) == crate::task::current().addr() | WRITER
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
