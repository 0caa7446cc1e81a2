//! How a thread's base merges with what its donors lend. The values themselves
//! (`Sched`, `CpuMask`, `Attrs`) and their order are in `sys::attrs`; a donor also lends the
//! CPU it is about to free.

pub(crate) use crate::sys::attrs::{Attrs, CpuMask, Sched, SchedPolicy};

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
    /// better rank too, and an owner allowed both CPUs may stay queued behind them instead of
    /// moving to the better donor's. Says whether it changed anything (the ledger's pass over
    /// its loans merges the same ones again and again until they stop growing).
    pub(crate) fn absorb(&mut self, other: &Lent) -> bool {
        let mut changed = false;
        let (mine, theirs) = (self.sched.rank(), other.sched.rank());
        if theirs > mine {
            (self.sched, self.cpus) = (other.sched, other.cpus);
            changed = true;
        } else if theirs == mine {
            changed = self.cpus.absorb(&other.cpus);
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
#[non_exhaustive]
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
        // A real-time loan widens the affinity instead of moving the owner: boosted, it can
        // already preempt where it is.
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
