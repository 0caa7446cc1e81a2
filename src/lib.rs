//! A drop-in replacement for [`std::sync::Mutex`] and [`std::sync::Condvar`] built to end
//! priority inversion between ordinary threads, and an [`RwLock`] with std's API (which does
//! not donate yet).
//!
//! ```
//! use proxy_lock::{Mutex, RwLock}; // was: use std::sync::{Mutex, RwLock};
//! let m = Mutex::new(0);
//! *m.lock().unwrap() += 1;
//! let table = RwLock::new(vec![1]);
//! assert_eq!(table.read().unwrap().len(), 1);
//! ```
//!
//! # The model
//!
//! **Task records.** Every thread that uses a proxy-lock primitive gets a small record: its
//! kernel tid and the lock it is blocked on. Records outlive their threads for as long as
//! another thread may still be reading them (epoch reclamation), and a thread that is exiting
//! can still lock: thread-local destructors that take a `Mutex` work.
//!
//! **The lock word records the owner.** A `Mutex` is two words (16 bytes for `Mutex<()>`):
//! the lock word, holding the owner's record address with flag bits for "threads are parked"
//! and the like, and a slot for a spinning waiter; what only contention needs lives in tables
//! keyed by the lock's address. Acquiring is a single CAS that writes the
//! owner, so at every instant the lock either is free or names its holder
//! ([`Mutex::owner_tid`]). A thread about to sleep on a lock first publishes which lock it is
//! blocked on ([`thread_blocked_on`]). Those two edges, owner and blocked_on, form the chains
//! that priority donation walks; [`snapshot`] prints them as readable chains, with cycles
//! (deadlocks) marked. A walker may read a lock only while a thread waits for it (the waiter's
//! borrow keeps it alive), so waiters and walkers shake hands: a waiter does not leave its wait
//! while a walker is still reading its lock.
//!
//! **Donation.** A waiter about to sleep walks its chain (owner, the lock that owner sleeps on, its
//! owner, ... up to 1024 hops) and lends each owner that is worse off its scheduling attributes:
//! policy and nice, FIFO/RR priority, DEADLINE parameters, util clamps, and the CPU it is about to
//! free (by default the owner is moved onto it for the duration; [`set_cpu_donation`]). Precedence
//! is DEADLINE > FIFO/RR by priority > OTHER/BATCH by nice > IDLE. A sleeping owner that an
//! unlocker has chosen (handed a lock, or freed one for) but not yet woken cannot run before that
//! unlocker does, so the walk goes on to the unlocker, which is lent to until its wake-up call
//! returns. An owner's attributes are always its base plus the best of every waiter still waiting
//! on a lock it holds, directly or through a chain; when the last such waiter leaves (it gets the
//! lock or times out) the owner gets its base back, and a change the application made meanwhile
//! becomes the new base. Between equal threads nothing is lent, nothing is written, and a wait
//! makes no syscall but the futex: a waiter about to sleep compares its own policy, as it last read
//! it, with cached summaries of the owners' (each re-read at most every 10 ms), and reads its own
//! again only when it finds someone to lend to. A waiter that would lend first spins while the last
//! owner on its chain runs (up to 1 ms, reading that thread's CPU clock), as the kernel's rt_mutex
//! waiters spin while their owner is on a CPU, and an unlock hands it the lock without a wake-up;
//! it lends its CPU, and unless it is real-time anything at all, only once that owner stops
//! running. A failed loan (no CAP_SYS_NICE, a thread that exited) never fails or delays a lock; it
//! is counted ([`counters`]) and [`capabilities`] says what this process may change. A walk that
//! comes back to the walker is a deadlock: once a second look confirms it (and no wait on it has a
//! deadline), `lock()` panics with the cycle spelled out.
//!
//! ```
//! let caps = proxy_lock::capabilities();
//! println!("{caps}");
//! let c = proxy_lock::counters();
//! println!("{c}");
//! ```
//!
//! **Proxy execution** ([`Mutex::run`]). A critical section handed over as a closure need not
//! wait for its own thread. A caller that finds the lock held (after a brief spin) publishes
//! its section on a request stack found by the lock's address, a per-thread slot with no allocation, and the
//! thread that holds the lock runs the published sections, in publication order, before it
//! lets the lock go: the thread that is on a CPU and owns the lock does the work, and the
//! caller only sleeps to learn that its section ran (lending its attributes to the holder
//! meanwhile, as any waiter). A guard's unlock serves published sections too, so guard users
//! and closure users share one mutex. One unlock runs at most 64 sections, then asks the
//! oldest remaining caller to take the lock and serve. Thread-locals inside a proxied section
//! are the proxy's. On a `Handoff` mutex this removes the convoy of strict handoff: instead of
//! handing the lock to a sleeping waiter and waiting for it to wake, the unlocker runs the
//! waiter's section and wakes it only to deliver the result.
//!
//! ```
//! use proxy_lock::{Mutex, Policy};
//! let log = Mutex::with_policy(Vec::new(), Policy::Handoff);
//! std::thread::scope(|s| {
//!     for i in 0..4 {
//!         let log = &log;
//!         s.spawn(move || log.run(|v| v.push(i)).unwrap());
//!     }
//! });
//! assert_eq!(log.run(|v| v.len()).unwrap(), 4);
//! ```
//!
//! **Unlock policies** ([`Policy`]), chosen per mutex with [`Mutex::with_policy`]:
//! * `Spin`: waiters spin briefly and may barge; unlock frees the word and wakes one waiter.
//! * `Handoff`: unlock passes ownership straight to a waiter (a spinning one first, see
//!   [`Policy::Handoff`]); nobody barges. An unlock that hands the lock to a sleeping waiter
//!   yields its CPU, so that the new owner runs sooner.
//! * `Adaptive` (the default): as `Spin`, with eventual fairness: roughly every half
//!   millisecond an unlock hands off instead, so barging never starves a waiter for long.
//! * Whatever the policy, a lock whose owner was lent attributes goes straight to the best
//!   waiter that lent them (the kernel's `blocked_donor`) under `Handoff` and `Adaptive`, and
//!   that waiter is the one woken under `Spin`.
//!
//! **Sleeping** uses `parking_lot_core`, keyed by the lock's address, with the waiter's record
//! in its park token. [`Condvar`] notifications move waiters onto the mutex's queue instead of
//! waking them all at once.
//!
//! **Behaviour as std.** Poisoning, `Send`/`Sync`, `Debug` output, unsized `T` and `const fn
//! new` all match std. Beyond std: timed locks ([`Mutex::try_lock_for`]), fair unlocking
//! ([`MutexGuard::unlock_fair`], [`MutexGuard::bump`]), a [`lock_api`] raw mutex
//! ([`RawMutex`]), and a panic instead of a silent hang when a thread locks a mutex it already
//! holds.
//!
//! **`fork()`.** A child gets records of its own: [`current_tid`] is its own tid, loans in the
//! child land on the child's threads, and nothing the child does writes to the parent's
//! threads. What a lock held at the fork looks like in the child is what std's does:
//! * held by the thread that forked (the child's only thread): still held by it, and the
//!   child may unlock it. Waiters of the parent's that were queued on it are not in the child:
//!   the unlock neither hands the lock to one of them nor runs a section one of them published
//!   with [`Mutex::run`];
//! * held by any other thread: held forever in the child, since its owner does not exist
//!   there. `lock()` on it waits forever, [`Mutex::try_lock`] fails, and
//!   [`Mutex::try_lock_for`] times out.
//!
//! A child of a process that had more than one thread at the fork sleeps on a parking table of the
//! crate's own instead of `parking_lot_core`'s, which still links the parent's sleeping threads in
//! the child: one lock and a list, as fast for a child's few threads, but with many sleeping
//! threads it scales worse than `parking_lot_core`'s hash table. Starting threads in such a child
//! is subject to std's and POSIX's rules for a forked multithreaded process (until it execs, only
//! async-signal-safe calls are defined; std's `thread::spawn` can hang if another thread was
//! starting or ending at the fork). The fork hooks take the donation ledger's lock across the fork,
//! so loans in the parent wait for it (a fork takes well under a millisecond for small processes).
//!
//! ```
//! # #[cfg(target_os = "linux")] {
//! use proxy_lock::Mutex;
//! let m = Mutex::new(0);
//! let guard = m.lock().unwrap();
//! // SAFETY: the child only unlocks, locks, and exits without running destructors.
//! match unsafe { libc::fork() } {
//!     0 => {
//!         drop(guard); // the child's copy of the forking thread's guard
//!         *m.lock().unwrap() += 1;
//!         // SAFETY: ends the child at once.
//!         unsafe { libc::_exit(0) };
//!     }
//!     pid => {
//!         let mut status = 0;
//!         // SAFETY: reaps our own child into a local.
//!         unsafe { libc::waitpid(pid, &mut status, 0) };
//!         assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
//!     }
//! }
//! drop(guard);
//! assert_eq!(*m.lock().unwrap(), 0); // the child's increment stayed in the child
//! # }
//! ```
//!
//! **Platforms and the `donation` feature.** The crate builds wherever std does, and the
//! locks, `run`, poisoning, owner chains, [`snapshot`] and deadlock reports are the same
//! everywhere. Donation is built on Linux's scheduling syscalls: on Linux with the `donation`
//! cargo feature (on by default) waiters lend; elsewhere, or with `default-features = false`,
//! nothing is lent, no scheduling syscall is made, and [`capabilities`] says why:
//!
//! ```
//! let caps = proxy_lock::capabilities();
//! match caps.unavailable {
//!     None => println!("{caps}"),
//!     Some(why) => println!("no donation here: {why}"),
//! }
//! ```

#![warn(missing_docs)]

// Layers, lowest first: stats, sys, loom, tuning, task, word, chain, spin, donor, proxy, mutex,
// condvar, rwlock, fork. Each uses only those before it (docs/design.md, "Code layout").
mod chain;
mod condvar;
mod donor;
mod fork;
mod loom;
mod mutex;
mod proxy;
mod rwlock;
mod spin;
mod stats;
mod sys;
mod task;
#[doc(hidden)]
pub mod test_hooks;
mod tuning;
mod word;

pub use chain::{Snapshot, ThreadState, Wait, WaitKind, snapshot};
pub use condvar::{Condvar, WaitTimeoutResult};
pub use donor::{Capabilities, CpuDonation, capabilities, set_cpu_donation};
pub use mutex::{Mutex, MutexGuard};
pub use rwlock::raw::RawRwLock;
pub use rwlock::{RwLock, RwLockReadGuard, RwLockWriteGuard};
pub use stats::{Counters, counters};
pub use task::{current_tid, thread_blocked_on};
pub use word::RawMutex;

/// The record layer's calls up (`task::UpCalls`), wired here so that it names no layer above.
static UP_CALLS: task::UpCalls = task::UpCalls {
    record_created: fork::arm,
    thread_exit: donor::on_thread_exit,
};

/// A kernel thread id (`gettid(2)`).
pub type Tid = i32;

/// What unlocking does when threads wait. See the crate docs for the model.
///
/// ```
/// use proxy_lock::{Mutex, Policy};
/// assert_eq!(Policy::default(), Policy::Adaptive);
/// let fifo = Mutex::with_policy(Vec::<u32>::new(), Policy::Handoff);
/// assert_eq!(fifo.policy(), Policy::Handoff);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
#[non_exhaustive]
pub enum Policy {
    /// Waiters spin briefly and may barge; unlock frees the lock, then wakes one waiter (the
    /// best lender, if any waiter lent its attributes to the owner).
    Spin,
    /// Unlock with waiters passes ownership straight to a waiter: the best lender if any
    /// waiter lent the owner its attributes (the kernel's `blocked_donor`), else a waiter
    /// spinning on a CPU, else the first sleeper. Nobody barges.
    Handoff,
    /// Spin while spinning pays, then sleep and lend: a waiter spins (pause loops, never
    /// yielding) for at most about 6 µs, and only while nobody sleeps on the lock. An owner
    /// still holding the lock after that is evidently not making progress (preempted, or in a
    /// long section): longer budgets gain nothing on ~1 µs sections and shorter ones lose up to
    /// 2.3x (`examples/spin_budget.rs`, `docs/design.md#the-spin-budget`). Release as `Spin`
    /// does, except that a lock whose owner was lent to goes straight to the best lender, and
    /// with eventual fairness: no waiter waits behind barging for longer than about a
    /// millisecond.
    #[default]
    Adaptive,
}

/// The identity of a lock in diagnostics: its address. Two live locks never share one; a lock
/// freed and another allocated at the same place do.
///
/// ```
/// let a = proxy_lock::Mutex::new(());
/// let b = proxy_lock::Mutex::new(());
/// assert_ne!(a.id(), b.id());
/// println!("{}", a.id()); // e.g. "lock@0x7ffd5c1e8a40"
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LockId(usize);

impl LockId {
    fn from_addr(addr: usize) -> Option<LockId> {
        (addr != 0).then_some(LockId(addr))
    }

    /// The lock's address.
    ///
    /// ```
    /// let m = proxy_lock::Mutex::new(());
    /// assert_ne!(m.id().addr(), 0);
    /// ```
    pub fn addr(self) -> usize {
        self.0
    }
}

impl std::fmt::Display for LockId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "lock@{:#x}", self.0)
    }
}
