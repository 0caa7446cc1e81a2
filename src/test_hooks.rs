//! Hooks for this crate's own tests, loom models and measurement examples. **Not part of the
//! API:** hidden from the docs, and any of them may change or go in any release.

/// Says that `test` skipped (all or part of) what it checks, and why, on stderr and, when the
/// test run names one (`PROXY_LOCK_SKIP_LOG`, set by `scripts/test.sh`), in a log the run
/// prints at its end: a skip must not pass for a check that ran.
pub fn log_skip(test: &str, why: &str) {
    eprintln!("SKIP {test}: {why}");
    if let Some(path) = std::env::var_os("PROXY_LOCK_SKIP_LOG") {
        use std::io::Write as _;
        if let Ok(mut log) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(log, "{test}: {why}");
        }
    }
}

/// Replaces the waiters' spin budget (rounds; `None` restores the default), for
/// `examples/spin_budget.rs`, which measures what each budget costs and gains. Process-wide.
pub fn set_spin_budget_for_measurement(rounds: Option<u32>) {
    crate::spin::set_spin_budget_for_measurement(rounds)
}

/// How many published sections one unlock may run (0 restores the default), for
/// `examples/combine_bound.rs`. Process-wide.
pub fn set_combine_bound_for_measurement(bound: u32) {
    crate::proxy::set_combine_bound_for_measurement(bound)
}

/// Runs `f` inside the walker handshake on the wait of thread `tid`, as a chain walk does, and
/// returns whether `f` ran (the thread was waiting). Tests hold `f` open to show that the
/// waiter cannot finish its wait meanwhile.
pub fn inspect_wait_for_tests(tid: crate::Tid, f: impl FnOnce(crate::LockId)) -> bool {
    crate::chain::inspect_wait_for_tests(tid, f)
}

/// How long (µs) the first thread queued on `raw` has been passed over for spinners, by the
/// stamp a `Handoff` waiter sets when it parks and an unlocker resets when it serves the one
/// ahead of it (`mutex::raw::handoff`); `None` if nobody is queued.
pub fn handoff_first_sleeper_waited_us(raw: &crate::RawMutex) -> Option<u32> {
    raw.first_sleeper_waited_us()
}

/// Under loom: whether a writer sleeps on `lock`.
#[cfg(loom)]
pub fn rwlock_writer_asleep<T: ?Sized>(lock: &crate::RwLock<T>) -> bool {
    lock.raw().writer_asleep()
}

/// True if `raw`'s word shows "free" while sections are flagged as published: an unlock never
/// leaves that behind unless it reached the combining bound.
pub fn free_with_published_sections(raw: &crate::RawMutex) -> bool {
    raw.free_with_published_sections()
}

/// True if `raw`'s word shows "free" while threads are flagged as parked: `Handoff` never does
/// that on its own.
pub fn free_with_parked_waiters(raw: &crate::RawMutex) -> bool {
    raw.free_with_parked_waiters()
}

/// Whether a waiter is registered in `raw`'s spinner slot, and whether sections are flagged as
/// published.
pub fn spinner_and_published_sections(raw: &crate::RawMutex) -> (bool, bool) {
    raw.spinner_and_published_sections()
}

/// True if the owner named by `raw`'s word is also registered in its spinner slot.
pub fn owner_in_spinner_slot(raw: &crate::RawMutex) -> bool {
    raw.owner_in_spinner_slot()
}

#[cfg(loom)]
pub use model::*;

/// The loom models' hooks (`tests/loom.rs`): set up and read back the recording kernel, and
/// model the ledger lock and the rescue on their own.
#[cfg(loom)]
mod model {
    use crate::donor::{LedgerLock, Rescue, rescue_slot, with_ledger};
    use crate::loom::{Mutex, global, kernel};
    use crate::sys::attrs::{CpuMask, SchedPolicy};

    /// Gives the calling model thread `nice` and pins it to `cpu`, as its base.
    pub fn set_base(nice: i32, cpu: u32) {
        kernel::set(crate::current_tid(), |a| {
            a.sched.nice = nice;
            a.cpus = CpuMask::single(cpu);
        });
    }

    /// Makes the calling model thread SCHED_FIFO at `priority`, pinned to `cpu`, as its base.
    pub fn set_base_fifo(priority: u32, cpu: u32) {
        kernel::set(crate::current_tid(), |a| {
            a.sched.policy = SchedPolicy::Fifo;
            a.sched.rt_priority = priority;
            a.cpus = CpuMask::single(cpu);
        });
    }

    /// The SCHED_FIFO priority the kernel holds for `tid`, 0 if it is not SCHED_FIFO.
    pub fn fifo_priority_of(tid: crate::Tid) -> u32 {
        let a = kernel::get(tid);
        match a.sched.policy {
            SchedPolicy::Fifo => a.sched.rt_priority,
            _ => 0,
        }
    }

    /// (nice, CPUs 0..64 as bits) the kernel holds for `tid`.
    pub fn attrs_of(tid: crate::Tid) -> (i32, u64) {
        let a = kernel::get(tid);
        (a.sched.nice, a.cpus.0[0])
    }

    /// Lets up to `count` model futex waits time out (the ledger lock's rechecks) in the
    /// execution that calls it.
    pub fn futex_timeouts(count: usize) {
        kernel::futex_timeouts(count)
    }

    /// Who wrote `tid`'s policy and priority, in order (the lenders, and whoever restored it);
    /// the models' own `set_base*` calls are not counted.
    pub fn sched_writers_of(tid: crate::Tid) -> Vec<crate::Tid> {
        kernel::sched_writes()
            .into_iter()
            .filter(|&(_, target, _)| target == tid)
            .map(|(writer, _, _)| writer)
            .collect()
    }

    /// Whether thread `tid` is listed in the ledger as a waiter: it lent, and its loan stands
    /// until its wait ends.
    pub fn is_listed(tid: crate::Tid) -> bool {
        // The record first, then the ledger: the ledger lock comes before the registry's
        // (a lender scans the registry for an `RwLock`'s readers). Models retire no record.
        let task = crate::task::with_live_tasks(|tasks| {
            let mut found = None;
            for t in tasks {
                if t.tid() == tid {
                    found = Some(t as *const crate::task::Task);
                }
            }
            found
        });
        // SAFETY: models never free a record (`loom::retire` does nothing there).
        task.is_some_and(|t| with_ledger(unsafe { &*t }, |ledger| ledger.is_listed(unsafe { &*t })))
    }

    global! { fn model_ledger_lock() -> LedgerLock = LedgerLock::new(); }
    global! { fn inside() -> Mutex<()> = Mutex::new(()); }

    /// Takes a ledger lock (`donor::LedgerLock`, as normal builds guard the ledger with) and
    /// lets go of it, yielding once inside; panics if another thread is inside too. The model
    /// of the lock itself (`ledger_lock_excludes_and_loses_no_wakeup`).
    pub fn pass_through_ledger() {
        let lock = model_ledger_lock();
        if !lock.try_lock() {
            // As the normal builds' wait: a try in every round, before its sleep.
            lock.lock_waiting(|lock, slept| lock.try_lock_in_round(slept));
        }
        {
            let _inside = inside()
                .try_lock()
                .expect("two threads inside the ledger lock");
            loom::thread::yield_now();
        }
        lock.unlock();
    }

    /// One ledger hold against one rescue (`donor::rescue`). The calling model thread, nice 10
    /// on CPU 0, holds the ledger and writes itself nice 5 there, as a reconcile would; a
    /// nice-0 thread on CPU 1 tries to rescue it at some point and, if it did, undoes the
    /// rescue once it holds the ledger. Checks that the ledger never sees the loan, that no
    /// rescue write lands once the holder has let go (its tid may be gone by then), and that
    /// the holder ends with what the ledger wrote: nice 5 on CPU 0.
    pub fn rescue_round() {
        kernel::order_syscalls();
        set_base(10, 0);
        let rescuer = loom::thread::spawn(|| {
            set_base(0, 1);
            let me = crate::task::current();
            let rescue: Option<Rescue> = rescue_slot().try_rescue(me.task());
            if let Some(rescue) = rescue {
                with_ledger(me.task(), |_| rescue.undo());
            }
        });
        let me = crate::task::current();
        let task = me.task();
        let slot = rescue_slot();
        let let_go = with_ledger(task, |_| {
            slot.holding(task);
            let seen = slot.current_attrs(task).unwrap();
            assert_eq!((seen.sched.nice, seen.cpus), (10, CpuMask::single(0)));
            let mut five = seen;
            five.sched.nice = 5;
            crate::loom::write_sched(task.tid(), &five.sched).unwrap();
            slot.wrote(task, five);
            let seen = slot.current_attrs(task).unwrap();
            assert_eq!((seen.sched.nice, seen.cpus), (5, CpuMask::single(0)));
            slot.releasing();
            // A step on the syscalls' atomic, so that loom orders the rescuer's writes against
            // this mark too.
            kernel::syscall_step();
            kernel::sched_writes().len()
        });
        rescuer.join().unwrap();
        let late_loans = kernel::sched_writes()[let_go..]
            .iter()
            .filter(|&&(_, target, nice)| target == task.tid() && nice == 0)
            .count();
        assert_eq!(late_loans, 0, "a rescue wrote to a holder that had let go");
        assert_eq!(
            attrs_of(task.tid()),
            (5, 1),
            "the holder ends as the ledger left it"
        );
    }
}
