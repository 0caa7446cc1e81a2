//! The capabilities report: what this process may change on its threads, and why not.

use std::sync::OnceLock;

/// What donation can do in this process, probed once (on the first thread that asks, since
/// Linux capabilities are per thread).
///
/// A donation the process may not make is attempted anyway, fails with EPERM, is counted in
/// [`crate::Counters::failed_permission`], and never fails or delays the lock.
///
/// ```
/// let caps = proxy_lock::capabilities();
/// println!("{caps}");
/// if !caps.can_lower_nice {
///     // Nice and policy loans to worse owners will be refused; CPU loans still work.
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// Why this build lends nothing at all, or `None` where it donates (Linux with the
    /// `donation` feature): "not supported on this platform", or turned off by the feature.
    /// Then every other field is false or 0, and the locks work exactly as without donation.
    pub unavailable: Option<&'static str>,
    /// CAP_SYS_NICE in the effective set: every loan is allowed.
    pub cap_sys_nice: bool,
    /// RLIMIT_NICE (soft): without the capability, nice can go down to `20 - rlimit_nice`.
    pub rlimit_nice: u64,
    /// RLIMIT_RTPRIO (soft): without the capability, FIFO/RR priority up to this.
    pub rlimit_rtprio: u64,
    /// An owner's nice can be lowered (better) at all.
    pub can_lower_nice: bool,
    /// A SCHED_IDLE owner can be moved to SCHED_OTHER.
    pub can_leave_idle: bool,
    /// FIFO/RR priority can be lent.
    pub can_lend_realtime: bool,
    /// Affinity of this process's threads can be changed (CPU loans).
    pub can_change_affinity: bool,
    /// The kernel supports util clamps (CONFIG_UCLAMP_TASK).
    pub util_clamp: bool,
}

impl Capabilities {
    /// The lowest (best) nice an owner can be given.
    ///
    /// ```
    /// let caps = proxy_lock::capabilities();
    /// assert!((-20..=20).contains(&caps.lowest_nice()));
    /// ```
    pub fn lowest_nice(&self) -> i32 {
        if self.cap_sys_nice {
            -20
        } else {
            20 - (self.rlimit_nice.min(40) as i32)
        }
    }
}

/// Probes (once) and returns this process's donation capabilities. See [`Capabilities`].
///
/// ```
/// let caps = proxy_lock::capabilities();
/// if caps.cap_sys_nice {
///     assert!(caps.can_lower_nice && caps.can_leave_idle);
/// }
/// ```
pub fn capabilities() -> &'static Capabilities {
    static CAPS: OnceLock<Capabilities> = OnceLock::new();
    CAPS.get_or_init(probe)
}

fn probe() -> Capabilities {
    use crate::sys::sched;
    if let Some(why) = sched::NO_DONATION_BECAUSE {
        return Capabilities {
            unavailable: Some(why),
            cap_sys_nice: false,
            rlimit_nice: 0,
            rlimit_rtprio: 0,
            can_lower_nice: false,
            can_leave_idle: false,
            can_lend_realtime: false,
            can_change_affinity: false,
            util_clamp: false,
        };
    }
    let cap = sched::has_cap_sys_nice();
    let rlimit_nice = sched::rlimit_nice();
    let rlimit_rtprio = sched::rlimit_rtprio();
    let tid = crate::sys::gettid();
    // Writing our own affinity and clamps back unchanged shows whether the calls work here.
    let can_change_affinity =
        sched::get_affinity(tid).is_ok_and(|m| sched::set_affinity(tid, &m).is_ok());
    let util_clamp =
        sched::get_sched(tid).is_ok_and(|(_, u)| sched::set_util_clamp(tid, u).is_ok());
    let lowest = if cap {
        -20
    } else {
        20 - rlimit_nice.min(40) as i32
    };
    Capabilities {
        unavailable: None,
        cap_sys_nice: cap,
        rlimit_nice,
        rlimit_rtprio,
        can_lower_nice: cap || lowest < 19,
        can_leave_idle: cap || lowest <= 19,
        can_lend_realtime: cap || rlimit_rtprio > 0,
        can_change_affinity,
        util_clamp,
    }
}

impl std::fmt::Display for Capabilities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(why) = self.unavailable {
            return write!(f, "proxy-lock donation: {why}; locks work, nothing is lent");
        }
        let why = if self.cap_sys_nice {
            "CAP_SYS_NICE".to_string()
        } else {
            format!(
                "no CAP_SYS_NICE; RLIMIT_NICE {} allows nice >= {}, RLIMIT_RTPRIO {}",
                self.rlimit_nice,
                self.lowest_nice(),
                self.rlimit_rtprio
            )
        };
        let yes = |b: bool| if b { "yes" } else { "no" };
        writeln!(f, "proxy-lock donation capabilities ({why}):")?;
        writeln!(
            f,
            "  lower an owner's nice:      {}",
            yes(self.can_lower_nice)
        )?;
        writeln!(
            f,
            "  move an owner out of IDLE:  {}",
            yes(self.can_leave_idle)
        )?;
        writeln!(
            f,
            "  lend FIFO/RR priority:      {}",
            yes(self.can_lend_realtime)
        )?;
        writeln!(
            f,
            "  lend CPUs (affinity):       {}",
            yes(self.can_change_affinity)
        )?;
        write!(f, "  lend util clamps:           {}", yes(self.util_clamp))?;
        if !self.util_clamp {
            write!(f, " (kernel without CONFIG_UCLAMP_TASK)")?;
        }
        Ok(())
    }
}
