//! Deadlock detection: a chain walk that comes back to the walker panics with the cycle
//! spelled out, and only then (no false positives under a consistent lock order, none through
//! a timed wait).

use proxy_lock::{Mutex, RwLock, current_tid};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

/// Runs `n` threads; thread `i` takes lock `i`, then (after all hold their first) lock
/// `(i + 1) % n`. Returns each thread's tid and the panic message it got, if any.
fn ring(n: usize) -> Vec<(i32, Option<String>)> {
    let locks: Arc<Vec<Mutex<()>>> = Arc::new((0..n).map(|_| Mutex::new(())).collect());
    let barrier = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let (locks, barrier) = (Arc::clone(&locks), Arc::clone(&barrier));
            thread::Builder::new()
                .name(format!("ring-{i}"))
                .spawn(move || {
                    let first = locks[i].lock().unwrap();
                    barrier.wait();
                    let outcome = catch_unwind(AssertUnwindSafe(|| {
                        drop(locks[(i + 1) % n].lock());
                    }));
                    drop(first);
                    let message = outcome.err().map(|p| {
                        p.downcast_ref::<String>()
                            .cloned()
                            .unwrap_or_else(|| "non-string panic".into())
                    });
                    (current_tid(), message)
                })
                .unwrap()
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

fn check_ring(n: usize) {
    let outcome = ring(n);
    let messages: Vec<&String> = outcome.iter().filter_map(|(_, m)| m.as_ref()).collect();
    assert!(!messages.is_empty(), "a {n}-thread cycle must be reported");
    for message in messages {
        assert!(message.contains("deadlock"), "{message}");
        for (tid, _) in &outcome {
            assert!(
                message.contains(&format!("thread {tid} \"ring-")),
                "{message} names every thread on the cycle"
            );
        }
        assert_eq!(
            message.matches("lock@").count(),
            n,
            "{message} names every lock"
        );
    }
}

#[test]
fn a_two_thread_cycle_panics_naming_it() {
    check_ring(2);
}

#[test]
fn a_three_thread_cycle_panics_naming_it() {
    check_ring(3);
}

#[test]
fn a_cycle_through_a_timed_wait_is_not_a_deadlock() {
    let (a, b) = (Arc::new(Mutex::new(())), Arc::new(Mutex::new(())));
    let barrier = Arc::new(Barrier::new(2));
    let (a2, b2, barrier2) = (Arc::clone(&a), Arc::clone(&b), Arc::clone(&barrier));
    let timed = thread::spawn(move || {
        let _ga = a2.lock().unwrap();
        barrier2.wait();
        // Waits for B with a deadline; the other thread then closes the cycle.
        b2.try_lock_for(Duration::from_millis(300)).is_ok()
    });
    let _gb = b.lock().unwrap();
    barrier.wait();
    thread::sleep(Duration::from_millis(50));
    // This closes the cycle, but the other wait will time out, so it must just wait.
    drop(a.lock().unwrap());
    assert!(!timed.join().unwrap());
}

#[test]
fn a_consistent_lock_order_never_reports_a_deadlock() {
    const LOCKS: usize = 6;
    let locks: Arc<Vec<Mutex<u64>>> = Arc::new((0..LOCKS).map(|_| Mutex::new(0)).collect());
    let end = Instant::now() + Duration::from_millis(1500);
    let threads: Vec<_> = (0..6u64)
        .map(|seed| {
            let locks = Arc::clone(&locks);
            thread::spawn(move || {
                let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                let mut rounds = 0u64;
                while Instant::now() < end {
                    // A random subset of the locks, always taken in index order.
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let guards: Vec<_> = (0..LOCKS)
                        .filter(|i| x >> i & 1 == 1)
                        .map(|i| locks[i].lock().unwrap())
                        .collect();
                    if x % 7 == 0 {
                        thread::yield_now(); // a longer hold now and then
                    }
                    drop(guards);
                    rounds += 1;
                }
                rounds
            })
        })
        .collect();
    let rounds: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(rounds > 0);
}

/// A cycle closed by `Mutex::run`: thread 0 holds lock 0 and runs a section on lock 1, thread 1
/// holds lock 1 and locks lock 0. The cycle is reported; a `run` caller that reports it first
/// withdraws its section, which then never runs (its borrowed flag is gone by then), and the
/// other thread finishes once the panic released lock 0.
#[test]
fn a_cycle_through_run_is_reported_and_the_section_withdrawn() {
    let locks = Arc::new([Mutex::new(()), Mutex::new(())]);
    let barrier = Arc::new(Barrier::new(2));
    let spawn = |i: usize| {
        let (locks, barrier) = (Arc::clone(&locks), Arc::clone(&barrier));
        thread::Builder::new()
            .name(format!("run-ring-{i}"))
            .spawn(move || {
                let first = locks[i].lock().unwrap();
                barrier.wait();
                let mut ran = false;
                let outcome = catch_unwind(AssertUnwindSafe(|| {
                    if i == 0 {
                        locks[1].run(|_| ran = true).unwrap();
                    } else {
                        drop(locks[0].lock());
                    }
                }));
                drop(first);
                let message = outcome.err().map(|p| {
                    p.downcast_ref::<String>()
                        .cloned()
                        .unwrap_or_else(|| "non-string panic".into())
                });
                (message, ran)
            })
            .unwrap()
    };
    let (a, b) = (spawn(0), spawn(1));
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    eprintln!(
        "run caller reported: {}, lock caller reported: {}",
        a.0.is_some(),
        b.0.is_some()
    );
    let reported: Vec<&String> = [&a.0, &b.0].into_iter().flatten().collect();
    assert!(!reported.is_empty(), "the cycle must be reported");
    for m in reported {
        assert!(m.contains("deadlock") && m.contains("run-ring-"), "{m}");
    }
    if a.0.is_some() {
        assert!(!a.1, "a withdrawn section must not run");
    }
    // Both locks work afterwards; lock 1's next unlock unlinks the withdrawn request.
    locks[1].run(|_| ()).unwrap();
    drop(locks[0].lock().unwrap());
}

/// A `run` caller that withdrew its section on a deadlock exits while its slot is still linked
/// on the other lock's request stack (that lock's holder has not unlocked yet). The holder's
/// later unlock unlinks the slot, which must still be there: the exiting thread keeps its
/// record (`scripts/test.sh` runs this under memcheck).
#[test]
fn a_withdrawn_section_outlives_its_thread() {
    for _ in 0..50 {
        let locks = Arc::new([Mutex::new(()), Mutex::new(())]);
        let barrier = Arc::new(Barrier::new(2));
        let (go, wait_for_go) = std::sync::mpsc::channel::<()>();
        let (l, b) = (Arc::clone(&locks), Arc::clone(&barrier));
        let runner = thread::spawn(move || {
            let first = l[0].lock().unwrap();
            b.wait();
            let reported = catch_unwind(AssertUnwindSafe(|| l[1].run(|_| ()))).is_err();
            drop(first);
            reported
        });
        let (l, b) = (Arc::clone(&locks), Arc::clone(&barrier));
        let locker = thread::spawn(move || {
            let first = l[1].lock().unwrap();
            b.wait();
            let reported = catch_unwind(AssertUnwindSafe(|| drop(l[0].lock()))).is_err();
            if !reported {
                // The runner withdrew and left lock 0: hold lock 1 until it has exited.
                let _ = wait_for_go.recv();
            }
            drop(first); // this unlock unlinks a withdrawn section
            reported
        });
        let run_reported = runner.join().unwrap();
        // Let epoch reclamation free whatever the runner's exit retired, so that touching a
        // freed record below is a real use-after-free (which memcheck reports).
        for _ in 0..256 {
            crossbeam_epoch::pin().flush();
        }
        let _ = go.send(());
        let lock_reported = locker.join().unwrap();
        locks[1].run(|_| ()).unwrap();
        drop(locks[0].lock().unwrap());
        if run_reported && !lock_reported {
            return; // the runner exited with its withdrawn slot still linked
        }
    }
    panic!("in 50 tries the run caller never reported the cycle alone");
}

/// Returns once some thread sleeps on the lock `id` (5 s at most).
fn until_someone_waits_on(id: proxy_lock::LockId) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !proxy_lock::snapshot()
        .threads()
        .iter()
        .any(|t| t.waits_for.is_some_and(|w| w.lock == id))
    {
        assert!(Instant::now() < deadline, "nobody waited on {id}");
        thread::sleep(Duration::from_millis(1));
    }
}

/// Runs `f` and returns its panic message, if it panicked.
fn panic_of(f: impl FnOnce()) -> Option<String> {
    catch_unwind(AssertUnwindSafe(f)).err().map(|e| {
        e.downcast_ref::<String>()
            .cloned()
            .unwrap_or_else(|| "non-string panic".into())
    })
}

/// A reader of an `RwLock` waits for a mutex whose owner waits to write that `RwLock`: one of
/// the two reports the cycle, naming both threads, and the other then gets its lock.
#[test]
fn a_cycle_through_a_read_held_rwlock_panics_naming_it() {
    let (rw, m) = (Arc::new(RwLock::new(())), Arc::new(Mutex::new(())));
    let barrier = Arc::new(Barrier::new(2));
    let (rw2, m2, barrier2) = (Arc::clone(&rw), Arc::clone(&m), Arc::clone(&barrier));
    let reader = thread::spawn(move || {
        panic_of(|| {
            let _r = rw2.read().unwrap();
            barrier2.wait();
            // Poisoned if the other thread panicked holding it: that is the report.
            drop(m2.lock());
        })
    });
    let writer_message = panic_of(|| {
        let _g = m.lock().unwrap();
        barrier.wait();
        drop(rw.write());
    });
    let messages: Vec<String> = [reader.join().unwrap(), writer_message]
        .into_iter()
        .flatten()
        .collect();
    assert!(!messages.is_empty(), "the cycle must be reported");
    for message in messages {
        assert!(message.contains("deadlock"), "{message}");
        assert_eq!(message.matches("lock@").count(), 2, "{message}");
    }
}

/// Reading again while holding a read lock, with a writer parked in between, can never end:
/// the writer waits for the first read lock, the second read for the writer. It is reported.
#[test]
fn reading_again_behind_a_parked_writer_is_reported() {
    let rw = Arc::new(RwLock::new(0));
    let first = rw.read().unwrap();
    let rw2 = Arc::clone(&rw);
    let writer = thread::spawn(move || *rw2.write().unwrap() += 1);
    until_someone_waits_on(rw.id());
    let message = panic_of(|| drop(rw.read().unwrap())).expect("a deadlock panic");
    assert!(message.contains("deadlock"), "{message}");
    let lock = rw.id();
    assert!(
        message.contains(&format!("waits for {lock} behind thread")),
        "{message}"
    );
    assert!(
        message.contains(&format!("waits for {lock} held by thread")),
        "{message}"
    );
    drop(first);
    writer.join().unwrap();
    assert_eq!(*rw.read().unwrap(), 1);
}

/// The same with a writer that waits with a deadline: its wait ends, so the second read just
/// waits for it.
#[test]
fn reading_again_behind_a_timed_writer_is_not_a_deadlock() {
    let rw = Arc::new(RwLock::new(()));
    let first = rw.read().unwrap();
    let rw2 = Arc::clone(&rw);
    let writer = thread::spawn(move || rw2.try_write_for(Duration::from_millis(300)).is_ok());
    until_someone_waits_on(rw.id());
    drop(rw.read().unwrap());
    drop(first);
    assert!(!writer.join().unwrap(), "the writer timed out");
}

/// Mutexes and rwlocks (read or write, at random) always taken in one order: never a report.
#[test]
fn a_consistent_order_of_mutexes_and_rwlocks_never_reports_a_deadlock() {
    const LOCKS: usize = 6;
    let mutexes: Arc<Vec<Mutex<u64>>> = Arc::new((0..LOCKS).map(|_| Mutex::new(0)).collect());
    let rwlocks: Arc<Vec<RwLock<u64>>> = Arc::new((0..LOCKS).map(|_| RwLock::new(0)).collect());
    let end = Instant::now() + Duration::from_millis(1500);
    let threads: Vec<_> = (0..6u64)
        .map(|seed| {
            let (mutexes, rwlocks) = (Arc::clone(&mutexes), Arc::clone(&rwlocks));
            thread::spawn(move || {
                let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                let mut rounds = 0u64;
                while Instant::now() < end {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    // Lock i is mutex i or rwlock i (read or write), in index order.
                    let (mut m, mut w, mut r) = (Vec::new(), Vec::new(), Vec::new());
                    for i in (0..LOCKS).filter(|i| x >> i & 1 == 1) {
                        match x >> (16 + 2 * i) & 3 {
                            0 => m.push(mutexes[i].lock().unwrap()),
                            1 => w.push(rwlocks[i].write().unwrap()),
                            _ => r.push(rwlocks[i].read().unwrap()),
                        }
                    }
                    if x % 7 == 0 {
                        thread::yield_now();
                    }
                    drop((m, w, r));
                    rounds += 1;
                }
                rounds
            })
        })
        .collect();
    let rounds: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(rounds > 0);
}
