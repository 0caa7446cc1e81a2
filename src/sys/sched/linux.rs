//! Linux's scheduling syscalls: `sched_{get,set}attr`, `sched_{get,set}affinity`,
//! `sched_getcpu`, the per-thread CPU clocks and the privilege probes (`capget`, `getrlimit`).
//! Thin wrappers that turn the kernel's structs into [`crate::sys::attrs::Attrs`] parts and
//! errors into errno values; no policy. Written against `libc`'s own types, so glibc and musl,
//! 32 and 64 bits build alike.

use super::Errno;
use crate::Tid;
use crate::sys::attrs::{CpuMask, Sched, SchedPolicy};

/// `struct sched_attr` as of Linux 5.3 (`SCHED_ATTR_SIZE_VER1`), which adds the util clamps
/// that libc's copy of the struct lacks.
#[repr(C)]
#[derive(Default)]
struct RawAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
    util_min: u32,
    util_max: u32,
}

const SCHED_FLAG_RESET_ON_FORK: u64 = 0x01;
const SCHED_FLAG_KEEP_POLICY: u64 = 0x08;
const SCHED_FLAG_KEEP_PARAMS: u64 = 0x10;
const SCHED_FLAG_UTIL_CLAMP_MIN: u64 = 0x20;
const SCHED_FLAG_UTIL_CLAMP_MAX: u64 = 0x40;
const SCHED_DEADLINE: u32 = 6;

pub(crate) fn errno() -> Errno {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn policy_from_raw(raw: u32) -> SchedPolicy {
    match raw as i32 {
        libc::SCHED_FIFO => SchedPolicy::Fifo,
        libc::SCHED_RR => SchedPolicy::Rr,
        libc::SCHED_BATCH => SchedPolicy::Batch,
        libc::SCHED_IDLE => SchedPolicy::Idle,
        _ if raw == SCHED_DEADLINE => SchedPolicy::Deadline,
        _ => SchedPolicy::Other,
    }
}

fn policy_to_raw(policy: SchedPolicy) -> u32 {
    match policy {
        SchedPolicy::Other => libc::SCHED_OTHER as u32,
        SchedPolicy::Batch => libc::SCHED_BATCH as u32,
        SchedPolicy::Idle => libc::SCHED_IDLE as u32,
        SchedPolicy::Fifo => libc::SCHED_FIFO as u32,
        SchedPolicy::Rr => libc::SCHED_RR as u32,
        SchedPolicy::Deadline => SCHED_DEADLINE,
    }
}

/// Reads thread `tid`'s policy, parameters and util clamps.
pub(crate) fn get_sched(tid: Tid) -> Result<(Sched, (u32, u32)), Errno> {
    let mut raw = RawAttr::default();
    // SAFETY: `raw` is a writable sched_attr of the size we pass; the kernel writes at most that.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_sched_getattr,
            tid,
            &mut raw as *mut RawAttr,
            std::mem::size_of::<RawAttr>() as u32,
            0u32,
        )
    };
    if rc != 0 {
        return Err(errno());
    }
    let sched = Sched {
        policy: policy_from_raw(raw.policy),
        nice: raw.nice,
        rt_priority: raw.priority,
        runtime: raw.runtime,
        deadline: raw.deadline,
        period: raw.period,
        reset_on_fork: raw.flags & SCHED_FLAG_RESET_ON_FORK != 0,
    };
    // Kernels without util clamping report 0/1024 or leave the fields zero.
    let util = if raw.size as usize >= std::mem::size_of::<RawAttr>() && raw.util_max != 0 {
        (raw.util_min, raw.util_max)
    } else {
        (0, 1024)
    };
    Ok((sched, util))
}

fn set_attr(tid: Tid, raw: &RawAttr) -> Result<(), Errno> {
    // SAFETY: `raw` is a fully initialised sched_attr whose `size` field matches its type.
    let rc = unsafe { libc::syscall(libc::SYS_sched_setattr, tid, raw as *const RawAttr, 0u32) };
    if rc == 0 { Ok(()) } else { Err(errno()) }
}

/// Sets thread `tid`'s policy and parameters.
pub(crate) fn set_sched(tid: Tid, sched: &Sched) -> Result<(), Errno> {
    set_policy_and_params(tid, sched)?;
    if sched.policy == SchedPolicy::Idle {
        // `sched_setattr` keeps a SCHED_IDLE thread's nice as it was (the kernel sets the
        // static priority for SCHED_OTHER and SCHED_BATCH only), so a restore to SCHED_IDLE
        // after a loan of a better nice would keep the lent nice.
        set_nice(tid, sched.nice)?;
    }
    Ok(())
}

/// Sets thread `tid`'s nice value (its static priority), whatever its policy.
fn set_nice(tid: Tid, nice: i32) -> Result<(), Errno> {
    // SAFETY: plain integer arguments.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) };
    if rc == 0 { Ok(()) } else { Err(errno()) }
}

fn set_policy_and_params(tid: Tid, sched: &Sched) -> Result<(), Errno> {
    set_attr(
        tid,
        &RawAttr {
            size: std::mem::size_of::<RawAttr>() as u32,
            policy: policy_to_raw(sched.policy),
            flags: if sched.reset_on_fork {
                SCHED_FLAG_RESET_ON_FORK
            } else {
                0
            },
            nice: sched.nice,
            priority: sched.rt_priority,
            runtime: sched.runtime,
            deadline: sched.deadline,
            period: sched.period,
            ..RawAttr::default()
        },
    )
}

/// Sets thread `tid`'s util clamps, leaving policy and parameters alone.
pub(crate) fn set_util_clamp(tid: Tid, (min, max): (u32, u32)) -> Result<(), Errno> {
    set_attr(
        tid,
        &RawAttr {
            size: std::mem::size_of::<RawAttr>() as u32,
            flags: SCHED_FLAG_KEEP_POLICY
                | SCHED_FLAG_KEEP_PARAMS
                | SCHED_FLAG_UTIL_CLAMP_MIN
                | SCHED_FLAG_UTIL_CLAMP_MAX,
            util_min: min,
            util_max: max,
            ..RawAttr::default()
        },
    )
}

/// Reads thread `tid`'s CPU affinity.
pub(crate) fn get_affinity(tid: Tid) -> Result<CpuMask, Errno> {
    let mut mask = CpuMask::EMPTY;
    // SAFETY: the kernel writes at most `size_of_val(&mask.0)` bytes into the words.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_sched_getaffinity,
            tid,
            std::mem::size_of_val(&mask.0),
            mask.0.as_mut_ptr(),
        )
    };
    if rc < 0 { Err(errno()) } else { Ok(mask) }
}

/// Sets thread `tid`'s CPU affinity.
pub(crate) fn set_affinity(tid: Tid, mask: &CpuMask) -> Result<(), Errno> {
    // SAFETY: the kernel reads `size_of_val(&mask.0)` bytes from the words.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_sched_setaffinity,
            tid,
            std::mem::size_of_val(&mask.0),
            mask.0.as_ptr(),
        )
    };
    if rc == 0 { Ok(()) } else { Err(errno()) }
}

/// The CPU the calling thread runs on (a vDSO read on x86-64 and arm64, no syscall).
pub(crate) fn current_cpu() -> Option<u32> {
    // SAFETY: no arguments; returns -1 on failure.
    let cpu = unsafe { libc::sched_getcpu() };
    u32::try_from(cpu).ok()
}

/// CPU time thread `tid` of this process has used so far, in nanoseconds: its per-thread CPU
/// clock (`clock_gettime` with the clock id glibc's `pthread_getcpuclockid` would build). For a
/// thread that is on a CPU right now the kernel brings the figure up to date before answering,
/// so two reads a microsecond apart differ exactly when the thread ran in between. One syscall,
/// about 0.3 µs (thread off a CPU) to 0.6 µs (on one) on these machines. `None` if `tid` is no
/// thread of this process (the kernel refuses other processes' thread clocks, so a reused tid
/// can only answer for a thread of ours, and the read changes nothing).
pub(crate) fn thread_cpu_time_ns(tid: Tid) -> Option<u64> {
    // The kernel's encoding of a per-thread clock id: the inverted tid above three bits, then
    // CPUCLOCK_PERTHREAD (4) | CPUCLOCK_SCHED (2).
    let clock = (!(tid as libc::clockid_t) << 3) | 6;
    // SAFETY: timespec is plain data; all-zero is valid.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointer; an unknown clock id is answered with EINVAL.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    (rc == 0).then(|| ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

/// Whether the calling thread has CAP_SYS_NICE in its effective set.
pub(crate) fn has_cap_sys_nice() -> bool {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Default, Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    const CAP_SYS_NICE: u32 = 23;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: a v3 header and the two data words v3 writes.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    rc == 0 && data[0].effective & (1 << CAP_SYS_NICE) != 0
}

/// The soft limit of a resource, 0 if it cannot be read. A macro because the resource's type
/// is glibc's `__rlimit_resource_t` or musl's `c_int`, and `rlim_t` is 32 or 64 bits.
macro_rules! soft_limit {
    ($resource:expr) => {{
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: valid out-pointer.
        if unsafe { libc::getrlimit($resource, &mut lim) } == 0 {
            // `rlim_t` is u32 on 32-bit targets.
            #[allow(clippy::useless_conversion)]
            u64::from(lim.rlim_cur)
        } else {
            0
        }
    }};
}

/// The soft RLIMIT_NICE of this process: without CAP_SYS_NICE, nice may go down to
/// `20 - limit`.
pub(crate) fn rlimit_nice() -> u64 {
    soft_limit!(libc::RLIMIT_NICE)
}

/// The soft RLIMIT_RTPRIO of this process: without CAP_SYS_NICE, FIFO/RR priority up to it.
pub(crate) fn rlimit_rtprio() -> u64 {
    soft_limit!(libc::RLIMIT_RTPRIO)
}
