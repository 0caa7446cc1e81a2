//! Published critical sections: [`Mutex::run`] and execution by proxy.
//!
//! A caller of `run` that cannot take the lock at once (it spins briefly first, as long as
//! nobody is queued and nothing is published: with tiny sections the holder is gone within a
//! few pauses, and running a section on its own thread keeps its cache lines where they are)
//! does not queue itself for the lock; it queues its critical section. Whichever thread holds
//! the lock runs the queued sections before it lets the lock go, so a section never waits for
//! its own thread to be woken and scheduled: the thread that is on a CPU and holds the lock
//! does the work (the user-space form of the kernel's proxy execution). The caller sleeps only
//! to be told that its section ran, and is woken once the lock has been passed on (`Wakes`):
//! a futex wake inside the serving loop would hold the lock for microseconds per sleeper.
//!
//! # Request slots
//!
//! Every thread has one request [`Slot`] in its task record (a thread waits in at most one
//! `run` at a time), so publishing allocates nothing. The slot points at the section itself,
//! which lives on the caller's stack: the caller does not return before the section ran, so
//! borrowed captures stay valid. Published slots wait on a lock-free stack ([`Requests`], a
//! Treiber stack: push with one CAS, take everything with one swap) in a table found by the
//! lock's address, not in the lock, and the holder reverses what it takes, so sections run in
//! publication order. Locks that hash to one bucket share its stack: a holder keeps its own
//! lock's slots and hands the others back to their callers (`RETURNED`), who take their lock
//! and run the section themselves.
//!
//! [`Requests`]: requests::Requests
//!
//! # Slot states
//!
//! ```text
//!            publish                 holder claims            holder ran it
//!   IDLE/DONE -------> QUEUED ---------------------> RUNNING -------------> DONE
//!                       |  ^                           ^
//!         bound reached |  | caller takes the lock     | holder claims
//!                       v  |                           |
//!                      RETRY --------------------------+
//!   QUEUED --(caller found a deadlock cycle)--> CANCELLED --(next holder skips it)--> IDLE
//!   QUEUED or RETRY --(another lock's holder took it)--> RETURNED --(caller runs it)--> IDLE
//! ```
//!
//! `SLEEPER` is or-ed into `QUEUED` or `RUNNING` by a caller that parks (on its slot's address);
//! only then does the holder pay for a wake-up. A slot is free for its thread's next `run` in
//! `IDLE` or `DONE`; in any other state it is linked on some lock's stack, or being run.
//!
//! # Who serves, and the `REQUESTS` bit
//!
//! A publisher pushes its slot, then either finds the lock free and takes it (its own unlock
//! serves the stack), or sets `REQUESTS` in the held word with a read-modify-write. The word's
//! fast-path unlock then fails, and the holder's slow path clears `REQUESTS` and takes the
//! stack, in that order, until the stack is empty (`serve`). Because the publisher's write to
//! the word is an RMW (release) and the holder's clear is an RMW (acquire), either the holder's
//! clear comes later and the holder's take sees the push, or the publisher's write comes later
//! and finds `REQUESTS` clear, sets it, and the holder's unlock CAS fails again. Handovers keep
//! `REQUESTS`, and an unlock that would free the word finds it set in the same RMW and keeps
//! the lock to serve instead (`RawMutex::pass_on`). So a published section is never left
//! behind a free lock, except by a holder that reached the bound, which has woken the caller
//! that takes over.
//!
//! # The bound
//!
//! A holder runs at most [`COMBINE_BOUND`] sections per unlock. Then it pushes the rest back
//! (they stay first in line), marks the oldest `RETRY` and wakes it: that caller takes the lock
//! the ordinary way (queued, lending, as any waiter) and serves in its turn. So no thread
//! serves forever, and guard users queued on the lock get their turn between rounds.
//!
//! [`Mutex::run`]: crate::Mutex::run

mod requests;

use crate::loom::{FilterOp, Ordering, Pin, UnparkToken, unpark_filter};
use crate::task::slot::{
    CANCELLED, DONE, IDLE, PHASE, QUEUED, RETRY, RETURNED, RUNNING, SLEEPER, Slot, slot,
};
use crate::task::{Me, task_of_slot};
use crate::tuning::COMBINE_BOUND;
use crate::word::RawMutex;
use requests::stack_of;

/// The type-erased start of a section on the publisher's stack: how to run it.
#[repr(C)]
pub(crate) struct SectionHead {
    /// Runs the section on the mutex's data and stores its outcome. Called once, by a thread
    /// that holds the lock, with whether the lock is poisoned (the holder knows, and the
    /// section's caller, running its own, does not read the word it has just taken).
    pub(crate) call: unsafe fn(*const SectionHead, bool),
}

/// What `serve` did.
#[derive(PartialEq, Eq)]
pub(crate) enum Served {
    /// The stack was empty when last looked at.
    All,
    /// The budget ran out; the rest is back on the stack and its oldest was asked to take over.
    Passed,
}

/// Runs published sections on `raw`, which `me` holds, oldest first, until none is left or
/// `budget` sections ran (`budget` is decremented). A budget of 0 serves nothing and passes
/// at once, for unlocks that must not run user code (a panicking thread, a Condvar's park).
///
/// Callers that sleep are not woken here but recorded in `wakes`, for the unlocker to wake
/// once the lock is free: a futex wake costs microseconds, and made inside the loop it would
/// hold the lock for every sleeper.
pub(crate) fn serve(raw: &RawMutex, me: Me, budget: &mut u32, wakes: &mut Wakes) -> Served {
    let mut proxied = 0;
    let served = serve_counting(raw, me, budget, &mut proxied, wakes);
    // One add per unlock, not per section: the counter is shared by every thread.
    crate::stats::count_proxied(proxied);
    served
}

/// Slots whose callers sleep and must be woken, collected while the lock is held.
///
/// Until its wake-up call returns, each such caller is marked as woken by the holder
/// (`Task::woken_by`): its section ran, but it sleeps until the holder, which passes the lock
/// on first, gets to wake it. A holder preempted in between (SCHED_IDLE beside a hog) would
/// otherwise leave a caller that holds another lock asleep while the lenders on its chain lend
/// to it alone, as an unlocker's wake-up gap does (`task::WakeInFlight`).
pub(crate) struct Wakes {
    keys: [usize; WAKES_HELD],
    len: usize,
    waker: Me,
    /// Keeps every marked caller's record readable until its mark is cleared: a caller may see
    /// its slot DONE, return and exit before our wake-up. Taken before any slot is completed.
    _pin: Pin,
}

/// How many wakes an unlock defers (the default bound, so normally all of them); beyond that
/// they happen at once. 512 bytes on the unlock slow path's stack.
const WAKES_HELD: usize = 64;

impl Wakes {
    /// The wake list of `waker`, the holder that runs the sections.
    pub(crate) fn new(waker: Me) -> Wakes {
        Wakes {
            keys: [0; WAKES_HELD],
            len: 0,
            waker,
            _pin: crate::loom::pin(),
        }
    }

    fn add(&mut self, key: usize) {
        // SAFETY: `key` is the slot of a caller that was waiting for its section when we took
        // it, so its record was alive after our pin was taken.
        let caller = unsafe { task_of_slot(key) };
        caller.mark_woken_by(self.waker);
        if self.len == WAKES_HELD {
            unpark_slot(key);
            caller.clear_woken_by(self.waker);
        } else {
            self.keys[self.len] = key;
            self.len += 1;
        }
    }

    /// Wakes every recorded caller. A caller that already saw its slot change (and maybe
    /// published again) only wakes spuriously and parks again.
    pub(crate) fn wake_all(&mut self) {
        for &key in &self.keys[..self.len] {
            unpark_slot(key);
            // SAFETY: as in `add`; the pin still keeps the record readable.
            unsafe { task_of_slot(key) }.clear_woken_by(self.waker);
        }
        self.len = 0;
    }
}

impl Drop for Wakes {
    fn drop(&mut self) {
        self.wake_all();
    }
}

fn serve_counting(
    raw: &RawMutex,
    me: Me,
    budget: &mut u32,
    proxied: &mut u64,
    wakes: &mut Wakes,
) -> Served {
    loop {
        raw.clear_requests_flag();
        let mut next = reverse(take_mine(raw, wakes));
        if next == 0 {
            return Served::All;
        }
        while next != 0 {
            if *budget == 0 {
                if pass_on(raw, next, wakes) {
                    return Served::Passed;
                }
                break; // all cancelled; look for newer ones
            }
            // SAFETY: linked on the stack we took while holding the lock.
            let s = unsafe { slot(next) };
            // Relaxed: we own the taken chain; read before the slot may be freed.
            next = s.next.load(Ordering::Relaxed);
            if run_slot(s, raw.is_poisoned(), wakes) {
                *budget -= 1;
                *proxied += u64::from(!std::ptr::eq(s, &me.task().slot));
            }
        }
    }
}

/// Publishes `slot` (its section and state written) on `raw`'s stack.
pub(crate) fn publish(raw: &RawMutex, slot: &Slot) {
    // Relaxed: published by the push's Release.
    slot.lock.store(raw.addr(), Ordering::Relaxed);
    stack_of(raw.addr()).push(slot);
}

/// Takes the stack `raw` shares with the locks of its bucket, and returns `raw`'s slots on it
/// (newest first). The other locks' slots go back to their callers (`hand_back`). Holder only.
fn take_mine(raw: &RawMutex, wakes: &mut Wakes) -> usize {
    let lock = raw.addr();
    let mut taken = stack_of(lock).take_all();
    let (mut mine, mut last): (usize, Option<&Slot>) = (0, None);
    while taken != 0 {
        // SAFETY: linked on the stack we took while holding the lock.
        let s = unsafe { slot(taken) };
        // Relaxed: we own the taken chain; `lock` was published by the push and our take.
        taken = s.next.load(Ordering::Relaxed);
        if s.lock.load(Ordering::Relaxed) != lock {
            hand_back(s, wakes);
            continue;
        }
        // Appended, so the chain stays newest first.
        s.next.store(0, Ordering::Relaxed);
        match last {
            Some(l) => l.next.store(s.addr(), Ordering::Relaxed),
            None => mine = s.addr(),
        }
        last = Some(s);
    }
    mine
}

/// A slot of another lock, taken with ours: its caller owns it again (`RETURNED`) and takes
/// that lock itself; a cancelled one is just unlinked. Its `next` was read before.
fn hand_back(s: &Slot, wakes: &mut Wakes) {
    // Release: our read of `next` comes first; the caller may publish again at once. Nobody
    // but its caller changes a slot we took meanwhile (to SLEEPER, CANCELLED or QUEUED).
    let before = s
        .state
        .fetch_update(Ordering::Release, Ordering::Relaxed, |state| {
            Some(match state & PHASE {
                CANCELLED => IDLE,
                _ => RETURNED,
            })
        })
        .unwrap_or_else(|state| state);
    if before & SLEEPER != 0 {
        wakes.add(s.addr());
    }
}

/// The default budget of one unlock; see [`COMBINE_BOUND`].
pub(crate) fn budget() -> u32 {
    // Relaxed: a tuning knob for measurements.
    match BOUND_OVERRIDE.load(std::sync::atomic::Ordering::Relaxed) {
        0 => COMBINE_BOUND,
        n => n,
    }
}

static BOUND_OVERRIDE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// For measurements only: how many published sections one unlock may run (0 restores the
/// default of 64). Process-wide (`test_hooks`).
pub(crate) fn set_combine_bound_for_measurement(bound: u32) {
    // Relaxed: as in `budget`.
    BOUND_OVERRIDE.store(bound, std::sync::atomic::Ordering::Relaxed);
}

/// Reverses a chain taken from the stack (newest first) into publication order.
fn reverse(mut newest: usize) -> usize {
    let mut oldest_first = 0;
    while newest != 0 {
        // SAFETY: linked on the stack we took while holding the lock.
        let s = unsafe { slot(newest) };
        // Relaxed: we own the taken chain.
        let next = s.next.load(Ordering::Relaxed);
        s.next.store(oldest_first, Ordering::Relaxed);
        oldest_first = newest;
        newest = next;
    }
    oldest_first
}

/// Claims and runs one slot's section, completes it, and wakes its thread if it sleeps. False
/// if the slot was cancelled (then it is unlinked and nothing runs).
fn run_slot(s: &Slot, poisoned: bool, wakes: &mut Wakes) -> bool {
    // Relaxed: the section behind the slot was published by the push (Release) and our take
    // (Acquire); the claim only decides between us and a caller cancelling or retrying.
    let claimed = s
        .state
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |state| {
            matches!(state & PHASE, QUEUED | RETRY).then_some(RUNNING | (state & SLEEPER))
        });
    if claimed.is_err() {
        // Cancelled: its caller has left. Release: our read of `next` comes first; the
        // thread may publish again once it sees IDLE.
        s.state.store(IDLE, Ordering::Release);
        return false;
    }
    // Relaxed: as the claim.
    let head = s.section.load(Ordering::Relaxed) as *const SectionHead;
    // SAFETY: the slot was QUEUED or RETRY, so its caller is waiting and the section is alive;
    // our claim makes us its only runner; we hold the lock.
    unsafe { ((*head).call)(head, poisoned) };
    // Release: the outcome happens-before the caller's Acquire load of DONE. After this the
    // slot may be reused at once: only its address is used afterwards.
    let before = s.state.swap(DONE, Ordering::Release);
    if before & SLEEPER != 0 {
        wakes.add(s.addr());
    }
    true
}

fn unpark_slot(key: usize) {
    let mut first = true;
    let filter = |_| {
        if std::mem::take(&mut first) {
            FilterOp::Unpark
        } else {
            FilterOp::Stop
        }
    };
    // SAFETY: the key is a slot address, parked on only by this module; the callback does
    // not panic. A thread woken by a stale unpark finds its state unchanged and parks again.
    unsafe { unpark_filter(key, filter, |_| UnparkToken(0)) };
}

/// The budget ran out with `rest` (oldest first) still to run: ask the oldest live one to
/// take over, and put all of them back on the stack, older than anything published since.
/// False if every one of them was cancelled (they are unlinked, nothing is left to pass).
fn pass_on(raw: &RawMutex, mut rest: usize, wakes: &mut Wakes) -> bool {
    // The first slot that accepts RETRY (or already has it, from an earlier pass); cancelled
    // ones on the way are unlinked.
    let (target, before) = loop {
        if rest == 0 {
            return false;
        }
        // SAFETY: linked on the chain we own.
        let s = unsafe { slot(rest) };
        // Relaxed: as in `run_slot`.
        let state = s.state.load(Ordering::Relaxed);
        match state & PHASE {
            RETRY => break (s, 0),
            // SLEEPER is dropped: the caller is woken below, and looks.
            QUEUED => {
                if s.state
                    .compare_exchange(state, RETRY, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
                {
                    break (s, state);
                }
            }
            _ => {
                // Cancelled. Relaxed: we own the chain; Release: as in `run_slot`.
                rest = s.next.load(Ordering::Relaxed);
                s.state.store(IDLE, Ordering::Release);
            }
        }
    };
    push_back(raw, rest, wakes);
    raw.set_requests_flag();
    // The caller may already have seen RETRY and be on its way to the lock, which we still
    // hold: it queues for it like any waiter, and a spare unpark only makes it look again.
    if before & SLEEPER != 0 {
        wakes.add(target.addr());
    }
    true
}

/// Puts the chain `oldest` (oldest first) back on the stack below anything published since.
fn push_back(raw: &RawMutex, oldest: usize, wakes: &mut Wakes) {
    // The stack is newest first: reverse the chain (`oldest` is then its bottom, with no
    // next), and hang it under whatever was published on this lock since, until a CAS from
    // empty succeeds.
    let mut top = reverse(oldest);
    loop {
        let newer = take_mine(raw, wakes);
        if newer != 0 {
            let mut bottom = newer;
            loop {
                // SAFETY: taken from the stack while holding the lock.
                let s = unsafe { slot(bottom) };
                // Relaxed: we own the taken chain.
                match s.next.load(Ordering::Relaxed) {
                    0 => {
                        s.next.store(top, Ordering::Relaxed);
                        break;
                    }
                    n => bottom = n,
                }
            }
            top = newer;
        }
        if stack_of(raw.addr()).restore(top) {
            return;
        }
    }
}
