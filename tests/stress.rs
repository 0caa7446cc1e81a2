//! Many threads, many locks, all three policies, guards, timed locks and condvars together. The
//! counters must come out exact, and a watchdog turns a hang into a failure.

use proxy_lock::{Condvar, Mutex, Policy};
use std::sync::Arc;
use std::sync::mpsc::channel;
use std::thread;
use std::time::Duration;

const THREADS: usize = 12;
const ITERS: usize = 20_000;

/// Runs `f` on a helper thread and fails the test if it does not finish in time.
fn with_watchdog(secs: u64, f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = channel();
    let h = thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(()) => h.join().unwrap(),
        Err(_) if h.is_finished() => h.join().unwrap(), // the body panicked: report that
        Err(_) => panic!("stress run hung for {secs} s"),
    }
}

#[test]
fn counters_are_exact_under_every_policy() {
    with_watchdog(120, || {
        let locks: Arc<Vec<Mutex<(u64, u64)>>> = Arc::new(
            (0..9)
                .map(|i| {
                    Mutex::with_policy(
                        (0, 0),
                        [Policy::Spin, Policy::Handoff, Policy::Adaptive][i % 3],
                    )
                })
                .collect(),
        );
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let locks = Arc::clone(&locks);
                thread::spawn(move || {
                    let mut x = t as u64 * 7919 + 1;
                    for i in 0..ITERS {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let a = (x % 9) as usize;
                        let b = ((x >> 8) % 9) as usize;
                        let (lo, hi) = (a.min(b), a.max(b));
                        // Nested locks in a consistent order; a torn pair would break the
                        // (count, count) invariant.
                        let mut g1 = locks[lo].lock().unwrap();
                        g1.0 += 1;
                        if hi != lo {
                            let mut g2 = if i % 5 == 0 {
                                locks[hi].try_lock_for(Duration::from_secs(60)).unwrap()
                            } else {
                                locks[hi].lock().unwrap()
                            };
                            g2.0 += 1;
                            g2.1 += 1;
                        }
                        g1.1 += 1;
                        if i % 97 == 0 {
                            thread::yield_now(); // a longer hold now and then
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let mut total = 0;
        for m in locks.iter() {
            let g = m.lock().unwrap();
            assert_eq!(g.0, g.1, "a critical section overlapped another");
            total += g.0;
        }
        assert!(total >= (THREADS * ITERS) as u64);
    });
}

#[test]
fn bounded_queue_with_condvars_loses_nothing() {
    for policy in [Policy::Spin, Policy::Handoff, Policy::Adaptive] {
        with_watchdog(120, move || {
            struct Q {
                items: Mutex<std::collections::VecDeque<u64>>,
                not_empty: Condvar,
                not_full: Condvar,
            }
            let q = Arc::new(Q {
                items: Mutex::with_policy(Default::default(), policy),
                not_empty: Condvar::new(),
                not_full: Condvar::new(),
            });
            const PRODUCERS: u64 = 6;
            const PER: u64 = 5_000;
            let producers: Vec<_> = (0..PRODUCERS)
                .map(|p| {
                    let q = Arc::clone(&q);
                    thread::spawn(move || {
                        for i in 0..PER {
                            let mut g = q
                                .not_full
                                .wait_while(q.items.lock().unwrap(), |v| v.len() >= 16)
                                .unwrap();
                            g.push_back(p * PER + i);
                            drop(g);
                            q.not_empty.notify_one();
                        }
                    })
                })
                .collect();
            let consumers: Vec<_> = (0..3)
                .map(|_| {
                    let q = Arc::clone(&q);
                    thread::spawn(move || {
                        let (mut sum, mut n) = (0u64, 0u64);
                        loop {
                            let mut g = q.items.lock().unwrap();
                            while g.is_empty() {
                                // timed waits exercise the timeout and requeue paths together
                                g = q
                                    .not_empty
                                    .wait_timeout(g, Duration::from_millis(3))
                                    .unwrap()
                                    .0;
                            }
                            let v = g.pop_front().unwrap();
                            drop(g);
                            q.not_full.notify_all();
                            if v == u64::MAX {
                                return (sum, n);
                            }
                            sum += v;
                            n += 1;
                        }
                    })
                })
                .collect();
            for p in producers {
                p.join().unwrap();
            }
            for _ in 0..3 {
                let mut g = q
                    .not_full
                    .wait_while(q.items.lock().unwrap(), |v| v.len() >= 16)
                    .unwrap();
                g.push_back(u64::MAX);
                drop(g);
                q.not_empty.notify_all();
            }
            let (mut sum, mut n) = (0, 0);
            for c in consumers {
                let (s, k) = c.join().unwrap();
                sum += s;
                n += k;
            }
            let total = PRODUCERS * PER;
            assert_eq!(n, total, "{policy:?}: items lost or duplicated");
            assert_eq!(sum, total * (total - 1) / 2, "{policy:?}: items corrupted");
        });
    }
}

/// Task records are freed when their threads exit, while other threads may be reading them
/// through a lock word (`owner_tid`) or the registry (`thread_blocked_on`). Readers hammer both
/// while short-lived threads lock, block and exit; every answer must be a plausible tid.
#[test]
fn records_survive_readers_while_threads_exit() {
    use std::sync::atomic::{AtomicBool, Ordering};
    with_watchdog(120, || {
        let m = Arc::new(Mutex::new(0u64));
        let stop = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (m, stop) = (Arc::clone(&m), Arc::clone(&stop));
                thread::spawn(move || {
                    let mut seen = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        thread::yield_now(); // let workers run on machines with few CPUs
                        if let Some(tid) = m.owner_tid() {
                            assert!(tid > 0, "garbage owner tid {tid}");
                            seen += 1;
                            let _ = proxy_lock::thread_blocked_on(tid);
                        }
                    }
                    seen
                })
            })
            .collect();
        // STRESS_EXIT_ROUNDS shrinks the run for slow checkers (valgrind serialises threads).
        let rounds: u64 = std::env::var("STRESS_EXIT_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(200);
        for _ in 0..rounds {
            let workers: Vec<_> = (0..4)
                .map(|_| {
                    let m = Arc::clone(&m);
                    thread::spawn(move || {
                        for i in 0..50 {
                            let mut g = m.lock().unwrap();
                            *g += 1;
                            if i % 8 == 0 {
                                thread::yield_now(); // hold it a moment so readers see an owner
                            }
                        }
                    })
                })
                .collect();
            workers.into_iter().for_each(|w| w.join().unwrap());
        }
        stop.store(true, Ordering::Relaxed);
        let seen: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
        assert_eq!(*m.lock().unwrap(), rounds * 4 * 50);
        assert!(
            seen > 0,
            "readers never saw an owner; the test exercised nothing"
        );
    });
}

/// A `Handoff` sleeper's patience: a thread that parks stamps when it started waiting, and an
/// unlocker that serves the first sleeper restarts the next one's patience. What an unlock
/// reads to decide that a sleeper has been passed over for spinners long enough
/// (`mutex::raw::handoff`). Two sleepers queue behind main; after 20 ms the first has waited
/// about that long (not less, not since long before it came); main's unlock serves it, and the
/// second's wait counts from that unlock, not from when it parked.
#[test]
fn a_handoff_sleepers_patience_counts_from_its_park_and_restarts_when_one_is_served() {
    use proxy_lock::test_hooks::handoff_first_sleeper_waited_us as waited_us;
    use proxy_lock::{current_tid, thread_blocked_on};
    let m = Arc::new(Mutex::with_policy((), Policy::Handoff));
    let guard = m.lock().unwrap();
    assert_eq!(waited_us(m.raw()), None);
    let (release_tx, release) = channel::<()>();
    let arrived = std::time::Instant::now();
    let sleepers: Vec<_> = [Some(release), None]
        .into_iter()
        .map(|hold| {
            let mine = Arc::clone(&m);
            let (tid_tx, tid) = channel();
            let t = thread::spawn(move || {
                tid_tx.send(current_tid()).unwrap();
                let _g = mine.lock().unwrap();
                if let Some(hold) = hold {
                    hold.recv().unwrap();
                }
            });
            let tid = tid.recv().unwrap();
            // Queued (the spin in the slot ends within microseconds while main holds on).
            while thread_blocked_on(tid) != Some(m.id()) || waited_us(m.raw()).is_none() {
                thread::yield_now();
            }
            thread::sleep(Duration::from_millis(2));
            (t, tid)
        })
        .collect();
    thread::sleep(Duration::from_millis(20));
    let first = waited_us(m.raw()).expect("two sleepers are queued");
    assert!(
        (20_000..=arrived.elapsed().as_micros() as u32 + 2).contains(&first),
        "the first sleeper's patience reads {first} µs"
    );
    let served = std::time::Instant::now();
    drop(guard);
    while m.owner_tid() != Some(sleepers[0].1) {
        thread::yield_now();
    }
    let second = waited_us(m.raw()).expect("the second sleeper is still queued");
    assert!(
        second <= served.elapsed().as_micros() as u32 + 2,
        "the second sleeper's patience did not restart when the first was served: {second} µs"
    );
    release_tx.send(()).unwrap();
    for (t, _) in sleepers {
        t.join().unwrap();
    }
}
