//! The few operating-system calls the crate makes. Everything here is a thin, documented wrapper;
//! policy lives elsewhere.
//!
//! This is the only place that knows the platform; no `cfg(target_os)` appears above it.
//!
//! | module | Linux, `donation` on | Linux, `donation` off | other Unix | Windows |
//! |---|---|---|---|---|
//! | `sched`: read and lend attributes | the kernel's calls | none (`DONATES` false) | none | none |
//! | thread ids, futex naps, thread names | `gettid`, futex, `/proc` | the same | counters, sleeps | counters, sleeps |
//! | exit hooks, fork handlers (`unix`, `other`) | pthread key, `pthread_atfork` | the same | the same | thread-local destructor, none |
//! | clocks | `clock_gettime` (coarse too) | the same | `clock_gettime` | `Instant` |

pub(crate) mod attrs;
pub(crate) mod sched;
#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub(crate) use unix::{at_fork, on_thread_exit};
#[cfg(not(unix))]
mod other;
#[cfg(not(unix))]
pub(crate) use other::{at_fork, on_thread_exit};
#[cfg(all(test, not(loom), donates))]
pub(crate) mod test_threads;

use crate::Tid;

/// Kernel thread id of the calling thread (`gettid(2)`).
#[cfg(target_os = "linux")]
pub(crate) fn gettid() -> Tid {
    // SAFETY: gettid takes no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) as Tid }
}

/// Elsewhere there is no kernel tid to donate to; hand out process-unique ids for diagnostics.
#[cfg(not(target_os = "linux"))]
pub(crate) fn gettid() -> Tid {
    use std::sync::atomic::{AtomicI32, Ordering::Relaxed};
    // Relaxed: only uniqueness matters, and a fetch_add is unique under any ordering.
    static NEXT: AtomicI32 = AtomicI32::new(1);
    NEXT.fetch_add(1, Relaxed)
}

/// How many CPU ids the kernel may report (`nr_cpu_ids`: the highest possible CPU plus one),
/// from `/sys/devices/system/cpu/possible` ("0-3,8-11"); `None` where that cannot be read.
pub(crate) fn possible_cpus() -> Option<usize> {
    let list = std::fs::read_to_string("/sys/devices/system/cpu/possible").ok()?;
    let last = list.trim().rsplit([',', '-']).next()?;
    Some(last.parse::<usize>().ok()? + 1)
}

/// Sleeps while `word` holds `expected`, for `timeout` at most (`FUTEX_WAIT`, process-private).
/// Returns on a wake-up, a signal, the timeout, or at once if the word already differs: the
/// caller checks again.
#[cfg(target_os = "linux")]
pub(crate) fn futex_wait_for(
    word: &std::sync::atomic::AtomicU32,
    expected: u32,
    timeout: std::time::Duration,
) {
    let timeout = libc::timespec {
        tv_sec: timeout.as_secs() as _,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `word` is a live, aligned 32-bit atomic for the whole call, and `timeout` a
    // live relative timespec. The result is ignored: every outcome sends the caller round again.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            &timeout as *const libc::timespec,
        );
    }
}

/// Wakes one thread asleep in [`futex_wait_for`] on `word`.
#[cfg(target_os = "linux")]
pub(crate) fn futex_wake_one(word: &std::sync::atomic::AtomicU32) {
    // SAFETY: as in `futex_wait_for`; waking needs nothing more than the address.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            1,
        );
    }
}

/// Elsewhere there is no futex: a short sleep stands in for the wait (the caller checks the
/// word again), and there is nothing to wake.
#[cfg(not(target_os = "linux"))]
pub(crate) fn futex_wait_for(
    word: &std::sync::atomic::AtomicU32,
    expected: u32,
    timeout: std::time::Duration,
) {
    // Relaxed: only decides whether to nap; the caller's swap checks the word again.
    if word.load(std::sync::atomic::Ordering::Relaxed) == expected {
        std::thread::sleep(timeout.min(std::time::Duration::from_micros(50)));
    }
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn futex_wake_one(_word: &std::sync::atomic::AtomicU32) {}

/// The name of thread `tid` of this process (`/proc/self/task/<tid>/comm`), if readable.
#[cfg(target_os = "linux")]
pub(crate) fn thread_name(tid: Tid) -> Option<String> {
    let comm = std::fs::read_to_string(format!("/proc/self/task/{tid}/comm")).ok()?;
    Some(comm.trim_end().to_string())
}

/// Elsewhere there is no portable way to name another thread; diagnostics show ids only.
#[cfg(not(target_os = "linux"))]
pub(crate) fn thread_name(_tid: Tid) -> Option<String> {
    None
}

/// Microseconds on CLOCK_MONOTONIC_COARSE: the time of the last tick (a few ms resolution),
/// for timers of ten milliseconds or more; cheaper than `monotonic_us`.
#[cfg(target_os = "linux")]
pub(crate) fn coarse_monotonic_us() -> u64 {
    // SAFETY: timespec is plain data; all-zero is valid.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointer; CLOCK_MONOTONIC_COARSE exists on Linux since 2.6.32.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

/// Elsewhere the precise clock stands in for the coarse one.
#[cfg(not(target_os = "linux"))]
pub(crate) fn coarse_monotonic_us() -> u64 {
    monotonic_us()
}

/// Microseconds on CLOCK_MONOTONIC (a vDSO call, no syscall, on Linux).
#[cfg(unix)]
pub(crate) fn monotonic_us() -> u64 {
    // SAFETY: timespec is plain data; all-zero is valid.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointer; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

/// Microseconds since the first call, on std's monotonic clock, plus one second: callers keep
/// 0 for "never".
#[cfg(not(unix))]
pub(crate) fn monotonic_us() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let start = *START.get_or_init(std::time::Instant::now);
    1_000_000 + start.elapsed().as_micros() as u64
}

/// How many threads the process has (`num_threads` in `/proc/self/stat`); `None` if that
/// cannot be read.
pub(crate) fn thread_count() -> Option<usize> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name, which may contain spaces; num_threads is
    // field 20 of proc(5), the 18th after the name.
    stat.rsplit_once(") ")?.1.split(' ').nth(17)?.parse().ok()
}
