//! `Mutex::run`: exactly once, results, borrowed captures, panics and poisoning, mixed guard and
//! closure users, and proof that sections really run by proxy.

use proxy_lock::{Condvar, Mutex, Policy};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

const POLICIES: [Policy; 3] = [Policy::Spin, Policy::Handoff, Policy::Adaptive];

/// Every call increments the counter once and gets back the value it saw, so a section run
/// twice, lost, or run concurrently with another shows up as a wrong total or a repeated value.
#[test]
fn exactly_once_under_contention() {
    let threads = 8;
    let calls = 250_000;
    for policy in POLICIES {
        let m = Mutex::with_policy(0u64, policy);
        let seen: Vec<Vec<u64>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    s.spawn(|| {
                        (0..calls)
                            .map(|_| {
                                m.run(|v| {
                                    *v += 1;
                                    *v
                                })
                                .unwrap()
                            })
                            .collect::<Vec<u64>>()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let total = threads as u64 * calls;
        assert_eq!(*m.lock().unwrap(), total, "{policy:?}");
        let mut all: Vec<u64> = seen.into_iter().flatten().collect();
        all.sort_unstable();
        assert!(
            all.iter().copied().eq(1..=total),
            "{policy:?}: every value exactly once"
        );
    }
}

#[test]
fn returns_results_and_borrows_the_callers_stack() {
    let m = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for t in 0..4u32 {
            let m = &m;
            s.spawn(move || {
                let mine: Vec<u32> = (0..100).map(|i| t * 1000 + i).collect();
                for x in &mine {
                    // Borrowed: `x` points into this thread's `mine`.
                    let len = m
                        .run(|v| {
                            v.push(*x);
                            v.len()
                        })
                        .unwrap();
                    assert!(len >= 1);
                }
                // A non-Copy result travels back.
                let copy = m.run(|v| v.clone()).unwrap();
                assert!(mine.iter().all(|x| copy.contains(x)));
            });
        }
    });
    assert_eq!(m.lock().unwrap().len(), 400);
}

#[test]
fn panic_delivers_payload_poisons_and_spares_the_proxy() {
    for policy in POLICIES {
        let m = Mutex::with_policy(0u32, policy);
        let payload = catch_unwind(AssertUnwindSafe(|| {
            m.run(|_| std::panic::panic_any(42u8)).ok();
        }))
        .unwrap_err();
        assert_eq!(payload.downcast_ref::<u8>(), Some(&42));
        assert!(m.is_poisoned());
        // Poisoned: the section still runs, its result comes back inside the error.
        let r = m.run(|v| {
            *v += 1;
            *v
        });
        assert_eq!(r.unwrap_err().into_inner(), 1);
        m.clear_poison();
        assert_eq!(m.run(|v| *v).unwrap(), 1);
    }
}

/// Sections published behind a held guard run on the guard holder's thread (its unlock
/// serves them); one of them panics. The proxy carries on, the panicking caller gets its own
/// payload, the others their results.
#[test]
fn panic_in_a_proxied_section_reaches_its_caller_only() {
    let m = Mutex::with_policy(0u32, Policy::Handoff);
    let guard = m.lock().unwrap();
    let before = proxy_lock::counters().proxied;
    let (ok, err) = std::thread::scope(|s| {
        let ok = s.spawn(|| {
            m.run(|v| {
                *v += 1;
                std::thread::current().id()
            })
        });
        let err = s.spawn(|| {
            catch_unwind(AssertUnwindSafe(|| {
                m.run(|_: &mut u32| -> () { panic!("section failed") })
            }))
        });
        // Both published and asleep (blocked on the lock) while we hold it.
        while sleeping_in(&m) < 2 {
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(guard); // our unlock runs both sections
        (ok.join().unwrap(), err.join().unwrap())
    });
    let payload = err.unwrap_err();
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"section failed"));
    // The successful one ran on this thread, by proxy.
    let ran_on = ok.unwrap_or_else(|e| e.into_inner());
    assert_eq!(ran_on, std::thread::current().id());
    assert!(proxy_lock::counters().proxied >= before + 2);
    assert!(m.is_poisoned());
    assert_eq!(*m.lock().unwrap_or_else(|e| e.into_inner()), 1);
}

/// Guard users and `run` users on one mutex: a two-field invariant that any overlap breaks.
#[test]
fn guards_and_sections_exclude_each_other() {
    for policy in POLICIES {
        let m = Mutex::with_policy((0u64, 0u64), policy);
        let overlap = AtomicBool::new(false);
        let inside = AtomicUsize::new(0);
        let check = |pair: &mut (u64, u64)| {
            if inside.fetch_add(1, Ordering::SeqCst) != 0 || pair.0 != pair.1 {
                overlap.store(true, Ordering::SeqCst);
            }
            pair.0 += 1;
            std::hint::spin_loop();
            pair.1 += 1;
            inside.fetch_sub(1, Ordering::SeqCst);
        };
        std::thread::scope(|s| {
            for t in 0..6 {
                let (m, check) = (&m, &check);
                s.spawn(move || {
                    for _ in 0..20_000 {
                        if t % 2 == 0 {
                            m.run(|p| check(p)).unwrap();
                        } else {
                            check(&mut m.lock().unwrap());
                        }
                    }
                });
            }
        });
        assert!(
            !overlap.load(Ordering::SeqCst),
            "{policy:?}: sections overlapped"
        );
        let (a, b) = *m.lock().unwrap();
        assert_eq!((a, b), (120_000, 120_000), "{policy:?}");
    }
}

/// With more threads than CPUs, sections that take a while, and 300 ms of running, some
/// sections are run by another thread: the caller sees a different runner, and the counter
/// counts it.
#[test]
fn sections_run_by_proxy_under_contention() {
    let m = Mutex::with_policy(0u64, Policy::Handoff);
    let before = proxy_lock::counters().proxied;
    let ran_elsewhere = AtomicUsize::new(0);
    let calls = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let threads = 6;
    let start = Barrier::new(threads + 1);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                start.wait();
                let me = std::thread::current().id();
                while !stop.load(Ordering::Relaxed) {
                    let runner = m
                        .run(|v| {
                            for _ in 0..200 {
                                *v = std::hint::black_box(*v);
                            }
                            *v += 1;
                            std::thread::current().id()
                        })
                        .unwrap();
                    calls.fetch_add(1, Ordering::Relaxed);
                    if runner != me {
                        ran_elsewhere.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        start.wait();
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
    });
    let calls = calls.load(Ordering::Relaxed) as u64;
    assert_eq!(*m.lock().unwrap(), calls);
    let elsewhere = ran_elsewhere.load(Ordering::Relaxed) as u64;
    let counted = proxy_lock::counters().proxied - before;
    println!("{elsewhere} of {calls} sections ran on another thread");
    assert!(elsewhere > 0, "no section ran by proxy");
    // The counter is process-wide (other tests run in parallel), so at least ours.
    assert!(counted >= elsewhere);
}

/// `run` on a mutex this thread holds would wait for itself: it panics, as `lock()` does.
#[test]
fn run_while_holding_the_lock_panics() {
    let m = Mutex::new(0);
    let _g = m.lock().unwrap();
    let err = catch_unwind(AssertUnwindSafe(|| m.run(|v| *v))).unwrap_err();
    let msg = err.downcast_ref::<String>().unwrap();
    assert!(msg.contains("already holds"), "{msg}");
}

/// A section may use other locks, and `run` inside a section on another mutex works whether
/// the section runs on its caller or by proxy.
#[test]
fn nested_run_on_another_mutex() {
    let outer = Mutex::with_policy(0u64, Policy::Handoff);
    let inner = Mutex::with_policy(0u64, Policy::Handoff);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..5_000 {
                    outer
                        .run(|o| {
                            *o += 1;
                            inner.run(|i| *i += 1).unwrap();
                        })
                        .unwrap();
                }
            });
        }
    });
    assert_eq!(*outer.lock().unwrap(), 20_000);
    assert_eq!(*inner.lock().unwrap(), 20_000);
}

/// A Condvar waiter holding the mutex serves published sections before it sleeps, and the
/// sections' effects wake it.
#[test]
fn condvar_waiters_and_sections() {
    let m = Mutex::with_policy(Vec::<u32>::new(), Policy::Handoff);
    let cv = Condvar::new();
    let n = 20_000;
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut got = 0;
            while got < 2 * n {
                let mut q = cv.wait_while(m.lock().unwrap(), |q| q.is_empty()).unwrap();
                got += q.drain(..).count();
            }
        });
        for _ in 0..2 {
            s.spawn(|| {
                for i in 0..n {
                    m.run(|q| q.push(i as u32)).unwrap();
                    cv.notify_one();
                }
            });
        }
    });
}

/// Sections published one after another behind a held lock run in publication order.
#[test]
fn sections_run_in_publication_order() {
    let m = Mutex::with_policy(Vec::new(), Policy::Handoff);
    let guard = m.lock().unwrap();
    std::thread::scope(|s| {
        for i in 0..5u32 {
            let m = &m;
            s.spawn(move || m.run(|v| v.push(i)).unwrap());
            // The next caller publishes only once this one sleeps (published).
            while sleeping_in(m) < i as usize + 1 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        drop(guard);
    });
    assert_eq!(*m.lock().unwrap(), vec![0, 1, 2, 3, 4]);
}

/// How many threads sleep on `m`: a `run` caller that sleeps is blocked on the lock.
fn sleeping_in<T>(m: &Mutex<T>) -> usize {
    proxy_lock::snapshot()
        .threads()
        .iter()
        .filter(|t| t.waits_for.map(|w| w.lock) == Some(m.id()))
        .count()
}
