//! `Mutex::run`, the caller's side of execution by proxy: a section as it is built on the
//! caller's stack (the closure, the place for its outcome, and the type-erased entry a holder
//! calls), its publication, and the caller's wait until a holder ran it. The holder's side is
//! `crate::proxy`.

use super::Mutex;
use super::wait::wait_for;
use crate::chain::Deadlock;
use crate::donor::Spin;
use crate::loom::{Ordering, ParkResult, ParkToken, park};
use crate::proxy::SectionHead;
use crate::spin::{ChainEndWatch, SpinWait};
use crate::task::slot::{CANCELLED, DONE, IDLE, PHASE, QUEUED, RETRY, RETURNED, RUNNING, SLEEPER};
use crate::task::{self, Me, Slot};
use crate::tuning::RUN_SPIN_ROUNDS;
use crate::word::RawMutex;
use std::cell::UnsafeCell;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::{LockResult, PoisonError};

/// What a section left: whether the mutex was poisoned when it ran, and its result or panic.
struct Outcome<R> {
    was_poisoned: bool,
    result: std::thread::Result<R>,
}

/// A section and the place for its outcome, on the caller's stack.
#[repr(C)]
struct Section<'m, T: ?Sized, F, R> {
    /// First, so the section's address is its head's.
    head: SectionHead,
    mutex: &'m Mutex<T>,
    f: UnsafeCell<Option<F>>,
    outcome: UnsafeCell<Option<Outcome<R>>>,
}

impl<'m, T: ?Sized, F: FnOnce(&mut T) -> R, R> Section<'m, T, F, R> {
    fn new(mutex: &'m Mutex<T>, f: F) -> Self {
        Section {
            head: SectionHead { call: Self::call },
            mutex,
            f: UnsafeCell::new(Some(f)),
            outcome: UnsafeCell::new(None),
        }
    }

    /// # Safety
    /// `head` is the head of a live `Section<T, F, R>`, the calling thread holds its mutex
    /// (`poisoned` or not), and nobody else touches the section meanwhile (the slot's claim,
    /// or the caller's own lock).
    unsafe fn call(head: *const SectionHead, was_poisoned: bool) {
        // SAFETY: `head` is the first field of a repr(C) Section of exactly these types.
        let section = unsafe { &*(head as *const Self) };
        // SAFETY: exclusive access, per the contract.
        let Some(f) = (unsafe { &mut *section.f.get() }).take() else {
            return;
        };
        let mutex = section.mutex;
        // SAFETY: we hold the lock, so no other reference to the data exists.
        let data = unsafe { &mut *mutex.data.get() };
        let result = catch_unwind(AssertUnwindSafe(move || f(data)));
        if result.is_err() {
            mutex.raw.poison();
        }
        // SAFETY: exclusive access, per the contract; the publisher reads it only after DONE.
        unsafe {
            *section.outcome.get() = Some(Outcome {
                was_poisoned,
                result,
            })
        };
    }

    /// Runs the section on this thread, which holds the lock, `poisoned` or not.
    ///
    /// # Safety
    /// The calling thread holds `self.mutex`.
    unsafe fn run_here(&self, poisoned: bool) {
        // SAFETY: forwarded; the section is ours and unpublished.
        unsafe { Self::call(self.erased(), poisoned) }
    }

    /// The section as its type-erased head. Derived from the whole section, not from `head`
    /// alone: whoever calls it reads and writes the fields behind the head.
    fn erased(&self) -> *const SectionHead {
        (self as *const Self).cast()
    }

    fn into_result(self) -> LockResult<R> {
        let Outcome {
            was_poisoned,
            result,
        } = self
            .outcome
            .into_inner()
            .expect("proxy_lock: a section returned without running");
        match result {
            Err(payload) => resume_unwind(payload),
            Ok(r) if was_poisoned => Err(PoisonError::new(r)),
            Ok(r) => Ok(r),
        }
    }
}

impl<T: ?Sized> Mutex<T> {
    /// Runs `f` on the protected data under the lock and returns its result: on this thread if
    /// the lock is free (or frees up during a brief spin), otherwise possibly on the thread that
    /// holds the lock, which runs the sections published while it held it before it lets the
    /// lock go (proxy execution). A waiter's section then never waits for the waiter to be
    /// woken and scheduled. A caller that has to sleep lends its scheduling attributes to the
    /// holder, as a waiter in [`Mutex::lock`] does.
    ///
    /// * The section runs exactly once, and `run` returns only after it ran, so `f` may borrow
    ///   from the caller's stack.
    /// * If the mutex was already poisoned, `f` still runs and its result comes back inside
    ///   [`PoisonError`].
    /// * If `f` panics, the mutex is poisoned and the panic resumes on the caller's thread with
    ///   the original payload; a thread that ran it by proxy carries on unharmed.
    /// * Thread-locals that `f` touches are those of the thread that runs it, which may not be
    ///   the caller's. So are the thread's name, its scheduling attributes and its stack.
    /// * Guard users and `run` users may share one mutex: mutual exclusion holds across both,
    ///   and a guard's unlock runs the published sections too.
    /// * Sections run in publication order, except that one published while the holder of
    ///   another lock took it along (their sections share a table bucket, found by address)
    ///   comes back to its caller, which takes the lock and runs it itself, like a `lock()`
    ///   waiter.
    /// * A holder runs at most 64 published sections per unlock, then asks the oldest
    ///   remaining caller to take the lock and serve, so no thread serves forever
    ///   (`examples/combine_bound.rs` measures the bound).
    ///
    /// # Panics
    ///
    /// If the calling thread holds this mutex already (as [`Mutex::lock`]), if the wait would
    /// never end (a deadlock cycle), and with `f`'s own panic.
    ///
    /// ```
    /// use proxy_lock::Mutex;
    /// let total = Mutex::new(0u64);
    /// let parts = [3u64, 4, 5];
    /// std::thread::scope(|s| {
    ///     for p in &parts {
    ///         // `p` borrows from this stack: `run` returns only after the section ran.
    ///         s.spawn(|| total.run(|t| *t += *p).unwrap());
    ///     }
    /// });
    /// assert_eq!(total.run(|t| *t).unwrap(), 12);
    /// ```
    pub fn run<F, R>(&self, f: F) -> LockResult<R>
    where
        F: FnOnce(&mut T) -> R + Send,
        R: Send,
    {
        let section = Section::new(self, f);
        let me = task::current();
        let took = self.raw.try_lock_spinning(me);
        if took.is_some() || !publish_and_wait(&self.raw, me, section.erased()) {
            // Our slot is in use when we did not take the lock (a `run` inside a section this
            // thread is running, or a request a deadlock left behind), or the section came back
            // unrun (another lock's holder took it with its own): take it as `lock()` would.
            let poisoned = took.unwrap_or_else(|| self.raw.lock_as(me));
            // SAFETY: we hold the lock.
            unsafe { section.run_here(poisoned) };
            // SAFETY: we hold the lock; this unlock serves what others published meanwhile.
            unsafe { self.raw.unlock_as(me) };
        }
        section.into_result()
    }
}

/// Publishes `head` in `me`'s slot on `raw` and returns once it ran. False if it did not run:
/// the slot was in use (nothing published), or it came back unrun (`RETURNED`).
fn publish_and_wait(raw: &RawMutex, me: Me, head: *const SectionHead) -> bool {
    let slot = &me.task().slot;
    // Relaxed: only this thread makes its slot leave IDLE/DONE, and it reads its own writes.
    // A holder's write of DONE was already seen with Acquire by the wait that ended the last
    // request, and a holder's unlink of a cancelled slot is only read as "still busy" late.
    if !matches!(slot.state.load(Ordering::Relaxed) & PHASE, IDLE | DONE) {
        return false;
    }
    raw.assert_not_held_by(me);
    // Relaxed: both published by the push's Release.
    slot.section.store(head as usize, Ordering::Relaxed);
    slot.state.store(QUEUED, Ordering::Relaxed);
    crate::proxy::publish(raw, slot);
    if raw.flag_requests_or_take(me) {
        // The lock was free and is ours: our unlock serves the stack, our section included.
        // SAFETY: we hold the lock.
        unsafe { raw.unlock_as(me) };
    }
    wait_until_served(raw, me, slot)
}

/// Waits until the slot's section ran: spins briefly, then waits for the lock's owner, the
/// thread that will run the section, as a lock waiter does (`sleep_on_slot`), and takes the
/// lock itself when asked to. False if the slot was handed back unrun (`RETURNED`): the caller
/// runs the section itself.
fn wait_until_served(raw: &RawMutex, me: Me, slot: &Slot) -> bool {
    let mut spin = SpinWait::with_budget(RUN_SPIN_ROUNDS);
    loop {
        // Acquire: pairs with the holder's Release that wrote DONE after the outcome, or that
        // handed the slot back after its last read of it.
        let state = slot.state.load(Ordering::Acquire);
        match state & PHASE {
            DONE => return true,
            RETURNED => {
                // Relaxed: the slot is ours again; only this thread reads it now.
                slot.state.store(IDLE, Ordering::Relaxed);
                return false;
            }
            RETRY => {
                // Relaxed: the caller, not a holder, now answers for the slot; a holder that
                // claims it first (RUNNING) makes this fail.
                if slot
                    .state
                    .compare_exchange(state, QUEUED, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
                {
                    take_over(raw, me, slot);
                }
            }
            _ if spin.spin() => {}
            _ => sleep_on_slot(raw, me, slot),
        }
    }
}

/// A holder reached the bound and asked us to serve: take the lock the ordinary way and unlock,
/// which serves the stack (our section is in it unless someone ran it meanwhile).
fn take_over(raw: &RawMutex, me: Me, slot: &Slot) {
    match raw.lock_or_deadlock(me) {
        // SAFETY: we hold the lock.
        Ok(()) => unsafe { raw.unlock_as(me) },
        Err(deadlock) => give_up(slot, deadlock),
    }
}

/// Waits as a lock waiter does (`mutex::wait`) until a holder completes the slot or asks us
/// to take over: spins while the chain's last owner runs if it would lend
/// (`donor::before_spinning`: that owner runs our section, or passes the lock to one that
/// will), then lends and parks on the slot.
fn sleep_on_slot(raw: &RawMutex, me: Me, slot: &Slot) {
    let spin_first = |plan: Spin| {
        if plan != Spin::No
            && let Some(mut watch) = ChainEndWatch::new(raw, me, plan.start_grace_us())
        {
            while still_waiting(slot) && watch.still_running() {}
        }
        // Relaxed: the holder reads SLEEPER from its own RMW on the same word.
        let marked = slot
            .state
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
                still_waiting_in(s).then_some(s | SLEEPER)
            });
        // The state moved on: look again, without sleeping.
        marked.is_err().then_some(())
    };
    let park_on_slot = || {
        let validate = || {
            // Relaxed: under the queue lock; a holder's state change comes before its unpark,
            // which takes the same queue lock.
            let state = slot.state.load(Ordering::Relaxed);
            state & SLEEPER != 0 && still_waiting_in(state)
        };
        // SAFETY: the key is our slot's address, which only this module parks on; the
        // callbacks do not panic.
        let _: ParkResult =
            unsafe { park(slot.addr(), validate, || {}, |_, _| {}, ParkToken(0), None) };
    };
    if let Err(deadlock) = wait_for(me, raw.into(), false, spin_first, park_on_slot) {
        give_up(slot, deadlock);
    }
}

/// Whether the slot's section still waits for a holder or runs (the caller has nothing to do).
fn still_waiting(slot: &Slot) -> bool {
    // Relaxed: a hint for a spin; the caller's loop reads the state with Acquire.
    still_waiting_in(slot.state.load(Ordering::Relaxed))
}

fn still_waiting_in(state: u32) -> bool {
    matches!(state & PHASE, QUEUED | RUNNING)
}

/// We found a deadlock cycle through this wait. If the section has not been claimed, withdraw
/// it and panic with the cycle; otherwise it is running or ran, so there is no deadlock to
/// report and we go on waiting.
fn give_up(slot: &Slot, deadlock: Deadlock) {
    // Relaxed: a holder that sees CANCELLED touches nothing behind the slot.
    let cancelled = slot
        .state
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
            (s & PHASE == QUEUED).then_some(CANCELLED)
        })
        .is_ok();
    if cancelled {
        deadlock.raise();
    }
}
