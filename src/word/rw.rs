//! The `RwLock` word: what each bit means, and who holds the lock. The protocol that takes and
//! releases it lives in `rwlock::raw`; chain walks and the donation ledger read the holders and
//! flip `DONATED` through the methods here.
//!
//! # The lock word
//!
//! One `usize`. Its high bits hold the writer's task record address while a writer holds the
//! lock, or the number of readers otherwise; the low bits, which the record's alignment leaves
//! free, hold flags.
//!
//! ```text
//!   bits 63..6                        bit 4     bit 3      bit 2    bit 1           bit 0
//!  +--------------------------------+---------+----------+--------+---------------+---------------+
//!  | writer record, or reader count | DONATED | POISONED | WRITER | WRITERS_PARKED| READERS_PARKED|
//!  +--------------------------------+---------+----------+--------+---------------+---------------+
//! ```
//!
//! * `WRITER` set: the thread whose record is at the high bits holds the lock for writing. It
//!   counts the lock among those it holds (`Me::acquired`), so that a thread that exits with
//!   a forgotten write guard keeps its record, which the word still names.
//!   `WRITER` clear: the high bits count the readers (`ONE_READER` each); zero is a free lock.
//!   Each reader notes the lock in its own record (`Task::reading`), which is also how the lock
//!   counts among those the thread holds: the word cannot name readers, and a writer about to
//!   sleep must find them.
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
//! * `DONATED`: some waiter on this lock is listed in the donation ledger, so its holders may
//!   be boosted. Set and cleared only under the ledger lock, kept across holders. Every release
//!   that sees it gives its loans back (`donor::after_passing_on`), and every take that sees it
//!   goes to the slow path, whose taker reconciles (it owes the waiters' loans now).
//! * Bit 5 is unused.
//!
//! **Readable** means neither `WRITER` nor `WRITERS_PARKED`.
//!
//! # Who holds it, for a walker
//!
//! A writer is read from the word, as a mutex owner is. Readers are found by their notes: a
//! scan of the live task records for notes of this lock's address (`owners`), made only by
//! threads about to sleep or lending, and only if the registry's lock is free at that moment
//! (a waiter must not sleep behind that lock, which lends nothing). The scan misses a reader between
//! its acquiring CAS and its note, or between its note's clear and its release: a running
//! reader at an instant, which the next reconcile (the writer's wake-up) catches up with.
//!
//! A stale note cannot leave a loan behind. A reader clears its note before its release, a
//! Release RMW on the word; a lender marks the lock `DONATED` and then, under the ledger lock,
//! reads the word with Acquire before it reads any note (`owners`). If the release comes
//! before that read, the lender sees the count without the reader (zero: it reads no note) or
//! the note cleared. If the mark comes before the release, the release sees `DONATED`, and the
//! reader gives back whatever it was lent under the ledger lock, which orders that after the
//! whole lend (`donor::after_releasing_donated`). Loom model
//! `rwlock_a_lender_never_lends_to_a_reader_that_left` fails without either order.
//!
//! What a waiter waits for, and so whom it lends to: a writer, for the writer or the readers
//! that hold the lock; a reader, for the writer that holds it, or, while a writer is only
//! parked, for the parked writers (found by their `blocked_on`), which in turn wait for the
//! readers. A reader that already holds the lock and reads again while a writer is parked
//! thus closes a cycle (itself, the writer), which the deadlock check reports.

use crate::LockId;
use crate::loom::{AtomicUsize, Ordering, Pin, const_fn};
use crate::task::{TASK_ALIGN, Task, WAIT_KIND, try_with_live_tasks};

/// Readers may be parked under the lock's address.
pub(crate) const READERS_PARKED: usize = 1;
/// Writers may be parked under the lock's address plus one.
pub(crate) const WRITERS_PARKED: usize = 2;
/// A writer holds the lock; the high bits are its record.
pub(crate) const WRITER: usize = 4;
/// A writer panicked while holding the lock.
pub(crate) const POISONED: usize = 8;
/// Waiters listed in the donation ledger lend to this lock's holders.
pub(crate) const DONATED: usize = 16;
/// One reader in the count.
pub(crate) const ONE_READER: usize = 64;
/// The count's top bit: half the count's range is more readers than any program has, and
/// keeping below it lets the read fast path check "readable, and room for one more" with one
/// mask (std's lock does it with one compare).
pub(crate) const READERS_FULL: usize = 1 << (usize::BITS - 1);
/// The flags that stay with the lock whoever holds it.
pub(crate) const KEPT: usize = READERS_PARKED | WRITERS_PARKED | POISONED | DONATED;
/// Every flag bit: they sit below the count and below any record address.
pub(crate) const FLAGS: usize = KEPT | WRITER;
const _: () = assert!(FLAGS < ONE_READER && ONE_READER <= TASK_ALIGN);
/// The word of a free lock nobody waits for.
pub(crate) const UNLOCKED: usize = 0;

/// `blocked_on`'s kind for a thread waiting to read an `RwLock` (`task::WAIT_KIND`).
pub(crate) const WAITS_TO_READ: usize = 1;
/// `blocked_on`'s kind for a thread waiting to write an `RwLock`.
pub(crate) const WAITS_TO_WRITE: usize = 2;
const _: () = assert!((WAITS_TO_READ | WAITS_TO_WRITE) & !WAIT_KIND == 0);

/// Who holds the lock, from a word: the writer's record address with `WRITER`, the reader
/// count, or 0.
#[inline]
pub(crate) fn holders(word: usize) -> usize {
    word & !KEPT
}

#[inline]
pub(crate) fn readable(word: usize) -> bool {
    word & (WRITER | WRITERS_PARKED) == 0
}

/// The `RwLock` word (see the module docs). Derefs to its atomic for `rwlock::raw`.
pub(crate) struct RwWord(AtomicUsize);

impl std::ops::Deref for RwWord {
    type Target = AtomicUsize;
    fn deref(&self) -> &AtomicUsize {
        &self.0
    }
}

impl RwWord {
    const_fn! {
        pub(crate) fn new() -> RwWord {
            RwWord(AtomicUsize::new(UNLOCKED))
        }
    }

    /// The word's address: the lock's identity, its readers' park key and their notes.
    #[inline]
    pub(crate) fn addr(&self) -> usize {
        &self.0 as *const AtomicUsize as usize
    }

    pub(crate) fn id(&self) -> LockId {
        LockId(self.addr())
    }

    /// The writer's task record, if a writer holds the lock; readable while `pin` lives.
    pub(crate) fn writer_record<'p>(&self, _pin: &'p Pin) -> Option<&'p Task> {
        // Acquire: pairs with the acquiring CAS, so the record reads initialised.
        let word = self.0.load(Ordering::Acquire);
        // SAFETY: read while pinned, as `RawMutex::owner_record`: the writer's record is alive
        // until the pin drops (records are retired through the epoch), or forever if it
        // exited holding the lock.
        (word & WRITER != 0).then(|| unsafe { &*((word & !FLAGS) as *const Task) })
    }

    /// The threads a waiter of this lock waits for (`to_write`: a writer; else a reader), each
    /// readable while `pin` lives, into `out` (see the module docs).
    pub(crate) fn owners<'p>(&self, to_write: bool, _pin: &'p Pin, out: &mut Vec<&'p Task>) {
        // Acquire: pairs with the acquiring CAS, so a writer's record reads initialised, and
        // with the release of every reader that left before this read, so its note reads
        // cleared (module docs).
        let word = self.0.load(Ordering::Acquire);
        if word & WRITER != 0 {
            // SAFETY: as in `writer_record`.
            out.push(unsafe { &*((word & !FLAGS) as *const Task) });
            return;
        }
        if to_write && holders(word) == UNLOCKED {
            return;
        }
        if !to_write && word & WRITERS_PARKED == 0 {
            return;
        }
        let (addr, parked_writer) = (self.addr(), self.addr() | WAITS_TO_WRITE);
        // Only if the registry's lock is free: it lends nothing, and a waiter (or the ledger's
        // holder) that slept behind a preempted holder of it would be the very inversion this
        // crate removes. A busy registry finds nobody; the next look (the next probe, wait or
        // reconcile) tries again.
        let _ = try_with_live_tasks(|tasks| {
            for task in tasks {
                let holds = if to_write {
                    task.reads(addr)
                } else {
                    task.blocked_on_tagged() == parked_writer
                };
                if holds {
                    // SAFETY: a record listed in the registry while we are pinned is retired
                    // (after its removal from the registry) through the epoch, so it stays
                    // readable until `pin` drops, past the registry lock.
                    out.push(unsafe { &*(task as *const Task) });
                }
            }
        });
    }

    /// Sets `DONATED`. Under the ledger lock.
    pub(crate) fn mark_donated(&self) {
        // Relaxed: the ledger lock orders the bookkeeping, and a release that comes after this
        // RMW reads the bit from it; the lender's reads of the holders order themselves
        // (`owners`).
        self.0.fetch_or(DONATED, Ordering::Relaxed);
    }

    /// Clears `DONATED`. Under the ledger lock.
    pub(crate) fn clear_donated(&self) {
        // Relaxed: the ledger lock orders it with every other mark and clear.
        self.0.fetch_and(!DONATED, Ordering::Relaxed);
    }

    pub(crate) fn is_donated(&self) -> bool {
        // Relaxed: a routing hint, as the mutex's.
        self.0.load(Ordering::Relaxed) & DONATED != 0
    }
}
