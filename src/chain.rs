//! The blocked_on graph: which thread waits for which lock, and who holds that lock.
//!
//! Reading an edge `thread -> lock -> owner` touches memory that other threads free: the lock
//! (a waiter's borrow keeps it alive only while the waiter waits) and the owner's task record.
//! `Task::with_blocked_lock` handles the first (a handshake with the waiter), and
//! `RawMutex::owner_tid` the second (an epoch pin). The snapshot is taken inside
//! `task::with_live_tasks`, which keeps every listed record alive while we read it.
//!
//! Donation walks the same edges from one waiter down its chain ([`walk`]), and a walk that
//! comes back to the walker is checked for a deadlock ([`check_deadlock`]).

use crate::task::{Me, Task, with_live_tasks};
use crate::word::RawMutex;
use crate::{LockId, Tid};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A thread's state in a [`Snapshot`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
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
#[non_exhaustive]
pub struct Wait {
    /// The lock.
    pub lock: LockId,
    /// Its owner when the snapshot was taken (`None`: just released, a wake-up is under way).
    pub owner: Option<Tid>,
    /// The owner exited holding the lock (it forgot its guard): the lock stays held for good.
    pub owner_exited: bool,
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
#[non_exhaustive]
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
/// show that the waiter cannot finish its wait meanwhile (`test_hooks`).
pub(crate) fn inspect_wait_for_tests(tid: Tid, f: impl FnOnce(LockId)) -> bool {
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
    let pin = crate::loom::pin();
    task.with_blocked_lock(|lock| {
        let owner = lock.owner_record(&pin);
        Wait {
            lock: lock.id(),
            owner: owner.map(Task::tid),
            owner_exited: owner.is_some_and(Task::has_exited),
        }
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
            let before_last = chain.len().checked_sub(2).map(|i| chain[i]);
            let last_exited = before_last
                .and_then(|t| self.threads.iter().find(|s| s.tid == t)?.waits_for)
                .is_some_and(|w| w.owner_exited);
            if cyclic {
                write!(f, " (cycle: deadlock if it persists)")?;
            } else if last_exited {
                write!(f, " (exited holding the lock: it stays held)")?;
            } else if self.lock_of(last).is_none() {
                write!(f, " (running)")?;
            }
        }
        // Waiters whose lock was free at that instant (a wake-up in flight) form no chain.
        for t in &self.threads {
            if let Some(Wait {
                lock, owner: None, ..
            }) = t.waits_for
            {
                write!(f, "\n  {} -> {lock} (being released)", self.describe(t.tid))?;
            }
        }
        Ok(())
    }
}

/// How far a chain walk goes, as the kernel's `max_lock_depth`.
pub(crate) const MAX_DEPTH: usize = 1024;

/// How a chain walk ended.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Walked {
    /// At an owner that waits for nothing (or a free lock), or where `visit` said stop.
    Ended,
    /// After the most hops it was allowed.
    Cut,
    /// It came back to an owner it had passed: a cycle the walker is not on.
    Looped,
}

/// Follows the chain from `first`: its owner, the lock that owner sleeps on, that lock's
/// owner, and so on, calling `visit(lock, owner)` for each hop until `visit` returns false, an
/// owner runs, or `MAX_DEPTH` hops (then it says `Cut`).
///
/// An owner that sleeps because an unlocker chose it and has not yet woken it (it was handed
/// a lock, or the lock it sleeps on was freed for it) can only go on once that unlocker runs:
/// the walk goes on to the unlocker (`Task::waker`), with the lock the owner was reached
/// through, and ends there. Otherwise a free lock ends the walk.
///
/// `first` must be alive for the call (the caller waits on it). Every later lock is read
/// inside the walker handshake with the thread that waits on it, which keeps it alive; owner
/// records are kept alive by the epoch pin taken here.
pub(crate) fn walk(first: &RawMutex, visit: impl FnMut(LockId, &Task) -> bool) -> Walked {
    walk_up_to(first, MAX_DEPTH, visit)
}

/// `walk` for any number of hops: for deadlock checks, which must find a cycle longer than
/// the walk that lends (a ring of 1,025 threads used to hang silently). It notices a cycle it
/// is not on (Brent's method: it compares each owner with one it passed, taken afresh at every
/// power of two), so it stops after at most a few times the chain's length.
pub(crate) fn walk_unbounded(first: &RawMutex, visit: impl FnMut(LockId, &Task) -> bool) -> Walked {
    walk_up_to(first, usize::MAX, visit)
}

fn walk_up_to(
    first: &RawMutex,
    hops: usize,
    mut visit: impl FnMut(LockId, &Task) -> bool,
) -> Walked {
    let pin = crate::loom::pin();
    let Some(mut owner) = first.owner_record(&pin) else {
        return Walked::Ended;
    };
    let mut lock = first.id();
    if !visit(lock, owner) {
        return Walked::Ended;
    }
    // Brent's cycle check: `mark` is the owner at the last power of two.
    let (mut mark, mut since_mark, mut power) = (owner as *const Task, 0usize, 1usize);
    for _ in 1..hops {
        // Most owners run: skip the handshake (two read-modify-writes on the owner's record)
        // when a plain look says the owner waits for nothing. A wait that starts after this
        // look is one the walker did not have to see (see `with_blocked_lock`).
        let held_next = owner.blocked_on().and_then(|_| {
            owner
                .with_blocked_lock(|next| Some((next.id(), next.owner_record(&pin)?)))
                .flatten()
        });
        // An unlocker marks its choice before it clears the chosen thread's wait or frees the
        // lock, so a walker that sees either also sees the mark (`WakeInFlight::mark`).
        let Some((next_lock, next)) = held_next else {
            // The unlocker is inside its unlock, waiting for nothing: the walk ends there. Not
            // followed any further, a mark read stale (two threads that each chose the other,
            // one after the other) cannot send the walk round in a loop.
            if let Some(waker) = owner.waker(&pin) {
                visit(lock, waker);
            }
            return Walked::Ended;
        };
        if !visit(next_lock, next) {
            return Walked::Ended;
        }
        if std::ptr::eq(next, mark) {
            return Walked::Looped;
        }
        since_mark += 1;
        if since_mark == power {
            (mark, since_mark, power) = (next, 0, power.saturating_mul(2));
        }
        (lock, owner) = (next_lock, next);
    }
    Walked::Cut
}

/// Whether the chain from `first` comes back to `me` after more hops than a lending walk takes
/// (`survey` saw it `Cut`): a deadlock cycle longer than `MAX_DEPTH`, which
/// `check_deadlock` then confirms.
pub(crate) fn comes_back_to(me: Me, first: &RawMutex) -> bool {
    let mut back = false;
    walk_unbounded(first, |_, owner| {
        back = owner.is(me);
        !back
    });
    back
}

/// The last owner on the chain from `first` (see `walk`), the thread whose running moves the
/// whole chain on: its tid, and whether it is on a CPU if its record can say
/// (`Task::on_cpu`). `None` if `first` is free or `me` owns a lock on the chain.
pub(crate) fn last_owner(first: &RawMutex, me: Me) -> Option<(Tid, Option<bool>)> {
    let mut last = None;
    // Each hop's answer is read while the walk's pin keeps its record alive; the last one
    // stands. The others cost two loads each.
    walk(first, |_, owner| {
        last = (!owner.is(me)).then(|| (owner.tid(), owner.on_cpu()));
        last.is_some()
    });
    last
}

/// One hop of a cycle as one collect saw it.
#[derive(PartialEq, Eq)]
struct Hop {
    lock: usize,
    owner: *const Task,
    tid: Tid,
    /// The owner's wait when it was read (wait sequence number, has a deadline), `None` for
    /// the walker itself.
    wait: Option<(usize, bool)>,
}

/// A confirmed deadlock: the message naming every thread and lock on the cycle. The waiter has
/// already left its wait (blocked_on cleared, loans withdrawn) when it gets one.
pub(crate) struct Deadlock(String);

impl Deadlock {
    /// Panics with the cycle spelled out (what `lock()` does with a deadlock).
    #[cold]
    pub(crate) fn raise(self) -> ! {
        panic!("{}", self.0)
    }
}

/// `me` found itself at the end of its own chain from `first`. `Err` if the cycle is real:
/// two collects see the same owners in the same untimed waits (module docs of `task`: a
/// waiter cannot take or release a lock without ending its wait, which bumps its sequence), so
/// at an instant between them every thread on the cycle waited for the next, and none of those
/// waits can end. A cycle through a timed wait is left alone: that wait will end.
///
/// Both threads that close a cycle publish `blocked_on` (SeqCst) before walking, so at least
/// one of them sees it; both may panic, each having seen a real cycle. On `Err` the caller
/// leaves its wait (`mutex::wait`).
pub(crate) fn check_deadlock(me: Me, first: &RawMutex, timed: bool) -> Result<(), Deadlock> {
    if timed {
        return Ok(());
    }
    let Some(seen) = collect_cycle(me, first) else {
        return Ok(());
    };
    if seen.iter().any(|h| matches!(h.wait, Some((_, true)))) {
        return Ok(());
    }
    if collect_cycle(me, first).as_ref() != Some(&seen) {
        return Ok(());
    }
    Err(Deadlock(describe_cycle(me, &seen)))
}

fn collect_cycle(me: Me, first: &RawMutex) -> Option<Vec<Hop>> {
    let mut hops = Vec::new();
    let mut closed = false;
    walk_unbounded(first, |lock, owner| {
        let mut hop = Hop {
            lock: lock.addr(),
            owner,
            tid: owner.tid(),
            wait: None,
        };
        if owner.is(me) {
            hops.push(hop);
            closed = true;
            return false;
        }
        // The owner's wait, read inside its handshake so lock and sequence belong together.
        hop.wait = owner.with_blocked_lock(|_| owner.wait_identity());
        let waiting = hop.wait.is_some();
        hops.push(hop);
        waiting
    });
    closed.then_some(hops)
}

fn describe_cycle(me: Me, hops: &[Hop]) -> String {
    let name = |tid: Tid| match crate::sys::thread_name(tid) {
        Some(n) => format!("thread {tid} \"{n}\""),
        None => format!("thread {tid}"),
    };
    let mut text = format!(
        "proxy_lock: deadlock: {} (this thread)",
        name(me.task().tid())
    );
    // A long cycle is named by its first and last hops (and read from /proc for those only).
    const SHOWN: usize = 16;
    for (i, hop) in hops.iter().enumerate() {
        if hops.len() > 2 * SHOWN && i == SHOWN {
            text += &format!(" ... ({} more threads) ...", hops.len() - 2 * SHOWN);
        }
        if hops.len() > 2 * SHOWN && (SHOWN..hops.len() - SHOWN).contains(&i) {
            continue;
        }
        text += &format!(" waits for {} held by {}", LockId(hop.lock), name(hop.tid));
        if hop.wait.is_some() {
            text += ", which";
        }
    }
    text + &format!(
        " (this thread): the cycle of {} threads can never resolve",
        hops.len()
    )
}
