//! Scheduling calls where the build does not donate (another OS, or the `donation` feature
//! off): the same functions as `linux`, which change nothing and observe nothing. The donor
//! layer does not call them (`DONATES` is false); the probes behind `capabilities()` do, and
//! find nothing allowed.

use super::Errno;
use crate::Tid;
use crate::sys::attrs::{CpuMask, Sched};

/// "Function not implemented", as Linux numbers it; only ever compared with the permission
/// and "no such thread" errors, which it is neither.
const ENOSYS: Errno = 38;

pub(crate) fn get_sched(_tid: Tid) -> Result<(Sched, (u32, u32)), Errno> {
    Err(ENOSYS)
}

pub(crate) fn set_sched(_tid: Tid, _sched: &Sched) -> Result<(), Errno> {
    Err(ENOSYS)
}

pub(crate) fn set_util_clamp(_tid: Tid, _util: (u32, u32)) -> Result<(), Errno> {
    Err(ENOSYS)
}

pub(crate) fn get_affinity(_tid: Tid) -> Result<CpuMask, Errno> {
    Err(ENOSYS)
}

pub(crate) fn set_affinity(_tid: Tid, _mask: &CpuMask) -> Result<(), Errno> {
    Err(ENOSYS)
}

pub(crate) fn current_cpu() -> Option<u32> {
    None
}

pub(crate) fn thread_cpu_time_ns(_tid: Tid) -> Option<u64> {
    None
}

pub(crate) fn has_cap_sys_nice() -> bool {
    false
}

pub(crate) fn rlimit_nice() -> u64 {
    0
}

pub(crate) fn rlimit_rtprio() -> u64 {
    0
}
