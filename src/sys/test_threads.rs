//! Thread set-up shared by the unit tests that stage a preempted thread: pin it, burn CPU
//! time, wait until it sleeps. Linux only, as those tests are.

use crate::Tid;
use crate::sys::attrs::CpuMask;
use std::time::{Duration, Instant};

/// Held by each test that stages threads on CPUs 0 and 1, so that they take turns: one
/// test's hog on CPU 0 would starve another's SCHED_IDLE thread there, and a thread that never
/// runs cannot be staged (the unit tests run in parallel).
pub(crate) fn cpus_0_and_1() -> std::sync::MutexGuard<'static, ()> {
    static STAGE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    // A test that failed while holding it left nothing behind that the next one needs.
    STAGE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A staged thread's CPUs and policy as the kernel reports them: what the tests check was put
/// back.
pub(crate) type ReadBack = (
    Result<CpuMask, super::sched::Errno>,
    Result<(crate::sys::attrs::Sched, (u32, u32)), super::sched::Errno>,
);

/// Reads thread `tid`'s CPUs and policy back.
pub(crate) fn read_back(tid: Tid) -> ReadBack {
    (
        super::sched::get_affinity(tid),
        super::sched::get_sched(tid),
    )
}

/// Checks what every test that stages a SCHED_IDLE thread on CPU 0 beside a hog checks: the
/// thread (`who`) finished its staged work on CPU 1, the waiter's (`finished_on`; `context` is
/// added to that message), and was put back to CPU 0 and SCHED_IDLE afterwards (`back`).
#[track_caller]
pub(crate) fn assert_finished_on_cpu_1_and_put_back(
    who: &str,
    context: &str,
    finished_on: Option<u32>,
    back: ReadBack,
) {
    let (cpus, sched) = back;
    assert_eq!(
        finished_on,
        Some(1),
        "{who} finished on CPU {finished_on:?}, not on the waiter's{context}"
    );
    assert_eq!(cpus, Ok(CpuMask::single(0)), "{who}: CPUs put back");
    assert_eq!(
        sched.map(|(s, _)| s.policy),
        Ok(crate::sys::attrs::SchedPolicy::Idle),
        "{who}: policy put back"
    );
}

/// Pins the calling thread to `cpu`, with the crate's own affinity call.
pub(crate) fn pin_to(cpu: u32) {
    let pinned = super::sched::set_affinity(super::gettid(), &CpuMask::single(cpu));
    assert_eq!(pinned, Ok(()), "pin to CPU {cpu}");
}

/// Spins until the calling thread has had `cpu_time` of CPU (not of wall clock), so that a
/// preempted thread takes as long as its preemption lasts.
pub(crate) fn burn(cpu_time: Duration) {
    let tid = super::gettid();
    let start = super::sched::thread_cpu_time_ns(tid).unwrap();
    while super::sched::thread_cpu_time_ns(tid).unwrap() - start < cpu_time.as_nanos() as u64 {
        std::hint::spin_loop();
    }
}

/// Spins for `d` of wall clock.
pub(crate) fn busy_for(d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        std::hint::spin_loop();
    }
}

/// Waits until thread `tid` sleeps (state `S` in `/proc/self/task/<tid>/stat`).
pub(crate) fn wait_until_asleep(tid: Tid) {
    let path = format!("/proc/self/task/{tid}/stat");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stat = std::fs::read_to_string(&path).unwrap();
        // The state follows the parenthesised name, which may itself hold spaces.
        let state = stat.rsplit(')').next().unwrap().trim_start().chars().next();
        if state == Some('S') {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "thread {tid} never went to sleep"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Says that a unit test skipped what it checks, and why: on stderr and in the test run's log
/// of skips (`test_hooks::log_skip`).
pub(crate) fn skip(why: &str) {
    let test = std::thread::current()
        .name()
        .unwrap_or("a unit test")
        .to_string();
    crate::test_hooks::log_skip(&test, why);
}

/// Whether the machine has the two CPUs these tests stage their threads on; says why not.
pub(crate) fn has_two_cpus(why: &str) -> bool {
    let two = std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2;
    if !two {
        skip(&format!("needs two CPUs ({why})"));
    }
    two
}

/// Pins the calling thread to `cpu` and makes it SCHED_IDLE (no privilege needed): the
/// background thread a hog on that CPU preempts.
pub(crate) fn become_idle_on(cpu: u32) {
    pin_to(cpu);
    let idle = crate::sys::attrs::Sched {
        policy: crate::sys::attrs::SchedPolicy::Idle,
        ..crate::sys::attrs::Sched::DEFAULT
    };
    let made_idle = super::sched::set_sched(super::gettid(), &idle);
    assert_eq!(made_idle, Ok(()), "SCHED_IDLE");
}

/// A nice-0 thread spinning on one CPU until stopped, or until `limit` passed if nothing helps
/// the thread it preempts.
pub(crate) struct Hog {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Hog {
    pub(crate) fn start(cpu: u32, limit: Duration) -> Hog {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = std::sync::Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            pin_to(cpu);
            let end = Instant::now() + limit;
            // Relaxed: a stop request; nothing is read after it.
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < end {
                std::hint::spin_loop();
            }
        });
        Hog { stop, thread }
    }

    pub(crate) fn stop(self) {
        // Relaxed: as in `start`.
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap();
    }
}
