//! The one module that knows whether the crate runs under loom.
//!
//! Normal builds get core atomics, `std::thread_local!`, parking_lot_core for sleeping and
//! waking, crossbeam-epoch for reclaiming task records, and a pthread key for "this thread is
//! exiting". Builds with `--cfg loom` get loom's atomics and thread locals, a small parking table
//! built from loom's `Mutex`/`Condvar` with the same contract as parking_lot_core, and no
//! reclamation (records are leaked, which loom tolerates). Everything else in the crate imports
//! from here and never mentions `cfg(loom)`.

pub(crate) use parking_lot_core::{
    FilterOp, ParkResult, ParkToken, RequeueOp, UnparkResult, UnparkToken,
};

/// Declares a function that is `const` in normal builds and plain under loom, whose atomics have
/// no const constructors.
macro_rules! const_fn {
    ($(#[$attr:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty $body:block) => {
        #[cfg(not(loom))]
        $(#[$attr])* $vis const fn $name($($arg: $ty),*) -> $ret $body
        #[cfg(loom)]
        $(#[$attr])* $vis fn $name($($arg: $ty),*) -> $ret $body
    };
}
pub(crate) use const_fn;

/// Items that only exist in normal builds (they need const atomics, e.g. `lock_api::RawMutex::INIT`).
macro_rules! not_under_loom {
    ($($item:item)*) => { $( #[cfg(not(loom))] $item )* };
}
pub(crate) use not_under_loom;

/// A thread local with a const initialiser and no destructor: readable while other thread-local
/// destructors run (std), or a plain loom thread local (loom's macro has no `const` form).
macro_rules! const_thread_local {
    ($(#[$attr:meta])* static $name:ident: $t:ty = $init:expr;) => {
        #[cfg(not(loom))]
        std::thread_local! { $(#[$attr])* static $name: $t = const { $init }; }
        #[cfg(loom)]
        loom::thread_local! { $(#[$attr])* static $name: $t = $init; }
    };
}
pub(crate) use const_thread_local;

mod park_table;

#[cfg(loom)]
pub use model::test_hooks;
/// A cache cell that no protocol depends on (the donation hints): always the core atomic, so
/// loom does not branch on its stale values, which only decide whether a thread tries to lend.
pub(crate) type CacheU64 = core::sync::atomic::AtomicU64;

#[cfg(loom)]
pub(crate) use model::*;
#[cfg(not(loom))]
pub use real::test_hooks;
#[cfg(not(loom))]
pub(crate) use real::*;

#[cfg(not(loom))]
mod real {
    use super::{FilterOp, ParkResult, ParkToken, RequeueOp, UnparkResult, UnparkToken};
    use std::time::{Duration, Instant};

    use crate::donor::{Attrs, CpuMask, Sched};
    pub(crate) use crate::sys::sched::Errno;
    use core::sync::atomic::AtomicI32;
    pub(crate) use core::sync::atomic::{
        AtomicBool, AtomicU8, AtomicU32, AtomicUsize, Ordering, fence,
    };

    /// How long a cached attribute summary (`donor::TaskDonor::hint`) is trusted before the
    /// quick check reads the kernel again: bounds both the staleness of the hint and the
    /// attribute reads (two syscalls per thread at most this often).
    pub(crate) const HINT_TTL_US: u64 = 10_000;

    /// Whether a waiter reads its own policy again (`donor::refresh_own_hint`): when its last
    /// read is older than `HINT_TTL_US`, or when it is about to lend.
    pub(crate) const REREAD_OWN_HINT: bool = true;

    /// Thread `tid`'s scheduling attributes, from the kernel.
    pub(crate) fn read_attrs(tid: crate::Tid) -> Result<Attrs, Errno> {
        let (sched, util) = read_sched(tid)?;
        let cpus = crate::sys::sched::get_affinity(tid)?;
        Ok(Attrs { sched, util, cpus })
    }

    /// Thread `tid`'s policy, priority and utilization clamps, from the kernel.
    pub(crate) fn read_sched(tid: crate::Tid) -> Result<(Sched, (u32, u32)), Errno> {
        crate::sys::sched::get_sched(tid)
    }

    pub(crate) fn write_sched(tid: crate::Tid, sched: &Sched) -> Result<(), Errno> {
        crate::sys::sched::set_sched(tid, sched)
    }

    pub(crate) fn write_util(tid: crate::Tid, util: (u32, u32)) -> Result<(), Errno> {
        crate::sys::sched::set_util_clamp(tid, util)
    }

    pub(crate) fn write_cpus(tid: crate::Tid, cpus: &CpuMask) -> Result<(), Errno> {
        crate::sys::sched::set_affinity(tid, cpus)
    }

    /// The CPU the calling thread runs on.
    pub(crate) fn current_cpu() -> Option<u32> {
        crate::sys::sched::current_cpu()
    }

    /// Hooks for the tests; not part of the API.
    pub mod test_hooks {
        /// Says that `test` skipped (all or part of) what it checks, and why, on stderr and,
        /// when the test run names one (`PROXY_LOCK_SKIP_LOG`, set by `scripts/test.sh`), in
        /// a log the run prints at its end: a skip must not pass for a check that ran.
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
    }

    /// The donation ledger, reachable only through `with_ledger`, under `LEDGER_LOCK`.
    struct LedgerCell(std::cell::UnsafeCell<crate::donor::Ledger>);
    // SAFETY: the ledger inside is only touched by the thread that holds `LEDGER_LOCK`.
    unsafe impl Sync for LedgerCell {}
    static LEDGER: LedgerCell = LedgerCell(std::cell::UnsafeCell::new(crate::donor::Ledger::new()));
    static LEDGER_LOCK: crate::donor::LedgerLock = crate::donor::LedgerLock::new();
    /// The tid of the thread in the ledger lock, 0 when it is free (or between holders).
    static LEDGER_HOLDER: AtomicI32 = AtomicI32::new(0);

    /// The ledger lock's rescue slot (`donor::rescue`).
    static RESCUE: crate::donor::RescueSlot = crate::donor::RescueSlot::new();

    pub(crate) fn rescue_slot() -> &'static crate::donor::RescueSlot {
        &RESCUE
    }

    /// Runs `f` on the donation ledger, under its lock; `holder` is the calling thread's record.
    pub(crate) fn with_ledger<R>(
        holder: &crate::task::Task,
        f: impl FnOnce(&mut crate::donor::Ledger) -> R,
    ) -> R {
        /// Lets go of the ledger when `f` returns, or unwinds (nothing panics in there, but a
        /// ledger left locked would stop every donation).
        struct Held;
        impl Drop for Held {
            fn drop(&mut self) {
                release_ledger();
            }
        }
        acquire_ledger(holder);
        let _held = Held;
        // SAFETY: we hold `LEDGER_LOCK` until `_held` drops, after `f` is done with the
        // reference; `f` never calls `with_ledger` again.
        f(unsafe { &mut *LEDGER.0.get() })
    }

    /// Takes the ledger lock for `holder`, the calling thread's record, and names it holder.
    fn acquire_ledger(holder: &crate::task::Task) {
        // Before the lock: a thread's first call makes a syscall, whose return is where the
        // kernel preempts a thread it has marked, and a holder not yet named is spun for only
        // briefly and cannot be rescued (`wait_for_ledger`). So the few instructions between
        // taking the lock and naming the holder make no syscall.
        let tid = holder_tid();
        let rescue = if LEDGER_LOCK.try_lock() {
            None
        } else {
            wait_for_ledger(holder)
        };
        // Relaxed: a hint for `wait_for_ledger`; the lock itself orders the ledger's data.
        LEDGER_HOLDER.store(tid, Ordering::Relaxed);
        RESCUE.holding(holder);
        if let Some(rescue) = rescue {
            rescue.undo();
        }
    }

    fn release_ledger() {
        // Relaxed: as in `acquire_ledger`.
        LEDGER_HOLDER.store(0, Ordering::Relaxed);
        RESCUE.releasing();
        LEDGER_LOCK.unlock();
    }

    /// `fork()` is about to run on this thread (`holder`): it takes the ledger lock and the
    /// registry lock, so that no other thread is halfway through either when the child is
    /// made. A child that inherited a lock held by a thread that does not exist in it would
    /// wait for it forever.
    pub(crate) fn before_fork(holder: &crate::task::Task) {
        // Relaxed: read by the child, a copy of this thread right after the store.
        PARENT_THREADS.store(
            crate::sys::thread_count().unwrap_or(usize::MAX),
            Ordering::Relaxed,
        );
        acquire_ledger(holder);
        let registry = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
        FORK_REGISTRY.with(|r| r.set(Some(registry)));
    }

    /// The parent side of `fork()`: lets go of what `before_fork` took.
    pub(crate) fn after_fork_in_parent() {
        FORK_REGISTRY.with(|r| drop(r.take()));
        release_ledger();
    }

    /// The child side of `fork()`: runs `f` on the ledger and the registry, which nobody else
    /// holds (the child has this one thread), with a fresh holder name and rescue slot, then
    /// lets go of both.
    pub(crate) fn after_fork_in_child(f: impl FnOnce(&mut crate::donor::Ledger, &mut Vec<usize>)) {
        // First: the records' logs are forgotten below as logs of the parent's.
        crate::sys::switch_log::after_fork_in_child();
        HOLDER_TID.with(|t| t.set(crate::sys::gettid()));
        FORK_REGISTRY.with(|r| {
            if let Some(mut registry) = r.take() {
                // SAFETY: we hold `LEDGER_LOCK` (taken in `before_fork`), and the child has no
                // other thread.
                f(unsafe { &mut *LEDGER.0.get() }, &mut registry);
            }
        });
        RESCUE.reset_after_fork();
        release_ledger();
        super::park_table::use_after_fork(PARENT_THREADS.load(Ordering::Relaxed));
    }

    /// How many threads the process had when `before_fork` ran, for the child's choice of
    /// parking table (`park_table::use_after_fork`).
    static PARENT_THREADS: AtomicUsize = AtomicUsize::new(0);

    /// The registry lock's guard, held by a thread across `fork()` (`before_fork`).
    type RegistryGuard = std::sync::MutexGuard<'static, Vec<usize>>;

    std::thread_local! {
        static FORK_REGISTRY: std::cell::Cell<Option<RegistryGuard>> =
            const { std::cell::Cell::new(None) };
    }

    /// Arranges for the `fork` hooks to run around every `fork()` of the process.
    pub(crate) fn at_fork(
        prepare: extern "C" fn(),
        parent: extern "C" fn(),
        child: extern "C" fn(),
    ) {
        crate::sys::at_fork(prepare, parent, child)
    }

    /// Waits for the ledger lock, spinning while its holder runs. A holder is in the middle of
    /// a few syscalls (lending, restoring: 5-40 µs), and an unlocker that slept behind it
    /// instead woke up 20-80 µs after the lock was free (the demo's `rt` scenario, traced),
    /// with its donor waiting for the lock it was about to pass on. A holder that is off a CPU
    /// (preempted, perhaps SCHED_IDLE) is not spun for: it is lent to (`donor::rescue`), and
    /// the rescue this returns is undone once we hold the lock.
    ///
    /// Every recheck of the sleep goes round again, spin and rescue included: the holder we
    /// slept behind may have let go to another that is off a CPU. In the demo's `chain`, a
    /// middle owner slept behind the foreground (no rescue: the foreground's attributes were
    /// its own, lent), and then rechecked every 100-190 µs for 20 ms while the SCHED_IDLE end
    /// of the chain, which took the lock next, waited for the hog (traced).
    #[cold]
    fn wait_for_ledger(me: &crate::task::Task) -> Option<crate::donor::Rescue> {
        let mut rescue = None;
        LEDGER_LOCK.lock_waiting(|lock, slept| {
            if spin_while_ledger_holder_runs(lock, slept) {
                return true;
            }
            // One rescue at a time: once ours stands, it is undone when we hold the lock.
            if rescue.is_none() {
                rescue = RESCUE.try_rescue(me);
            }
            false
        });
        rescue
    }

    /// Spins while the ledger lock's holder runs; true if it took the lock meanwhile (`slept`:
    /// see `LedgerLock::try_lock_in_round`).
    fn spin_while_ledger_holder_runs(lock: &crate::donor::LedgerLock, slept: bool) -> bool {
        let mut watch: Option<(crate::Tid, crate::mutex::spin::OnCpuWatch)> = None;
        let mut unnamed_rounds = 0;
        loop {
            // Relaxed: a hint, see `LEDGER_HOLDER`.
            let holder = LEDGER_HOLDER.load(Ordering::Relaxed);
            if holder != 0 && watch.as_ref().is_none_or(|(tid, _)| *tid != holder) {
                watch = Some((holder, crate::mutex::spin::OnCpuWatch::new(holder, 0)));
            }
            // A holder of 0 is one that is about to let go or has just taken the lock: spin a
            // little without a watch and look again, but not for long (it may be preempted
            // right there).
            let spinning = match watch.as_mut() {
                Some((_, w)) if holder != 0 => w.still_running(|| Some((holder, None))),
                _ => {
                    spin_hint();
                    unnamed_rounds += 1;
                    unnamed_rounds < UNNAMED_HOLDER_ROUNDS
                }
            };
            if !spinning {
                return false;
            }
            // Try only when the holder seems gone: a failed try still pulls the lock's line
            // away from the holder.
            if (holder == 0 || LEDGER_HOLDER.load(Ordering::Relaxed) == 0)
                && lock.try_lock_in_round(slept)
            {
                return true;
            }
        }
    }

    /// Spin hints `wait_for_ledger` spends in all on a holder it cannot name (about 6 µs).
    const UNNAMED_HOLDER_ROUNDS: u32 = 256;

    std::thread_local! {
        /// The calling thread's tid, for `holder_tid`. Const, without a destructor: usable in
        /// the exit hook too.
        static HOLDER_TID: std::cell::Cell<crate::Tid> = const { std::cell::Cell::new(0) };
    }

    /// The calling thread's tid, cached: the ledger lock names its holder with it.
    fn holder_tid() -> crate::Tid {
        HOLDER_TID.with(|t| {
            if t.get() == 0 {
                t.set(crate::sys::gettid());
            }
            t.get()
        })
    }

    /// Spin budgets in rounds (see `mutex::raw::SpinWait`): an ordinary waiter, a Handoff
    /// lock's registered spinner, and an unlocker waiting for a spinner to appear. Chosen by
    /// measurement; see the README's benchmark section.
    pub(crate) const SPIN_ROUNDS: u32 = 7;
    pub(crate) const HANDOFF_SPIN_ROUNDS: u32 = 9;
    pub(crate) const AWAIT_SPINNER_ROUNDS: u32 = 4;

    /// How many spinner handoffs pass between two looks at the clock (see `mutex::raw`).
    pub(crate) const FAIRNESS_CHECK_EVERY: u8 = 16;

    /// How many published sections one unlock runs before it passes the role on (`proxy`),
    /// and the spin budget of a `run` caller waiting for its section. Chosen by measurement;
    /// see the README's benchmark section.
    pub(crate) const COMBINE_BOUND: u32 = 64;
    pub(crate) const RUN_SPIN_ROUNDS: u32 = 7;

    #[inline]
    pub(crate) fn spin_hint() {
        core::hint::spin_loop()
    }

    #[inline]
    pub(crate) fn yield_now() {
        std::thread::yield_now()
    }

    /// Gives this thread's CPU to whatever is runnable, for a moment: an unlocker that just
    /// handed its lock to a thread it woke lets that thread run. A no-op in loom models, where
    /// it changes no state and would only add interleavings.
    #[inline]
    pub(crate) fn step_aside() {
        std::thread::yield_now()
    }

    /// Microseconds on the monotonic clock.
    pub(crate) fn monotonic_us() -> u64 {
        crate::sys::monotonic_us()
    }

    /// Microseconds on the coarse monotonic clock (tick resolution; for long timers).
    pub(crate) fn coarse_us() -> u64 {
        crate::sys::coarse_monotonic_us()
    }

    /// Kernel thread id of the calling thread.
    pub(crate) fn current_tid() -> crate::Tid {
        crate::sys::gettid()
    }

    /// CPU time thread `tid` has used, in nanoseconds; it grows while the thread is on a CPU.
    pub(crate) fn thread_cpu_time_ns(tid: crate::Tid) -> Option<u64> {
        crate::sys::sched::thread_cpu_time_ns(tid)
    }

    /// Whether `deadline` has passed.
    pub(crate) fn deadline_passed(deadline: Instant) -> bool {
        Instant::now() >= deadline
    }

    /// A thread's context-switch log, which tells a watcher whether it is on a CPU without
    /// touching it (`sys::switch_log`).
    pub(crate) use crate::sys::switch_log::SwitchLogSlot;

    /// Spin hints between two reads of a watched thread's CPU time (`mutex::spin::OnCpuWatch`):
    /// about 1.6 µs at the 25 ns a hint takes here, so the reads (0.6 µs each) cost a quarter
    /// of the spin.
    pub(crate) const ON_CPU_PROBE_SPINS: u32 = 64;

    /// How long a lender or real-time waiter spins at most while the owner runs (`mutex::raw`):
    /// about a scheduler tick. A section that runs longer makes the wake-up it saves (20-80 µs
    /// here) a small part of the wait.
    pub(crate) const OWNER_SPIN_CAP_US: u64 = 1000;

    /// Runs `hook(arg)` when the calling thread exits, after every Rust thread-local destructor.
    pub(crate) fn on_thread_exit(arg: *mut (), hook: unsafe fn(*mut ())) {
        crate::sys::on_thread_exit(arg, hook)
    }

    /// Frees a boxed `T` once no pinned reader can still hold a pointer to it.
    ///
    /// # Safety
    /// `ptr` came from `Box::into_raw`, is no longer reachable for new readers, and is retired once.
    pub(crate) unsafe fn retire<T>(ptr: *mut T) {
        let guard = pin();
        // SAFETY: the caller guarantees the pointer is unreachable for readers that pin after now
        // and came from a Box; readers pinned before now keep it alive until they unpin.
        unsafe { guard.defer_destroy(crossbeam_epoch::Shared::from(ptr as *const T)) }
    }

    /// The registry of task records (see `task`).
    static REGISTRY: std::sync::Mutex<Vec<usize>> = std::sync::Mutex::new(Vec::new());

    /// Runs `f` on the registry of task records (see `task`), under its lock.
    pub(crate) fn with_registry<R>(f: impl FnOnce(&mut Vec<usize>) -> R) -> R {
        // Nothing panics while holding it, but never let a poisoned registry break locking.
        f(&mut REGISTRY.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The head of a lock-free stack of items (task records) not yet in the registry.
    static ANNOUNCED: AtomicUsize = AtomicUsize::new(0);

    /// Pushes `item` on the announcement stack; `link` is the item's own next field.
    pub(crate) fn announce(item: usize, link: &AtomicUsize) {
        // Relaxed load: the CAS below validates it.
        let mut top = ANNOUNCED.load(Ordering::Relaxed);
        loop {
            // Relaxed: published by the Release CAS below.
            link.store(top, Ordering::Relaxed);
            // Release: the item's initialisation and link happen-before the Acquire swap that
            // takes the stack.
            match ANNOUNCED.compare_exchange_weak(top, item, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => return,
                Err(now) => top = now,
            }
        }
    }

    /// Moves every announced item into `registry` (called under the registry lock);
    /// `next_of` reads an item's link. Taking the whole stack with one swap has no ABA
    /// problem: nobody pops single items.
    pub(crate) fn adopt_announced(registry: &mut Vec<usize>, next_of: impl Fn(usize) -> usize) {
        // Acquire: pairs with `announce`'s Release.
        let mut item = ANNOUNCED.swap(0, Ordering::Acquire);
        while item != 0 {
            registry.push(item);
            item = next_of(item);
        }
    }

    /// What `pin` returns: while it lives, no record retired after it was taken is freed.
    pub(crate) type Pin = crossbeam_epoch::Guard;

    /// Keeps every record retired from now on alive until the guard drops.
    #[inline]
    pub(crate) fn pin() -> crossbeam_epoch::Guard {
        if EXITING.with(std::cell::Cell::get) {
            return exiting_pin();
        }
        crossbeam_epoch::pin()
    }

    std::thread_local! {
        /// The calling thread is in its exit hook (`thread_exiting`). Const, without a
        /// destructor: readable after the thread's other thread-locals are gone.
        static EXITING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    /// The calling thread has reached its exit hook, which runs after every Rust thread-local
    /// destructor. From here on its pins register with the collector for their own duration:
    /// crossbeam's per-thread handle is a thread-local too, and one first created this late
    /// would never be dropped, leaving its record in the collector's list for good (and every
    /// later thread exit walking that growing list).
    pub(crate) fn thread_exiting() {
        EXITING.with(|e| e.set(true));
    }

    /// A pin through a registration of its own, released when the guard drops (crossbeam
    /// finalizes a participant once its last handle and guard are gone).
    #[cold]
    fn exiting_pin() -> crossbeam_epoch::Guard {
        crossbeam_epoch::default_collector().register().pin()
    }

    /// See `parking_lot_core::park`.
    ///
    /// # Safety
    /// `key` is the address of a lock object this crate owns; the callbacks must not panic.
    #[inline]
    pub(crate) unsafe fn park(
        key: usize,
        validate: impl FnOnce() -> bool,
        before_sleep: impl FnOnce(),
        timed_out: impl FnOnce(usize, bool),
        token: ParkToken,
        deadline: Option<Instant>,
    ) -> ParkResult {
        if super::park_table::in_use() {
            return super::park_table::park(
                key,
                validate,
                before_sleep,
                timed_out,
                token,
                deadline,
            );
        }
        // SAFETY: forwarded contract.
        unsafe { parking_lot_core::park(key, validate, before_sleep, timed_out, token, deadline) }
    }

    /// See `parking_lot_core::unpark_filter`.
    ///
    /// # Safety
    /// As for [`park`].
    #[inline]
    pub(crate) unsafe fn unpark_filter(
        key: usize,
        filter: impl FnMut(ParkToken) -> FilterOp,
        callback: impl FnOnce(UnparkResult) -> UnparkToken,
    ) -> UnparkResult {
        #[cfg(test)]
        let callback = |result| {
            let token = callback(result);
            if let Some(hook) = AFTER_UNPARK_CHOICE.take() {
                hook();
            }
            token
        };
        if super::park_table::in_use() {
            return super::park_table::unpark_filter(key, filter, callback);
        }
        // SAFETY: forwarded contract.
        unsafe { parking_lot_core::unpark_filter(key, filter, callback) }
    }

    /// Right after an unlocker claimed a lock's spinner. Unit tests: runs this thread's
    /// `AFTER_SPINNER_CLAIM` hook, if set, once; otherwise nothing.
    #[inline]
    pub(crate) fn after_spinner_claim() {
        #[cfg(test)]
        if let Some(hook) = AFTER_SPINNER_CLAIM.take() {
            hook();
        }
    }

    #[cfg(test)]
    std::thread_local! {
        /// Unit tests: runs once, on this thread, right after its next claim of a lock's
        /// spinner, before it ends the spinner's wait: it widens that window.
        pub(crate) static AFTER_SPINNER_CLAIM: std::cell::Cell<Option<Box<dyn FnOnce()>>> =
            const { std::cell::Cell::new(None) };
        /// Unit tests: runs once, on this thread, at the end of its next `unpark_filter`
        /// callback. Still under the queue lock, but after the lock changed hands: it widens
        /// the window in which the chosen sleeper waits for its wake-up.
        pub(crate) static AFTER_UNPARK_CHOICE: std::cell::Cell<Option<Box<dyn FnOnce()>>> =
            const { std::cell::Cell::new(None) };
    }

    /// Sleeps while `word` holds `expected`, `timeout` at most; see `sys::futex_wait_for`. Not
    /// the parking lot: the ledger lock that uses it is taken inside the parking lot's
    /// `before_sleep` too (a Condvar waiter releasing its mutex), where parking again would
    /// reuse the thread's queue entry.
    pub(crate) fn futex_wait_for(word: &AtomicU32, expected: u32, timeout: Duration) {
        crate::sys::futex_wait_for(word, expected, timeout)
    }

    /// Wakes one thread asleep in [`futex_wait_for`] on `word`.
    pub(crate) fn futex_wake_one(word: &AtomicU32) {
        crate::sys::futex_wake_one(word)
    }

    /// See `parking_lot_core::unpark_requeue`.
    ///
    /// # Safety
    /// As for [`park`].
    #[inline]
    pub(crate) unsafe fn unpark_requeue(
        from: usize,
        to: usize,
        validate: impl FnOnce() -> RequeueOp,
        callback: impl FnOnce(RequeueOp, UnparkResult) -> UnparkToken,
    ) -> UnparkResult {
        if super::park_table::in_use() {
            return super::park_table::unpark_requeue(from, to, validate, callback);
        }
        // SAFETY: forwarded contract.
        unsafe { parking_lot_core::unpark_requeue(from, to, validate, callback) }
    }
}

#[cfg(loom)]
mod model {
    //! Loom's side of the OS layer: loom atomics and thread locals, and the shared parking table
    //! (`park_table`) built on loom's mutex and condvar. Loom has no clock, so a timed park may
    //! time out at any point after it queued until someone unparks it; loom explores both
    //! outcomes.

    use super::{FilterOp, ParkResult, ParkToken, RequeueOp, UnparkResult, UnparkToken};
    use loom::sync::Mutex;
    use std::time::Instant;

    use crate::donor::{Attrs, CpuMask, Sched};
    pub(crate) use loom::sync::atomic::{
        AtomicBool, AtomicU8, AtomicU32, AtomicUsize, Ordering, fence,
    };
    use std::collections::HashMap;

    /// Errors never happen in the recording backend.
    pub(crate) type Errno = i32;

    /// Read each thread's (recorded) attributes once, at its first check: models set their
    /// bases before they lock, and fewer reads keep the models small.
    pub(crate) const HINT_TTL_US: u64 = 1 << 60;

    /// Off in the models: they set each thread's base before it first locks, so a waiter's
    /// cached policy stays true, and reading it again would only add interleavings.
    pub(crate) const REREAD_OWN_HINT: bool = false;

    /// The recording scheduler backend: each (fake) tid's attributes, as the ledger wrote them.
    /// A thread nobody wrote yet has the default: nice 0 on CPUs 0 and 1.
    fn default_attrs() -> Attrs {
        let mut cpus = CpuMask::EMPTY;
        cpus.insert(0);
        cpus.insert(1);
        Attrs {
            sched: Sched::DEFAULT,
            util: (0, 1024),
            cpus,
        }
    }

    /// One syscall of the backend. The kernel orders a read after the write it sees (its own
    /// locks), but loom does not know about the std mutex SCHED: a model whose property
    /// depends on that order (the rescue's, where a write outside the ledger lock must not
    /// pass for the holder's own attributes) sets `ORDER_SYSCALLS`, which makes each syscall
    /// an AcqRel step on one loom atomic. Off by default: it adds a scheduling point to every
    /// syscall.
    fn syscall() {
        // Relaxed: a per-execution setting, written before the model's threads start.
        if ORDER_SYSCALLS.load(std::sync::atomic::Ordering::Relaxed) {
            SYSCALLS.fetch_add(1, Ordering::AcqRel);
        }
    }

    pub(crate) fn read_attrs(tid: crate::Tid) -> Result<Attrs, Errno> {
        syscall();
        Ok(SCHED
            .lock()
            .unwrap()
            .get(&tid)
            .copied()
            .unwrap_or_else(default_attrs))
    }

    pub(crate) fn read_sched(tid: crate::Tid) -> Result<(Sched, (u32, u32)), Errno> {
        read_attrs(tid).map(|a| (a.sched, a.util))
    }

    fn update(tid: crate::Tid, f: impl FnOnce(&mut Attrs)) -> Result<(), Errno> {
        syscall();
        let mut table = SCHED.lock().unwrap();
        f(table.entry(tid).or_insert_with(default_attrs));
        Ok(())
    }

    pub(crate) fn write_sched(tid: crate::Tid, sched: &Sched) -> Result<(), Errno> {
        SCHED_WRITERS
            .lock()
            .unwrap()
            .push((crate::current_tid(), tid, sched.nice));
        update(tid, |a| a.sched = *sched)
    }

    pub(crate) fn write_util(tid: crate::Tid, util: (u32, u32)) -> Result<(), Errno> {
        update(tid, |a| a.util = util)
    }

    pub(crate) fn write_cpus(tid: crate::Tid, cpus: &CpuMask) -> Result<(), Errno> {
        update(tid, |a| a.cpus = *cpus)
    }

    /// A model thread "runs" on the lowest CPU of its recorded affinity.
    pub(crate) fn current_cpu() -> Option<u32> {
        let attrs = read_attrs(crate::current_tid()).ok()?;
        (0..64).find(|&c| attrs.cpus.contains(c))
    }

    /// A loom mutex: the donation models check the bookkeeping, and the ledger lock's own
    /// atomics (`donor::LedgerLock`) would multiply their interleavings. The lock is modelled
    /// on its own (`test_hooks::pass_through_ledger`).
    pub(crate) fn with_ledger<R>(
        _holder: &crate::task::Task,
        f: impl FnOnce(&mut crate::donor::Ledger) -> R,
    ) -> R {
        f(&mut LEDGER.lock().unwrap())
    }

    /// The rescue slot. Under loom nobody waits for the ledger (a loom mutex), so nobody
    /// rescues through it; the ledger's reads go through the slot as in normal builds, and the
    /// slot's own protocol is modelled on its own (`test_hooks::rescue_round`).
    pub(crate) fn rescue_slot() -> &'static crate::donor::RescueSlot {
        &RESCUE
    }

    /// Hooks for the loom models in `tests/loom.rs`: set up and read back the recording
    /// backend. Not part of the API.
    pub mod test_hooks {
        use super::*;

        /// Gives the calling model thread `nice` and pins it to `cpu`, as its base.
        pub fn set_base(nice: i32, cpu: u32) {
            let tid = crate::current_tid();
            update(tid, |a| {
                a.sched.nice = nice;
                a.cpus = CpuMask::single(cpu);
            })
            .unwrap();
        }

        /// Makes the calling model thread SCHED_FIFO at `priority`, pinned to `cpu`, as its
        /// base.
        pub fn set_base_fifo(priority: u32, cpu: u32) {
            let tid = crate::current_tid();
            update(tid, |a| {
                a.sched.policy = crate::donor::SchedPolicy::Fifo;
                a.sched.rt_priority = priority;
                a.cpus = CpuMask::single(cpu);
            })
            .unwrap();
        }

        /// The SCHED_FIFO priority the backend holds for `tid`, 0 if it is not SCHED_FIFO.
        pub fn fifo_priority_of(tid: crate::Tid) -> u32 {
            let a = read_attrs(tid).unwrap();
            match a.sched.policy {
                crate::donor::SchedPolicy::Fifo => a.sched.rt_priority,
                _ => 0,
            }
        }

        /// Lets up to `count` model futex waits time out (the ledger lock's rechecks) in the
        /// execution that calls it.
        pub fn futex_timeouts(count: usize) {
            FUTEX_TIMEOUTS.store(count, std::sync::atomic::Ordering::Relaxed);
        }

        /// Takes a ledger lock (`donor::LedgerLock`, as normal builds guard the ledger with)
        /// and lets go of it, yielding once inside; panics if another thread is inside too.
        /// The model of the lock itself (`ledger_lock_excludes_and_loses_no_wakeup`).
        pub fn pass_through_ledger() {
            if !MODEL_LEDGER_LOCK.try_lock() {
                // As the normal builds' wait: a try in every round, before its sleep.
                MODEL_LEDGER_LOCK.lock_waiting(|lock, slept| lock.try_lock_in_round(slept));
            }
            {
                let _inside = MODEL_LEDGER_INSIDE
                    .try_lock()
                    .expect("two threads inside the ledger lock");
                loom::thread::yield_now();
            }
            MODEL_LEDGER_LOCK.unlock();
        }

        /// Whether thread `tid` is listed in the ledger as a waiter: it lent, and its loan
        /// stands until its wait ends.
        pub fn is_listed(tid: crate::Tid) -> bool {
            crate::task::with_live_tasks(|tasks| {
                let mut listed = false;
                for t in tasks {
                    listed |= t.tid() == tid && with_ledger(t, |ledger| ledger.is_listed(t));
                }
                listed
            })
        }

        /// Who wrote `tid`'s policy and priority, in order (the lenders, and whoever restored
        /// it); the models' own `set_base*` calls are not counted.
        pub fn sched_writers_of(tid: crate::Tid) -> Vec<crate::Tid> {
            SCHED_WRITERS
                .lock()
                .unwrap()
                .iter()
                .filter(|&&(_, target, _)| target == tid)
                .map(|&(writer, _, _)| writer)
                .collect()
        }

        /// One ledger hold against one rescue (`donor::rescue`). The calling model thread, nice
        /// 10 on CPU 0, holds the ledger and writes itself nice 5 there, as a reconcile would;
        /// a nice-0 thread on CPU 1 tries to rescue it at some point and, if it did, undoes the
        /// rescue once it holds the ledger. Checks that the ledger never sees the loan, that no
        /// rescue write lands once the holder has let go (its tid may be gone by then), and that
        /// the holder ends with what the ledger wrote: nice 5 on CPU 0.
        pub fn rescue_round() {
            // Relaxed: read by this execution's threads, which start after this.
            ORDER_SYSCALLS.store(true, std::sync::atomic::Ordering::Relaxed);
            set_base(10, 0);
            let rescuer = loom::thread::spawn(|| {
                set_base(0, 1);
                let me = crate::task::current();
                let rescue: Option<crate::donor::Rescue> = rescue_slot().try_rescue(me.task());
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
                write_sched(task.tid(), &five.sched).unwrap();
                slot.wrote(task, five);
                let seen = slot.current_attrs(task).unwrap();
                assert_eq!((seen.sched.nice, seen.cpus), (5, CpuMask::single(0)));
                slot.releasing();
                // A step on the syscalls' atomic, so that loom orders the rescuer's writes
                // against this mark too.
                syscall();
                SCHED_WRITERS.lock().unwrap().len()
            });
            rescuer.join().unwrap();
            let late_loans = SCHED_WRITERS.lock().unwrap()[let_go..]
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

        /// (nice, CPUs 0..64 as bits) the backend holds for `tid`.
        pub fn attrs_of(tid: crate::Tid) -> (i32, u64) {
            let a = read_attrs(tid).unwrap();
            (a.sched.nice, a.cpus.0[0])
        }
    }

    // The real thread plumbing is not used under loom; naming it keeps it compiled and checked.
    const _: fn() -> crate::Tid = crate::sys::gettid;
    const _: fn() -> u64 = crate::sys::monotonic_us;
    const _: fn() -> u64 = crate::sys::coarse_monotonic_us;
    const _: fn(*mut (), unsafe fn(*mut ())) = crate::sys::on_thread_exit;
    const _: fn(crate::Tid, &Sched) -> Result<(), Errno> = crate::sys::sched::set_sched;
    const _: fn() -> Option<u32> = crate::sys::sched::current_cpu;
    const _: fn(crate::Tid) -> Option<u64> = crate::sys::sched::thread_cpu_time_ns;
    const _: fn(&std::sync::atomic::AtomicU32, u32, std::time::Duration) =
        crate::sys::futex_wait_for;
    const _: fn(&std::sync::atomic::AtomicU32) = crate::sys::futex_wake_one;

    /// One spin round keeps the models small; spinning only changes timing, not the protocol.
    pub(crate) const SPIN_ROUNDS: u32 = 0;
    pub(crate) const HANDOFF_SPIN_ROUNDS: u32 = 1;
    pub(crate) const AWAIT_SPINNER_ROUNDS: u32 = 1;

    /// Look at the (fake) clock on every handoff, so models reach the fairness path.
    pub(crate) const FAIRNESS_CHECK_EVERY: u8 = 1;

    /// A bound of one section, so two published sections already reach the pass-on path.
    pub(crate) const COMBINE_BOUND: u32 = 1;
    pub(crate) const RUN_SPIN_ROUNDS: u32 = 0;

    pub(crate) fn spin_hint() {
        loom::thread::yield_now()
    }

    pub(crate) fn yield_now() {
        loom::thread::yield_now()
    }

    /// Nothing: scheduling hints have no state for a model to check.
    pub(crate) fn step_aside() {}

    /// Nothing: models do not reclaim records.
    pub(crate) fn thread_exiting() {}

    /// No test hooks under loom (see the normal build's).
    pub(crate) fn after_spinner_claim() {}

    /// Loom has no clock. Each call advances a per-execution counter by 600 µs, so successive
    /// fairness checks alternate between "patient" and "waited too long" and models reach both.
    pub(crate) fn monotonic_us() -> u64 {
        CLOCK.fetch_add(600, std::sync::atomic::Ordering::Relaxed)
    }

    /// The fake clock serves the coarse one too.
    pub(crate) fn coarse_us() -> u64 {
        monotonic_us()
    }

    /// A model owner always "runs": its CPU time is the fake clock, which every read
    /// advances, so only `OWNER_SPIN_CAP_US` (two reads of the fake clock) ends a model's spin.
    pub(crate) fn thread_cpu_time_ns(_tid: crate::Tid) -> Option<u64> {
        Some(monotonic_us())
    }

    pub(crate) const OWNER_SPIN_CAP_US: u64 = 1000;
    pub(crate) const ON_CPU_PROBE_SPINS: u32 = 1;

    /// Models have no switch logs: every watch reads the fake clock above.
    pub(crate) struct SwitchLogSlot;

    impl SwitchLogSlot {
        pub(crate) fn new() -> SwitchLogSlot {
            SwitchLogSlot
        }

        pub(crate) fn on_cpu(&self) -> Option<bool> {
            None
        }

        pub(crate) fn open(&self, _tid: crate::Tid) {}

        pub(crate) fn forget_after_fork(&self) {}
    }

    /// Models never fork: the hooks are never called.
    pub(crate) fn at_fork(
        _prepare: extern "C" fn(),
        _parent: extern "C" fn(),
        _child: extern "C" fn(),
    ) {
    }

    /// Models never fork.
    pub(crate) fn before_fork(_holder: &crate::task::Task) {}

    /// Models never fork.
    pub(crate) fn after_fork_in_parent() {}

    /// Models never fork.
    pub(crate) fn after_fork_in_child(_f: impl FnOnce(&mut crate::donor::Ledger, &mut Vec<usize>)) {
    }

    /// Loom has no clock: a deadline never passes on its own (a timed park may time out at any
    /// point anyway, see above).
    pub(crate) fn deadline_passed(_deadline: Instant) -> bool {
        false
    }

    pub(crate) fn current_tid() -> crate::Tid {
        use std::sync::atomic::{AtomicI32, Ordering::Relaxed};
        // Loom threads share one OS thread; hand out fake ids. Relaxed: only uniqueness matters.
        static NEXT: AtomicI32 = AtomicI32::new(1);
        NEXT.fetch_add(1, Relaxed)
    }

    /// Under loom, thread exit does nothing: records are leaked anyway, and loom tears its
    /// statics down before the main thread's locals, so a hook could not reach the registry.
    pub(crate) fn on_thread_exit(_arg: *mut (), _hook: unsafe fn(*mut ())) {}

    /// Under loom, retired records are leaked: a model is short and readers need no protection.
    pub(crate) unsafe fn retire<T>(_ptr: *mut T) {}

    /// Stands in for an epoch guard.
    pub(crate) struct Pinned;

    pub(crate) type Pin = Pinned;

    pub(crate) fn pin() -> Pinned {
        Pinned
    }

    loom::lazy_static! {
        static ref REGISTRY: Mutex<Vec<usize>> = Mutex::new(Vec::new());
        static ref LEDGER: Mutex<crate::donor::Ledger> = Mutex::new(crate::donor::Ledger::new());
        // The ledger lock's model (`test_hooks::pass_through_ledger`) and the mutex that
        // tells whether two threads are ever inside it at once.
        static ref MODEL_LEDGER_LOCK: crate::donor::LedgerLock = crate::donor::LedgerLock::new();
        static ref MODEL_LEDGER_INSIDE: Mutex<()> = Mutex::new(());
        static ref RESCUE: crate::donor::RescueSlot = crate::donor::RescueSlot::new();
        // Whether the backend's syscalls are ordered for loom, and the atomic that orders them
        // (see `syscall`). Per execution, as every lazy static here: models run side by side.
        static ref ORDER_SYSCALLS: std::sync::atomic::AtomicBool =
            std::sync::atomic::AtomicBool::new(false);
        static ref SYSCALLS: AtomicUsize = AtomicUsize::new(0);
        // The "kernel" of the recording backend. A std mutex, not a loom one: syscalls are
        // atomic with respect to each other, so there is nothing to model in them, and leaving
        // them out of loom's schedule keeps the models small. Reset for every execution.
        static ref SCHED: std::sync::Mutex<HashMap<crate::Tid, Attrs>> =
            std::sync::Mutex::new(HashMap::new());
        // (writer, target, nice) of every `write_sched`, in order, for
        // `test_hooks::sched_writers_of`. Reset for every execution, as SCHED is.
        static ref SCHED_WRITERS: std::sync::Mutex<Vec<(crate::Tid, crate::Tid, i32)>> =
            std::sync::Mutex::new(Vec::new());
        // A plain (unmodelled) atomic: a fake clock, reset for every execution.
        static ref CLOCK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    }

    /// Under loom, announcing goes straight into the (loom) registry lock: loom then sees the
    /// happens-before from a record's creation to its readers, and models stay small. The
    /// lock-free stack of normal builds is the textbook push-and-take-all pattern.
    pub(crate) fn announce(item: usize, _link: &AtomicUsize) {
        REGISTRY.lock().unwrap().push(item);
    }

    pub(crate) fn adopt_announced(_registry: &mut Vec<usize>, _next_of: impl Fn(usize) -> usize) {}

    /// A loom mutex, so loom sees the happens-before from a record's creation to its readers.
    pub(crate) fn with_registry<R>(f: impl FnOnce(&mut Vec<usize>) -> R) -> R {
        f(&mut REGISTRY.lock().unwrap())
    }

    /// The shared parking table (`park_table`), with loom's types.
    pub(crate) unsafe fn park(
        key: usize,
        validate: impl FnOnce() -> bool,
        before_sleep: impl FnOnce(),
        timed_out: impl FnOnce(usize, bool),
        token: ParkToken,
        deadline: Option<Instant>,
    ) -> ParkResult {
        super::park_table::park(key, validate, before_sleep, timed_out, token, deadline)
    }

    /// See [`park`].
    pub(crate) unsafe fn unpark_filter(
        key: usize,
        filter: impl FnMut(ParkToken) -> FilterOp,
        callback: impl FnOnce(UnparkResult) -> UnparkToken,
    ) -> UnparkResult {
        super::park_table::unpark_filter(key, filter, callback)
    }

    /// A futex wait from the model's parking table, keyed by the word's address. It may time
    /// out (at any point, as timed parks do here) only as often as `test_hooks::futex_timeouts`
    /// allows: without timeouts, a lost wake-up leaves the model's threads asleep for good,
    /// which loom reports, and with unlimited ones a sleeper could time out for ever.
    pub(crate) fn futex_wait_for(word: &AtomicU32, expected: u32, _timeout: std::time::Duration) {
        let key = word as *const AtomicU32 as usize;
        // Relaxed: a plain counter, see `FUTEX_TIMEOUTS`.
        let may_time_out = FUTEX_TIMEOUTS
            .fetch_update(
                std::sync::atomic::Ordering::Relaxed,
                std::sync::atomic::Ordering::Relaxed,
                |left| left.checked_sub(1),
            )
            .is_ok();
        let deadline = may_time_out.then(Instant::now);
        // SAFETY: the key is the address of a word this crate owns; the callbacks do not panic.
        unsafe {
            park(
                key,
                // Relaxed: read under the table lock, which the waker takes after its store,
                // as the kernel's futex compares under its bucket lock.
                || word.load(Ordering::Relaxed) == expected,
                || {},
                |_, _| {},
                ParkToken(0),
                deadline,
            )
        };
    }

    pub(crate) fn futex_wake_one(word: &AtomicU32) {
        let key = word as *const AtomicU32 as usize;
        let mut woken = false;
        let wake_first = |_| {
            if std::mem::replace(&mut woken, true) {
                FilterOp::Stop
            } else {
                FilterOp::Unpark
            }
        };
        // SAFETY: as in `futex_wait_for`.
        unsafe { unpark_filter(key, wake_first, |_| UnparkToken(0)) };
    }

    /// How many more model futex waits may time out (`test_hooks::futex_timeouts`); each wait
    /// that may uses one up, whether it then times out or is woken. A plain atomic, set at the
    /// start of each execution: the count only follows the schedule loom chose, it is not a
    /// choice loom explores.
    static FUTEX_TIMEOUTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    /// See [`park`].
    pub(crate) unsafe fn unpark_requeue(
        from: usize,
        to: usize,
        validate: impl FnOnce() -> RequeueOp,
        callback: impl FnOnce(RequeueOp, UnparkResult) -> UnparkToken,
    ) -> UnparkResult {
        super::park_table::unpark_requeue(from, to, validate, callback)
    }
}
