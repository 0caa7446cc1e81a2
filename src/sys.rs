//! The few operating-system calls the crate makes. Everything here is a thin, documented wrapper;
//! policy lives elsewhere.

pub(crate) mod attrs;
pub(crate) mod sched;
pub(crate) mod switch_log;
#[cfg(all(test, not(loom), target_os = "linux"))]
pub(crate) mod test_threads;

use crate::Tid;
use std::sync::OnceLock;

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
        tv_sec: timeout.as_secs() as libc::time_t,
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
pub(crate) fn coarse_monotonic_us() -> u64 {
    // SAFETY: timespec is plain data; all-zero is valid.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointer; CLOCK_MONOTONIC_COARSE exists on Linux since 2.6.32.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

/// Microseconds on CLOCK_MONOTONIC (a vDSO call, no syscall, on Linux).
pub(crate) fn monotonic_us() -> u64 {
    // SAFETY: timespec is plain data; all-zero is valid.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointer; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

/// The exit hook registered for this thread and its argument, boxed as the pthread key's value.
struct ExitHook {
    arg: *mut (),
    hook: unsafe fn(*mut ()),
}

/// The pthread key whose destructor runs [`ExitHook`]s.
///
/// Why a pthread key and not a `thread_local!` with `Drop`: glibc runs pthread key destructors
/// after every `__cxa_thread_atexit` destructor, which is where Rust's thread-local destructors
/// live. So a Rust destructor that locks one of our mutexes during thread exit still finds the
/// thread's record alive. Where the order is different (musl runs both from pthread keys), a
/// record freed too early is simply created again, and the key is set again, which POSIX answers
/// with another destructor round.
fn exit_key() -> libc::pthread_key_t {
    static KEY: OnceLock<libc::pthread_key_t> = OnceLock::new();
    *KEY.get_or_init(|| {
        let mut key: libc::pthread_key_t = 0;
        // SAFETY: `key` is a valid out-pointer and `run_exit_hook` has the C ABI the call expects.
        let rc = unsafe { libc::pthread_key_create(&mut key, Some(run_exit_hook)) };
        assert_eq!(rc, 0, "proxy_lock: pthread_key_create failed ({rc})");
        key
    })
}

unsafe extern "C" fn run_exit_hook(value: *mut libc::c_void) {
    // SAFETY: the key's only values are `Box<ExitHook>`s made by `on_thread_exit`, and POSIX
    // clears the slot before calling the destructor, so each box is consumed once.
    let hook = unsafe { Box::from_raw(value as *mut ExitHook) };
    // SAFETY: the hook was registered for this thread with this argument.
    unsafe { (hook.hook)(hook.arg) }
}

/// How many threads the process has (`num_threads` in `/proc/self/stat`); `None` if that
/// cannot be read.
pub(crate) fn thread_count() -> Option<usize> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name, which may contain spaces; num_threads is
    // field 20 of proc(5), the 18th after the name.
    stat.rsplit_once(") ")?.1.split(' ').nth(17)?.parse().ok()
}

/// Registers `fork()` handlers (`pthread_atfork`): `prepare` in the forking thread before the
/// fork, `parent` in it after, `child` in the child's only thread. Failure (out of memory) is
/// ignored: a child then inherits the state as it was, which is what happens without them.
pub(crate) fn at_fork(prepare: extern "C" fn(), parent: extern "C" fn(), child: extern "C" fn()) {
    // SAFETY: three plain C-ABI functions that never unwind (the callers make sure).
    unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
}

/// Arranges for `hook(arg)` to run when the calling thread exits. One hook per thread: a second
/// registration replaces the first (the caller registers once per record).
pub(crate) fn on_thread_exit(arg: *mut (), hook: unsafe fn(*mut ())) {
    let key = exit_key();
    let value = Box::into_raw(Box::new(ExitHook { arg, hook }));
    // SAFETY: `key` was created by pthread_key_create and is never deleted.
    let old = unsafe { libc::pthread_getspecific(key) };
    if !old.is_null() {
        // SAFETY: a previous value is one of our boxes, replaced below and so never run.
        drop(unsafe { Box::from_raw(old as *mut ExitHook) });
    }
    // SAFETY: as above; the value is a live heap pointer.
    let rc = unsafe { libc::pthread_setspecific(key, value as *const libc::c_void) };
    if rc != 0 {
        // Out of memory for the key slot: the record is leaked instead of freed, never unsafe.
        // SAFETY: we still own the box; nobody else saw it.
        drop(unsafe { Box::from_raw(value) });
    }
}
