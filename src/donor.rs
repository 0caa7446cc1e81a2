//! Donation: a waiter about to sleep lends its scheduling attributes to every owner down its
//! blocked_on chain, and the owners get their own back when the donation ends.
//!
//! # Protocol
//!
//! 1. **Quick check, no lock, no syscall between equals** ([`before_spinning`],
//!    [`before_sleep`]). The waiter walks the chain (`chain::walk`) comparing summaries of
//!    attributes (`TaskDonor::hint`): its own effective attributes against each owner's base
//!    as cached by other threads' reads, and its CPU against the owner's affinity. Its own
//!    attributes come from its last read of itself (`refresh_own_hint`), which it makes again
//!    at each wait until they have stayed the same for a few reads, then every `HINT_TTL_US`,
//!    and whenever the walk finds an owner worse than it: whatever it lends is judged by what
//!    it has now (a thread's read of itself does not date the cache other threads read).
//!    If no owner is strictly worse, nothing happens (counted as skipped). Between equal
//!    threads, as in hackbench, donation costs this walk and, in steady state, one read per
//!    thread every `HINT_TTL_US`. The same walk detects deadlock cycles
//!    (`chain::check_deadlock`).
//!    A waiter that finds a worse owner does not lend yet ([`before_spinning`]): it spins
//!    while the chain's last owner runs (`mutex::raw`), and lends only once that thread stops
//!    running, CPU included, and goes to sleep. A real-time waiter lends all but its CPU
//!    before it spins, as a PI futex boosts at once, and gives the owner it lifted time to be
//!    switched in ([`Spin::AfterBoost`]).
//! 2. **Lend** (`ledger`). Under the ledger lock, the waiter lists itself, and every sleeping
//!    owner further down, as a waiter of the lock it sleeps on, sets `DONATED` on those locks,
//!    and reconciles.
//! 3. **Reconcile.** For every thread that owns a listed lock or is boosted: its target is its
//!    base with the loans of all waiters on locks it owns, transitively, and whatever differs
//!    from what it has now is written. An unlocker still waking the owner it chose counts as
//!    that owner here too (`task::WakeInFlight`). A change the application made while the
//!    thread was boosted becomes its new base: the ledger compares what it applied with what
//!    it finds.
//! 4. **End.** A listed waiter unlists itself and reconciles when its wait ends (lock taken,
//!    timeout). A lock with `DONATED` never unlocks on the fast path; its unlock hands the lock
//!    to the best listed waiter (`preferred_waiter`, the kernel's `blocked_donor`), and the
//!    woken thread reconciles. Except after a settled handoff: when the woken thread was the
//!    lock's only listed waiter and the unlocker is boosted and restores itself, the woken
//!    thread's loans went to that unlocker alone, which gives them back itself, so it only
//!    unlists, unless other waiters listed themselves on the lock meanwhile
//!    (`TaskDonor::settled`). An unwinding chain then makes one pass over the ledger per
//!    hop fewer. An unlocker that holds no other lock restores itself right
//!    after the wake-up (as the kernel's PI unlock does), off the woken thread's path: it says
//!    so before it passes the lock on, and reconciles leave it alone. Otherwise the woken
//!    thread restores it.
//!
//! Every syscall on another thread happens under the ledger lock, and a thread that exits
//! takes that lock before it goes if it may be a target (`on_thread_exit`). So no syscall
//! reaches a tid after its thread has left, and a reused tid is never touched. One exception,
//! with the same effect: a waiter for the ledger lock that finds its holder preempted lends to
//! the holder, outside the lock but only while the holder still holds it (`rescue`).
//!
//! A thread never lowers its own attributes under the ledger lock: a thread that has just
//! dropped to SCHED_IDLE is preempted at once, and would hold up every other donation while it
//! waits for a CPU. It lowers itself only after it passed a donated lock on for good while
//! holding no other (`after_passing_on`): the ledger lets go of it first, and no loan can
//! reach it until it takes a lock again, after its writes. (Loans do reach an unlocker that
//! holds no lock while it wakes the sleeper it chose, `task::WakeInFlight`, but that ends
//! before it restores itself.) In every other case its restore is
//! left to the next reconcile by another thread, which every unlock of a donated lock triggers
//! (the woken waiter reconciles).

mod access;
mod attrs;
mod ledger;
mod ledger_lock;
mod report;
mod rescue;

pub(crate) use access::{after_fork_in_parent, before_fork, rescue_slot, with_ledger};
pub(crate) use attrs::Attrs;
pub use attrs::CpuDonation;
pub(crate) use ledger::Ledger;
pub(crate) use ledger_lock::LedgerLock;
pub use report::{Capabilities, capabilities};
pub(crate) use rescue::{Rescue, RescueSlot};

use crate::loom::{Ordering, coarse_us};
use crate::sys::sched::DONATES;
use crate::task::{Me, NOT_RESTORING, SKIPPED, Task, WILL_RESTORE};
use crate::tuning::{HINT_TTL_US, REREAD_OWN_HINT};
use crate::word::{LockRef, RawMutex};
use attrs::hint_better;

/// How CPUs are lent; see [`set_cpu_donation`]. Stored as `CpuDonation as u8`.
static CPU_DONATION: std::sync::atomic::AtomicU8 =
    std::sync::atomic::AtomicU8::new(CpuDonation::Move as u8);

/// Chooses how a waiter lends the CPU it is about to free. The default is
/// [`CpuDonation::Move`]: an owner only allowed the waiter's CPU as well (`Union`) may stay
/// queued where it is, waiting for the load balancer.
///
/// ```
/// proxy_lock::set_cpu_donation(proxy_lock::CpuDonation::Union);
/// proxy_lock::set_cpu_donation(proxy_lock::CpuDonation::Move);
/// ```
pub fn set_cpu_donation(mode: CpuDonation) {
    // Relaxed: a setting read by later reconciles; no data depends on it.
    CPU_DONATION.store(mode as u8, std::sync::atomic::Ordering::Relaxed);
}

fn cpu_donation() -> CpuDonation {
    // Relaxed: as in `set_cpu_donation`.
    match CPU_DONATION.load(std::sync::atomic::Ordering::Relaxed) {
        x if x == CpuDonation::Union as u8 => CpuDonation::Union,
        x if x == CpuDonation::Off as u8 => CpuDonation::Off,
        _ => CpuDonation::Move,
    }
}

/// The waiter `me` published `blocked_on = lock` and is about to park: detect a deadlock cycle
/// (`Err`, with the wait already left), and lend to the chain if any owner on it is worse than
/// `me`. With `with_cpu` false, the CPU `me` runs on is not lent (yet): a real-time waiter
/// spins on it first while the owner runs, and an owner could not use it meanwhile
/// ([`before_spinning`]); it lends it with a second call if it goes to sleep after all.
pub(crate) fn before_sleep(
    me: Me,
    lock: LockRef<'_>,
    deadline: bool,
    with_cpu: bool,
) -> Result<(), crate::chain::Deadlock> {
    let survey = survey(me, lock, deadline)?;
    lend_if_worse(me, lock, &survey, with_cpu);
    Ok(())
}

/// `me`, a spinner claimed by an unlocker that stopped running before it ended `me`'s wait on
/// `lock` (`mutex::raw`'s spinner slot): a preemption between those two steps (a SCHED_IDLE
/// unlocker beside a hog) keeps `me` spinning for as long as the unlocker waits for a CPU.
/// Until that step the word still names the unlocker, so `me` lends everything, its CPU too,
/// to it as to any owner, and it finishes on `me`'s CPU, which `me` then yields to it. It
/// gives the loan back as any unlocker that holds no lock does ([`after_passing_on`]), and
/// `me`'s [`after_wait`] unlists `me`. The wait is ending, so it closes no deadlock: no check.
#[cold]
pub(crate) fn lend_to_stalled_unlocker(me: Me, lock: &RawMutex) {
    let lock = LockRef::Mutex(lock);
    if let Ok(survey) = survey(me, lock, true) {
        lend_if_worse(me, lock, &survey, true);
    }
}

/// Lends to the chain the survey found worse than `me` (its CPU only `with_cpu`), or counts
/// the wait as skipped. Says whether it lent.
fn lend_if_worse(me: Me, lock: LockRef<'_>, survey: &Survey, with_cpu: bool) -> bool {
    let lends = survey.sched || (with_cpu && survey.cpu);
    if lends {
        ledger::lend(me, lock, survey.here.filter(|_| with_cpu));
    } else if DONATES {
        crate::stats::count_skipped();
    }
    lends
}

/// How a waiter that published its wait spins before it sleeps ([`before_spinning`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Spin {
    /// Nobody on the chain is worse off than the waiter: it sleeps without spinning or lending.
    No,
    /// It spins while the chain's last owner runs, and lends once that thread stops.
    WhileOwnerRuns,
    /// A real-time waiter that has just lent its policy: the owner it boosted may still be
    /// waiting for its CPU's reschedule, so it counts as running until it had time to start
    /// (`mutex::spin::BOOSTED_OWNER_START_US`).
    AfterBoost,
}

impl Spin {
    /// For how long an owner not yet seen running counts as about to run.
    pub(crate) fn start_grace_us(self) -> u64 {
        match self {
            Spin::AfterBoost => crate::tuning::BOOSTED_OWNER_START_US,
            Spin::No | Spin::WhileOwnerRuns => 0,
        }
    }
}

/// The waiter `me` published `blocked_on = lock`: detect a deadlock cycle (`Err`, with the
/// wait already left), and say whether `me` spins while the chain's last owner runs before it
/// sleeps (the lock's spinner slot, or a `run` caller's wait for its section), lending its CPU
/// only if it goes to sleep after all ([`before_sleep`] again, `with_cpu`), when the owner it
/// moves has stopped running: an owner moved while it runs makes the lender wait, asleep in
/// the syscall, for the owner's CPU to stop it.
///
/// * A real-time waiter always spins, and lends all but its CPU first, as a PI futex boosts at
///   once: an owner left unboosted while it runs can be preempted by a lower real-time thread.
///   If it lent, the owner gets a start grace ([`Spin::AfterBoost`]).
/// * Any other spins if some owner on the chain is worse than it, and lends nothing until it
///   sleeps: an owner boosted to its level still competes on its own CPU, can be preempted
///   inside the ledger, and then holds up the lend that would have moved it. If no owner is
///   worse, it neither spins nor lends (counted as skipped).
pub(crate) fn before_spinning(
    me: Me,
    lock: LockRef<'_>,
    deadline: bool,
) -> Result<Spin, crate::chain::Deadlock> {
    let read_now = !own_hint_is_recent(me) && refresh_own_hint(me);
    let mut survey = self::survey(me, lock, deadline)?;
    if !read_now && (survey.sched || survey.cpu || waits_real_time(me)) {
        // Lending or spinning is on the table: judge by what this thread has now, not by a
        // read from before a change of its own policy (a thread may take its role's policy
        // right after a wait).
        if refresh_own_hint(me) {
            survey = self::survey(me, lock, deadline)?;
        }
    }
    if waits_real_time(me) {
        return Ok(if lend_if_worse(me, lock, &survey, false) {
            Spin::AfterBoost
        } else {
            Spin::WhileOwnerRuns
        });
    }
    let worse = survey.sched || survey.cpu;
    if !worse && carries_loans(me) {
        // Lent to, it waits again (woken to compete, it found the lock taken back): the
        // lender's listing of it down the chain ended with its last wait, and what it carries
        // must reach the owner it now waits for, however equal they look (without privilege a
        // loan is a CPU only). Listed, it passes them on, lending its base and no CPU (the one
        // it runs on is borrowed), and it sleeps at once: that owner may be moved onto the CPU
        // it would spin on.
        ledger::lend(me, lock, None);
        return Ok(Spin::No);
    }
    if !worse {
        if DONATES {
            crate::stats::count_skipped();
        }
        return Ok(Spin::No);
    }
    Ok(Spin::WhileOwnerRuns)
}

/// Whether `me` has attributes lent to it (its own cache of what the ledger applied).
fn carries_loans(me: Me) -> bool {
    // Relaxed: a cache of our own boost state, written under the ledger lock; a stale answer
    // costs one pass over the ledger, or a loan passed on at the next wait.
    DONATES && me.task().donor.lent_hint.load(Ordering::Relaxed) != 0
}

/// What the waiter's walk down its chain found.
struct Survey {
    /// Some owner would gain the waiter's policy or priority.
    sched: bool,
    /// Some owner may not run on the CPU the waiter frees.
    cpu: bool,
    /// The CPU the waiter frees, if it is one it may lend.
    here: Option<u32>,
}

/// Walks the chain from `lock` comparing each owner with `me` (`owner_gap`), and checks a
/// cycle for a deadlock.
fn survey(me: Me, lock: LockRef<'_>, deadline: bool) -> Result<Survey, crate::chain::Deadlock> {
    // The CPU this thread frees, unless it only runs there on a loan itself: passing a borrowed
    // CPU on made owners chase each other's loans (a SCHED_IDLE owner moved onto the
    // foreground's CPU lent that CPU on to the next SCHED_IDLE owner, which then stayed on the
    // foreground's CPU after the foreground's own loan ended). The lender's loan reaches
    // everyone down the chain directly anyway.
    // Relaxed: a cache read of our own boost state.
    let boosted = me.task().donor.lent_hint.load(Ordering::Relaxed) != 0;
    let here = if boosted {
        None
    } else {
        crate::loom::current_cpu()
    };
    let mine = own_effective_hint(me);
    let (mut sched, mut cpu) = (false, false);
    let mut cycle = false;
    let walked = crate::chain::walk(lock, |step| {
        if step.owner.is(me) && !step.waker {
            cycle = true;
            return false;
        }
        if DONATES {
            let gap = owner_gap(step.owner, mine, here);
            (sched, cpu) = (sched || gap.sched, cpu || gap.cpu);
        }
        true
    });
    if walked == crate::chain::Walked::Cut && !deadline {
        // Longer than a lending walk: look further, for the deadlock check only.
        cycle = crate::chain::comes_back_to(me, lock);
    }
    if cycle {
        crate::chain::check_deadlock(me, lock, deadline)?;
    }
    Ok(Survey { sched, cpu, here })
}

/// The wait of `me` on `lock` ended (any way). Unlists `me` if it was listed and reconciles if
/// it was, or if the lock carries donations (its owner changed: restore the old, boost the new).
pub(crate) fn after_wait(me: Me, lock_donated: bool) {
    let d = &me.task().donor;
    // Relaxed: our own flag, set before the wake-up that ended this wait (see `settled`).
    let settled = d.settled.load(Ordering::Relaxed);
    if settled {
        d.settled.store(false, Ordering::Relaxed);
    }
    // Acquire: pairs with the ledger's Release store, so the listing is seen with everything
    // the lister wrote; a walker that listed us did so inside the handshake that
    // `clear_blocked_on` already waited out.
    if d.listed.load(Ordering::Acquire) || lock_donated {
        if settled {
            ledger::unlist_after_handoff(me);
        } else {
            ledger::unlist_and_reconcile(me);
        }
    }
}

/// `me` took a lock whose word carried `DONATED`: it now owes its waiters' loans.
pub(crate) fn took_donated_lock(me: Me) {
    ledger::unlist_and_reconcile(me);
}

/// `me` is about to pass a lock on (the unlock slow path). Returns whether it will give back
/// whatever loans it has itself, afterwards (`after_passing_on`), and if so marks it
/// (`restores_self`), so that the donor that takes the lock leaves that restore to it: a
/// real-time donor spinning for the lock gets to the ledger first, and the restore (a
/// `sched_setattr` that demotes a running thread, tens of µs) would be part of its wait.
/// Marked whether or not `me` is boosted yet: a loan may still reach it while it unlocks.
///
/// Only when `me` will hold no lock, and is not a Condvar waiter releasing its mutex (`serve`
/// false): that one is already queued on the Condvar, and a notifier may requeue it onto a
/// mutex and hand it that mutex before it sleeps, so loans could reach it while its writes
/// are in flight, and a half-done restore could be taken for its base.
pub(crate) fn before_passing_on(me: Me, serve: bool) -> bool {
    let restoring = serve && me.holds_no_lock();
    if restoring {
        // Relaxed: a donor reads it after it took the lock, which our Release handoff or unlock
        // orders after this store; other readers read it under the ledger lock, and a stale
        // "false" only makes one of them restore us, as happened before this existed.
        me.task()
            .donor
            .restores_self
            .store(WILL_RESTORE, Ordering::Relaxed);
    }
    restoring
}

/// `me` has passed its lock on; `restoring` is what `before_passing_on` said, `to_donor`
/// whether the lock went to its lenders.
///
/// Restoring and boosted, it gives its loans back now, as the kernel's PI unlock does
/// (`ledger::restore_self`). No waiter can lend to a thread that holds no lock (nor to `me`
/// as the unlocker still waking its sleeper, or as the one that claimed a spinner: by now the
/// mark is cleared and the spinner named by the word), and `me` takes none before this
/// returns, so its writes cannot land after a newer loan. A loan that reached `me` through
/// either way after it read its boost state below is taken back by the lender's next
/// reconcile, which finds `me` no longer restoring itself.
///
/// Otherwise, if it is still boosted and the lock went to its lenders (it holds another lock
/// others may wait on, or is a Condvar waiter), its restore is left to the woken donor, and it
/// steps aside with `sched_yield`: until the donor runs, `me` has the donor's attributes, on
/// the donor's own CPU when a CPU was lent. Without this, a donor that `me` had preempted on
/// its way to sleep (or that `me` just woke) waits for `me`'s time slice to end. Returns
/// whether it stepped aside.
pub(crate) fn after_passing_on(me: Me, restoring: bool, to_donor: bool) -> bool {
    let donor = &me.task().donor;
    // Relaxed: a cache read of our own boost state. A loan recorded after this read, and not
    // skipped, is restored by the reconcile of its lender's next step, which finds us marked
    // NOT_RESTORING.
    let boosted = donor.lent_hint.load(Ordering::Relaxed) != 0;
    if restoring && boosted {
        // Still marked `WILL_RESTORE` until the ledger has let go of us: a donor that reaches
        // the ledger first (it took the lock and reconciles) must leave the restore to us.
        // Clearing the mark before the ledger lock would let such a donor restore us inside
        // its own wait, with a `sched_setattr` that demotes a running thread on another CPU.
        ledger::restore_self(me);
    } else if restoring {
        // Relaxed: the atomic's own order decides between us and a skipping reconcile (see
        // `TaskDonor::restores_self`); `restore_self` then takes the ledger lock, which orders
        // the rest.
        if donor.restores_self.swap(NOT_RESTORING, Ordering::Relaxed) == SKIPPED {
            ledger::restore_self(me);
        }
    } else if to_donor && boosted {
        crate::loom::yield_now();
        return true;
    }
    false
}

/// `me` released a hold of an `RwLock` whose word carried `DONATED` (waiters may lend to its
/// holders). If it holds no other lock it gives back whatever it was lent, through the ledger
/// lock even when its own cache says it has no loan: a lender that read `me` as a holder may
/// still be writing its loan (it marks the lock, which `me` saw, before it reads the holders).
/// The ledger lock orders that whole lend before this restore. (A mutex needs no such care:
/// its unlock hands the lock to that lender, whose next reconcile takes the loan back.)
/// Otherwise the next reconcile gives the loans back: the woken waiter's, or the writer's that
/// gets the lock once the readers are gone.
pub(crate) fn after_releasing_donated(me: Me) {
    if DONATES && me.holds_no_lock() {
        // Relaxed: as in `before_passing_on`.
        me.task()
            .donor
            .restores_self
            .store(WILL_RESTORE, Ordering::Relaxed);
        ledger::restore_self(me);
    }
}

/// `me` is done restoring itself (`ledger::restore_self`, under the ledger lock): reconciles
/// may restore it again from now on.
pub(super) fn done_restoring(me: Me) {
    // Relaxed: read under the ledger lock we hold, or by `me` itself.
    me.task()
        .donor
        .restores_self
        .store(NOT_RESTORING, Ordering::Relaxed);
}

/// Whether a reconcile that finds nothing lent to `task` should leave it alone: it is passing
/// on its last lock and will restore itself (marks it `SKIPPED`, see `TaskDonor`). Under the
/// ledger lock.
pub(super) fn leave_restore_to(task: &Task) -> bool {
    // Relaxed: see `after_passing_on`.
    task.donor
        .restores_self
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
            (s != NOT_RESTORING).then_some(SKIPPED)
        })
        .is_ok()
}

/// The listed waiter of `lock` that the unlocker `me` should hand it to: the best lender,
/// first listed among equals (the kernel's `blocked_donor`). `None` when none is listed.
pub(crate) fn preferred_waiter(me: Me, lock: &RawMutex) -> Option<Preferred> {
    ledger::preferred_waiter(me, lock.id().addr())
}

/// What [`preferred_waiter`] chose.
#[derive(Clone, Copy)]
pub(crate) struct Preferred {
    /// The waiter's park token (its record's address).
    pub(crate) token: usize,
    /// It is the only waiter listed on the lock, and the unlocker is boosted and will give
    /// its loans back itself (`before_passing_on`): handed the lock, the waiter's wait ends
    /// without changing anybody else's loans ([`handed_over_settled`]).
    pub(crate) settles: bool,
}

/// The unlocker is handing its lock to the parked waiter `waiter`, chosen as `Preferred` with
/// `settles`: the waiter may unlist without a reconcile ([`after_wait`]).
///
/// # Safety
/// `waiter` is the token of a thread being unparked under its lock's queue lock, so its
/// record is alive.
pub(crate) unsafe fn handed_over_settled(waiter: usize) {
    // SAFETY: by the caller's contract.
    let task = unsafe { &*(waiter as *const Task) };
    // Relaxed: the waiter reads it after its wake-up, which the parking lot orders after this.
    task.donor.settled.store(true, Ordering::Relaxed);
}

/// The exit hook's part: from here on no donation syscall may reach this thread.
pub(crate) fn on_thread_exit(task: &Task) {
    // SeqCst, with `target` below and the ledger's store of `target` then load of `exiting`
    // (Dekker): either the ledger sees `exiting` and skips the thread, or we see `target` and
    // wait for the ledger lock, which every syscall on another thread holds.
    task.donor.exiting.store(true, Ordering::SeqCst);
    if task.donor.target.load(Ordering::SeqCst) {
        ledger::forget(task);
    }
}

/// In a forked child: `task` is a record of a thread that does not exist here (its tid is a
/// thread of the parent's): nothing may ever be lent to it or written to its tid.
pub(crate) fn orphaned_by_fork(task: &Task) {
    // Relaxed: the child has one thread.
    task.donor.exiting.store(true, Ordering::Relaxed);
    task.donor.target.store(false, Ordering::Relaxed);
}

/// In a forked child: the child's only thread, `me`, starts with a clean ledger
/// (`access::after_fork_in_child`); its cached picture of itself is read again.
pub(crate) fn after_fork_in_child(me: &Task) {
    access::after_fork_in_child(me);
    let d = &me.donor;
    // Relaxed: the child has one thread.
    d.listed.store(false, Ordering::Relaxed);
    d.target.store(false, Ordering::Relaxed);
    d.lent_hint.store(0, Ordering::Relaxed);
    d.restores_self.store(NOT_RESTORING, Ordering::Relaxed);
    d.hint_stamp.store(0, Ordering::Relaxed);
    d.own_stamp.store(0, Ordering::Relaxed);
    d.own_reads_alike.store(0, Ordering::Relaxed);
    d.settled.store(false, Ordering::Relaxed);
}

/// The scheduling rank (policy and priority or nice; `Attrs::hint`'s low bits) `me` would
/// lend. 0 is the lowest.
fn waiter_rank(me: Me) -> u64 {
    own_effective_hint(me) & RANK_BITS
}

/// A scheduling rank in two bits, for a Condvar's record of its best waiter (it shares a word
/// with the mutex's address): `BAND_NOTHING` for a waiter that lends nothing (SCHED_IDLE),
/// then ranks below SCHED_OTHER at nice 0, exactly that (`BAND_NICE_0`, the usual case, so
/// equal threads compare exactly), and above it. Ordered as the ranks are.
pub(crate) fn waiter_band(me: Me) -> usize {
    band_of(waiter_rank(me))
}

/// See [`waiter_band`].
const BAND_NOTHING: usize = 0;
const BAND_BELOW_NICE_0: usize = 1;
const BAND_NICE_0: usize = 2;
const BAND_ABOVE_NICE_0: usize = 3;

fn band_of(rank: u64) -> usize {
    let (class, sub) = crate::sys::attrs::Sched::DEFAULT.rank();
    let nice_0 = u64::from(class) << 16 | sub;
    match rank {
        0 => BAND_NOTHING,
        r if r < nice_0 => BAND_BELOW_NICE_0,
        r if r == nice_0 => BAND_NICE_0,
        _ => BAND_ABOVE_NICE_0,
    }
}

/// Whether a waiter whose rank is in `band` may lend to the current owner of `lock` (a
/// Condvar notifier deciding between moving its waiters onto `lock`'s queue, where they could
/// not lend, and waking them to wait for `lock` themselves): surely when the band is above the
/// owner's; when both are in the same band of several ranks, it may, and the caller wakes
/// (a wake-up where a move would have done, at worst).
pub(crate) fn band_may_lend_to_owner(lock: &RawMutex, band: usize) -> bool {
    if band == BAND_NOTHING {
        return false;
    }
    let pin = crate::loom::pin();
    lock.owner_record(&pin).is_some_and(|owner| {
        let owner_band = band_of(fresh_hint(owner).0 & RANK_BITS);
        !owner.has_exited() && (band > owner_band || band == owner_band && band != BAND_NICE_0)
    })
}

/// Whether `me` would lend its policy or priority (not only a CPU) to `lock`'s owner: then a
/// waiter does better to lend at once than to spin, as the owner may not be running at all.
pub(crate) fn outranks_owner(me: Me, lock: &RawMutex) -> bool {
    let rank = waiter_rank(me);
    if rank == 0 {
        return false;
    }
    let pin = crate::loom::pin();
    lock.owner_record(&pin)
        .is_some_and(|owner| !owner.has_exited() && rank > fresh_hint(owner).0 & RANK_BITS)
}

/// Whether `me` waits as a real-time thread (FIFO, RR or DEADLINE, its own policy or one it
/// was lent): it then spins while the owner runs before it sleeps (`mutex::raw`), as the
/// kernel's rt_mutex waiters do.
fn waits_real_time(me: Me) -> bool {
    own_effective_hint(me) & RANK_BITS >= REAL_TIME_RANK
}

/// The lowest real-time sched rank in `Attrs::hint` (class 2, FIFO and RR priority 0).
const REAL_TIME_RANK: u64 = 2 << 16;

/// The sched-rank part of `Attrs::hint`.
const RANK_BITS: u64 = 0xFF_FFFF;

/// The best `me` has to lend: its own policy as it last read it ([`refresh_own_hint`]; read
/// now if it never was), or what it was lent if that is more. A thread's look at itself stays
/// out of the timed cache other threads read (`fresh_hint`, `HINT_TTL_US`): a thread that read
/// itself into it and then changed its policy would show the old one to every waiter for up
/// to 10 ms.
fn own_effective_hint(me: Me) -> u64 {
    let d = &me.task().donor;
    let hint = if REREAD_OWN_HINT {
        // Relaxed: a cache. A hint read from the kernel is never 0 (its util-max part is not),
        // so 0 means never read.
        if d.hint.load(Ordering::Relaxed) == 0 {
            refresh_own_hint(me);
        }
        d.hint.load(Ordering::Relaxed)
    } else {
        fresh_hint(me.task()).0
    };
    or_lent(me.task(), hint)
}

/// The best an owner `task` has: its base, or what it was lent if that is more.
fn effective_hint(task: &Task) -> u64 {
    or_lent(task, fresh_hint(task).0)
}

/// `base`, a hint of `task`'s own attributes, or what `task` was lent if that is better.
fn or_lent(task: &Task, base: u64) -> u64 {
    // Relaxed: a cache; the ledger re-reads real attributes before acting.
    let lent = task.donor.lent_hint.load(Ordering::Relaxed);
    if hint_better(lent, base) { lent } else { base }
}

/// What an owner would gain from a waiter.
struct Gap {
    /// The waiter's policy or priority.
    sched: bool,
    /// The CPU the waiter runs on, which the owner may not use.
    cpu: bool,
}

/// What `owner` would gain from `mine` and from the CPU `cpu`.
fn owner_gap(owner: &Task, mine: u64, cpu: Option<u32>) -> Gap {
    if owner.has_exited() {
        return Gap {
            sched: false,
            cpu: false,
        };
    }
    let (hint, cpus) = fresh_hint(owner);
    // A waiter that the owner outranks lends it no CPU: where such a waiter ran, threads the
    // owner would lose to run too. The owner's rank is what it has now, a loan included: a
    // boosted owner competes at that rank (the ledger would drop such a CPU anyway,
    // `Lent::absorb`; this spares the lend).
    let outranked = effective_hint(owner) & RANK_BITS > mine & RANK_BITS;
    Gap {
        sched: hint_better(mine, hint),
        cpu: cpu_lending() && !outranked && cpu.is_some_and(|c| c >= 64 || cpus & (1 << c) == 0),
    }
}

/// Drops `task`'s cached hints, so that the next quick check reads the kernel: they may hold
/// what it had on a rescue's loan (`rescue`).
fn forget_hint(task: &Task) {
    // Relaxed: a cache (see `TaskDonor`).
    task.donor.hint_stamp.store(0, Ordering::Relaxed);
}

fn cpu_lending() -> bool {
    cpu_donation() != CpuDonation::Off
}

/// Reads the waiter's own policy and priority from the kernel into its hint, and says
/// whether it did (a boosted thread's hint is the ledger's). [`before_spinning`] calls it
/// unless the last reads can be trusted (`own_hint_is_recent`), and again when its walk finds
/// someone to lend to: a thread is judged by the policy it has now when it lends. It writes
/// the hint without the stamp other threads' reads use (`fresh_hint`), which also covers the
/// affinity summary; `own_stamp` dates it instead.
fn refresh_own_hint(me: Me) -> bool {
    let d = &me.task().donor;
    // A boosted thread's hint is the ledger's (its base), not what the kernel shows. Relaxed:
    // a cache. A loan that lands between the second check and the store leaves the loan in
    // the hint as if it were the base; the ledger writes the base there again when it changes
    // or ends that loan (`Ledger::record`), and until then the owner has those attributes.
    let boosted = || d.lent_hint.load(Ordering::Relaxed) != 0;
    if !DONATES || !REREAD_OWN_HINT || boosted() {
        return false;
    }
    crate::stats::count_attribute_read();
    let Ok((sched, util)) = crate::loom::read_sched(me.task().tid()) else {
        return false;
    };
    if boosted() {
        return false;
    }
    // Relaxed, all three: a cache, read only by quick checks that the ledger re-validates;
    // the count is the thread's own.
    let hint = Attrs::hint_of(&sched, util);
    let alike = if d.hint.swap(hint, Ordering::Relaxed) == hint {
        d.own_reads_alike.load(Ordering::Relaxed).saturating_add(1)
    } else {
        0
    };
    d.own_reads_alike.store(alike, Ordering::Relaxed);
    d.own_stamp.store(coarse_us().max(1), Ordering::Relaxed);
    true
}

/// How many reads in a row must have found a thread's own attributes unchanged before it
/// trusts them for `HINT_TTL_US` instead of reading them at each wait.
const OWN_READS_TO_TRUST: u8 = 3;

/// Whether `me` may judge this wait by its last read of itself: its own attributes have not
/// changed across its last `OWN_READS_TO_TRUST` reads, the latest less than `HINT_TTL_US`
/// ago. A thread that just changed its policy reads again at each wait until its attributes
/// settle; in steady state, a wait makes no syscall but the futex.
fn own_hint_is_recent(me: Me) -> bool {
    let d = &me.task().donor;
    // Relaxed: a cache; a stale answer costs or saves one read.
    let stamp = d.own_stamp.load(Ordering::Relaxed);
    !REREAD_OWN_HINT
        || d.own_reads_alike.load(Ordering::Relaxed) >= OWN_READS_TO_TRUST
            && stamp != 0
            && coarse_us().saturating_sub(stamp) < HINT_TTL_US
}

/// `task`'s cached (hint, cpus_hint), read again from the kernel when older than
/// `HINT_TTL_US`. A boosted thread's hints are kept by the ledger (they describe its base,
/// which the kernel cannot tell us while it is boosted).
fn fresh_hint(task: &Task) -> (u64, u64) {
    let d = &task.donor;
    // Relaxed: a cache, refreshed on a timer; a stale value at worst skips or wastes one lend.
    let stamp = d.hint_stamp.load(Ordering::Relaxed);
    let boosted = d.lent_hint.load(Ordering::Relaxed) != 0;
    let now = coarse_us().max(1);
    if DONATES && !boosted && (stamp == 0 || now.saturating_sub(stamp) >= HINT_TTL_US) {
        // Reading a tid that was reused elsewhere only yields a wrong hint; the ledger reads
        // again under its lock before it writes anything.
        crate::stats::count_attribute_read();
        if let Ok(attrs) = crate::loom::read_attrs(task.tid()) {
            d.hint.store(attrs.hint(), Ordering::Relaxed);
            d.cpus_hint.store(attrs.cpus_hint(), Ordering::Relaxed);
            d.hint_stamp.store(now, Ordering::Relaxed);
        }
    }
    (
        d.hint.load(Ordering::Relaxed),
        d.cpus_hint.load(Ordering::Relaxed),
    )
}
