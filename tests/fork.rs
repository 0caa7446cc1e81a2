//! `fork()`: a child has task records of its own, never writes to its parent's threads, and
//! never hangs on state a thread of the parent's held at the fork. Each test forks from a
//! process with proxy-lock in use, runs the child's part, and reads the child's exit status
//! (the child leaves with `_exit`, so nothing of the test harness runs twice).

mod common;

use common::{fork_and_wait, nice_of, set_nice};
use proxy_lock::{Condvar, Mutex, Policy, capabilities, current_tid};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::Duration;

#[path = "../benches/workloads/churn.rs"]
#[allow(dead_code)] // only its loan round is used here
mod churn;

/// One test, its parts in turn: std's thread start and exit take a process-wide lock of std's,
/// and a child forked while another thread (here: the test harness starting or ending a test)
/// held it hangs in `thread::spawn`. So nothing starts or ends a thread while these fork,
/// unless a part says how it keeps out of the way.
#[test]
fn fork() {
    a_child_has_its_own_tid_and_its_locks_work();
    forks_under_donation_load_leave_the_parent_alone();
    a_child_does_not_hand_its_lock_to_the_parents_waiters();
}

fn gettid() -> i32 {
    // SAFETY: gettid takes no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

/// What a child does with proxy-lock: its tid is its own, and mutexes, the Condvar and
/// `Mutex::run` work across threads it starts. 0 if all went well.
fn use_locks_in_child(parent_tid: i32) -> i32 {
    if current_tid() != gettid() || current_tid() == parent_tid {
        return 2;
    }
    let m = Arc::new(Mutex::with_policy(0u64, Policy::Handoff));
    let cv = Arc::new(Condvar::new());
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (m, cv) = (Arc::clone(&m), Arc::clone(&cv));
            thread::spawn(move || {
                for _ in 0..1000 {
                    *m.lock().unwrap() += 1;
                    m.run(|v| *v += 1).unwrap();
                }
                cv.notify_all();
                current_tid()
            })
        })
        .collect();
    let mut tids: Vec<i32> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let done = cv
        .wait_timeout_while(m.lock().unwrap(), Duration::from_secs(5), |v| *v < 8000)
        .unwrap();
    if *done.0 != 8000 {
        return 3;
    }
    tids.sort_unstable();
    tids.dedup();
    if tids.len() != 4 || tids.contains(&parent_tid) {
        return 4;
    }
    0
}

fn a_child_has_its_own_tid_and_its_locks_work() {
    // The parent has used proxy-lock on this thread and another.
    let m = Arc::new(Mutex::new(()));
    drop(m.lock().unwrap());
    let m2 = Arc::clone(&m);
    thread::spawn(move || drop(m2.lock().unwrap()))
        .join()
        .unwrap();
    let parent_tid = current_tid();
    for _ in 0..20 {
        assert_eq!(
            fork_and_wait(Duration::from_secs(20), || use_locks_in_child(parent_tid)),
            Some(0)
        );
    }
    // fork followed by exec.
    let code = fork_and_wait(Duration::from_secs(20), || {
        let path = c"/bin/true";
        let argv = [path.as_ptr(), std::ptr::null()];
        // SAFETY: a NUL-terminated path and argv; on success it does not return.
        unsafe { libc::execv(path.as_ptr(), argv.as_ptr()) };
        5
    });
    assert_eq!(code, Some(0));
    assert_eq!(current_tid(), gettid());
}

/// The parent's threads keep their attributes whatever its children do: children forked over
/// and over while the parent's threads lend to each other, each child lending (at nice 0) to
/// the owner of a lock a parent thread (nice 7) held at the fork, and running loans of its
/// own. Every child must finish (none hangs on the ledger lock), and after each one the
/// parent's lock holder is still at nice 7 and its forking thread at nice 12 (within 2 s: a
/// parent thread may rescue it while it holds the ledger lock across the fork).
fn forks_under_donation_load_leave_the_parent_alone() {
    if !capabilities().cap_sys_nice {
        common::skip(
            "forks_under_donation_load_leave_the_parent_alone",
            capabilities().unavailable.unwrap_or("needs CAP_SYS_NICE"),
        );
        return;
    }
    const CHILDREN: usize = 300;
    // A parent thread at nice 7 that holds `held` until the end.
    let held = Arc::new(Mutex::new(()));
    let (holder_tid_tx, holder_tid) = mpsc::channel();
    let (stop_holder, holder_stop) = mpsc::channel::<()>();
    let holder = {
        let held = Arc::clone(&held);
        thread::spawn(move || {
            set_nice(7);
            let _g = held.lock().unwrap();
            holder_tid_tx.send(current_tid()).unwrap();
            let _ = holder_stop.recv();
        })
    };
    let holder_tid = holder_tid.recv().unwrap();
    // Donation load in the parent, all through the forks: a nice-0 thread keeps lending to a
    // nice-19 owner of a lock they share; and loan rounds of fresh threads, between forks
    // (`spawning`: see `fork`).
    let spawning = Arc::new(std::sync::RwLock::new(()));
    let stop = Arc::new(AtomicBool::new(false));
    let (started_tx, started) = mpsc::channel();
    let shared = Arc::new(Mutex::new(0u64));
    let lenders: Vec<_> = [19, 0]
        .into_iter()
        .map(|nice| {
            let (stop, shared, started_tx) =
                (Arc::clone(&stop), Arc::clone(&shared), started_tx.clone());
            thread::spawn(move || {
                set_nice(nice);
                started_tx.send(()).unwrap();
                while !stop.load(Ordering::Relaxed) {
                    let mut g = shared.lock().unwrap();
                    *g += 1;
                    if nice == 19 {
                        // Hold it for a while, so the other one sleeps on it and lends.
                        thread::sleep(Duration::from_micros(300));
                    }
                }
            })
        })
        .collect();
    let load = {
        let (stop, spawning) = (Arc::clone(&stop), Arc::clone(&spawning));
        thread::spawn(move || {
            started_tx.send(()).unwrap();
            let mut rounds = 0;
            while !stop.load(Ordering::Relaxed) {
                let _spawning = spawning.read().unwrap();
                churn::loan_round();
                rounds += 1;
            }
            rounds
        })
    };
    for _ in 0..3 {
        started.recv().unwrap();
    }
    let donations_before = proxy_lock::counters().donations;
    set_nice(12);
    let me = current_tid();
    let (mut hung, mut rescued) = (0, 0);
    for i in 0..CHILDREN {
        let held = Arc::clone(&held);
        let quiet = spawning.write().unwrap();
        let code = fork_and_wait(Duration::from_secs(10), move || {
            if current_tid() == me {
                return 2;
            }
            // Better than the holder: without the fork hooks this lent nice 0 to the
            // parent's thread, whose tid the record still held.
            set_nice(0);
            if held.try_lock_for(Duration::from_millis(2)).is_ok() {
                return 3; // held by a thread that does not exist here: it stays held
            }
            churn::loan_round();
            if i % 10 == 0 {
                let path = c"/bin/true";
                let argv = [path.as_ptr(), std::ptr::null()];
                // SAFETY: as in the test above.
                unsafe { libc::execv(path.as_ptr(), argv.as_ptr()) };
                return 5;
            }
            0
        });
        drop(quiet);
        match code {
            Some(0) => {}
            None => hung += 1,
            Some(c) => panic!("child {i} failed with {c}"),
        }
        assert_eq!(
            nice_of(holder_tid),
            7,
            "after child {i}: the parent's holder"
        );
        // The forking thread holds the ledger lock across the fork, so a parent thread that
        // waits for it may lend it its nice meanwhile (a rescue, undone once that thread has
        // the lock). What must not happen is a change that stays: the child writing to it.
        if nice_of(me) != 12 {
            rescued += 1;
            let settled = std::time::Instant::now() + Duration::from_secs(2);
            while nice_of(me) != 12 && std::time::Instant::now() < settled {
                thread::sleep(Duration::from_millis(1));
            }
        }
        assert_eq!(nice_of(me), 12, "after child {i}: the forking thread");
    }
    stop.store(true, Ordering::Relaxed);
    let rounds = load.join().unwrap();
    for t in lenders {
        t.join().unwrap();
    }
    stop_holder.send(()).unwrap();
    holder.join().unwrap();
    set_nice(0);
    eprintln!(
        "{CHILDREN} children forked during {rounds} loan rounds and {} donations in the \
         parent; the forking thread was found lent to (and then restored) after {rescued}",
        proxy_lock::counters().donations - donations_before
    );
    assert_eq!(hung, 0, "{hung} of {CHILDREN} children hung");
}

/// A child whose forking thread held a lock that the parent's threads were waiting for:
/// one registered as the lock's spinner (it spins while the owner runs, since it would lend
/// to it) or asleep, one with a section published by `Mutex::run`. The child unlocks: the lock must
/// not go to the spinner, which the child does not have, and the section must not run in the
/// child (its value stays as it was at the fork). Then the child takes the lock again and
/// uses it from a thread of its own.
fn a_child_does_not_hand_its_lock_to_the_parents_waiters() {
    const ROUNDS: usize = 40;
    let m = Arc::new(Mutex::with_policy(0u64, Policy::Handoff));
    let (mut spinners, mut sections) = (0, 0);
    for round in 0..ROUNDS {
        let m = Arc::clone(&m);
        // The owner runs at nice 5, so that the waiters (nice 0) would lend to it and spin
        // while it runs. Raising nice needs no privilege; this thread ends with the round.
        let code = thread::spawn(move || {
            set_nice(5);
            // Waiters judge the owner by a hint of its attributes up to 10 ms old.
            thread::sleep(Duration::from_millis(15));
            let guard = m.lock().unwrap();
            let before = *guard;
            let waiters = [
                {
                    let m = Arc::clone(&m);
                    thread::spawn(move || *m.lock().unwrap() += 1)
                },
                {
                    let m = Arc::clone(&m);
                    thread::spawn(move || m.run(|v| *v += 1).unwrap())
                },
            ];
            // Wait (running) until both wait, for at most 200 ms.
            let start = std::time::Instant::now();
            while proxy_lock::test_hooks::spinner_and_published_sections(m.raw()) != (true, true)
                && start.elapsed() < Duration::from_millis(200)
            {
                std::hint::spin_loop();
            }
            let code = fork_and_wait(Duration::from_secs(10), || {
                let (spinner, sections) =
                    proxy_lock::test_hooks::spinner_and_published_sections(m.raw());
                drop(guard);
                let Some(mut g) = m.try_lock_for(Duration::from_secs(2)).ok() else {
                    return 10; // handed to a thread that does not exist here
                };
                if *g != before {
                    return 11; // the parent's section ran in the child
                }
                *g += 100;
                drop(g);
                let m2 = Arc::clone(&m);
                let helper = thread::spawn(move || m2.run(|v| *v += 1).unwrap());
                helper.join().unwrap();
                if *m.lock().unwrap() != before + 101 {
                    return 12;
                }
                i32::from(spinner) | i32::from(sections) << 1
            });
            // The parent's guard went with the closure, unused here: the lock is free again.
            for w in waiters {
                w.join().unwrap();
            }
            code
        })
        .join()
        .unwrap();
        match code {
            Some(c @ 0..=3) => {
                spinners += c & 1;
                sections += c >> 1;
            }
            None => panic!("round {round}: the child hung"),
            Some(c) => panic!("round {round}: the child failed with {c}"),
        }
    }
    assert_eq!(*m.lock().unwrap(), 2 * ROUNDS as u64);
    // The fork itself often makes the spinner give up (the owner stops running during it), so
    // a registered spinner reaches a child only now and then; published sections always do.
    eprintln!(
        "of {ROUNDS} children, {spinners} inherited a registered spinner, {sections} a published section"
    );
    assert!(sections > 0, "no child inherited a published section");
}
