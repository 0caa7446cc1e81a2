//! Helpers shared by the integration tests that set and read real scheduling attributes:
//! readers of `/proc/self/task/<tid>/{stat,status}` and thin wrappers of the setters.
#![allow(dead_code)] // each test crate uses its own subset

use proxy_lock::{LockId, Mutex, current_tid, thread_blocked_on};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Says that `test` skipped (all or part of) what it checks, and why: on stderr and in the
/// test run's log of skips (`proxy_lock::test_hooks::log_skip`).
pub fn skip(test: &str, why: &str) {
    proxy_lock::test_hooks::log_skip(test, why);
}

/// Donation tests change process-wide counters, the CPU-lending mode and real attributes: one
/// at a time within a test binary.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether this process may lend nice and policy; if not, `test` says it skips.
pub fn privileged(test: &str) -> bool {
    if proxy_lock::capabilities().cap_sys_nice {
        return true;
    }
    skip(
        test,
        "needs CAP_SYS_NICE to lower nice and leave SCHED_IDLE",
    );
    false
}

/// (policy, nice, rt_priority) of thread `tid`, from `/proc/self/task/<tid>/stat`.
pub fn sched_of(tid: i32) -> (i32, i32, u32) {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
    // Fields after the command name, which is parenthesised and may contain spaces.
    let rest: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    // Field n of proc(5) is rest[n - 3]: nice is 19, rt_priority 40, policy 41.
    (
        rest[38].parse().unwrap(),
        rest[16].parse().unwrap(),
        rest[37].parse().unwrap(),
    )
}

pub fn nice_of(tid: i32) -> i32 {
    sched_of(tid).1
}

/// The CPUs thread `tid` may run on, from `Cpus_allowed_list` in its status file.
pub fn cpus_of(tid: i32) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).unwrap();
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim();
    let mut cpus = Vec::new();
    for part in list.split(',') {
        match part.split_once('-') {
            Some((a, b)) => cpus.extend(a.parse::<u32>().unwrap()..=b.parse().unwrap()),
            None => cpus.push(part.parse().unwrap()),
        }
    }
    cpus
}

pub fn set_nice(nice: i32) {
    // SAFETY: setpriority on the calling thread's tid; no pointers.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, current_tid() as libc::id_t, nice) };
    assert_eq!(rc, 0, "setpriority: {}", std::io::Error::last_os_error());
}

pub fn set_policy(tid: i32, policy: i32, priority: i32) {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: valid sched_param for the call.
    let rc = unsafe { libc::sched_setscheduler(tid, policy, &param) };
    assert_eq!(
        rc,
        0,
        "sched_setscheduler: {}",
        std::io::Error::last_os_error()
    );
}

pub fn pin(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; CPU_SET writes inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        let rc = libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set);
        assert_eq!(
            rc,
            0,
            "sched_setaffinity: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Polls `cond` for up to 5 s.
pub fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        thread::sleep(Duration::from_millis(1));
    }
}

/// Whether thread `tid` sleeps on `m`: it published blocked_on and the kernel shows it asleep.
/// Donation happens before the sleep, so from then on the owner is boosted.
pub fn asleep_on<T>(tid: i32, m: &Mutex<T>) -> bool {
    asleep_on_lock(tid, m.id())
}

/// `asleep_on` for any lock, by its id (an `RwLock`'s too).
pub fn asleep_on_lock(tid: i32, lock: LockId) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap_or_default();
    let sleeping = stat
        .rsplit_once(") ")
        .is_some_and(|(_, r)| r.starts_with('S'));
    thread_blocked_on(tid) == Some(lock) && sleeping
}

/// A thread that takes `m` after `setup`, reports its tid, holds the lock until told to
/// release it, reports that, and stays alive until told to exit (so its attributes can be read
/// after the release).
pub struct Owner {
    pub tid: i32,
    release: Sender<()>,
    released: Receiver<()>,
    exit: Sender<()>,
    handle: JoinHandle<()>,
}

impl Owner {
    pub fn spawn(m: &Arc<Mutex<()>>, setup: impl FnOnce() + Send + 'static) -> Owner {
        let m = Arc::clone(m);
        Owner::holding("owner", setup, move |held| {
            let _guard = m.lock().unwrap();
            held();
        })
    }

    /// An owner of whatever `hold` takes: it runs `setup`, then `hold`, which takes its locks
    /// and calls `held()` (which reports the tid and returns when told to release), then
    /// releases them.
    pub fn holding(
        name: &str,
        setup: impl FnOnce() + Send + 'static,
        hold: impl FnOnce(&mut dyn FnMut()) + Send + 'static,
    ) -> Owner {
        let (tid_tx, tid_rx) = channel();
        let (release, release_rx) = channel::<()>();
        let (released_tx, released) = channel();
        let (exit, exit_rx) = channel::<()>();
        let handle = thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                setup();
                hold(&mut || {
                    tid_tx.send(current_tid()).unwrap();
                    release_rx.recv().unwrap();
                });
                released_tx.send(()).unwrap();
                let _ = exit_rx.recv();
            })
            .unwrap();
        Owner {
            tid: tid_rx.recv().unwrap(),
            release,
            released,
            exit,
            handle,
        }
    }

    pub fn release(&self) {
        self.release.send(()).unwrap();
        self.released.recv().unwrap();
    }

    pub fn finish(self) {
        self.exit.send(()).unwrap();
        self.handle.join().unwrap();
    }
}

/// A thread that runs `setup`, then takes `m` (or tries to, for `timeout`), and returns
/// whether it got the lock.
pub fn spawn_waiter(
    m: &Arc<Mutex<()>>,
    setup: impl FnOnce() + Send + 'static,
    timeout: Option<Duration>,
) -> (i32, JoinHandle<bool>) {
    let (tid_tx, tid_rx) = channel();
    let lock = Arc::clone(m);
    let handle = thread::Builder::new()
        .name("waiter".into())
        .spawn(move || {
            setup();
            tid_tx.send(current_tid()).unwrap();
            match timeout {
                None => drop(lock.lock().unwrap()),
                Some(t) => return lock.try_lock_for(t).is_ok(),
            }
            true
        })
        .unwrap();
    let tid = tid_rx.recv().unwrap();
    eventually("the waiter to sleep on the lock", || {
        asleep_on(tid, m) || handle.is_finished()
    });
    (tid, handle)
}

/// Forks; the child runs `child` and exits with its code (1 if it panics). Returns the
/// child's exit code, or `None` if it did not finish within `limit` (then it is killed).
pub fn fork_and_wait(limit: Duration, child: impl FnOnce() -> i32) -> Option<i32> {
    // SAFETY: fork has no preconditions; the child only runs `child` and `_exit`s.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).unwrap_or(1);
        // SAFETY: leaves the child at once, without running the parent's exit handlers.
        unsafe { libc::_exit(code) };
    }
    let deadline = Instant::now() + limit;
    loop {
        let mut status = 0;
        // SAFETY: valid out-pointer; `pid` is our child.
        let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if rc == pid {
            return Some(if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                128 + libc::WTERMSIG(status)
            });
        }
        if Instant::now() > deadline {
            // SAFETY: kill and reap our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return None;
        }
        thread::sleep(Duration::from_micros(200));
    }
}
