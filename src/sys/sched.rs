//! Scheduling calls on threads: read and write policy, nice, priority, util clamps and
//! affinity; which CPU the caller runs on; another thread's CPU time; the privilege probes.
//!
//! The one place where the platform decides what donation can do. Linux with the `donation`
//! feature (on by default) gets the kernel's calls (`linux`). Every other build gets `none`,
//! with the same functions: reads and writes fail with `ENOSYS`, nothing is observed, and
//! [`DONATES`] is false, so the donor layer never calls them at all. Locks, chains, the
//! snapshot and the deadlock report need none of this and work the same everywhere.

/// An errno value from a failed call.
pub(crate) type Errno = i32;

/// Whether this build lends scheduling attributes: Linux with the `donation` feature. Loom
/// models run against a recording fake kernel (`crate::loom::model`), so they donate whenever
/// the feature is on.
pub(crate) const DONATES: bool = cfg!(any(donates, all(loom, feature = "donation")));

/// Why [`DONATES`] is false, for `capabilities()`.
pub(crate) const NO_DONATION_BECAUSE: Option<&str> = if DONATES {
    None
} else if cfg!(feature = "donation") {
    Some("not supported on this platform")
} else {
    Some("turned off (the `donation` cargo feature is disabled)")
};

#[cfg(donates)]
mod linux;
#[cfg(donates)]
pub(crate) use linux::*;

#[cfg(not(donates))]
mod none;
#[cfg(not(donates))]
pub(crate) use none::*;
