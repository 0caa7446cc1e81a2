//! The ledger: who lends to whom, what each boosted thread had, and the reconcile that turns
//! that into syscalls. One lock guards it all (`crate::donor::with_ledger`); it is taken only by
//! threads that lend, whose wait ended after lending, that take or leave a donated lock, and by
//! exiting threads that were donation targets. Never on an uncontended path, and never between
//! equal threads.

use super::attrs::{Attrs, Lent};
use super::{rescue_slot, with_ledger};
use crate::loom::{Ordering, Pin};
use crate::stats as report;
use crate::task::{Me, NOT_RESTORING, Task, WAIT_KIND};
use crate::word::LockRef;

/// A thread listed as waiting on `lock`, and what it lends.
struct Listed {
    task: *const Task,
    /// The lock as `LockRef::tagged`: its address and how the thread waits for it.
    lock: usize,
    /// The thread's own attributes when it was listed (its base if it was boosted then).
    own: Attrs,
    /// The CPU it freed by going to sleep, if it listed itself (not found asleep on a chain).
    cpu: Option<u32>,
    /// Listing order: FIFO among equal waiters.
    order: u64,
}

/// A thread whose attributes the ledger changed, or tried to change: a loan the kernel
/// refused outright is kept with `applied == base` (`Ledger::remember_refused`).
struct Boosted {
    task: *const Task,
    /// What the thread has of its own; updated when the application changes it meanwhile.
    base: Attrs,
    /// What the ledger last left it with.
    applied: Attrs,
    /// The loan `applied` was made for: a reconcile that finds the same loan leaves the thread
    /// alone (no syscall).
    loan: Option<Lent>,
}

/// The ledger's state.
///
/// Invariants, under the ledger lock:
/// * A listed thread is inside its wait on `lock` (it unlists itself before that wait returns),
///   so the thread's record and the lock are alive; `DONATED` is set on every lock with a
///   listed waiter.
/// * A boosted thread has `TaskDonor::target` set and has not passed its exit hook's ledger
///   step (`forget` removes it there), so its record is alive and its tid is its own.
pub(crate) struct Ledger {
    listed: Vec<Listed>,
    boosted: Vec<Boosted>,
    next_order: u64,
    /// The last pass over every loan (`reconcile`) lent to an unlocker as the waker of the
    /// owner it chose (`Loans::targets`). Such an unlocker may have read its boost state
    /// before that loan landed and then not restored itself; only a later pass takes the
    /// loan back, so no wait may end without one (`unlist_after_handoff`) while this holds.
    waker_loans: bool,
    /// `all_loans`'s tables, kept between passes: allocated afresh, a pass over a 1,024-deep
    /// chain took new pages from the kernel and gave them back every time.
    scratch: Loans,
}

// SAFETY: the raw pointers name task records whose lifetime the invariants above guarantee;
// the ledger only moves between threads inside its lock.
unsafe impl Send for Ledger {}

impl Ledger {
    crate::loom::const_fn! {
        pub(crate) fn new() -> Ledger {
            Ledger {
                listed: Vec::new(),
                boosted: Vec::new(),
                next_order: 0,
                waker_loans: false,
                scratch: Loans::new(),
            }
        }
    }
}

/// Lists `me` (about to sleep on `lock`, freeing `cpu`) and every sleeper down the chain, then
/// reconciles.
pub(super) fn lend(me: Me, lock: LockRef<'_>, cpu: Option<u32>) {
    with_ledger(me.task(), |ledger| {
        let pin = crate::loom::pin();
        let own = own_attrs(ledger, me.task());
        ledger.list(me.task(), lock, own, cpu);
        crate::chain::walk(lock, |step| {
            let owner = step.owner;
            if owner.is(me) && !step.waker {
                return false;
            }
            // An owner asleep on another lock passes the loan on: list it there too. Inside
            // the walker handshake, so its wait cannot end unseen (see `TaskDonor::listed`).
            owner.with_blocked_lock(|next| {
                if !ledger.is_listed(owner) {
                    let own = own_attrs(ledger, owner);
                    ledger.list(owner, next, own, None);
                }
            });
            true
        });
        ledger.reconcile(me, &pin);
    })
}

/// Removes `me` from the listed waiters, if it is there, and reconciles.
pub(super) fn unlist_and_reconcile(me: Me) {
    with_ledger(me.task(), |ledger| {
        let pin = crate::loom::pin();
        ledger.unlist(me.task());
        ledger.reconcile(me, &pin);
    })
}

/// Removes `me`, handed its lock by an unlocker that restores itself (`TaskDonor::settled`),
/// from the listed waiters. The loans it made went to that unlocker alone (it holds no lock
/// and waits for none, so nothing went further), which gives them back itself; so unless
/// other waiters are listed on the lock by now (they lend to `me` from here on), or the last
/// pass lent to a waker (`Ledger::waker_loans`: a loan only a pass takes back), nobody's
/// loans change and no reconcile is needed. In a chain unwinding, that spares each hop a
/// pass over the whole ledger.
pub(super) fn unlist_after_handoff(me: Me) {
    with_ledger(me.task(), |ledger| {
        if ledger.unlist(me.task()) == Unlisted::LastOnLock && !ledger.waker_loans {
            return;
        }
        let pin = crate::loom::pin();
        ledger.reconcile(me, &pin);
    })
}

/// See `donor::preferred_waiter`.
pub(super) fn preferred_waiter(me: Me, lock: usize) -> Option<super::Preferred> {
    with_ledger(me.task(), |ledger| {
        let boosted = &ledger.boosted;
        let mut on_lock = ledger.listed.iter().filter(|l| l.lock == lock);
        let first = on_lock.next()?;
        // Lowest order wins among equals: max_by_key keeps the last maximum, so compare
        // reversed order.
        let key = |l: &Listed| (base_of(boosted, l).sched.rank(), std::cmp::Reverse(l.order));
        let (mut best, mut sole) = (first, true);
        for l in on_lock {
            sole = false;
            if key(l) >= key(best) {
                best = l;
            }
        }
        let d = &me.task().donor;
        // Relaxed, both: ours to read (`restores_self` we set ourselves before passing the
        // lock on; `lent_hint` is written under the ledger lock we hold). A boosted thread
        // marked restoring stays boosted until its own `restore_self`: reconciles leave it
        // alone (`leave_restore_to`).
        let settles = sole
            && d.restores_self.load(Ordering::Relaxed) != NOT_RESTORING
            && d.lent_hint.load(Ordering::Relaxed) != 0;
        Some(super::Preferred {
            token: best.task as usize,
            settles,
        })
    })
}

/// In a forked child, under the ledger lock: forgets every listing and loan, which are the
/// parent's threads' (they do not exist here), and gives `me`, the child's only thread, its
/// base back if it was boosted: it inherited the loan with the rest of the forking thread.
pub(super) fn after_fork_in_child(me: &Task, ledger: &mut Ledger) {
    let restore = ledger
        .boosted
        .iter()
        .find(|b| std::ptr::eq(b.task, me))
        .map(|b| (b.applied, b.base));
    *ledger = Ledger::new();
    if let Some((applied, base)) = restore {
        write(me, applied, base, base, true);
    }
}

/// `me`, boosted, has passed its lock on and holds none: the ledger lets go of it, and it
/// writes its own base back outside the ledger lock (it may be preempted as soon as it is
/// lower; nobody waits for it then). Nothing else writes to it meanwhile: once the ledger has
/// let go, no reconcile looks at it, no waiter can lend to a thread that holds no lock (the
/// exceptions end before it comes here: an unlocker still waking the sleeper it chose has
/// cleared its mark, and one that claimed a spinner, which lends to it until then
/// (`donor::lend_to_stalled_unlocker`), has handed that spinner the lock), and it takes none
/// before this returns.
pub(super) fn restore_self(me: Me) {
    let task = me.task();
    // Read before the ledger lock, not under it: the donor that was just handed our lock
    // takes that lock next (`donor::after_wait`), and would wait for these two syscalls.
    // `let_go_of` uses the read only if nothing wrote to us since.
    let seen = crate::loom::read_attrs(task.tid()).ok();
    let let_go = with_ledger(task, |ledger| {
        let let_go = ledger.let_go_of(me, seen);
        super::done_restoring(me);
        let_go
    });
    let Some((current, base)) = let_go else {
        return;
    };
    let applied = write(task, current, base, base, true);
    if applied != base {
        // The kernel refused part of the restore: the ledger keeps the thread as boosted, and
        // the next reconcile tries again. A boosted thread is a target (`Ledger`'s invariant;
        // `let_go_of` cleared it), and we are not exiting, so the claim holds.
        with_ledger(task, |ledger| {
            claim_target(task);
            ledger.record(task, base, applied, None, None)
        });
    }
}

/// The exit hook of a possible target: drop it, so no later reconcile writes to its tid.
pub(super) fn forget(task: &Task) {
    with_ledger(task, |ledger| {
        ledger.boosted.retain(|b| !std::ptr::eq(b.task, task))
    });
}

fn base_of(boosted: &[Boosted], l: &Listed) -> Attrs {
    boosted
        .iter()
        .find(|b| std::ptr::eq(b.task, l.task))
        .map_or(l.own, |b| b.base)
}

/// What `Ledger::unlist` did.
#[derive(PartialEq, Eq)]
enum Unlisted {
    NotListed,
    /// Other waiters are still listed on the thread's lock.
    OthersOnLock,
    /// It was the last listed on its lock (which no longer carries `DONATED`).
    LastOnLock,
}

/// What `Ledger::all_loans` found: one node per thread met, with what it is lent, and who it
/// lends to. A thread finds its node by its record's address in `index`, a table of the pass's
/// own: a node number kept in the record itself cost one more load per thread from memory
/// scattered over as many pages, which was most of a pass over a 1,024-deep chain.
struct Loans {
    tasks: Vec<*const Task>,
    /// Open addressing with linear probing: (record address, node), address 0 for a free
    /// entry; its length is a power of two, at least twice the nodes a pass can make.
    index: Vec<(usize, usize)>,
    lent: Vec<Option<Lent>>,
    /// Each node's entry in `Ledger::boosted`, or `NOT_BOOSTED`. Entry `i` of `boosted` is
    /// node `i`: the pass makes the boosted threads' nodes first, in order.
    boosted: Vec<usize>,
    /// Per node, its first edge in `edges`, or `NO_EDGE`.
    first_edge: Vec<usize>,
    /// (target node, next edge of the same node).
    edges: Vec<(usize, usize)>,
    /// Per listed waiter, in `Ledger::listed`'s order, the threads it lends to: the owner of
    /// its lock and, while an unlocker has chosen that owner and not yet woken it, that
    /// unlocker too (as `chain::walk` goes on to it); null for none. Valid while the pass's pin
    /// lives.
    targets: Vec<[*const Task; 2]>,
    /// Some listed waiter lends to a waker (`targets`' second entry).
    via_waker: bool,
}

const NO_EDGE: usize = usize::MAX;
const NOT_BOOSTED: usize = usize::MAX;

impl Loans {
    crate::loom::const_fn! {
        fn new() -> Loans {
            Loans {
                tasks: Vec::new(),
                index: Vec::new(),
                lent: Vec::new(),
                boosted: Vec::new(),
                first_edge: Vec::new(),
                edges: Vec::new(),
                targets: Vec::new(),
                via_waker: false,
            }
        }
    }

    /// Empties the tables, keeping their memory, for a pass that makes at most `nodes` nodes.
    fn clear(&mut self, nodes: usize) {
        let len = (2 * nodes).next_power_of_two().max(16);
        self.index.clear();
        self.index.resize(len, (0, 0));
        self.tasks.clear();
        self.lent.clear();
        self.boosted.clear();
        self.first_edge.clear();
        self.edges.clear();
        self.targets.clear();
        self.via_waker = false;
    }

    /// Where `addr` is in `index`, or the free entry where it would go.
    fn slot(&self, addr: usize) -> usize {
        let mask = self.index.len() - 1;
        // Fibonacci hashing (the product's high bits): records are aligned, so the address's
        // low bits say little.
        let shift = usize::BITS - self.index.len().trailing_zeros();
        let mut i = addr.wrapping_mul(0x9E37_79B9_7F4A_7C15_u64 as usize) >> shift;
        while self.index[i].0 != 0 && self.index[i].0 != addr {
            i = (i + 1) & mask;
        }
        i
    }

    /// The node of `task`, made if new.
    fn node(&mut self, task: *const Task) -> usize {
        let i = self.slot(task as usize);
        if self.index[i].0 != 0 {
            return self.index[i].1;
        }
        let n = self.tasks.len();
        self.index[i] = (task as usize, n);
        self.tasks.push(task);
        self.lent.push(None);
        self.boosted.push(NOT_BOOSTED);
        self.first_edge.push(NO_EDGE);
        n
    }

    /// Node `from` lends to node `to`.
    fn lends_to(&mut self, from: usize, to: usize) {
        self.edges.push((to, self.first_edge[from]));
        self.first_edge[from] = self.edges.len() - 1;
    }

    /// Adds `loan` to node `n`'s; true if that changed it.
    fn grow(&mut self, n: usize, loan: &Lent) -> bool {
        add_loan(&mut self.lent[n], loan)
    }

    /// Merges node `from`'s loan into node `to`'s (`grow`); true if that changed it.
    fn merge(&mut self, from: usize, to: usize) -> bool {
        debug_assert_ne!(from, to);
        let (from, to) = if from < to {
            let (low, high) = self.lent.split_at_mut(to);
            (&low[from], &mut high[0])
        } else {
            let (low, high) = self.lent.split_at_mut(from);
            (&high[0], &mut low[to])
        };
        from.as_ref().is_some_and(|loan| add_loan(to, loan))
    }

    /// What the thread of `Ledger::boosted[i]`, `task`, is lent, if anything.
    fn of_boosted(&self, i: usize, task: *const Task) -> Option<&Lent> {
        match self.boosted.get(i) {
            Some(&entry) if entry == i => self.lent[i].as_ref(),
            _ => self.of(task),
        }
    }

    /// What `task` is lent, if anything.
    fn of(&self, task: *const Task) -> Option<&Lent> {
        if self.index.is_empty() {
            return None;
        }
        let i = self.slot(task as usize);
        if self.index[i].0 == 0 {
            return None;
        }
        self.lent[self.index[i].1].as_ref()
    }
}

/// Adds `loan` to what `have` holds; true if that changed it.
fn add_loan(have: &mut Option<Lent>, loan: &Lent) -> bool {
    match have {
        Some(have) => have.absorb(loan),
        empty => {
            *empty = Some(*loan);
            true
        }
    }
}

/// What `task` has of its own: its recorded base if boosted, else what the kernel says.
fn own_attrs(ledger: &Ledger, task: &Task) -> Attrs {
    if let Some(b) = ledger.boosted.iter().find(|b| std::ptr::eq(b.task, task)) {
        return b.base;
    }
    rescue_slot().current_attrs(task).unwrap_or(Attrs::UNKNOWN)
}

impl Ledger {
    /// Whether `task` is listed as a waiter (it lent, or was found asleep down a chain).
    pub(crate) fn is_listed(&self, task: &Task) -> bool {
        self.listed.iter().any(|l| std::ptr::eq(l.task, task))
    }

    fn list(&mut self, task: &Task, lock: LockRef<'_>, own: Attrs, cpu: Option<u32>) {
        let addr = lock.tagged();
        let again = self.listed.iter_mut().find(|l| std::ptr::eq(l.task, task));
        if let Some(l) = again.filter(|l| l.lock == addr) {
            // Listed again on the same lock (a real-time waiter adding its CPU before it
            // sleeps): it keeps its place among equals.
            (l.own, l.cpu) = (own, cpu);
            return;
        }
        self.unlist(task);
        self.next_order += 1;
        self.listed.push(Listed {
            task,
            lock: addr,
            own,
            cpu,
            order: self.next_order,
        });
        lock.mark_donated();
        // Release: pairs with the Acquire in `donor::after_wait`.
        task.donor.listed.store(true, Ordering::Release);
    }

    fn unlist(&mut self, task: &Task) -> Unlisted {
        let Some(i) = self.listed.iter().position(|l| std::ptr::eq(l.task, task)) else {
            return Unlisted::NotListed;
        };
        let gone = self.listed.swap_remove(i);
        // Relaxed: only the thread itself reads it, after its wait, ordered by the ledger lock.
        task.donor.listed.store(false, Ordering::Relaxed);
        if self.listed.iter().any(|l| l.lock == gone.lock) {
            return Unlisted::OthersOnLock;
        }
        // SAFETY: the lock is alive: `task` is still inside its wait on it (invariant), or is
        // the caller returning from that wait, which borrows it.
        unsafe { LockRef::from_tagged(gone.lock) }.clear_donated();
        Unlisted::LastOnLock
    }

    /// The owners of `l`'s lock (`LockRef::owners`), readable while `pin` lives, into `out`.
    fn owners_of<'p>(l: &Listed, pin: &'p Pin, out: &mut Vec<&'p Task>) {
        // SAFETY: the lock is alive while `l` is listed (invariant).
        unsafe { LockRef::from_tagged(l.lock) }.owners(pin, out)
    }

    /// Everything lent to each thread: the loans of the waiters on locks it owns, each with
    /// what is lent to that waiter in turn (transitive donation), for every thread lent to.
    /// One pass over the listed waiters, without recursion: each waiter's loan goes to the
    /// thread(s) it lends to (`Loans::targets`), and a thread whose loans grew passes them on
    /// to the threads it lends to in turn, until nothing grows. A thread's total only grows, and it
    /// can grow only a few times (its rank, its clamps, its CPUs), so this takes time about
    /// linear in the number of listed waiters, however long the chains, and stops on cycles
    /// (a member of a cycle is lent its own attributes back, which changes nothing).
    /// The tables are `scratch`'s: give them back (`self.scratch = loans`) when done.
    fn all_loans(&mut self, pin: &Pin) -> Loans {
        let mut loans = std::mem::replace(&mut self.scratch, Loans::new());
        // Each listed waiter meets at most itself, its lock's owner and that one's waker.
        // The owners of read-held `RwLock`s past the first, by listed waiter: a scan of the
        // records each (`LockRef::owners`), and none for a mutex.
        let mut more: Vec<(usize, *const Task)> = Vec::new();
        let mut owners = Vec::new();
        for (i, l) in self.listed.iter().enumerate() {
            if l.lock & WAIT_KIND != 0 {
                Self::owners_of(l, pin, &mut owners);
                more.extend(owners.iter().skip(1).map(|&o| (i, o as *const Task)));
            }
        }
        loans.clear(self.boosted.len() + 3 * self.listed.len() + more.len());
        // A boosted waiter lends its base, not its loan (which reaches the owner anyway):
        // its node names its entry, so each listed waiter costs one lookup, not a search.
        for (i, b) in self.boosted.iter().enumerate() {
            let n = loans.node(b.task);
            loans.boosted[n] = i;
        }
        // Who each waiter lends to, read in loops of their own: the lock words and then the
        // owners' records are loads that miss the cache, and with no other work between them
        // the processor overlaps them.
        for l in &self.listed {
            Self::owners_of(l, pin, &mut owners);
            let owner = owners
                .first()
                .map_or(std::ptr::null(), |&o| o as *const Task);
            loans.targets.push([owner, std::ptr::null()]);
        }
        for t in &mut loans.targets {
            if !t[0].is_null() {
                // SAFETY: an owner read while pinned is alive until the pin drops.
                let owner = unsafe { &*t[0] };
                t[1] = owner
                    .waker(pin)
                    .map_or(std::ptr::null(), |w| w as *const Task);
                loans.via_waker |= !t[1].is_null();
            }
        }
        for (i, l) in self.listed.iter().enumerate() {
            let waiter = loans.node(l.task);
            let own = match loans.boosted[waiter] {
                NOT_BOOSTED => Lent::from_donor(&l.own, l.cpu),
                b => Lent::from_donor(&self.boosted[b].base, l.cpu),
            };
            // `more` is in listing order.
            let (lo, hi) = (
                more.partition_point(|m| m.0 < i),
                more.partition_point(|m| m.0 <= i),
            );
            let others = more[lo..hi].iter().map(|m| m.1);
            for owner in loans.targets[i].into_iter().chain(others) {
                if owner.is_null() || std::ptr::eq(owner, l.task) {
                    continue;
                }
                let target = loans.node(owner);
                loans.lends_to(waiter, target);
                loans.grow(target, &own);
            }
        }
        let mut grown: Vec<usize> = (0..loans.tasks.len())
            .filter(|&n| loans.lent[n].is_some())
            .collect();
        while let Some(n) = grown.pop() {
            let mut edge = loans.first_edge[n];
            while edge != NO_EDGE {
                let (target, next) = loans.edges[edge];
                if target != n && loans.merge(n, target) {
                    grown.push(target);
                }
                edge = next;
            }
        }
        loans
    }

    /// Brings every owner of a listed lock (and the unlocker still waking it), and every
    /// boosted thread, to its base plus its loans. `me` is the calling thread, which is never
    /// lowered here (module docs).
    fn reconcile(&mut self, me: Me, pin: &Pin) {
        let loans = self.all_loans(pin);
        self.waker_loans = loans.via_waker;
        // The boosted threads whose loan changed or ended, then the threads lent to that are
        // not boosted yet. A thread lent the same as when it was last written is left alone:
        // no syscall, and a walk of the ledger linear in its size, however long the chains.
        // A boosted thread's node names its entry (`all_loans`).
        let mut changed: Vec<(*const Task, Option<Lent>)> = Vec::new();
        for (i, b) in self.boosted.iter().enumerate() {
            let loan = loans.of_boosted(i, b.task);
            if loan.is_none() || loan != b.loan.as_ref() {
                changed.push((b.task, loan.copied()));
            }
        }
        for n in 0..loans.tasks.len() {
            if loans.lent[n].is_some() && loans.boosted[n] == NOT_BOOSTED {
                changed.push((loans.tasks[n], loans.lent[n]));
            }
        }
        self.scratch = loans;
        for (task, loan) in changed {
            // SAFETY: boosted records are alive (invariant); owners are alive while pinned.
            self.settle(unsafe { &*task }, loan, me);
        }
    }

    /// Writes `task`'s base plus `loan`, where that differs from what it has.
    fn settle(&mut self, task: &Task, loan: Option<Lent>, me: Me) {
        let idx = self.boosted.iter().position(|b| std::ptr::eq(b.task, task));
        if loan.is_none() && idx.is_none() {
            return;
        }
        if loan.is_none() && super::leave_restore_to(task) {
            return; // it is passing on its last lock and restores itself (`restore_self`)
        }
        if !claim_target(task) {
            if let Some(i) = idx {
                self.boosted.swap_remove(i);
            }
            report::count_failure(libc::ESRCH);
            return;
        }
        let current = match rescue_slot().current_attrs(task) {
            Ok(attrs) => attrs,
            Err(errno) => {
                report::count_failure(errno);
                return;
            }
        };
        let base = match idx {
            // What the application changed since we last wrote is its new base.
            Some(i) => adopt_changes(self.boosted[i].base, self.boosted[i].applied, current),
            None => current,
        };
        let target = base.with_loan(loan.as_ref(), super::cpu_donation());
        if idx.is_none() && target == current {
            return;
        }
        let lower_ok = !std::ptr::eq(task, me.task());
        let applied = write(task, current, target, base, lower_ok);
        rescue_slot().wrote(task, applied);
        if applied == base && loan.is_some() && target != base {
            // The kernel refused the whole loan (no CAP_SYS_NICE, say). Remember the loan, as
            // for a boosted thread, so that reconciles skip it while it stays the same:
            // otherwise every reconcile tried every such thread again, two syscalls each, and a
            // 1,024-deep chain took about a second to unwind instead of 0.15 s.
            self.remember_refused(task, base, idx, loan);
            return;
        }
        self.record(task, base, applied, idx, loan);
    }

    /// Keeps `task`, left at `base` because the kernel refused `loan`, in `boosted` with
    /// `applied == base`: reconciles then retry only when its loan changes. Nothing was
    /// applied, so its caches say "not lent to", and it does not restore itself (there is
    /// nothing to restore); a reconcile that finds its loan gone drops the entry.
    fn remember_refused(
        &mut self,
        task: &Task,
        base: Attrs,
        idx: Option<usize>,
        loan: Option<Lent>,
    ) {
        self.record(task, base, base, idx, None);
        self.boosted.push(Boosted {
            task,
            base,
            applied: base,
            loan,
        });
    }

    /// Records that `task` (entry `idx` of `boosted`, if it has one) now has `applied` over
    /// `base` for `loan`, and refreshes its caches for the quick check.
    fn record(
        &mut self,
        task: &Task,
        base: Attrs,
        applied: Attrs,
        idx: Option<usize>,
        loan: Option<Lent>,
    ) {
        let d = &task.donor;
        // Relaxed: caches for the quick check (see `TaskDonor`).
        d.hint.store(base.hint(), Ordering::Relaxed);
        d.cpus_hint.store(base.cpus_hint(), Ordering::Relaxed);
        d.hint_stamp
            .store(crate::loom::monotonic_us().max(1), Ordering::Relaxed);
        if applied == base {
            d.lent_hint.store(0, Ordering::Relaxed);
            if let Some(i) = idx {
                self.boosted.swap_remove(i);
            }
        } else {
            d.lent_hint.store(applied.hint().max(1), Ordering::Relaxed);
            let entry = Boosted {
                task,
                base,
                applied,
                loan,
            };
            match idx {
                Some(i) => self.boosted[i] = entry,
                None => self.boosted.push(entry),
            }
        }
    }

    /// `restore_self`'s part under the ledger lock: forgets `me` as boosted (reconciles may look
    /// at it again), and returns what it has now and its base, for it to write. `None` if it
    /// was restored already (a reconcile that ran before it said it would restore itself), or
    /// if something is lent to it after all (it would have to hold a lock): then it settles as
    /// any owner does.
    ///
    /// `seen` is what `me` read of itself just before it took the ledger lock. It is what `me`
    /// has now if it still shows what the ledger last applied and no rescue stands on `me`:
    /// a ledger write since would show in `applied`, and a rescue's loan is not `me`'s own.
    /// Otherwise it is read again here. (An application thread changing `me` between the two
    /// is a race the restore always had: its change may be written over, as if it came first.)
    fn let_go_of(&mut self, me: Me, seen: Option<Attrs>) -> Option<(Attrs, Attrs)> {
        let task = me.task();
        let i = self
            .boosted
            .iter()
            .position(|b| std::ptr::eq(b.task, task))?;
        let pin = crate::loom::pin();
        // Something is lent to `me` only if some listed waiter lends to it directly: look for
        // one before working out every loan. Only as the owner of a waiter's lock: `me` is no
        // sleeper's waker (`Loans::targets`) here, as it has passed its lock on and its unlock
        // cleared its marks (`after_passing_on`), so the owners' records need not be read.
        let mut owners = Vec::new();
        let lent_to_me = self.listed.iter().any(|l| {
            !std::ptr::eq(l.task, task) && {
                Self::owners_of(l, &pin, &mut owners);
                owners.iter().any(|&o| std::ptr::eq(o, task))
            }
        });
        let loan = lent_to_me
            .then(|| {
                let loans = self.all_loans(&pin);
                let loan = loans.of(task).copied();
                self.scratch = loans;
                loan
            })
            .flatten();
        if let Some(loan) = loan {
            self.settle(task, Some(loan), me);
            return None;
        }
        let slot = rescue_slot();
        let current = match seen {
            Some(seen) if seen == self.boosted[i].applied && !slot.has_rescued(task) => seen,
            _ => slot
                .current_attrs(task)
                .map_err(report::count_failure)
                .ok()?,
        };
        let b = self.boosted.swap_remove(i);
        // No longer a target: no ledger syscall on it is in flight (they are made under the
        // lock we hold), and the writes left are its own. So its exit hook need not wait for
        // the ledger lock (`donor::on_thread_exit`), which an unwinding chain's next owner
        // holds while it reconciles. A later loan claims it again first (`settle`).
        // SeqCst: the Dekker pair of `claim_target` and `on_thread_exit`.
        task.donor.target.store(false, Ordering::SeqCst);
        let base = adopt_changes(b.base, b.applied, current);
        // The writes are as good as made: nothing else will write to the thread before them.
        // Nor may a rescue: one now would take the boosted attributes for what the thread has,
        // and its undo could put them back after the thread's own restore, leaving it boosted.
        // So it is no longer rescuable in this hold.
        slot.wrote(task, base);
        slot.releasing();
        self.record(task, base, base, None, None);
        Some((current, base))
    }
}

/// Marks `task` as a syscall target and checks it has not started exiting (Dekker with
/// `donor::on_thread_exit`). False: leave it alone.
pub(super) fn claim_target(task: &Task) -> bool {
    if task.has_exited() {
        return false;
    }
    // SeqCst: see `donor::on_thread_exit`.
    task.donor.target.store(true, Ordering::SeqCst);
    !task.donor.exiting.load(Ordering::SeqCst)
}

/// The new base: each part the application changed (current differs from what we applied)
/// is taken from `current`.
pub(super) fn adopt_changes(base: Attrs, applied: Attrs, current: Attrs) -> Attrs {
    Attrs {
        sched: if current.sched != applied.sched {
            current.sched
        } else {
            base.sched
        },
        util: if current.util != applied.util {
            current.util
        } else {
            base.util
        },
        cpus: if current.cpus != applied.cpus {
            current.cpus
        } else {
            base.cpus
        },
    }
}

/// Writes the parts of `target` that differ from `current` to `task`, and returns what the
/// thread has afterwards. A part going back to `base` is a restore, skipped unless `lower_ok`:
/// the calling thread never restores itself under the ledger lock (module docs of `donor`).
pub(super) fn write(
    task: &Task,
    current: Attrs,
    target: Attrs,
    base: Attrs,
    lower_ok: bool,
) -> Attrs {
    let tid = task.tid();
    let mut now = current;
    if target.sched != current.sched {
        let restore = target.sched == base.sched;
        if (lower_ok || !restore) && count(crate::loom::write_sched(tid, &target.sched), restore) {
            now.sched = target.sched;
        }
    }
    if target.util != current.util {
        let restore = target.util == base.util;
        if (lower_ok || !restore) && count(crate::loom::write_util(tid, target.util), restore) {
            now.util = target.util;
        }
    }
    if target.cpus != current.cpus {
        let restore = target.cpus == base.cpus;
        if (lower_ok || !restore) && count(crate::loom::write_cpus(tid, &target.cpus), restore) {
            now.cpus = target.cpus;
        }
    }
    now
}

/// Counts one write's outcome; true if it succeeded.
fn count(result: Result<(), crate::loom::Errno>, restore: bool) -> bool {
    match result {
        Ok(()) => {
            if restore {
                report::count_restore();
            } else {
                report::count_donation();
            }
            true
        }
        Err(errno) => {
            report::count_failure(errno);
            false
        }
    }
}
