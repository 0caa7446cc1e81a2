//! The blocked_on graph: which thread waits for which lock, and who holds that lock.
//!
//! Reading an edge `thread -> lock -> owner` touches memory that other threads free: the lock
//! (a waiter's borrow keeps it alive only while the waiter waits) and the owner's task record.
//! `Task::with_blocked_lock` handles the first (a handshake with the waiter), and
//! `RawMutex::owner_tid` the second (an epoch pin). The snapshot is taken inside
//! `task::with_live_tasks`, which keeps every listed record alive while we read it.
//!
//! Donation will walk the same edges, from one waiter down its chain.

use crate::task::{Task, with_live_tasks};
use crate::{LockId, Tid};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A thread's state in a [`Snapshot`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreadState {
    /// Kernel thread id.
    pub tid: Tid,
    /// The thread's name (`/proc/self/task/<tid>/comm`), if it could be read.
    pub name: Option<String>,
    /// The lock it sleeps on, if any, and who held that lock at that moment.
    pub waits_for: Option<Wait>,
}

/// One edge pair of the graph: a lock a thread sleeps on, and that lock's owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wait {
    /// The lock.
    pub lock: LockId,
    /// Its owner when the snapshot was taken (`None`: just released, a wake-up is under way).
    pub owner: Option<Tid>,
}

/// A point-in-time picture of every thread that has used proxy-lock and is alive (or exited
/// holding a lock), with the locks they sleep on and the owners of those locks. Each edge is
/// read consistently; the edges together are a snapshot of a moving system, not an atomic one.
///
/// Its `Display` prints one line per chain of waiting threads:
///
/// ```text
/// blocked_on graph: 3 threads, 2 waiting
///   4012 "worker" -> lock@0x5581d0a0 held by 4011 "stage-2" -> lock@0x5581d060 held by 4010 "stage-1" (running)
/// ```
///
/// ```
/// use proxy_lock::Mutex;
/// use std::sync::Arc;
///
/// let m = Arc::new(Mutex::new(0));
/// let guard = m.lock().unwrap();
/// let m2 = Arc::clone(&m);
/// let waiter = std::thread::Builder::new()
///     .name("waiter".into())
///     .spawn(move || *m2.lock().unwrap() += 1)
///     .unwrap();
/// let snapshot = loop {
///     let s = proxy_lock::snapshot();
///     if s.threads().iter().any(|t| t.waits_for.is_some()) {
///         break s;
///     }
///     std::thread::yield_now();
/// };
/// let line = snapshot.to_string();
/// assert!(line.contains("\"waiter\" -> "), "{line}");
/// assert!(line.contains(&format!("held by {}", proxy_lock::current_tid())), "{line}");
/// drop(guard);
/// waiter.join().unwrap();
/// ```
#[derive(Clone, Debug)]
pub struct Snapshot {
    threads: Vec<ThreadState>,
}

/// Takes a [`Snapshot`] of the blocked_on graph. Costs a lock of the thread registry and a few
/// loads per thread; meant for diagnostics, not hot paths.
pub fn snapshot() -> Snapshot {
    let mut threads: Vec<ThreadState> = with_live_tasks(|tasks| {
        tasks
            .map(|task| ThreadState {
                tid: task.tid(),
                name: None,
                waits_for: read_wait(task),
            })
            .collect()
    });
    // Names come from /proc, outside the registry lock.
    for t in &mut threads {
        t.name = crate::sys::thread_name(t.tid);
    }
    threads.sort_by_key(|t| t.tid);
    Snapshot { threads }
}

/// Test hook: runs `f` inside the walker handshake on the wait of thread `tid`, as a chain
/// walk does, and returns whether `f` ran (the thread was waiting). Tests hold `f` open to
/// show that the waiter cannot finish its wait meanwhile. Not part of the API.
#[doc(hidden)]
pub fn inspect_wait_for_tests(tid: Tid, f: impl FnOnce(LockId)) -> bool {
    let mut ran = false;
    with_live_tasks(|tasks| {
        for task in tasks {
            if task.tid() == tid {
                task.with_blocked_lock(|lock| {
                    ran = true;
                    f(lock.id())
                });
                break;
            }
        }
    });
    ran
}

fn read_wait(task: &Task) -> Option<Wait> {
    task.with_blocked_lock(|lock| Wait {
        lock: lock.id(),
        owner: lock.owner_tid(),
    })
}

impl Snapshot {
    /// Every thread in the snapshot, by tid.
    ///
    /// ```
    /// let me = proxy_lock::current_tid();
    /// assert!(proxy_lock::snapshot().threads().iter().any(|t| t.tid == me));
    /// ```
    pub fn threads(&self) -> &[ThreadState] {
        &self.threads
    }

    /// The chains of waiting threads: each starts at a thread nobody in the snapshot waits
    /// for, and follows `waits for lock -> held by` until a thread that does not wait. A cycle
    /// (a deadlock, if it persists) has no such start and is returned as its own chain, with
    /// `true` in the second field.
    ///
    /// ```
    /// // A thread that waits for nothing forms no chain.
    /// assert!(proxy_lock::snapshot().chains().iter().all(|(c, _)| c.len() >= 2));
    /// ```
    pub fn chains(&self) -> Vec<(Vec<Tid>, bool)> {
        let waits: BTreeMap<Tid, Tid> = self
            .threads
            .iter()
            .filter_map(|t| Some((t.tid, t.waits_for?.owner?)))
            .collect();
        let waited_for: BTreeSet<Tid> = waits.values().copied().collect();
        let mut chains = Vec::new();
        let mut seen = BTreeSet::new();
        let heads = waits.keys().filter(|t| !waited_for.contains(t));
        for &head in heads {
            chains.push((follow(&waits, head, &mut seen), false));
        }
        // Whatever waits but was not reached from a head lies on (or hangs off) a cycle.
        for &start in waits.keys() {
            if !seen.contains(&start) {
                chains.push((follow(&waits, start, &mut seen), true));
            }
        }
        chains
    }

    fn describe(&self, tid: Tid) -> String {
        match self
            .threads
            .iter()
            .find(|t| t.tid == tid)
            .and_then(|t| t.name.as_deref())
        {
            Some(name) => format!("{tid} \"{name}\""),
            None => tid.to_string(),
        }
    }

    fn lock_of(&self, tid: Tid) -> Option<LockId> {
        self.threads
            .iter()
            .find(|t| t.tid == tid)?
            .waits_for
            .map(|w| w.lock)
    }
}

/// Follows wait edges from `start` until a thread that does not wait, or one already on this
/// chain (a cycle). Marks every thread it passes as seen.
fn follow(waits: &BTreeMap<Tid, Tid>, start: Tid, seen: &mut BTreeSet<Tid>) -> Vec<Tid> {
    let mut chain = vec![start];
    seen.insert(start);
    let mut at = start;
    while let Some(&owner) = waits.get(&at) {
        chain.push(owner);
        if !seen.insert(owner) {
            break; // back on the chain (or on one printed already): stop here
        }
        at = owner;
    }
    chain
}

impl fmt::Display for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let waiting = self
            .threads
            .iter()
            .filter(|t| t.waits_for.is_some())
            .count();
        write!(
            f,
            "blocked_on graph: {} threads, {waiting} waiting",
            self.threads.len()
        )?;
        for (chain, cyclic) in self.chains() {
            write!(f, "\n  {}", self.describe(chain[0]))?;
            for pair in chain.windows(2) {
                let lock = self
                    .lock_of(pair[0])
                    .map_or_else(|| "?".into(), |l| l.to_string());
                write!(f, " -> {lock} held by {}", self.describe(pair[1]))?;
            }
            let last = *chain.last().unwrap_or(&chain[0]);
            if cyclic {
                write!(f, " (cycle: deadlock if it persists)")?;
            } else if self.lock_of(last).is_none() {
                write!(f, " (running)")?;
            }
        }
        // Waiters whose lock was free at that instant (a wake-up in flight) form no chain.
        for t in &self.threads {
            if let Some(Wait { lock, owner: None }) = t.waits_for {
                write!(f, "\n  {} -> {lock} (being released)", self.describe(t.tid))?;
            }
        }
        Ok(())
    }
}
