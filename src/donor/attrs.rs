//! Scheduling attributes as values: what a thread has, how two compare, and how a thread's base
//! merges with what its donors lend.
//!
//! # Order
//!
//! One thread's attributes are better than another's when the kernel would run it first:
//! `SCHED_DEADLINE` (earlier relative deadline first) > `SCHED_FIFO`/`SCHED_RR` (higher priority
//! first) > `SCHED_OTHER`/`SCHED_BATCH` (lower nice first; `OTHER` before `BATCH` at equal nice,
//! since `BATCH` gives up wake-up preemption) > `SCHED_IDLE`. Util clamps compare on their own:
//! a higher minimum or maximum is better. CPUs: a donor lends the CPU it is about to free.

/// A scheduling policy (`sched(7)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    /// of the same length (a short slice lent to the demo's owner made `direct` worse; see
    /// docs/demo-history.md).
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
    fn lent_to(mut self, owner: &Sched) -> Sched {
        self.reset_on_fork = owner.reset_on_fork;
        self
    }
}

/// A CPU set as the kernel's affinity calls take it: 1024 CPUs, bit `n` for CPU `n`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct CpuMask(pub(crate) [u64; 16]);

impl CpuMask {
    pub(crate) const EMPTY: CpuMask = CpuMask([0; 16]);

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
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a |= b;
        }
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

/// What one donor lends: its effective attributes and the CPU it is freeing (if it is a thread
/// about to sleep, rather than one found asleep further up a chain).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Lent {
    pub(crate) sched: Sched,
    pub(crate) util: (u32, u32),
    pub(crate) cpus: CpuMask,
}

impl Lent {
    /// What a thread with `attrs`, about to free `cpu`, lends.
    pub(crate) fn from_donor(attrs: &Attrs, cpu: Option<u32>) -> Lent {
        Lent {
            sched: attrs.sched,
            util: attrs.util,
            cpus: cpu.map_or(CpuMask::EMPTY, CpuMask::single),
        }
    }

    /// Merges another donor into this loan: the better sched, the higher clamps, and the CPUs
    /// of the better donor, or of both when neither is better. A CPU goes with the rank of the
    /// donor that frees it: threads that beat a worse donor there may beat the owner at the
    /// better rank too. In the inversion demo's `chain` scenario a SCHED_IDLE waiter on the
    /// hog's CPU lent that CPU beside the foreground's: a move to both CPUs left the owner
    /// queued behind the hog for 8 ms (traced), where a move to the foreground's alone would
    /// have put it on an idle CPU. Says whether it changed anything (the ledger's pass over its
    /// loans merges the same ones again and again until they stop growing).
    pub(crate) fn absorb(&mut self, other: &Lent) -> bool {
        let mut changed = false;
        if other.sched.better_than(&self.sched) {
            (self.sched, self.cpus) = (other.sched, other.cpus);
            changed = true;
        } else if !self.sched.better_than(&other.sched) {
            for (a, b) in self.cpus.0.iter_mut().zip(&other.cpus.0) {
                changed |= *b & !*a != 0;
                *a |= b;
            }
        }
        let util = (self.util.0.max(other.util.0), self.util.1.max(other.util.1));
        changed |= util != self.util;
        self.util = util;
        changed
    }
}

/// How the CPU a donor frees is lent (see [`crate::set_cpu_donation`]).
///
/// ```
/// use proxy_lock::CpuDonation;
/// assert_ne!(CpuDonation::Move, CpuDonation::Union);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuDonation {
    /// The owner may run on its own CPUs and on the donors' CPUs (affinity union). The
    /// scheduler decides whether to migrate it.
    Union,
    /// The owner runs only on the donors' CPUs while the donation lasts, which makes the
    /// kernel move it at once. Except with a real-time loan (FIFO, RR, DEADLINE): that already
    /// lets the owner preempt ordinary and lower real-time threads where it is, and a move
    /// would make it wait for the donor to leave its CPU, so the donors' CPUs are added instead
    /// (as `Union`).
    Move,
    /// CPUs are not lent; affinity is never changed.
    Off,
}

impl Attrs {
    /// Stands in for a waiter whose attributes could not be read: it lends nothing.
    pub(crate) const UNKNOWN: Attrs = Attrs {
        sched: Sched {
            policy: SchedPolicy::Idle,
            ..Sched::DEFAULT
        },
        util: (0, 0),
        cpus: CpuMask::EMPTY,
    };

    /// `base` with `lent` applied where the loan is better, never beyond the loan.
    pub(crate) fn with_loan(&self, lent: Option<&Lent>, cpu_mode: CpuDonation) -> Attrs {
        let Some(lent) = lent else { return *self };
        let sched = if lent.sched.better_than(&self.sched) {
            lent.sched.lent_to(&self.sched)
        } else {
            self.sched
        };
        let util = (self.util.0.max(lent.util.0), self.util.1.max(lent.util.1));
        let needs_cpus = (0..1024).any(|c| lent.cpus.contains(c) && !self.cpus.contains(c));
        // Measured in the demo's `rt` scenario: moving a FIFO-boosted owner onto the donor's
        // CPU gave 0.15-0.22 ms worst waits against PI's 0.11 ms.
        let real_time_loan = sched != self.sched
            && matches!(
                sched.policy,
                SchedPolicy::Fifo | SchedPolicy::Rr | SchedPolicy::Deadline
            );
        let cpus = match cpu_mode {
            _ if !needs_cpus => self.cpus,
            CpuDonation::Union => self.cpus.union(&lent.cpus),
            CpuDonation::Move if real_time_loan => self.cpus.union(&lent.cpus),
            CpuDonation::Move => lent.cpus,
            CpuDonation::Off => self.cpus,
        };
        Attrs { sched, util, cpus }
    }

    /// The summary stored in `Task::hint` for quick, lock-free "is the donor better?" checks:
    /// sched rank in bits 0..24, util min in 24..36, util max in 36..48.
    pub(crate) fn hint(&self) -> u64 {
        Attrs::hint_of(&self.sched, self.util)
    }

    /// [`Attrs::hint`] from the parts it summarises.
    pub(crate) fn hint_of(sched: &Sched, util: (u32, u32)) -> u64 {
        let (class, sub) = sched.rank();
        let sub = sub.min(0xFFFF);
        let rank = (class as u64) << 16 | sub;
        rank | (util.0.min(0xFFF) as u64) << 24 | (util.1.min(0xFFF) as u64) << 36
    }

    /// The affinity summary stored in `Task::cpus_hint`: CPUs 0..64. A CPU above 63 never
    /// shows as covered, so donors there always take the full path.
    pub(crate) fn cpus_hint(&self) -> u64 {
        self.cpus.0[0]
    }
}

/// Whether a donor with hint `donor` would improve an owner with hint `owner` on any of the
/// summarised parts (sched rank, util min, util max).
pub(crate) fn hint_better(donor: u64, owner: u64) -> bool {
    let rank = |h: u64| h & 0xFF_FFFF;
    let min = |h: u64| (h >> 24) & 0xFFF;
    let max = |h: u64| (h >> 36) & 0xFFF;
    rank(donor) > rank(owner) || min(donor) > min(owner) || max(donor) > max(owner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn other(nice: i32) -> Sched {
        Sched {
            nice,
            ..Sched::DEFAULT
        }
    }

    fn with(policy: SchedPolicy, rt_priority: u32) -> Sched {
        Sched {
            policy,
            rt_priority,
            ..Sched::DEFAULT
        }
    }

    #[test]
    fn order_of_precedence() {
        let dl = Sched {
            policy: SchedPolicy::Deadline,
            runtime: 1_000_000,
            deadline: 10_000_000,
            period: 10_000_000,
            ..Sched::DEFAULT
        };
        let ladder = [
            with(SchedPolicy::Idle, 0),
            with(SchedPolicy::Batch, 0),
            other(0),
            other(-5),
            with(SchedPolicy::Rr, 1),
            with(SchedPolicy::Fifo, 50),
            dl,
        ];
        for pair in ladder.windows(2) {
            assert!(
                pair[1].better_than(&pair[0]),
                "{:?} !> {:?}",
                pair[1],
                pair[0]
            );
            assert!(!pair[0].better_than(&pair[1]));
        }
        assert!(other(19).better_than(&with(SchedPolicy::Idle, 0)));
        assert!(!other(3).better_than(&other(3)));
    }

    #[test]
    fn loan_never_exceeds_the_donor_and_keeps_better_parts() {
        let base = Attrs {
            sched: Sched {
                reset_on_fork: true,
                ..other(10)
            },
            util: (100, 1024),
            cpus: CpuMask::single(0),
        };
        let donor = Attrs {
            sched: other(0),
            util: (0, 512),
            cpus: CpuMask::single(1),
        };
        let loan = Lent::from_donor(&donor, Some(1));
        let got = base.with_loan(Some(&loan), CpuDonation::Union);
        assert_eq!(got.sched.nice, 0);
        assert!(
            got.sched.reset_on_fork,
            "reset-on-fork belongs to the owner"
        );
        assert_eq!(got.util, (100, 1024));
        assert!(got.cpus.contains(0) && got.cpus.contains(1));
        let moved = base.with_loan(Some(&loan), CpuDonation::Move);
        assert!(!moved.cpus.contains(0) && moved.cpus.contains(1));
        // A real-time loan lets the owner preempt where it is: CPUs are added, not replaced.
        let rt = Lent::from_donor(
            &Attrs {
                sched: with(SchedPolicy::Fifo, 10),
                ..donor
            },
            Some(1),
        );
        let boosted = base.with_loan(Some(&rt), CpuDonation::Move);
        assert_eq!(boosted.sched.policy, SchedPolicy::Fifo);
        assert!(boosted.cpus.contains(0) && boosted.cpus.contains(1));
        // A worse donor changes nothing.
        let worse = Lent::from_donor(
            &Attrs {
                sched: other(15),
                ..donor
            },
            Some(0),
        );
        assert_eq!(base.with_loan(Some(&worse), CpuDonation::Union), base);
    }

    #[test]
    fn a_merged_loan_keeps_the_cpus_of_its_best_donors() {
        let donor = |nice, cpu| {
            let attrs = Attrs {
                sched: other(nice),
                util: (0, 1024),
                cpus: CpuMask::single(cpu),
            };
            Lent::from_donor(&attrs, Some(cpu))
        };
        let idle = Lent::from_donor(
            &Attrs {
                sched: with(SchedPolicy::Idle, 0),
                util: (0, 1024),
                cpus: CpuMask::single(0),
            },
            Some(0),
        );
        // Either order: the worse donor's CPU is dropped with its rank.
        let merged = |mut a: Lent, b: Lent| {
            a.absorb(&b);
            a
        };
        for got in [merged(donor(0, 1), idle), merged(idle, donor(0, 1))] {
            assert_eq!(got.sched.nice, 0);
            assert!(got.cpus.contains(1) && !got.cpus.contains(0));
        }
        // Equals lend both CPUs.
        let both = merged(donor(0, 1), donor(0, 2));
        assert!(both.cpus.contains(1) && both.cpus.contains(2));
        // A better donor with no CPU to lend (found asleep down a chain) still drops the
        // worse donor's.
        let asleep = Lent::from_donor(
            &Attrs {
                sched: other(-5),
                util: (0, 1024),
                cpus: CpuMask::EMPTY,
            },
            None,
        );
        assert_eq!(merged(donor(0, 1), asleep).cpus, CpuMask::EMPTY);
    }

    #[test]
    fn hints_agree_with_the_order() {
        let a = Attrs {
            sched: other(10),
            util: (0, 1024),
            cpus: CpuMask::single(0),
        };
        let b = Attrs {
            sched: other(0),
            ..a
        };
        assert!(hint_better(b.hint(), a.hint()));
        assert!(!hint_better(a.hint(), b.hint()));
        assert!(!hint_better(a.hint(), a.hint()));
        let fifo = Attrs {
            sched: with(SchedPolicy::Fifo, 1),
            ..a
        };
        assert!(hint_better(fifo.hint(), b.hint()));
    }
}
