//! Bounded spinning before a waiter parks, the knob for sweeping its budget, and the watch
//! that tells whether the thread a waiter spins for is running.

use crate::Tid;
use crate::loom::{monotonic_us, spin_hint, thread_cpu_time_ns};
use crate::task::Me;
use crate::tuning::{ON_CPU_PROBE_SPINS, OWNER_SPIN_CAP_US, SPIN_ROUNDS};
use crate::word::LockRef;

/// Bounded spinning before a waiter parks.
///
/// Round `r` (1-based) pauses `2^min(r, 10)` times, for a budget of rounds: `SPIN_ROUNDS` (7:
/// about 250 pauses, 6 µs at the 25 ns a pause takes on these machines) for ordinary waiters,
/// `HANDOFF_SPIN_ROUNDS` (9: about 25 µs) for a Handoff lock's registered spinner, which keeps
/// a running thread ready to take the lock across the time a woken sleeper needs. It never
/// yields: with far more threads than CPUs, `sched_yield` hands the CPU to an unrelated thread
/// and multiplies the context switches. The budget comes from a sweep
/// (`examples/spin_budget.rs`, `docs/design.md#the-spin-budget`): shorter budgets lose time
/// on ~1 µs sections, and longer ones gain nothing.
pub(crate) struct SpinWait {
    rounds: u32,
    budget: u32,
}

impl SpinWait {
    pub(crate) fn with_budget(budget: u32) -> SpinWait {
        SpinWait { rounds: 0, budget }
    }
}

impl Default for SpinWait {
    fn default() -> SpinWait {
        // Relaxed: a tuning value, read on the slow path only.
        let budget = match SPIN_BUDGET_OVERRIDE.load(std::sync::atomic::Ordering::Relaxed) {
            u32::MAX => SPIN_ROUNDS,
            rounds => rounds,
        };
        SpinWait::with_budget(budget)
    }
}

/// `u32::MAX`, or a spin budget (in rounds) that replaces `SPIN_ROUNDS`, for the measurement
/// that chose it (`examples/spin_budget.rs`). A plain atomic even under loom: it never changes
/// during a model.
static SPIN_BUDGET_OVERRIDE: std::sync::atomic::AtomicU32 =
    std::sync::atomic::AtomicU32::new(u32::MAX);

/// Replaces the waiters' spin budget (rounds; `None` restores the default), for
/// `examples/spin_budget.rs`, which measures what each budget costs and gains (`test_hooks`).
pub(crate) fn set_spin_budget_for_measurement(rounds: Option<u32>) {
    // Relaxed: see `SPIN_BUDGET_OVERRIDE`.
    SPIN_BUDGET_OVERRIDE.store(
        rounds.unwrap_or(u32::MAX),
        std::sync::atomic::Ordering::Relaxed,
    );
}

impl SpinWait {
    /// Rounds spun so far.
    pub(crate) fn rounds(&self) -> u32 {
        self.rounds
    }

    /// Spends the rest of the budget without spinning.
    pub(crate) fn give_up(&mut self) {
        self.rounds = self.budget;
    }

    /// Spins one round; false once the budget is spent.
    pub(crate) fn spin(&mut self) -> bool {
        if self.rounds >= self.budget {
            return false;
        }
        self.rounds += 1;
        for _ in 0..(1u32 << self.rounds.min(10)) {
            spin_hint();
        }
        true
    }
}

/// Reads in a row that must see the CPU time unchanged before the thread counts as off a CPU:
/// one read can land inside an update the kernel has not made yet.
const OFF_CPU_PROBES: u32 = 3;

/// Spinning for as long as another thread runs: the kernel's "spin while the owner is on a
/// CPU", from user space. The thread counts as running while its CPU time grows
/// (`thread_cpu_time_ns`); a thread preempted or asleep then shows up after three reads (about
/// 5 µs). Each read of a running thread's clock slows it down a little (`docs/design.md`,
/// "Watching an owner"), so a look is taken only every `ON_CPU_PROBE_SPINS` spins (about
/// 1.6 µs). An exited thread is known to be off a CPU without a read. A thread not yet
/// seen running counts as about to run during a start grace. Spinning past
/// `OWNER_SPIN_CAP_US` stops whatever the looks say.
pub(crate) struct OnCpuWatch {
    tid: Tid,
    /// The watched thread's CPU time at the last clock read, if any since it was chosen.
    last: Option<u64>,
    still: u32,
    spins: u32,
    start_us: u64,
    /// Until `start_us` plus this, a thread not yet seen running counts as about to run.
    start_grace_us: u64,
    /// The watched thread has been seen on a CPU since the watch began (or since it moved on
    /// to another thread).
    seen_running: bool,
}

impl OnCpuWatch {
    /// A watch on thread `tid` that, for `start_grace_us` from now (0: no grace), counts it as
    /// about to run until it has been seen running: a thread just boosted over what preempted
    /// it.
    pub(crate) fn new(tid: Tid, start_grace_us: u64) -> OnCpuWatch {
        OnCpuWatch {
            tid,
            last: None,
            still: 0,
            spins: 0,
            start_us: monotonic_us(),
            start_grace_us,
            seen_running: false,
        }
    }

    /// Spins once, and every `ON_CPU_PROBE_SPINS` spins looks at the thread `who` names, with
    /// what its record says if it can (`None`: stop; a new thread is watched afresh):
    /// says whether it still looks like it runs (false also past the cap, or if its clock
    /// cannot be read: a tid that is no thread of ours). One spin at a time, so that the caller
    /// sees what it waits for (a handoff, a free word) within a spin of it happening.
    pub(crate) fn still_running(
        &mut self,
        who: impl FnOnce() -> Option<(Tid, Option<bool>)>,
    ) -> bool {
        spin_hint();
        self.spins += 1;
        if self.spins < ON_CPU_PROBE_SPINS {
            return true;
        }
        self.spins = 0;
        let spun_us = monotonic_us().saturating_sub(self.start_us);
        if spun_us >= OWNER_SPIN_CAP_US {
            return false;
        }
        let Some((tid, known)) = who() else {
            return false;
        };
        if tid != self.tid {
            (self.tid, self.last, self.still, self.seen_running) = (tid, None, 0, false);
        }
        let running = match known {
            Some(on_cpu) => {
                self.seen_running |= on_cpu;
                on_cpu
            }
            None => match self.clock_says_running() {
                Some(running) => running,
                None => return false, // no thread of ours
            },
        };
        running || !self.seen_running && spun_us < self.start_grace_us
    }

    /// Reads the watched thread's clock: whether it has not stood still for `OFF_CPU_PROBES`
    /// reads in a row (the first read only sets the mark; growth counts as seen running).
    /// `None` if it cannot be read.
    fn clock_says_running(&mut self) -> Option<bool> {
        let now = thread_cpu_time_ns(self.tid)?;
        match self.last.replace(now) {
            Some(before) if before != now => (self.still, self.seen_running) = (0, true),
            Some(_) => self.still += 1,
            None => {}
        }
        Some(self.still < OFF_CPU_PROBES)
    }
}

/// An [`OnCpuWatch`] on the last owner of the chain from a lock (`chain::last_owner`), the
/// thread whose running moves the whole chain on, looked up again at every read of its clock:
/// when the lock's owner itself waits, its wait ends only when that one runs, and once that
/// one passes its lock on, it is the next one up the chain that must run, and a waiter still
/// watching the old end would spin for its whole cap.
pub(crate) struct ChainEndWatch<'a> {
    lock: LockRef<'a>,
    me: Me,
    watch: OnCpuWatch,
}

impl<'a> ChainEndWatch<'a> {
    /// `None` if the lock is free or `me` owns a lock on its chain: nobody to watch.
    /// `start_grace_us` as in [`OnCpuWatch::new`].
    pub(crate) fn new(
        lock: impl Into<LockRef<'a>>,
        me: Me,
        start_grace_us: u64,
    ) -> Option<ChainEndWatch<'a>> {
        // A tid reused by another thread after we read it only makes us watch the wrong
        // clock, which is harmless: the caller's own checks end the spin.
        let lock = lock.into();
        let (end, _) = crate::chain::last_owner(lock, me)?;
        let watch = OnCpuWatch::new(end, start_grace_us);
        Some(ChainEndWatch { lock, me, watch })
    }

    /// Spins once; see [`OnCpuWatch::still_running`].
    pub(crate) fn still_running(&mut self) -> bool {
        let (lock, me) = (self.lock, self.me);
        self.watch
            .still_running(|| crate::chain::last_owner(lock, me))
    }
}

#[cfg(all(test, not(loom), donates))]
mod tests {
    use super::OnCpuWatch;
    use crate::sys::test_threads::wait_until_asleep;
    use crate::tuning::BOOSTED_OWNER_START_US;
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    /// Spins a watch on thread `tid` with `start_grace_us` until it says the thread is off a
    /// CPU; how long that took, from before the watch was made (its grace starts in `new`).
    fn time_to_off_cpu(tid: crate::Tid, start_grace_us: u64) -> Duration {
        let start = Instant::now();
        let mut watch = OnCpuWatch::new(tid, start_grace_us);
        while watch.still_running(|| Some((tid, None))) {}
        start.elapsed()
    }

    /// A thread asleep throughout (its CPU time never grows) counts as about to run for the
    /// whole start grace, and as off a CPU once the grace is over, well before the spin cap.
    /// Without a grace the same watch gives up after a few reads. Five rounds: a preemption of
    /// the test thread (the unit tests run in parallel) only lengthens a round, so no round
    /// may end within the grace, and the shortest must end before the cap.
    #[test]
    fn a_start_grace_counts_a_thread_not_yet_seen_running_as_about_to_run() {
        let (tid_tx, tid_rx) = mpsc::channel();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let sleeper = std::thread::spawn(move || {
            tid_tx.send(crate::current_tid()).unwrap();
            let _ = done_rx.recv();
        });
        let tid = tid_rx.recv().unwrap();
        wait_until_asleep(tid);
        // The watch counts whole microseconds of CLOCK_MONOTONIC, so its end of the grace can
        // come up to 1 µs early against the exact clock.
        let grace = Duration::from_micros(BOOSTED_OWNER_START_US - 1);
        let rounds: Vec<(Duration, Duration)> = (0..5)
            .map(|_| {
                let graced = time_to_off_cpu(tid, BOOSTED_OWNER_START_US);
                (graced, time_to_off_cpu(tid, 0))
            })
            .collect();
        drop(done_tx);
        sleeper.join().unwrap();
        for &(graced, _) in &rounds {
            assert!(
                graced >= grace,
                "gave up after {graced:?}, within the grace of {grace:?}"
            );
        }
        let graced = rounds.iter().map(|r| r.0).min().unwrap();
        let plain = rounds.iter().map(|r| r.1).min().unwrap();
        assert!(
            graced < Duration::from_micros(crate::tuning::OWNER_SPIN_CAP_US),
            "spun {graced:?} at least, to the cap: the grace did not end"
        );
        assert!(plain < graced, "without a grace {plain:?}, with {graced:?}");
    }
}
