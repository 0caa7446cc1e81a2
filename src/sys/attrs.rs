//! Scheduling attributes as values: what a thread has and how two compare.
//!
//! # Order
//!
//! One thread's attributes are better than another's when the kernel would run it first:
//! `SCHED_DEADLINE` (earlier relative deadline first) > `SCHED_FIFO`/`SCHED_RR` (higher priority
//! first) > `SCHED_OTHER`/`SCHED_BATCH` (lower nice first; `OTHER` before `BATCH` at equal nice,
//! since `BATCH` gives up wake-up preemption) > `SCHED_IDLE`. Util clamps compare on their own:
//! a higher minimum or maximum is better.

/// A scheduling policy (`sched(7)`). Builds that do not donate (`sched::DONATES`) never read
/// one from a kernel, so most variants are then never made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(donates), allow(dead_code))]
pub(crate) enum SchedPolicy {
    Other,
    Batch,
    Idle,
    Fifo,
    Rr,
    Deadline,
}

/// Policy and parameters, as `sched_setattr` takes them (without util clamps).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Sched {
    pub(crate) policy: SchedPolicy,
    /// Meaningful for OTHER and BATCH (and kept for IDLE, whose nice the kernel ignores).
    pub(crate) nice: i32,
    /// 1..=99 for FIFO and RR, else 0.
    pub(crate) rt_priority: u32,
    /// DEADLINE parameters in nanoseconds, else 0. Except `runtime` of a fair thread on Linux
    /// 6.12+: its time slice, which `sched_getattr` reports whether or not it was set, so a
    /// loan carries the donor's slice and a restore writes the base's back as a custom slice
    /// of the same length (a donor's short slice thus goes with its loan, which can make the
    /// wait worse: `docs/design.md#what-is-lent`).
    pub(crate) runtime: u64,
    pub(crate) deadline: u64,
    pub(crate) period: u64,
    /// `SCHED_FLAG_RESET_ON_FORK`: belongs to the thread, never lent.
    pub(crate) reset_on_fork: bool,
}

impl Sched {
    /// A nice-0 SCHED_OTHER thread: what every thread starts as.
    pub(crate) const DEFAULT: Sched = Sched {
        policy: SchedPolicy::Other,
        nice: 0,
        rt_priority: 0,
        runtime: 0,
        deadline: 0,
        period: 0,
        reset_on_fork: false,
    };

    /// A key that orders policies and parameters as the kernel would run them (module docs).
    pub(crate) fn rank(&self) -> (u8, u64) {
        match self.policy {
            SchedPolicy::Idle => (0, 0),
            SchedPolicy::Batch => (1, (2 * (19 - self.nice.clamp(-20, 19))) as u64),
            SchedPolicy::Other => (1, (2 * (19 - self.nice.clamp(-20, 19)) + 1) as u64),
            SchedPolicy::Fifo | SchedPolicy::Rr => (2, self.rt_priority as u64),
            SchedPolicy::Deadline => (3, u64::MAX - self.deadline),
        }
    }

    /// Whether `self` would run before `other`.
    pub(crate) fn better_than(&self, other: &Sched) -> bool {
        self.rank() > other.rank()
    }

    /// The same policy and parameters, with `owner`'s reset-on-fork flag (never lent).
    pub(crate) fn lent_to(mut self, owner: &Sched) -> Sched {
        self.reset_on_fork = owner.reset_on_fork;
        self
    }
}

/// A CPU set as the kernel's affinity calls take it: 1024 CPUs, bit `n` for CPU `n`.
///
/// Invariant: only the first `live_words()` words can have bits set, those of the CPUs the
/// kernel may ever report; comparisons and unions stop there.
#[derive(Clone, Copy, Eq)]
pub(crate) struct CpuMask(pub(crate) [u64; 16]);

impl PartialEq for CpuMask {
    fn eq(&self, other: &CpuMask) -> bool {
        let n = live_words();
        self.0[..n] == other.0[..n]
    }
}

/// How many of a mask's words can have bits set: enough for the kernel's possible CPUs (it
/// reports no other), read once; all 16 where they cannot be read. The ledger compares and
/// merges masks for every thread in a chain, and on small machines this keeps that to one word
/// instead of two cache lines.
pub(crate) fn live_words() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static WORDS: AtomicUsize = AtomicUsize::new(0);
    // Relaxed: a constant of the machine; two threads that both compute it store the same.
    match WORDS.load(Ordering::Relaxed) {
        0 => {
            let words = crate::sys::possible_cpus().map_or(16, |n| n.div_ceil(64).clamp(1, 16));
            WORDS.store(words, Ordering::Relaxed);
            words
        }
        words => words,
    }
}

impl CpuMask {
    pub(crate) const EMPTY: CpuMask = CpuMask([0; 16]);

    /// Adds `other`'s CPUs; true if that added any.
    pub(crate) fn absorb(&mut self, other: &CpuMask) -> bool {
        let n = live_words();
        let mut changed = false;
        for (a, b) in self.0[..n].iter_mut().zip(&other.0[..n]) {
            changed |= *b & !*a != 0;
            *a |= b;
        }
        changed
    }

    pub(crate) fn single(cpu: u32) -> CpuMask {
        let mut mask = CpuMask::EMPTY;
        mask.insert(cpu);
        mask
    }

    pub(crate) fn insert(&mut self, cpu: u32) {
        if let Some(word) = self.0.get_mut(cpu as usize / 64) {
            *word |= 1 << (cpu % 64);
        }
    }

    pub(crate) fn contains(&self, cpu: u32) -> bool {
        self.0
            .get(cpu as usize / 64)
            .is_some_and(|w| w & (1 << (cpu % 64)) != 0)
    }

    pub(crate) fn union(mut self, other: &CpuMask) -> CpuMask {
        self.absorb(other);
        self
    }
}

impl std::fmt::Debug for CpuMask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cpus: Vec<u32> = (0..1024).filter(|&c| self.contains(c)).collect();
        write!(f, "{cpus:?}")
    }
}

/// Everything donation reads and writes on a thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Attrs {
    pub(crate) sched: Sched,
    /// Util clamp (min, max), 0..=1024.
    pub(crate) util: (u32, u32),
    pub(crate) cpus: CpuMask,
}
