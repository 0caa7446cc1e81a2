//! Rescue: getting a preempted ledger holder running again, the ledger lock's own priority
//! inversion.
//!
//! Every donation goes through the ledger lock, and low-priority threads take it too (an owner
//! that was handed a donated lock reconciles, `ledger::unlist_and_reconcile`). A SCHED_IDLE
//! holder preempted by an ordinary thread on its CPU holds up every donation in the process for
//! as long as that thread runs.
//!
//! So a waiter that finds the holder off a CPU (`crate::loom`'s ledger wait) lends it what it
//! would lend an owner: its policy and priority, and the CPU it is about to free if its rank
//! is better than the holder's ([`RescueSlot::try_rescue`]). That write happens outside the
//! ledger lock, so it must not confuse the ledger, which compares what it applied with what
//! it finds:
//!
//! * The rescuer writes only while the holder still holds the lock: it claims the slot, then
//!   checks the holder (Dekker with [`RescueSlot::releasing`], which waits for a claimed
//!   rescue to finish). A holder cannot exit while it holds the lock, so the tid is its own.
//! * While the rescue stands, the ledger sees the holder's attributes as they would be without
//!   it ([`RescueSlot::current_attrs`], [`RescueSlot::wrote`]): what it had before, with every
//!   later ledger write. A holder reading itself is not rescuable during the read, and one that
//!   has decided to restore itself (`ledger::restore_self`) not at all for the rest of its hold.
//! * The rescuer takes the ledger lock next (it was waiting for it) and, first thing, writes the
//!   holder back to that view where it still shows the loan ([`Rescue::undo`]). Until then the
//!   holder runs on the loan, which is what got it going.
//!
//! One rescue at a time, and none by a thread in its exit hook: a second waiter finds the slot
//! taken and sleeps as before.

use super::attrs::{Attrs, Lent};
use crate::loom::{AtomicU32, AtomicUsize, Ordering, Pin, fence};
use crate::task::Task;
use std::cell::UnsafeCell;

/// No rescue stands.
const IDLE: u32 = 0;
/// A rescuer is reading and writing the holder's attributes; only it touches `saved`.
const CLAIMED: u32 = 1;
/// The holder was lent to; `saved` is the ledger's view of it, read and written under the
/// ledger lock.
const RESCUED: u32 = 2;

/// The rescue slot, one per process (`crate::donor::rescue_slot`), with the ledger lock's holder.
pub(crate) struct RescueSlot {
    /// The record of the thread holding the ledger lock, 0 when none (or between holders).
    holder: AtomicUsize,
    /// `IDLE`, `CLAIMED` or `RESCUED`.
    state: AtomicU32,
    /// The rescued thread's record, while `state` is not `IDLE`.
    task: AtomicUsize,
    /// See `RESCUED`.
    saved: UnsafeCell<Attrs>,
    /// What the rescue left the thread with; the undo puts back only the parts that still
    /// show it (whatever changed them since, the application or the ledger, stands).
    lent: UnsafeCell<Attrs>,
}

// SAFETY: `saved` and `lent` are written only by the rescuer while `CLAIMED` (the state's CAS
// makes it the only one), and otherwise only under the ledger lock; they are read under the
// ledger lock after a load saw `RESCUED`, which the rescuer's Release store published.
unsafe impl Sync for RescueSlot {}

impl RescueSlot {
    crate::loom::const_fn! {
        pub(crate) fn new() -> RescueSlot {
            RescueSlot {
                holder: AtomicUsize::new(0),
                state: AtomicU32::new(IDLE),
                task: AtomicUsize::new(0),
                saved: UnsafeCell::new(Attrs::UNKNOWN),
                lent: UnsafeCell::new(Attrs::UNKNOWN),
            }
        }
    }

    /// In a forked child: no rescue stands, whatever a thread of the parent's was doing.
    pub(crate) fn reset_after_fork(&self) {
        // Relaxed: the child has one thread.
        self.holder.store(0, Ordering::Relaxed);
        self.task.store(0, Ordering::Relaxed);
        self.state.store(IDLE, Ordering::Relaxed);
    }

    /// `task` has taken the ledger lock.
    pub(crate) fn holding(&self, task: &Task) {
        // SeqCst: one side of the Dekker with `try_rescue` (see `releasing`).
        self.holder
            .store(task as *const Task as usize, Ordering::SeqCst);
    }

    /// The holder is about to let go of the ledger lock: it stops being rescuable, and waits
    /// out a rescue that claimed it before that (a rescuer's syscalls on our tid must land
    /// while we cannot exit).
    pub(crate) fn releasing(&self) {
        // Store, SeqCst fence, then the load in `wait_unclaimed`; `try_rescue` claims, fences
        // and loads the holder (Dekker): either the rescuer sees us gone and backs off, or we
        // see its claim and wait. Fences rather than SeqCst accesses alone, which loom models
        // as AcqRel only (its model of this found the gap).
        self.holder.store(0, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        self.wait_unclaimed();
    }

    fn wait_unclaimed(&self) {
        let mut spins = 0u32;
        // SeqCst: see `releasing`; also orders us after the rescuer's `saved` once it reads
        // `RESCUED` (the rescuer's store is Release).
        while self.state.load(Ordering::SeqCst) == CLAIMED {
            spins += 1;
            if spins < 64 {
                crate::loom::spin_hint();
            } else {
                crate::loom::yield_now();
            }
        }
    }

    /// Whether `task` is the thread a standing rescue lent to. Under the ledger lock.
    pub(crate) fn has_rescued(&self, task: &Task) -> bool {
        self.wait_unclaimed();
        // Relaxed: `wait_unclaimed`'s load ordered us after the rescuer's stores.
        self.state.load(Ordering::Relaxed) == RESCUED
            && self.task.load(Ordering::Relaxed) == task as *const Task as usize
    }

    /// `task`'s attributes as the ledger should see them: from the kernel, unless a rescue
    /// lent to it, then what it would have without that loan. Under the ledger lock.
    pub(crate) fn current_attrs(&self, task: &Task) -> Result<Attrs, crate::loom::Errno> {
        // The holder reading itself is not rescuable meanwhile (`releasing`'s Dekker): a rescue
        // landing between our look at the slot and the read would pass for its own attributes
        // (the loom model fails without this). Relaxed: only the holder stores its own address
        // here, and we hold the lock.
        let own = self.holder.load(Ordering::Relaxed) == task as *const Task as usize;
        if own {
            self.releasing();
        }
        let attrs = if self.has_rescued(task) {
            // SAFETY: under the ledger lock with the slot `RESCUED` (see the `Sync` impl).
            Ok(unsafe { *self.saved.get() })
        } else {
            crate::loom::read_attrs(task.tid())
        };
        if own {
            self.holding(task);
        }
        attrs
    }

    /// The ledger has written `task`, which now has `now` as far as the ledger knows (or is
    /// about to write it itself, `ledger::restore_self`). Under the ledger lock.
    pub(crate) fn wrote(&self, task: &Task, now: Attrs) {
        if self.has_rescued(task) {
            // SAFETY: under the ledger lock with the slot `RESCUED` (see the `Sync` impl).
            unsafe { *self.saved.get() = now };
        }
    }

    /// Called by a ledger waiter (`me`, the calling thread's record) that sees the holder off
    /// a CPU: lends the holder this thread's attributes and perhaps the CPU it is about to free
    /// (`lend_to_holder`), if that would help and no other rescue stands. The rescue must be
    /// undone once the caller holds the ledger lock. Not from a thread in its exit hook: that
    /// one may take the ledger lock (`ledger::forget`) after its thread locals are gone, and
    /// pinning then would set up a thread local that is never torn down.
    pub(crate) fn try_rescue(&'static self, me: &Task) -> Option<Rescue> {
        // Relaxed: our own flag, set by this thread's exit hook.
        if me.donor.exiting.load(Ordering::Relaxed) {
            return None;
        }
        let pin = crate::loom::pin();
        // SeqCst: see `releasing`.
        let holder = self.holder.load(Ordering::SeqCst);
        if holder == 0
            || self
                .state
                .compare_exchange(IDLE, CLAIMED, Ordering::SeqCst, Ordering::Relaxed)
                .is_err()
        {
            return None;
        }
        // After our claim and a SeqCst fence (Dekker with `releasing`). Still the holder: it
        // cannot let go of the lock, and so cannot exit, until we leave `CLAIMED`.
        fence(Ordering::SeqCst);
        if self.holder.load(Ordering::SeqCst) != holder {
            // Release: as every store that leaves `CLAIMED`.
            self.state.store(IDLE, Ordering::Release);
            return None;
        }
        // SAFETY: the holder's record is alive while it holds the ledger lock (above); our pin
        // keeps it alive after that, until the `Rescue` drops.
        let task = unsafe { &*(holder as *const Task) };
        // Relaxed: published by the Release store of `RESCUED`.
        self.task.store(holder, Ordering::Relaxed);
        let Some((had, lent)) = lend_to_holder(task, me) else {
            self.state.store(IDLE, Ordering::Release);
            return None;
        };
        // SAFETY: we hold the claim, so nobody else touches `saved` or `lent`.
        unsafe {
            *self.saved.get() = had;
            *self.lent.get() = lent;
        }
        // Release: `saved` and our writes happen-before the ledger's reads of the slot.
        self.state.store(RESCUED, Ordering::Release);
        Some(Rescue {
            slot: self,
            task,
            _pin: pin,
        })
    }
}

/// Lends the attributes of the calling thread (`me`) to `task` (the preempted ledger holder),
/// if that is better than what it has, and the CPU it is about to free if its rank is better
/// than the holder's. Returns what it had and what it has now.
///
/// A rescuer of the holder's own rank lends no CPU, as a donor's CPU goes with its rank in
/// `Lent::absorb`: where it ran, threads of that rank run too, and the holder would compete
/// with them there instead of on its own CPU.
fn lend_to_holder(task: &Task, me: &Task) -> Option<(Attrs, Attrs)> {
    if !super::ledger::claim_target(task) {
        return None; // exiting: no syscall may reach it any more
    }
    let had = crate::loom::read_attrs(task.tid()).ok()?;
    let mine = crate::loom::read_attrs(me.tid()).ok()?;
    if had.sched.better_than(&mine.sched) {
        return None; // our CPU is no better a place for it (`Lent::absorb`)
    }
    let cpu = crate::loom::current_cpu().filter(|_| mine.sched.better_than(&had.sched));
    let loan = Lent::from_donor(&mine, cpu);
    let target = had.with_loan(Some(&loan), super::cpu_donation());
    if target == had {
        return None;
    }
    let lent = super::ledger::write(task, had, target, had, true);
    Some((had, lent))
}

/// A rescue this thread made, to be undone once it holds the ledger lock. Keeps the rescued
/// record alive (`_pin`): the holder may exit as soon as it lets go of the lock.
pub(crate) struct Rescue {
    slot: &'static RescueSlot,
    task: *const Task,
    _pin: Pin,
}

impl Rescue {
    /// Puts the rescued thread back to what the ledger says it has, where it still has what
    /// the rescue lent it, and frees the slot. The rescuer calls it first thing once it holds
    /// the ledger lock.
    pub(crate) fn undo(self) {
        // SAFETY: `_pin` keeps the record alive.
        let task = unsafe { &*self.task };
        let slot = self.slot;
        // SAFETY: under the ledger lock with the slot `RESCUED` (see the `Sync` impl).
        let (saved, lent) = unsafe { (*slot.saved.get(), *slot.lent.get()) };
        if super::ledger::claim_target(task)
            && let Ok(now) = crate::loom::read_attrs(task.tid())
        {
            // Each part the rescue's loan still shows goes back to the ledger's view; a part
            // changed since (by the application or the ledger) stands, as the ledger itself
            // adopts such changes.
            let back = super::ledger::adopt_changes(saved, lent, now);
            super::ledger::write(task, now, back, back, true);
        }
        // The quick check's cache may hold what it had on the loan.
        super::forget_hint(task);
        // Release: the ledger's next holder sees the slot free after our writes.
        slot.state.store(IDLE, Ordering::Release);
    }
}

#[cfg(all(test, not(loom), donates))]
mod tests {
    use crate::sys::attrs::CpuMask;
    use crate::sys::test_threads::{
        Hog, ReadBack, assert_finished_on_cpu_1_and_put_back, become_idle_on, burn, cpus_0_and_1,
        has_two_cpus, pin_to, read_back, wait_until_asleep,
    };
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;
    use std::thread::JoinHandle;
    use std::time::Duration;

    /// The demo's `chain` case in small: a SCHED_IDLE thread holds the ledger lock on CPU 0
    /// and a nice-0 hog takes that CPU; a thread on CPU 1 that needs the ledger lends the
    /// holder its CPU, the holder finishes there, and the rescuer puts it back (CPU 0,
    /// SCHED_IDLE) once it holds the lock itself. Without the rescue the holder finishes on
    /// CPU 0 when the hog stops. No privilege needed: the CPU is what gets the holder going
    /// (leaving SCHED_IDLE needs CAP_SYS_NICE and is only a bonus). Needs two CPUs.
    #[test]
    fn a_preempted_ledger_holder_finishes_on_the_waiters_cpu_and_is_put_back() {
        if !has_two_cpus("the holder's and the waiter's") {
            return;
        }
        let _stage = cpus_0_and_1();
        const HOG_RUN: Duration = Duration::from_secs(2);
        let (holding_tx, holding) = mpsc::channel();
        let (done_tx, done) = mpsc::channel();
        let (exit_tx, exit) = mpsc::channel::<()>();
        let holder = std::thread::spawn(move || {
            become_idle_on(0);
            let me = crate::task::current();
            let cpu = crate::donor::with_ledger(me.task(), |_| {
                holding_tx.send(crate::sys::gettid()).unwrap();
                burn(Duration::from_millis(20));
                crate::sys::sched::current_cpu()
            });
            done_tx.send(cpu).unwrap();
            let _ = exit.recv();
        });
        let holder_tid = holding.recv().unwrap();
        let hog = Hog::start(0, HOG_RUN);
        pin_to(1);
        // Let the hog preempt the holder, then wait for the ledger.
        std::thread::sleep(Duration::from_millis(10));
        let me = crate::task::current();
        crate::donor::with_ledger(me.task(), |_| ());
        let finished_on = done.recv().unwrap();
        let back = read_back(holder_tid);
        hog.stop();
        exit_tx.send(()).unwrap();
        holder.join().unwrap();
        assert_finished_on_cpu_1_and_put_back("the holder", "", finished_on, back);
    }

    /// A waiter of the holder's own rank lends it no CPU: the holder, nice 0 on CPU 1, sleeps
    /// while it holds the ledger lock, and a nice-0 waiter on CPU 0 waits for the lock. The
    /// holder must keep CPU 1 while the waiter sleeps. With the CPU lent at equal rank, the
    /// holder was moved to CPU 0. No privilege needed. Needs two CPUs.
    #[test]
    fn a_waiter_of_the_holders_rank_lends_it_no_cpu() {
        if !has_two_cpus("the holder's and the waiter's") {
            return;
        }
        let _stage = cpus_0_and_1();
        let (holder, holder_tid, let_go_tx) = hold_the_ledger_asleep_on_cpu_1();
        let (waiter_tx, waiter_tid) = mpsc::channel();
        let waiter = std::thread::spawn(move || {
            pin_to(0);
            waiter_tx.send(crate::sys::gettid()).unwrap();
            let me = crate::task::current();
            crate::donor::with_ledger(me.task(), |_| ());
        });
        wait_until_asleep(waiter_tid.recv().unwrap());
        let (cpus, _) = read_back(holder_tid);
        let_go_tx.send(()).unwrap();
        holder.join().unwrap();
        waiter.join().unwrap();
        assert_eq!(cpus, Ok(CpuMask::single(1)), "the holder kept its CPU");
    }

    /// A nice-0 thread on CPU 1 that takes the ledger lock and sleeps while it holds it (off a
    /// CPU: a waiter tries a rescue) until told to let go. Returns once it holds the lock:
    /// its handle, its tid and the sender that lets it go.
    fn hold_the_ledger_asleep_on_cpu_1() -> (JoinHandle<()>, crate::Tid, mpsc::Sender<()>) {
        let (holding_tx, holding) = mpsc::channel();
        let (let_go_tx, let_go) = mpsc::channel::<()>();
        let holder = std::thread::spawn(move || {
            pin_to(1);
            let me = crate::task::current();
            crate::donor::with_ledger(me.task(), |_| {
                holding_tx.send(crate::sys::gettid()).unwrap();
                let _ = let_go.recv();
            });
        });
        (holder, holding.recv().unwrap(), let_go_tx)
    }

    /// How one staging of `a_waiter_rescues_a_holder_that_took_the_lock_while_it_slept` went:
    /// the CPU the second holder finished its work on, and its CPUs and policy once the
    /// waiter held the lock; `None` if the waiter took the lock before the second holder did
    /// (both recheck their sleep, so either may be first in the futex's queue).
    type SecondHolder = Option<(Option<u32>, ReadBack)>;

    /// A waiter sleeps behind a holder it cannot help (the same CPU and attributes as its
    /// own), and that holder lets go to a SCHED_IDLE thread on CPU 0, which a nice-0 hog then
    /// preempts. The waiter must rescue the new holder on a recheck of its sleep: it finishes
    /// on the waiter's CPU and is put back afterwards. Before, a waiter tried a rescue once,
    /// before its first sleep, and then only rechecked the word: the new holder finished on
    /// CPU 0 once the hog stopped. No privilege needed. Needs two CPUs.
    #[test]
    fn a_waiter_rescues_a_holder_that_took_the_lock_while_it_slept() {
        if !has_two_cpus("the second holder's and the waiter's") {
            return;
        }
        let _stage = cpus_0_and_1();
        for _ in 0..20 {
            let Some((finished_on, back)) = stage_second_holder() else {
                continue;
            };
            assert_finished_on_cpu_1_and_put_back("the second holder", "", finished_on, back);
            return;
        }
        panic!("the waiter took the ledger lock before the second holder 20 times");
    }

    fn stage_second_holder() -> SecondHolder {
        const HOG_RUN: Duration = Duration::from_secs(2);
        // Who took the ledger lock in which order: the second holder must come before the
        // waiter.
        let order: &'static AtomicUsize = Box::leak(Box::new(AtomicUsize::new(0)));
        // Unrescuable: nobody lends it better.
        let (first, _, let_go_tx) = hold_the_ledger_asleep_on_cpu_1();
        let (second_tx, second_events) = mpsc::channel();
        let (exit_tx, exit) = mpsc::channel::<()>();
        let second = std::thread::spawn(move || {
            become_idle_on(0);
            second_tx.send(Err(crate::sys::gettid())).unwrap();
            let me = crate::task::current();
            let cpu = crate::donor::with_ledger(me.task(), |_| {
                // Relaxed: a ticket; the ledger lock orders the takers.
                let position = order.fetch_add(1, Ordering::Relaxed);
                second_tx.send(Ok(position)).unwrap();
                burn(Duration::from_millis(20));
                crate::sys::sched::current_cpu()
            });
            second_tx.send(Ok(usize::MAX)).unwrap();
            let _ = exit.recv();
            cpu
        });
        let Ok(Err(second_tid)) = second_events.recv() else {
            unreachable!("the second holder sends its tid first")
        };
        // It sleeps on the ledger lock, queued before the waiter.
        wait_until_asleep(second_tid);
        let (waiter_tx, waiter_tid) = mpsc::channel();
        let waiter = std::thread::spawn(move || {
            pin_to(1);
            waiter_tx.send(crate::sys::gettid()).unwrap();
            let me = crate::task::current();
            // Relaxed: as above.
            crate::donor::with_ledger(me.task(), |_| order.fetch_add(1, Ordering::Relaxed))
        });
        wait_until_asleep(waiter_tid.recv().unwrap());
        let_go_tx.send(()).unwrap();
        first.join().unwrap();
        let second_first = second_events.recv() == Ok(Ok(0));
        let hog = second_first.then(|| Hog::start(0, HOG_RUN));
        // The second holder is done with the lock (it says so with usize::MAX).
        while second_events.recv() != Ok(Ok(usize::MAX)) {}
        let waiter_position = waiter.join().unwrap();
        let second_back = read_back(second_tid);
        if let Some(hog) = hog {
            hog.stop();
        }
        exit_tx.send(()).unwrap();
        let finished_on = second.join().unwrap();
        (second_first && waiter_position == 1).then_some((finished_on, second_back))
    }
}
