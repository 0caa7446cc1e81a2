//! Thread churn: short-lived threads that lock a shared mutex under contention, some of them
//! lent to, with the process's memory, open file descriptors and time per thread read as they
//! go. Shared by `tests/churn.rs` (scaled down, with bounds) and `examples/thread_churn.rs`
//! (the full figure).

use proxy_lock::{Mutex, current_tid, thread_blocked_on};
use std::sync::Arc;
use std::sync::mpsc::channel;
use std::thread;
use std::time::{Duration, Instant};

/// The process's resident memory in kB (`VmRSS`).
pub fn rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The process's open file descriptors.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// The process's mappings of perf rings (the crate maps none; a regression would show here).
pub fn perf_maps() -> usize {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    maps.lines().filter(|l| l.contains("perf_event")).count()
}

/// What the process's open file descriptors point to, for a failure message (the test's).
#[allow(dead_code)]
pub fn fd_targets() -> Vec<String> {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .map(|t| t.display().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Four threads that each lock `m` once, at the same time.
pub fn contended_batch(m: &Arc<Mutex<u64>>) {
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let m = Arc::clone(m);
            thread::spawn(move || *m.lock().unwrap() += 1)
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// A nice-19 owner holds a lock until a nice-0 waiter sleeps on it and lends it its nice, then
/// lets go (it restores itself), sleeps on the lock once more and
/// exits. Needs CAP_SYS_NICE for the loan; without it the round still runs, and the loan fails
/// (counted).
pub fn loan_round() {
    let m = Arc::new(Mutex::new(()));
    let (locked_tx, locked) = channel();
    let (go_tx, go) = channel::<()>();
    let (owner_tid_tx, owner_tid) = channel();
    let (taken_tx, taken) = channel::<()>();
    let owner = {
        let m = Arc::clone(&m);
        thread::spawn(move || {
            // SAFETY: setpriority on the calling thread's tid; no pointers.
            unsafe { libc::setpriority(libc::PRIO_PROCESS, current_tid() as libc::id_t, 19) };
            owner_tid_tx.send(current_tid()).unwrap();
            let guard = m.lock().unwrap();
            locked_tx.send(()).unwrap();
            go.recv().unwrap();
            drop(guard);
            // Once the waiter holds it, wait for it again.
            taken.recv().unwrap();
            drop(m.lock().unwrap());
        })
    };
    let owner_tid = owner_tid.recv().unwrap();
    locked.recv().unwrap();
    let (tid_tx, tid) = channel();
    let waiter = {
        let m = Arc::clone(&m);
        thread::spawn(move || {
            tid_tx.send(current_tid()).unwrap();
            let guard = m.lock().unwrap();
            taken_tx.send(()).unwrap();
            wait_until(
                || asleep_on(owner_tid, &m),
                "the owner never slept on the lock again",
            );
            drop(guard);
        })
    };
    let tid = tid.recv().unwrap();
    wait_until(
        || thread_blocked_on(tid) == Some(m.id()),
        "the waiter never slept on the lock",
    );
    go_tx.send(()).unwrap();
    owner.join().unwrap();
    waiter.join().unwrap();
}

/// Yields until `done` holds; panics with `what` after 10 s.
fn wait_until(mut done: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        thread::yield_now();
    }
}

/// Whether thread `tid` is asleep on `m`: waiting for it, and shown sleeping by the kernel.
fn asleep_on(tid: i32, m: &Mutex<()>) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap_or_default();
    // The state follows the parenthesised name, which may hold spaces.
    let sleeping = stat
        .rsplit_once(") ")
        .is_some_and(|(_, rest)| rest.starts_with('S'));
    thread_blocked_on(tid) == Some(m.id()) && sleeping
}

/// Retired records are freed once the epoch moves on, which
/// pins make it do (`owner_tid` pins): pins until at most `fds` are open and `maps` perf rings
/// mapped, or for half a second.
pub fn settle(m: &Mutex<u64>, fds: usize, maps: usize) {
    let deadline = Instant::now() + Duration::from_millis(500);
    while (open_fds() > fds || perf_maps() > maps) && Instant::now() < deadline {
        for _ in 0..10_000 {
            let _ = m.owner_tid();
        }
    }
}

/// What a churn run measured.
pub struct Churn {
    pub threads: usize,
    pub loan_rounds: usize,
    /// RSS after the first window.
    pub rss_after_first_kb: u64,
    pub rss_end_kb: u64,
    /// Open file descriptors before the churn (after a first loan) and after it settled.
    pub fds_before: usize,
    pub fds_end: usize,
    /// Mapped perf rings before the churn and after it settled, and the most
    /// seen at a window's end.
    pub maps_before: usize,
    pub maps_end: usize,
    pub maps_peak: usize,
    /// Microseconds per thread in each window.
    pub per_thread_us: Vec<f64>,
}

/// Runs `batches` contended batches of four threads, a loan round every `loan_every` batches
/// (0: none), and reads the time per thread every `window` batches.
pub fn run(batches: usize, window: usize, loan_every: usize) -> Churn {
    let m = Arc::new(Mutex::new(0u64));
    if loan_every > 0 {
        // Count from after a first loan, so that what it sets up once per process is not
        // taken for churn.
        loan_round();
        settle(&m, 0, 0);
    }
    let (fds_before, maps_before) = (open_fds(), perf_maps());
    let mut churn = Churn {
        threads: 0,
        loan_rounds: 0,
        rss_after_first_kb: 0,
        rss_end_kb: 0,
        fds_before,
        fds_end: 0,
        maps_before,
        maps_end: 0,
        maps_peak: maps_before,
        per_thread_us: Vec::new(),
    };
    let (mut start, mut in_window) = (Instant::now(), 0);
    for batch in 1..=batches {
        contended_batch(&m);
        in_window += 4;
        if loan_every > 0 && batch % loan_every == 0 {
            loan_round();
            churn.loan_rounds += 1;
            in_window += 2;
        }
        if batch % window == 0 {
            let us = start.elapsed().as_secs_f64() * 1e6 / in_window as f64;
            churn.per_thread_us.push(us);
            churn.threads += in_window;
            (start, in_window) = (Instant::now(), 0);
            churn.maps_peak = churn.maps_peak.max(perf_maps());
            if churn.per_thread_us.len() == 1 {
                churn.rss_after_first_kb = rss_kb();
            }
        }
    }
    churn.threads += in_window;
    assert_eq!(*m.lock().unwrap(), batches as u64 * 4);
    settle(&m, fds_before, maps_before);
    churn.rss_end_kb = rss_kb();
    churn.fds_end = open_fds();
    churn.maps_end = perf_maps();
    churn
}
