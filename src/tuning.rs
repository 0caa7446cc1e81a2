//! Every tuning constant, defined once. Each picks its normal value or, under loom, the value
//! that keeps the models small while still reaching every branch (`pick`). Why each normal
//! value was chosen is in `docs/design.md`.

use crate::loom::MODEL;

/// The normal value, or the one for loom models.
const fn pick(normal: u64, model: u64) -> u64 {
    if MODEL { model } else { normal }
}

/// How long a cached attribute summary (`donor::TaskDonor::hint`) is trusted before the quick
/// check reads the kernel again: bounds both the hint's staleness and the attribute reads (two
/// syscalls per thread at most this often). Models read each thread's attributes once, at its
/// first check: they set their bases before they lock.
pub(crate) const HINT_TTL_US: u64 = pick(10_000, 1 << 60);

/// Whether a waiter reads its own policy again (`donor::refresh_own_hint`) when its last read
/// is older than `HINT_TTL_US`, or when it is about to lend. Off in models, whose bases do not
/// change while they run.
pub(crate) const REREAD_OWN_HINT: bool = !MODEL;

/// Spin budgets in rounds (`spin::SpinWait`): an ordinary waiter, a Handoff lock's registered
/// spinner, an unlocker waiting for a spinner to appear, and a `run` caller waiting for its
/// section. Models spin at most once: spinning changes timing, not the protocol.
pub(crate) const SPIN_ROUNDS: u32 = pick(7, 0) as u32;
pub(crate) const HANDOFF_SPIN_ROUNDS: u32 = pick(9, 1) as u32;
pub(crate) const AWAIT_SPINNER_ROUNDS: u32 = pick(4, 1) as u32;
pub(crate) const RUN_SPIN_ROUNDS: u32 = pick(7, 0) as u32;

/// How many spinner handoffs pass between two looks at the clock (`mutex::raw::handoff`).
/// Models look every time, so they reach the fairness path.
pub(crate) const FAIRNESS_CHECK_EVERY: u8 = pick(16, 1) as u8;

/// How long an unlocker waits between two looks at a `Handoff` queue's first sleeper
/// (`mutex::raw::handoff`), which take the queue's lock: looking every 16th handoff made
/// `Handoff` 1.3x slower on tiny sections. A quarter of the sleepers' patience, so a sleeper is
/// served at most that much late. Models look every time.
pub(crate) const SLEEPER_LOOK_EVERY_US: u32 = pick(250, 0) as u32;

/// How long readers may wait behind writers (`rwlock::raw`): a writer that unlocks while the
/// first parked reader has waited this long hands the lock to every parked reader, ahead of the
/// parked writers. As `Policy::Adaptive`'s eventual fairness: about a millisecond. The models'
/// fake clock moves 600 µs a read, so they see both answers.
pub(crate) const RW_READER_PATIENCE_US: u64 = 1000;

/// Buckets of the table that holds published sections (`proxy::requests`), a power of two.
/// Models use one, so that any two locks share it and the hand-back path is reached.
pub(crate) const REQUEST_BUCKETS: usize = pick(64, 1) as usize;
const _: () = assert!(REQUEST_BUCKETS.is_power_of_two());

/// How many published sections one unlock runs before it passes the role on (`proxy`). In
/// models, two published sections already reach the pass-on path.
pub(crate) const COMBINE_BOUND: u32 = pick(64, 1) as u32;

/// Spin hints between two reads of a watched thread's CPU time (`spin::OnCpuWatch`), so the
/// reads cost about a quarter of the spin.
pub(crate) const ON_CPU_PROBE_SPINS: u32 = pick(64, 1) as u32;

/// How long a lender or real-time waiter spins at most while the owner runs: about a scheduler
/// tick, past which the wake-up a spin saves is a small part of the wait.
pub(crate) const OWNER_SPIN_CAP_US: u64 = 1000;

/// How long a waiter that has just lent keeps spinning on an owner that has not yet been seen
/// on a CPU: the lend's reschedule takes tens of µs to reach the owner's CPU, and sleeping
/// meanwhile costs a wake-up. Past it, an owner asleep in a syscall is not spun for.
pub(crate) const BOOSTED_OWNER_START_US: u64 = 100;

/// Spin hints the ledger lock's waiter spends in all on a holder it cannot name yet (about
/// 6 µs): such a holder is about to let go or has just taken the lock.
pub(crate) const UNNAMED_HOLDER_ROUNDS: u32 = 256;
