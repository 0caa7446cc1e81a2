//! Per-thread task records: who a thread is, and which lock it is blocked on.
//!
//! A record is created the first time a thread takes the slow path of any proxy-lock primitive,
//! or takes a lock at all: a lock word stores its owner's record address, so every owner has one.
//!
//! # Lifetime
//!
//! * The calling thread finds its record through `CURRENT`, a const thread local without a
//!   destructor. Such a slot stays readable while other thread-local destructors run, which is
//!   what lets a destructor lock a mutex during thread exit.
//! * The record is retired by a hook that runs after every Rust thread-local destructor (see
//!   `sys::on_thread_exit`). If a destructor runs even later and locks, it gets a fresh record.
//! * Other threads reach a record only through a lock word or the registry. Lock words: a thread
//!   that exits still holding a lock (a forgotten guard) keeps its record forever, marked
//!   exited, because that lock word will point at it forever. Otherwise no lock word points at
//!   the record once it retires, and readers that loaded the address while pinned keep it alive
//!   through the epoch. Registry: entries are removed under the registry lock before retiring.

mod donation;
mod registry;
pub(crate) mod slot;

pub(crate) use donation::{NOT_RESTORING, SKIPPED, TaskDonor, WILL_RESTORE};
use registry::{adopt_new_records, announce};
pub(crate) use registry::{
    after_fork_in_child, after_fork_in_parent, before_fork, try_with_registry, with_registry,
};
pub(crate) use slot::Slot;

use crate::loom::{AtomicBool, AtomicUsize, Ordering, Pin, const_thread_local};
use crate::{LockId, Tid};
use std::cell::Cell;
use std::marker::PhantomData;
use std::ptr::{self, NonNull};

/// A thread's record. Aligned to a cache line: other threads read `blocked_on` while the owner
/// writes it, and the alignment also leaves the low six bits of its address free for the flag
/// bits of a lock word (see `mutex::raw`).
///
/// `repr(C)`, so that the fields stay in the lines they are listed in, whatever is added or
/// removed: first what a waker and chain walkers touch while the thread waits (`blocked_on`
/// to `woken_by`, with the donation caches), then what the thread writes on every lock and
/// unlock (`held`) with its `run` slot. Left to the compiler, removing one field moved
/// `woken_by` into `held`'s line, and handoffs got slower (`docs/design.md`, deep chains).
#[repr(C, align(64))]
pub(crate) struct Task {
    /// Address of the lock this thread sleeps on, or 0.
    ///
    /// Set by the thread just before it parks on a lock (or spins waiting for it) and cleared by
    /// the thread when its wait ends, or earlier by an unlocker that hands it the lock, before
    /// that unlocker (or the claimed spinner itself) publishes it as the new owner. So whoever
    /// reads a lock's owner `T` and then `T.blocked_on` never sees `T` waiting for a lock it
    /// owns. Read by anyone (diagnostics now, chain walks later).
    blocked_on: AtomicUsize,
    /// Threads that are reading the lock `blocked_on` names right now (see `with_blocked_lock`).
    /// The thread waits for this to drop to zero before it leaves a wait, so the lock it waited
    /// on, which the thread's borrow keeps alive, outlives every such read.
    walkers: AtomicUsize,
    /// Counts this thread's waits: bumped before each `blocked_on` store, so a chain walker
    /// that reads the same (lock, seq) twice knows the thread never left that wait in between.
    wait_seq: AtomicUsize,
    /// The record of the thread that chose this sleeping thread to wake and has not yet
    /// returned from waking it, else 0: an unlocker that handed it the lock or freed the lock
    /// for it (`WakeInFlight`), or a holder that ran its published section (`proxy::Wakes`).
    /// Set and cleared only by that thread. While it is set, this thread cannot run until that
    /// one does: chain walks go on from it to that one (`Task::waker`).
    woken_by: AtomicUsize,
    /// Donation bookkeeping that lives with the thread (see `donor`).
    pub(crate) donor: TaskDonor,
    /// The next record on the stack of records not yet moved into the registry (see
    /// `new_records`), or 0. Written once before the record is pushed.
    next_new: AtomicUsize,
    /// Number of locks this thread holds, read locks apart (`reading` notes those). Only the
    /// thread itself reads or writes it.
    held: Cell<usize>,
    /// This thread's request slot for `Mutex::run` (see `proxy`).
    pub(crate) slot: Slot,
    /// Kernel thread id, set at creation. It changes once only in a forked child, where the
    /// forking thread's record takes the child's tid (`after_fork_in_child`). Relaxed is
    /// enough everywhere: a child has one thread when it changes.
    tid: core::sync::atomic::AtomicI32,
    /// Set when the thread exited while still holding locks; the record is then kept forever.
    exited: AtomicBool,
    /// Whether the current wait has a deadline (a cycle through it is not a deadlock).
    timed_wait: AtomicBool,
    /// Since when this thread has waited asleep on a `Handoff` lock, passed over for spinners
    /// (low 32 bits of `monotonic_us`; `mutex::raw::handoff`'s fairness). Written by the thread
    /// before it parks, and by an unlocker that serves the sleeper ahead of it. A hint: the
    /// core atomic, Relaxed.
    parked_at_us: core::sync::atomic::AtomicU32,
    /// Last, so that the fields above keep the lines they had before it came: the `RwLock`s
    /// this thread holds for reading, by address, one per hold (0: a free note).
    /// A read lock's word counts its readers but cannot name them, so a writer about to sleep
    /// finds the readers to lend to here (`word::rw`). Written only by the thread: set right
    /// after the read lock is taken, cleared right before it is released. So a note always
    /// names a lock the thread holds; a hold whose note is not set yet, or was cleared
    /// already, or that found every note taken (`READ_NOTES`), is one a writer does not see.
    reading: [AtomicUsize; READ_NOTES],
}

// SAFETY: every field but `held` is atomic or immutable. `held` is read and written only by the
// thread the record belongs to: by lock and unlock (a guard is !Send, and lock_api's raw unlock
// requires the locking context), and by the exit hook, which runs on that thread.
unsafe impl Sync for Task {}
// SAFETY: as for Sync; the record moves between threads only as a pointer.
unsafe impl Send for Task {}

/// Alignment of task records, and so the bound on flag bits in a lock word.
pub(crate) const TASK_ALIGN: usize = std::mem::align_of::<Task>();

/// How many read holds a thread notes (`Task::reading`): readers rarely hold more `RwLock`s
/// at once, and a fifth hold still works, only without loans from that lock's writers.
pub(crate) const READ_NOTES: usize = 4;

/// The low bits of `blocked_on` that say what kind of wait it is: lock addresses are at least
/// 4-aligned (every lock starts with an atomic word), so these are free.
pub(crate) const WAIT_KIND: usize = 3;

impl Task {
    /// Since when the thread has waited asleep on a `Handoff` lock (see `parked_at_us`).
    pub(crate) fn parked_at_us(&self) -> u32 {
        self.parked_at_us
            .load(core::sync::atomic::Ordering::Relaxed)
    }

    /// Sets `parked_at_us`: the thread, before it parks, or an unlocker, for the sleeper whose
    /// patience starts again.
    pub(crate) fn set_parked_at_us(&self, now: u32) {
        self.parked_at_us
            .store(now, core::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn tid(&self) -> Tid {
        self.tid.load(core::sync::atomic::Ordering::Relaxed)
    }

    /// Whether this is the calling thread's record.
    pub(crate) fn is(&self, me: Me) -> bool {
        ptr::eq(self, me.task())
    }

    /// Whether this thread is on a CPU, where the record alone can say: an exited thread is
    /// not. `None` otherwise: the caller reads the thread's CPU clock.
    pub(crate) fn on_cpu(&self) -> Option<bool> {
        self.has_exited().then_some(false)
    }

    /// The lock this thread sleeps on, if any.
    pub(crate) fn blocked_on(&self) -> Option<LockId> {
        // Acquire pairs with the Release in `set_blocked_on`, so a reader that sees the address
        // also sees everything the thread did before it started to sleep.
        LockId::from_addr(self.blocked_on.load(Ordering::Acquire) & !WAIT_KIND)
    }

    /// The `blocked_on` value as stored: the lock's address with its kind in `WAIT_KIND`. For
    /// scans that look for the waiters of one lock; a plain read, not a handshake.
    pub(crate) fn blocked_on_tagged(&self) -> usize {
        // Acquire: as in `blocked_on`.
        self.blocked_on.load(Ordering::Acquire)
    }

    /// Whether this thread notes a read hold of the `RwLock` at `addr` (`reading`).
    pub(crate) fn reads(&self, addr: usize) -> bool {
        // Relaxed: a note is compared, never followed; why a stale one is harmless is in
        // `word::rw` (the lender's RMW on the lock word orders the reader's clear before it).
        self.reading
            .iter()
            .any(|n| n.load(Ordering::Relaxed) == addr)
    }

    /// Whether this thread notes any read hold.
    pub(crate) fn reads_any(&self) -> bool {
        // Relaxed: the thread's own notes, or (exit hook) read on the same thread.
        self.reading.iter().any(|n| n.load(Ordering::Relaxed) != 0)
    }

    /// The `RwLock`s this thread notes read holds of, for diagnostics.
    pub(crate) fn read_locks(&self) -> impl Iterator<Item = usize> + '_ {
        // Relaxed: as in `reads`.
        self.reading
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .filter(|&a| a != 0)
    }

    /// Runs `f` on the lock this thread sleeps on, while that lock is guaranteed alive, and
    /// returns its result if the thread was still waiting for that lock when `f` finished;
    /// `None` if it sleeps on nothing or its wait ended meanwhile.
    ///
    /// The lock's memory is only known to be alive while this thread is inside its wait for it
    /// (the thread borrows it). A Dekker handshake keeps it there: we announce ourselves in
    /// `walkers`, then read `blocked_on`; the thread clears `blocked_on`, then waits for
    /// `walkers` to be zero before it leaves the wait. SeqCst on all four accesses means one
    /// side always sees the other: either we read 0, or the thread waits for us.
    ///
    /// The re-check after `f` must also happen inside the handshake: outside it, the thread
    /// could finish this wait and start another on the same lock, and the re-check would pass
    /// on a different wait (ABA). Inside it, a wait that ended (the thread itself or a handoff
    /// cleared `blocked_on`) shows as 0.
    pub(crate) fn with_blocked_on<R>(&self, f: impl FnOnce(usize) -> R) -> Option<R> {
        self.walkers.fetch_add(1, Ordering::SeqCst);
        let lock = self.blocked_on.load(Ordering::SeqCst);
        // `lock` is the address of a lock the thread is waiting for, and the thread cannot finish
        // that wait (so its borrow keeps the lock alive) until `walkers` drops, by the
        // handshake above.
        let result = (lock != 0).then(|| f(lock));
        // SeqCst: ordered after f's loads; a handoff clears `blocked_on` before it publishes
        // the new owner, so an owner f saw that ended the wait shows up here as 0.
        let still_waiting = self.blocked_on.load(Ordering::SeqCst) == lock;
        // Release: our reads of the lock happen-before the waiter's Acquire that sees zero.
        self.walkers.fetch_sub(1, Ordering::Release);
        result.filter(|_| still_waiting)
    }

    /// The thread's current wait as (sequence number, has a deadline). Only meaningful inside
    /// `with_blocked_lock`, where the wait cannot be replaced by another.
    pub(crate) fn wait_identity(&self) -> (usize, bool) {
        // Relaxed: ordered by the SeqCst `blocked_on` load in `with_blocked_lock`, which comes
        // after the thread's own stores of these (set_blocked_on stores them first).
        (
            self.wait_seq.load(Ordering::Relaxed),
            self.timed_wait.load(Ordering::Relaxed),
        )
    }

    /// The thread that chose this sleeping thread to wake and has not yet woken it (see
    /// `woken_by`), readable while `pin` lives.
    pub(crate) fn waker<'p>(&self, _pin: &'p Pin) -> Option<&'p Task> {
        // Acquire: pairs with the Release in `mark_woken_by`, so the waker's record reads
        // initialised.
        let waker = self.woken_by.load(Ordering::Acquire);
        // SAFETY: the waker clears the field before its unlock returns, so before its thread
        // can exit and retire its record; an address read while pinned stays readable until the
        // pin drops, as an owner address read from a lock word does.
        (waker != 0).then(|| unsafe { &*(waker as *const Task) })
    }

    /// `waker` chose this thread to wake (see `woken_by`). The caller keeps the record
    /// readable until its `clear_woken_by`, with a pin taken while the thread still waited.
    pub(crate) fn mark_woken_by(&self, waker: Me) {
        // Release: a walker that reads our address (Acquire) reads our record initialised.
        self.woken_by.store(waker.addr(), Ordering::Release);
    }

    /// `waker`'s call that wakes this thread has returned.
    pub(crate) fn clear_woken_by(&self, waker: Me) {
        // A CAS, not a store: if the thread woke, slept again and was chosen by another waker
        // meanwhile, the mark is that one's now. Relaxed: a walker that still reads our
        // address lends to us once more, and that loan is taken back by the lender's next
        // reconcile (see `donor::after_passing_on`); nothing is published by the clear.
        let _ =
            self.woken_by
                .compare_exchange(waker.addr(), 0, Ordering::Relaxed, Ordering::Relaxed);
    }

    pub(crate) fn has_exited(&self) -> bool {
        // Relaxed: diagnostic only; nothing is ordered by it.
        self.exited.load(Ordering::Relaxed)
    }
}

/// The record whose request slot (`Task::slot`) is at `slot`.
///
/// # Safety
/// `slot` is the address of the `slot` field of a record that is alive, or kept readable by the
/// caller's pin.
pub(crate) unsafe fn task_of_slot<'a>(slot: usize) -> &'a Task {
    // SAFETY: by the caller's contract, the record starts this many bytes before its slot.
    unsafe { &*((slot - std::mem::offset_of!(Task, slot)) as *const Task) }
}

/// The calling thread's record. `!Send`: it is only valid on the thread it describes, which is
/// the thread that frees it.
#[derive(Clone, Copy)]
pub(crate) struct Me(NonNull<Task>);

/// A `Me` and one flag, in one word: records are 64-byte aligned, so the address's low bit is
/// free. A guard keeps its holder this way, beside its "was panicking" flag, to stay two words
/// as std's does. Kept as an integer, as lock words keep owners: clearing the bit is then one
/// `and`, where pointer arithmetic made it three instructions on the unlock path.
#[derive(Clone, Copy)]
pub(crate) struct MeAndFlag(usize, PhantomData<*const Task>);

const _: () = assert!(std::mem::align_of::<Task>() >= 2);

impl MeAndFlag {
    #[inline]
    pub(crate) fn new(me: Me, flag: bool) -> MeAndFlag {
        MeAndFlag(me.addr() | usize::from(flag), PhantomData)
    }

    #[inline]
    pub(crate) fn me(self) -> Me {
        // SAFETY: with its low bit cleared, the word is the address of the record `new` was
        // given, which is not null.
        Me(unsafe { NonNull::new_unchecked((self.0 & !1) as *mut Task) })
    }

    #[inline]
    pub(crate) fn flag(self) -> bool {
        self.0 & 1 != 0
    }
}

impl Me {
    /// The record's address, as stored in lock words and park tokens.
    #[inline]
    pub(crate) fn addr(self) -> usize {
        self.0.as_ptr() as usize
    }

    #[inline]
    pub(crate) fn task(&self) -> &Task {
        // SAFETY: a record is freed only by its own thread's exit hook, which runs after any
        // code that could hold a `Me`, and `Me` cannot leave the thread.
        unsafe { self.0.as_ref() }
    }

    /// Records that this thread now holds one more lock.
    #[inline]
    pub(crate) fn acquired(self) {
        let held = &self.task().held;
        held.set(held.get() + 1);
    }

    /// Whether this thread holds no lock (a forgotten guard counts as held forever). Read
    /// locks count through their notes, so a fifth one held at once does not.
    #[inline]
    pub(crate) fn holds_no_lock(self) -> bool {
        self.task().held.get() == 0 && !self.task().reads_any()
    }

    /// Records that this thread released a lock. Every release follows the acquisition it
    /// undoes on this thread (guards are `!Send`), so the count never goes below zero.
    #[inline]
    pub(crate) fn released(self) {
        let held = &self.task().held;
        held.set(held.get() - 1);
    }

    /// Records that this thread took a read lock on the `RwLock` at `addr`: noted where writers
    /// look for readers (`Task::reading`), if a note is free. The note is the hold's record:
    /// `held` counts the other locks, which spares the read path two more accesses.
    #[inline]
    pub(crate) fn read_acquired(self, addr: usize) {
        for note in &self.task().reading {
            // Relaxed: only this thread writes its notes; others compare them (`Task::reads`).
            if note.load(Ordering::Relaxed) == 0 {
                note.store(addr, Ordering::Relaxed);
                return;
            }
        }
    }

    /// Records that this thread is releasing a read lock on the `RwLock` at `addr`: called
    /// before the release itself, so that the note is gone before the lock word says so
    /// (the release's Release RMW publishes the clear).
    #[inline]
    pub(crate) fn read_releasing(self, addr: usize) {
        for note in &self.task().reading {
            // Relaxed: as in `read_acquired`.
            if note.load(Ordering::Relaxed) == addr {
                note.store(0, Ordering::Relaxed);
                return;
            }
        }
    }

    /// Publishes that this thread is about to sleep on `lock` (with a deadline if `timed`).
    pub(crate) fn set_blocked_on(self, lock: usize, timed: bool) {
        let task = self.task();
        // Relaxed: both are read only by walkers that first see the Release store below.
        task.wait_seq.fetch_add(1, Ordering::Relaxed);
        task.timed_wait.store(timed, Ordering::Relaxed);
        // SeqCst: a deadlock check reads other threads' `blocked_on` after this store; of two
        // threads closing a cycle, at least one must see the other's edge (Dekker). It is also a
        // Release for `Task::blocked_on`'s readers.
        task.blocked_on.store(lock, Ordering::SeqCst);
    }

    /// This thread is awake again. Returns only once no walker can still be reading the lock
    /// it waited for (see `Task::with_blocked_lock`): the caller may free that lock right after.
    pub(crate) fn clear_blocked_on(self) {
        let task = self.task();
        // SeqCst, with the load below: the handshake in `with_blocked_lock`. It also publishes
        // the clear before the next acquiring CAS, so whoever sees this thread as owner sees it
        // as no longer blocked.
        task.blocked_on.store(0, Ordering::SeqCst);
        // Walkers hold the count for a few loads, so this normally does not wait at all.
        while task.walkers.load(Ordering::SeqCst) != 0 {
            crate::loom::spin_hint();
        }
    }
}

/// The record at `addr`.
///
/// # Safety
/// `addr` is a record that is alive for `'a`: a thread queued on a lock, read under the queue
/// lock, or one the caller otherwise knows to be alive.
pub(crate) unsafe fn record_at<'a>(addr: usize) -> &'a Task {
    // SAFETY: forwarded.
    unsafe { &*(addr as *const Task) }
}

/// Whether the record at `addr` belongs to a thread that has exited (`Task::has_exited`).
///
/// # Safety
/// `addr` is a record that is alive: see `clear_blocked_on_of_waiter`.
#[inline]
pub(crate) unsafe fn has_exited(addr: usize) -> bool {
    // SAFETY: forwarded.
    unsafe { &*(addr as *const Task) }.has_exited()
}

/// Clears `blocked_on` of the waiting thread whose record is at `addr`, which an unlocker is
/// about to make the owner.
///
/// # Safety
/// `addr` is the record of a thread that cannot leave its wait before this clear: the park
/// token of a thread still in the parking lot's queue, read under the queue lock (it leaves
/// only once the word names it), or the spinner the unlocker claimed in the lock's spinner
/// slot (it leaves once the word names it, or once it sees this clear and writes itself in).
pub(crate) unsafe fn clear_blocked_on_of_waiter(addr: usize) {
    // SAFETY: such a thread's record is alive until the thread is the owner and later exits.
    let task = unsafe { &*(addr as *const Task) };
    // Release: a claimed spinner that sees the clear (Acquire) may take the lock on its own
    // (`RawMutex::finish_claimed_handoff`), so the clear must carry the unlocker's critical
    // section. For a parked waiter the word's Release store that follows would be enough.
    task.blocked_on.store(0, Ordering::Release);
}

/// An unlocker's mark on the sleeper it chose, from the choice (under the parking lot's queue
/// lock) until its call that wakes the sleeper has returned: `woken_by` of the sleeper names
/// the unlocker meanwhile.
///
/// Why: the parking lot wakes the chosen thread after it drops the queue lock. An unlocker
/// preempted in between (a SCHED_IDLE thread beside a hog) leaves the sleeper asleep, maybe
/// as the new owner of the lock, for as long as the unlocker waits for a CPU. Loans that reach
/// only the sleeper cannot help then; the unlocker is who must run. Lent to as an owner would
/// be, it runs and finishes the wake-up.
///
/// The sleeper's record stays readable for the clear thanks to the pin taken first: the
/// sleeper may wake (spuriously, or through the wake-up itself), run, and exit before it.
pub(crate) struct WakeInFlight {
    waker: Me,
    /// The chosen sleeper's record address, 0 while none is marked.
    woken: Cell<usize>,
    _pin: Pin,
}

impl WakeInFlight {
    pub(crate) fn new(waker: Me) -> WakeInFlight {
        WakeInFlight {
            waker,
            woken: Cell::new(0),
            _pin: crate::loom::pin(),
        }
    }

    /// Marks the thread whose record is at `addr` as woken by us.
    ///
    /// # Safety
    /// `addr` is the park token of a thread being unparked from a lock's queue, under the queue
    /// lock: its record is alive, as in `clear_blocked_on_of_waiter`.
    pub(crate) unsafe fn mark(&self, addr: usize) {
        // SAFETY: by the caller's contract.
        unsafe { &*(addr as *const Task) }.mark_woken_by(self.waker);
        self.woken.set(addr);
    }
}

impl Drop for WakeInFlight {
    /// The wake-up call has returned: the sleeper no longer needs us to run.
    fn drop(&mut self) {
        let addr = self.woken.get();
        if addr == 0 {
            return;
        }
        // SAFETY: the sleeper's record was alive when we marked it, and our pin, taken before,
        // keeps it readable even if the thread has exited since.
        unsafe { &*(addr as *const Task) }.clear_woken_by(self.waker);
    }
}

const_thread_local! {
    /// This thread's record, or null before the first use and after the exit hook retired it.
    static CURRENT: Cell<*mut Task> = Cell::new(ptr::null_mut());
}

/// The calling thread's record, created on first use.
#[inline]
pub(crate) fn current() -> Me {
    match NonNull::new(CURRENT.with(Cell::get)) {
        Some(task) => Me(task),
        None => create_current(),
    }
}

#[cold]
fn create_current() -> Me {
    // The machine's CPU-mask width is read from /sys once per process: here, on a thread's
    // first lock, rather than inside the first waiter's loan.
    crate::sys::attrs::live_words();
    let task = Box::into_raw(Box::new(Task {
        tid: core::sync::atomic::AtomicI32::new(crate::loom::current_tid()),
        blocked_on: AtomicUsize::new(0),
        walkers: AtomicUsize::new(0),
        exited: AtomicBool::new(false),
        wait_seq: AtomicUsize::new(0),
        timed_wait: AtomicBool::new(false),
        parked_at_us: core::sync::atomic::AtomicU32::new(0),
        woken_by: AtomicUsize::new(0),
        donor: TaskDonor::new(),
        next_new: AtomicUsize::new(0),
        held: Cell::new(0),
        reading: std::array::from_fn(|_| AtomicUsize::new(0)),
        slot: Slot::new(),
    }));
    announce(task);
    CURRENT.with(|c| c.set(task));
    (crate::UP_CALLS.record_created)();
    crate::loom::on_thread_exit(task.cast(), retire_current);
    // SAFETY: just allocated, non-null.
    Me(unsafe { NonNull::new_unchecked(task) })
}

/// The exit hook: unpublish the record and free it once no reader can see it.
///
/// # Safety
/// `arg` is the record `create_current` registered for this thread, and this runs on that thread.
unsafe fn retire_current(arg: *mut ()) {
    crate::loom::thread_exiting();
    let task = arg as *mut Task;
    // try_with: under loom the slot may already be gone at this point; then nothing to clear.
    let _ = CURRENT.try_with(|c| {
        if c.get() == task {
            c.set(ptr::null_mut());
        }
    });
    // SAFETY: the record is alive: only this function frees it, once.
    let record = unsafe { &*task };
    // From here on no donation syscall may reach this thread's tid.
    (crate::UP_CALLS.thread_exit)(record);
    if record.held.get() > 0 || record.reads_any() || record.slot.is_linked() {
        // A lock word still names this thread as owner and will forever, a note names an
        // `RwLock` it still reads (a forgotten read guard), or a lock's request stack still
        // links our slot (a `run` that a deadlock cancelled); keep the record.
        // Relaxed: diagnostic flag, see `Task::has_exited`.
        record.exited.store(true, Ordering::Relaxed);
        return;
    }
    with_registry(|r| {
        adopt_new_records(r);
        r.retain(|&t| t != task as usize)
    });
    // SAFETY: unreachable for new readers (not current, not in the registry, owns no lock word),
    // allocated by Box, and retired once.
    unsafe { crate::loom::retire(task) }
}

/// What the record layer calls up into the layers above it, wired by the crate root.
pub(crate) struct UpCalls {
    /// After a thread's record is created (the `fork()` hooks are armed with the first).
    pub(crate) record_created: fn(),
    /// In the exit hook, before the record is retired: from here on no donation syscall may
    /// reach the thread's tid.
    pub(crate) thread_exit: fn(&Task),
}

/// Kernel thread id of the calling thread.
///
/// ```
/// let tid = proxy_lock::current_tid();
/// assert!(tid > 0);
/// ```
pub fn current_tid() -> Tid {
    current().task().tid()
}

/// The lock that thread `tid` of this process is asleep on, if it is asleep on a proxy-lock
/// `Mutex` or `RwLock`. `None` for unknown threads, threads that never used proxy-lock, and
/// running threads.
///
/// This is one edge of the blocked_on graph; [`crate::Mutex::owner_tid`] gives the other.
///
/// ```
/// use proxy_lock::{Mutex, current_tid, thread_blocked_on};
/// use std::sync::Arc;
///
/// let m = Arc::new(Mutex::new(0));
/// let guard = m.lock().unwrap();
/// let m2 = Arc::clone(&m);
/// let (tx, rx) = std::sync::mpsc::channel();
/// let t = std::thread::spawn(move || {
///     tx.send(current_tid()).unwrap();
///     *m2.lock().unwrap() += 1;
/// });
/// let waiter = rx.recv().unwrap();
/// while thread_blocked_on(waiter) != Some(m.id()) {
///     std::thread::yield_now();
/// }
/// assert_eq!(m.owner_tid(), Some(current_tid()));
/// drop(guard);
/// t.join().unwrap();
/// assert_eq!(thread_blocked_on(waiter), None);
/// ```
pub fn thread_blocked_on(tid: Tid) -> Option<LockId> {
    with_live_tasks(|tasks| {
        for task in tasks {
            if task.tid() == tid {
                return task.blocked_on();
            }
        }
        None
    })
}

/// Runs `f` over the records of every live thread that has used proxy-lock (threads that
/// exited holding a lock are left out), under the registry lock, which keeps each record alive
/// for as long as `f` runs. For diagnostics and chain walks, never for lock paths.
pub(crate) fn with_live_tasks<R>(f: impl FnOnce(&mut dyn Iterator<Item = &Task>) -> R) -> R {
    with_registry(|registry| {
        adopt_new_records(registry);
        let mut tasks = registry
            .iter()
            .map(|&t| {
                // SAFETY: records in the registry are alive while its lock is held: a record is
                // removed under that lock before it is retired (`retire_current`).
                unsafe { &*(t as *const Task) }
            })
            .filter(|t| !t.has_exited());
        f(&mut tasks)
    })
}

/// `with_live_tasks` if the registry's lock is free right now (`registry::try_with_registry`);
/// `None` otherwise.
pub(crate) fn try_with_live_tasks<R>(
    f: impl FnOnce(&mut dyn Iterator<Item = &Task>) -> R,
) -> Option<R> {
    try_with_registry(|registry| {
        adopt_new_records(registry);
        let mut tasks = registry
            .iter()
            .map(|&t| {
                // SAFETY: records in the registry are alive while its lock is held: a record is
                // removed under that lock before it is retired (`retire_current`).
                unsafe { &*(t as *const Task) }
            })
            .filter(|t| !t.has_exited());
        f(&mut tasks)
    })
}

#[cfg(all(test, not(loom), donates))]
mod tests {
    use crate::sys::sched::current_cpu;
    use crate::sys::test_threads::{
        Hog, ReadBack, assert_finished_on_cpu_1_and_put_back, become_idle_on, burn, cpus_0_and_1,
        has_two_cpus, pin_to, read_back, wait_until_asleep,
    };
    use crate::{Mutex, Policy};
    use std::sync::{Arc, mpsc};
    use std::time::Duration;

    /// The demo's `chain` case at its worst instant: the unlocker of B, SCHED_IDLE on CPU 0, has
    /// chosen the sleeper (handed it B, freed B for it, or run its section published on B) and a
    /// nice-0 hog takes CPU 0 before the sleeper is woken. The sleeper holds A, which a thread on
    /// CPU 1 now wants. Its loan must reach the unlocker, which then finishes the wake-up on CPU 1
    /// and is put back (CPU 0, SCHED_IDLE) once it is done. Without the unlocker on the chain, the
    /// loan went to the sleeper alone, and the unlocker finished on CPU 0 when the hog stopped
    /// (2 s). The window is widened by a test hook that burns 20 ms of the unlocker's CPU time
    /// right after its choice. No privilege needed (the CPU is what gets the unlocker going).
    #[test]
    fn a_preempted_unlocker_that_chose_a_sleeper_gets_the_chains_loan_until_it_woke_it() {
        if !has_two_cpus("the preempted threads' and the waiter's") {
            return;
        }
        let _stage = cpus_0_and_1();
        // Handoff: B is handed to the sleeper. Spin: B is freed and the sleeper woken. `run`:
        // the sleeper waits in `B.run`, and the unlocker runs its section and wakes it.
        for (policy, run) in [
            (Policy::Handoff, false),
            (Policy::Spin, false),
            (Policy::Adaptive, true),
        ] {
            let (finished_on, back) = preempt_unlocker_after_choice(policy, run);
            assert_finished_on_cpu_1_and_put_back(
                &format!("{policy:?} (run: {run}): the unlocker (its wake-up)"),
                "",
                finished_on,
                back,
            );
        }
    }

    type Outcome = (Option<u32>, ReadBack);

    /// Stages the case with B under `policy`, the sleeper in `B.lock()` or (`run`) in `B.run`;
    /// returns the CPU the unlocker's hook ended on, and the unlocker's affinity and policy once
    /// its unlock returned.
    fn preempt_unlocker_after_choice(policy: Policy, run: bool) -> Outcome {
        const HOG_RUN: Duration = Duration::from_secs(2);
        let a = Arc::new(Mutex::new(()));
        let b = Arc::new(Mutex::with_policy((), policy));
        // The unlocker: takes B, and lets it go once the sleeper sleeps on it.
        let (sleeper_tid_tx, sleeper_tid) = mpsc::channel();
        let (locked_b_tx, locked_b) = mpsc::channel();
        let (in_gap_tx, in_gap) = mpsc::channel();
        let (done_tx, done) = mpsc::channel();
        let (exit_tx, exit) = mpsc::channel::<()>();
        let unlocker = {
            let b = Arc::clone(&b);
            std::thread::spawn(move || {
                become_idle_on(0);
                let guard = b.lock().unwrap();
                locked_b_tx.send(()).unwrap();
                let sleeper: crate::Tid = sleeper_tid.recv().unwrap();
                wait_until_asleep(sleeper);
                let (cpu_tx, cpu_rx) = mpsc::channel();
                crate::loom::AFTER_UNPARK_CHOICE.set(Some(Box::new(move || {
                    in_gap_tx.send(()).unwrap();
                    burn(Duration::from_millis(20));
                    cpu_tx.send(current_cpu()).unwrap();
                })));
                drop(guard);
                let tid = crate::sys::gettid();
                done_tx
                    .send((cpu_rx.recv().unwrap(), read_back(tid)))
                    .unwrap();
                let _ = exit.recv();
            })
        };
        locked_b.recv().unwrap();
        // The sleeper: holds A and sleeps on B.
        let (holds_a_tx, holds_a) = mpsc::channel();
        let sleeper = {
            let (a, b) = (Arc::clone(&a), Arc::clone(&b));
            std::thread::spawn(move || {
                become_idle_on(0);
                let _a = a.lock().unwrap();
                holds_a_tx.send(()).unwrap();
                sleeper_tid_tx.send(crate::sys::gettid()).unwrap();
                if run {
                    b.run(|_| ()).unwrap();
                } else {
                    drop(b.lock().unwrap());
                }
            })
        };
        holds_a.recv().unwrap();
        in_gap.recv().unwrap();
        let hog = Hog::start(0, HOG_RUN);
        pin_to(1);
        // Let the hog preempt the unlocker, then wait for A.
        std::thread::sleep(Duration::from_millis(10));
        drop(a.lock().unwrap());
        let outcome = done.recv().unwrap();
        hog.stop();
        exit_tx.send(()).unwrap();
        unlocker.join().unwrap();
        sleeper.join().unwrap();
        outcome
    }
}
