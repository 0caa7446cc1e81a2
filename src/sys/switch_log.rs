//! Switch logs: whether a thread of ours is on a CPU right now, without asking its CPU clock.
//! Linux with the `donation` feature reads the kernel's perf context-switch records
//! (`linux`); other builds have no logs (`none`), and their callers fall back to the thread's
//! CPU clock, which they do not have either, so they never watch an owner at all.

#[cfg(donates)]
mod linux;
#[cfg(donates)]
pub(crate) use linux::*;

#[cfg(not(donates))]
mod none;
#[cfg(not(donates))]
pub(crate) use none::*;
