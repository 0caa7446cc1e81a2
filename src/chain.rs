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
use crate::word::LockRef;
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
    /// The [`RwLock`](crate::RwLock)s it holds for reading (up to four are recorded per
    /// thread; more are held without showing here).
    pub reading: Vec<LockId>,
}

/// How a thread waits in a [`Wait`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WaitKind {
    /// For a [`Mutex`](crate::Mutex).
    Mutex,
    /// To read an [`RwLock`](crate::RwLock).
    Read,
    /// To write an [`RwLock`](crate::RwLock).
    Write,
}

/// One edge pair of the graph: a lock a thread sleeps on, and that lock's owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Wait {
    /// The lock.
    pub lock: LockId,
    /// How the thread waits for it.
    pub kind: WaitKind,
    /// Its owner when the snapshot was taken: the mutex's owner, or the `RwLock`'s writer
    /// (`None`: free, a wake-up under way; or an `RwLock` held by readers, or only waited for
    /// by writers, whom [`Snapshot::waits_on`] lists).
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
                reading: task.read_locks().map(LockId).collect(),
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
        let (kind, owner) = match lock {
            LockRef::Mutex(m) => (WaitKind::Mutex, m.owner_record(&pin)),
            LockRef::Read(w) => (WaitKind::Read, w.writer_record(&pin)),
            LockRef::Write(w) => (WaitKind::Write, w.writer_record(&pin)),
        };
        Wait {
            lock: lock.id(),
            kind,
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

    /// The threads that thread `tid` waits for: the owner of its mutex, or for an `RwLock`
    /// its writer; else, waiting to write, the threads that hold it for reading (as their
    /// [`ThreadState::reading`] says); or, waiting to read, the writers waiting for it, which
    /// go first. Empty if it waits for nothing (or its lock was just released).
    ///
    /// ```
    /// let me = proxy_lock::current_tid();
    /// assert!(proxy_lock::snapshot().waits_on(me).is_empty());
    /// ```
    pub fn waits_on(&self, tid: Tid) -> Vec<Tid> {
        let Some(wait) = self
            .threads
            .iter()
            .find(|t| t.tid == tid)
            .and_then(|t| t.waits_for)
        else {
            return Vec::new();
        };
        if let Some(owner) = wait.owner {
            return vec![owner];
        }
        let holds = |t: &ThreadState| match wait.kind {
            WaitKind::Mutex => false,
            WaitKind::Write => t.reading.contains(&wait.lock),
            WaitKind::Read => t
                .waits_for
                .is_some_and(|w| w.lock == wait.lock && w.kind == WaitKind::Write),
        };
        self.threads
            .iter()
            .filter(|t| t.tid != tid && holds(t))
            .map(|t| t.tid)
            .collect()
    }

    /// The chains of waiting threads: each starts at a thread nobody in the snapshot waits
    /// for, and follows `waits for lock -> held by` ([`Snapshot::waits_on`]) until a thread
    /// that does not wait. Where a thread waits for several (an `RwLock` held by readers),
    /// the chain forks, and each branch is a chain of its own. A cycle (a deadlock, if it
    /// persists) has no such start and is returned as its own chain, with `true` in the
    /// second field.
    ///
    /// ```
    /// // A thread that waits for nothing forms no chain.
    /// assert!(proxy_lock::snapshot().chains().iter().all(|(c, _)| c.len() >= 2));
    /// ```
    pub fn chains(&self) -> Vec<(Vec<Tid>, bool)> {
        let waits: BTreeMap<Tid, Vec<Tid>> = self
            .threads
            .iter()
            .map(|t| (t.tid, self.waits_on(t.tid)))
            .filter(|(_, on)| !on.is_empty())
            .collect();
        let waited_for: BTreeSet<Tid> = waits.values().flatten().copied().collect();
        let mut chains = Vec::new();
        let mut seen = BTreeSet::new();
        let heads = waits.keys().filter(|t| !waited_for.contains(t));
        for &head in heads {
            for chain in follow(&waits, head, &mut seen) {
                chains.push((chain, false));
            }
        }
        // Whatever waits but was not reached from a head lies on (or hangs off) a cycle.
        for &start in waits.keys() {
            if !seen.contains(&start) {
                for chain in follow(&waits, start, &mut seen) {
                    chains.push((chain, true));
                }
            }
        }
        chains
    }

    fn state(&self, tid: Tid) -> Option<&ThreadState> {
        self.threads.iter().find(|t| t.tid == tid)
    }

    fn describe(&self, tid: Tid) -> String {
        match self.state(tid).and_then(|t| t.name.as_deref()) {
            Some(name) => format!("{tid} \"{name}\""),
            None => tid.to_string(),
        }
    }

    fn lock_of(&self, tid: Tid) -> Option<LockId> {
        self.state(tid)?.waits_for.map(|w| w.lock)
    }

    /// " -> lock ... by owner", for the hop from waiter `from` to `to`.
    fn hop(&self, from: Tid, to: Tid) -> String {
        let Some(wait) = self.state(from).and_then(|t| t.waits_for) else {
            return format!(" -> ? held by {}", self.describe(to));
        };
        let how = match wait.kind {
            WaitKind::Mutex => "",
            WaitKind::Read => " to read,",
            WaitKind::Write => " to write,",
        };
        let by = if wait.owner == Some(to) {
            "held by"
        } else if wait.kind == WaitKind::Read {
            "behind writer"
        } else {
            "read by"
        };
        format!(" -> {}{how} {by} {}", wait.lock, self.describe(to))
    }
}

/// Follows wait edges from `start` until threads that do not wait, or one already on this
/// chain (a cycle): one chain per branch. Marks every thread it passes as seen, and does not
/// go on from a thread seen before (its chain was printed already).
fn follow(waits: &BTreeMap<Tid, Vec<Tid>>, start: Tid, seen: &mut BTreeSet<Tid>) -> Vec<Vec<Tid>> {
    let mut chains = Vec::new();
    let mut stack = vec![vec![start]];
    seen.insert(start);
    while let Some(chain) = stack.pop() {
        let at = chain[chain.len() - 1];
        let next = waits.get(&at).map_or(&[][..], Vec::as_slice);
        if next.is_empty() {
            chains.push(chain);
            continue;
        }
        for &owner in next.iter().rev() {
            let mut longer = chain.clone();
            longer.push(owner);
            if seen.insert(owner) {
                stack.push(longer);
            } else {
                // Back on the chain (or on one printed already): stop here.
                chains.push(longer);
            }
        }
    }
    chains
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
                write!(f, "{}", self.hop(pair[0], pair[1]))?;
            }
            let last = *chain.last().unwrap_or(&chain[0]);
            let before_last = chain.len().checked_sub(2).map(|i| chain[i]);
            let last_exited = before_last
                .and_then(|t| self.state(t)?.waits_for)
                .is_some_and(|w| w.owner_exited && w.owner == Some(last));
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
            if t.waits_for.is_some() && self.waits_on(t.tid).is_empty() {
                let lock = t.waits_for.map(|w| w.lock).unwrap_or(LockId(0));
                write!(f, "\n  {} -> {lock} (being released)", self.describe(t.tid))?;
            }
        }
        Ok(())
    }
}

/// How far a chain walk goes, as the kernel's `max_lock_depth`: the most owners it visits.
pub(crate) const MAX_DEPTH: usize = 1024;

/// The most owners a walk for a deadlock check visits (`walk_unbounded`): far more than any
/// chain a program makes, and a bound on a tree through many read-held locks, whose branches
/// may meet again below.
const UNBOUNDED_NODES: usize = 1 << 20;

/// How a chain walk ended.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Walked {
    /// At owners that wait for nothing (or free locks), or where `visit` said stop.
    Ended,
    /// After the most owners it was allowed.
    Cut,
    /// Some branch came back to an owner it had passed: a cycle the walker is not on.
    Looped,
}

/// One owner a walk reached.
pub(crate) struct Step<'p> {
    /// The lock it holds, through which the walk reached it.
    pub(crate) lock: LockId,
    pub(crate) owner: &'p Task,
    /// Hops from the walk's first lock (0: an owner of that lock). A walk through a read-held
    /// `RwLock` branches, and visits the branches one after the other, depth first: the steps
    /// of the path to this owner are the last ones visited at each smaller depth.
    pub(crate) depth: usize,
    /// It is not an owner but the unlocker still waking the owner at this depth, which
    /// sleeps, chosen (`Task::waker`); the branch ends here.
    pub(crate) waker: bool,
}

/// Brent's cycle check along one branch: `mark` is the owner at the last power of two.
#[derive(Clone, Copy)]
struct Brent {
    mark: *const Task,
    since_mark: usize,
    power: usize,
}

/// Follows the chain from `first`: its owners, the lock each owner sleeps on, that lock's
/// owners, and so on, calling `visit` for each owner reached until `visit` returns false
/// (then the whole walk stops), or `MAX_DEPTH` owners (then it says `Cut`). A mutex has one
/// owner; an `RwLock` held for reading has several (`LockRef::owners`): the walk is then a
/// tree walk, depth first.
///
/// An owner that sleeps because an unlocker chose it and has not yet woken it (it was handed
/// a lock, or the lock it sleeps on was freed for it) can only go on once that unlocker runs:
/// the walk goes on to the unlocker (`Task::waker`), with the lock the owner was reached
/// through, and that branch ends there. Otherwise a free lock ends the branch.
///
/// `first` must be alive for the call (the caller waits on it). Every later lock is read
/// inside the walker handshake with the thread that waits on it, which keeps it alive; owner
/// records are kept alive by the epoch pin taken here.
pub(crate) fn walk(first: LockRef<'_>, visit: impl FnMut(&Step<'_>) -> bool) -> Walked {
    walk_up_to(first, MAX_DEPTH, visit)
}

/// `walk` for (almost) any number of owners: for deadlock checks, which must find a cycle
/// longer than the walk that lends (a ring of 1,025 threads used to hang silently). It
/// notices a cycle it is not on (Brent's method: along each branch it compares each owner
/// with one it passed, taken afresh at every power of two), so a chain stops after at most a
/// few times its length.
pub(crate) fn walk_unbounded(first: LockRef<'_>, visit: impl FnMut(&Step<'_>) -> bool) -> Walked {
    walk_up_to(first, UNBOUNDED_NODES, visit)
}

fn walk_up_to(
    first: LockRef<'_>,
    nodes: usize,
    mut visit: impl FnMut(&Step<'_>) -> bool,
) -> Walked {
    let pin = crate::loom::pin();
    // The owners of the lock at hand past the first (a read-held `RwLock`), and the branches
    // not followed yet, the last pushed first: (lock, owner, depth, cycle check). Both stay
    // empty, unallocated, on a chain of mutexes.
    let mut rest = Vec::new();
    let mut branches: Vec<(LockId, &Task, usize, Brent)> = Vec::new();
    let Some(head) = first.first_owner(&pin, &mut rest) else {
        return Walked::Ended;
    };
    let fresh = |owner: &Task| Brent {
        mark: owner,
        since_mark: 0,
        power: 1,
    };
    for &owner in rest.iter().rev() {
        branches.push((first.id(), owner, 0, fresh(owner)));
    }
    let mut start = Some((first.id(), head, 0, fresh(head)));
    let (mut visited, mut looped) = (0, false);
    while let Some((mut lock, mut owner, mut depth, mut brent)) =
        start.take().or_else(|| branches.pop())
    {
        loop {
            if visited == nodes {
                return Walked::Cut;
            }
            visited += 1;
            let step = Step {
                lock,
                owner,
                depth,
                waker: false,
            };
            if !visit(&step) {
                return Walked::Ended;
            }
            if depth > 0 && std::ptr::eq(owner, brent.mark) {
                looped = true;
                break;
            }
            brent.since_mark += 1;
            if brent.since_mark == brent.power {
                brent = Brent {
                    mark: owner,
                    since_mark: 0,
                    power: brent.power.saturating_mul(2),
                };
            }
            // Most owners run: skip the handshake (two read-modify-writes on the owner's
            // record) when a plain look says the owner waits for nothing. A wait that starts
            // after this look is one the walker did not have to see (see `with_blocked_lock`).
            let next = owner.blocked_on().and_then(|_| {
                owner
                    .with_blocked_lock(|next| Some((next.id(), next.first_owner(&pin, &mut rest)?)))
                    .flatten()
            });
            // An unlocker marks its choice before it clears the chosen thread's wait or frees
            // the lock, so a walker that sees either also sees the mark (`WakeInFlight::mark`).
            let Some((next_lock, next)) = next else {
                // The unlocker is inside its unlock, waiting for nothing: the branch ends
                // there. Not followed any further, a mark read stale (two threads that each
                // chose the other, one after the other) cannot send the walk round in a loop.
                if let Some(waker) = owner.waker(&pin) {
                    let step = Step {
                        lock,
                        owner: waker,
                        depth,
                        waker: true,
                    };
                    if !visit(&step) {
                        return Walked::Ended;
                    }
                }
                break;
            };
            depth += 1;
            for &other in rest.iter().rev() {
                branches.push((next_lock, other, depth, brent));
            }
            (lock, owner) = (next_lock, next);
        }
    }
    if looped {
        Walked::Looped
    } else {
        Walked::Ended
    }
}

/// Whether the chain from `first` comes back to `me` after more hops than a lending walk takes
/// (`survey` saw it `Cut`): a deadlock cycle longer than `MAX_DEPTH`, which
/// `check_deadlock` then confirms.
pub(crate) fn comes_back_to(me: Me, first: LockRef<'_>) -> bool {
    let mut back = false;
    walk_unbounded(first, |s| {
        back = !s.waker && s.owner.is(me);
        !back
    });
    back
}

/// The last owner on the chain from `first` (see `walk`), the thread whose running moves the
/// whole chain on: its tid, and whether it is on a CPU if its record can say
/// (`Task::on_cpu`). `None` if `first` is free, if `me` owns a lock on the chain, or if the
/// chain branches (an `RwLock` held by several readers): no one thread moves it on then.
pub(crate) fn last_owner(first: LockRef<'_>, me: Me) -> Option<(Tid, Option<bool>)> {
    let mut last = None;
    let mut next_depth = 0;
    // Each hop's answer is read while the walk's pin keeps its record alive; the last one
    // stands. The others cost two loads each.
    walk(first, |s| {
        // A step that is not one deeper than the last is a second owner of some lock (a
        // waker stands in for the owner at its depth).
        if s.depth != next_depth && !s.waker {
            last = None;
            return false;
        }
        next_depth = s.depth + 1;
        last = (!s.owner.is(me)).then(|| (s.owner.tid(), s.owner.on_cpu()));
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
    /// The owner does not hold the lock but waits for it too, ahead: a parked writer of an
    /// `RwLock` that a reader waits behind.
    ahead: bool,
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
pub(crate) fn check_deadlock(me: Me, first: LockRef<'_>, timed: bool) -> Result<(), Deadlock> {
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

fn collect_cycle(me: Me, first: LockRef<'_>) -> Option<Vec<Hop>> {
    // The path from `first` to the owner visited last: a tree walk (`Step::depth`) leaves the
    // path to `me` here when it finds it.
    let mut hops: Vec<Hop> = Vec::new();
    let mut closed = false;
    walk_unbounded(first, |s| {
        if s.waker {
            // An unlocker on its way out of its unlock: no wait of its can close a cycle.
            return true;
        }
        hops.truncate(s.depth);
        let mut hop = Hop {
            lock: s.lock.addr(),
            owner: s.owner,
            tid: s.owner.tid(),
            wait: None,
            ahead: false,
        };
        if s.owner.is(me) {
            hops.push(hop);
            closed = true;
            return false;
        }
        // The owner's wait, read inside its handshake so lock and sequence belong together.
        hop.wait = s.owner.with_blocked_lock(|next| {
            hop.ahead = next.id() == s.lock;
            s.owner.wait_identity()
        });
        hops.push(hop);
        true
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
        let how = if hop.ahead { "behind" } else { "held by" };
        text += &format!(" waits for {} {how} {}", LockId(hop.lock), name(hop.tid));
        if hop.wait.is_some() {
            text += ", which";
        }
    }
    text + &format!(
        " (this thread): the cycle of {} threads can never resolve",
        hops.len()
    )
}
