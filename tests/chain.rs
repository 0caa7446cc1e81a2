//! The blocked_on graph snapshot: chains, cycles, and reading edges safely while waiters leave
//! and locks are freed.

use proxy_lock::{Mutex, Snapshot, current_tid, snapshot};
use std::sync::mpsc::channel;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

/// Takes snapshots until `done` holds for one, or fails after 20 s.
fn snapshot_until(what: &str, done: impl Fn(&Snapshot) -> bool) -> Snapshot {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = snapshot();
        if done(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "never saw {what}; last snapshot:\n{s}"
        );
        thread::sleep(Duration::from_millis(1));
    }
}

fn spawn_named<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> thread::JoinHandle<T> {
    thread::Builder::new().name(name.into()).spawn(f).unwrap()
}

#[test]
fn a_two_deep_chain_prints_names_locks_and_owners() {
    let a = Arc::new(Mutex::new(()));
    let b = Arc::new(Mutex::new(()));
    // We hold A. "stage-2" holds B and waits for A. "front" waits for B.
    let guard_a = a.lock().unwrap();
    let (b_held_tx, b_held_rx) = channel();
    let (a2, b2) = (Arc::clone(&a), Arc::clone(&b));
    let stage2 = spawn_named("stage-2", move || {
        let _gb = b2.lock().unwrap();
        b_held_tx.send(current_tid()).unwrap();
        drop(a2.lock().unwrap());
    });
    let stage2_tid = b_held_rx.recv().unwrap();
    let b3 = Arc::clone(&b);
    let front = spawn_named("front", move || {
        let tid = current_tid();
        drop(b3.lock().unwrap());
        tid
    });
    let s = snapshot_until("a 3-thread chain", |s| {
        s.chains().iter().any(|(c, cyclic)| c.len() == 3 && !cyclic)
    });
    let (chain, _) = s.chains().into_iter().find(|(c, _)| c.len() == 3).unwrap();
    assert_eq!(chain[1], stage2_tid);
    assert_eq!(chain[2], current_tid());
    let text = s.to_string();
    let line = text
        .lines()
        .find(|l| l.contains("\"front\""))
        .unwrap_or_else(|| panic!("{text}"));
    let expect = format!(
        "\"front\" -> {} held by {stage2_tid} \"stage-2\" -> {} held by {}",
        b.id(),
        a.id(),
        current_tid()
    );
    assert!(line.contains(&expect), "line {line:?} lacks {expect:?}");
    assert!(line.ends_with("(running)"), "{line}");
    drop(guard_a);
    stage2.join().unwrap();
    let front_tid = front.join().unwrap();
    // Everyone is done: nobody waits any more.
    let s = snapshot();
    assert!(
        s.threads()
            .iter()
            .all(|t| t.waits_for.is_none() || t.tid != front_tid)
    );
}

#[test]
fn a_cycle_is_reported_as_one() {
    // A real lock-order inversion between two threads, made with timed locks so the test ends.
    let l1 = Arc::new(Mutex::new(()));
    let l2 = Arc::new(Mutex::new(()));
    let both_hold = Arc::new(Barrier::new(2));
    let spawn = |first: &Arc<Mutex<()>>, second: &Arc<Mutex<()>>, name: &str| {
        let (first, second, both) = (
            Arc::clone(first),
            Arc::clone(second),
            Arc::clone(&both_hold),
        );
        spawn_named(name, move || {
            let _g = first.lock().unwrap();
            both.wait();
            // The first to time out releases its lock, and the other may then get it.
            let _ = second.try_lock_for(Duration::from_millis(1500));
        })
    };
    let t1 = spawn(&l1, &l2, "left");
    let t2 = spawn(&l2, &l1, "right");
    let s = snapshot_until("a cycle", |s| s.chains().iter().any(|(_, cyclic)| *cyclic));
    let text = s.to_string();
    let line = text.lines().find(|l| l.contains("cycle")).unwrap();
    assert!(
        line.contains("\"left\"") && line.contains("\"right\""),
        "{line}"
    );
    assert!(
        line.contains(&l1.id().to_string()) && line.contains(&l2.id().to_string()),
        "{line}"
    );
    t1.join().unwrap();
    t2.join().unwrap();
}

/// The handshake that keeps a waited-for lock alive while a walker reads it: a waiter whose
/// lock is released must not finish its wait (after which it may free the lock) while a walker
/// is still inside. The walker stays inside for 100 ms; without the handshake the waiter is
/// done about a millisecond after the release.
#[test]
fn a_waiter_cannot_finish_its_wait_while_a_walker_reads_its_lock() {
    let m = Arc::new(Mutex::new(()));
    let guard = m.lock().unwrap();
    let (tid_tx, tid_rx) = channel();
    let m2 = Arc::clone(&m);
    let waiter = thread::spawn(move || {
        tid_tx.send(current_tid()).unwrap();
        drop(m2.lock().unwrap());
        Instant::now()
    });
    let tid = tid_rx.recv().unwrap();
    snapshot_until("the waiter asleep", |s| {
        s.threads()
            .iter()
            .any(|t| t.tid == tid && t.waits_for.is_some())
    });
    let (inside_tx, inside_rx) = channel();
    let walker = thread::spawn(move || {
        let mut left = None;
        let ran = proxy_lock::test_hooks::inspect_wait_for_tests(tid, |_| {
            inside_tx.send(()).unwrap();
            thread::sleep(Duration::from_millis(100));
            left = Some(Instant::now());
        });
        (ran, left)
    });
    inside_rx.recv().unwrap();
    drop(guard); // the waiter may take the lock now, but not finish its wait
    let finished = waiter.join().unwrap();
    let (ran, left) = walker.join().unwrap();
    assert!(ran);
    let left = left.unwrap();
    assert!(
        finished >= left,
        "the waiter finished its wait {:?} before the walker left",
        left - finished
    );
}

/// Snapshots race against waiters that leave their waits and drop the mutex they waited on
/// (each round's mutexes are freed when the round ends). The test script runs this under
/// valgrind's memcheck, which reports any read of a freed mutex or task record.
#[test]
fn snapshots_never_read_freed_locks() {
    let rounds: usize = std::env::var("STRESS_EXIT_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = Arc::clone(&stop);
    let observer = thread::spawn(move || {
        let (mut edges, mut snapshots) = (0usize, 0usize);
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            let s = snapshot();
            snapshots += 1;
            for t in s.threads() {
                if let Some(w) = t.waits_for {
                    edges += 1;
                    // An owner never waits for the lock it holds (handoff clears first).
                    assert_ne!(w.owner, Some(t.tid), "{s}");
                }
            }
            thread::yield_now();
        }
        (snapshots, edges)
    });
    for _ in 0..rounds {
        let m = Arc::new(Mutex::new(0u32));
        let workers: Vec<_> = (0..3)
            .map(|_| {
                let m = Arc::clone(&m);
                thread::spawn(move || {
                    for i in 0..20 {
                        let mut g = m.lock().unwrap();
                        *g += 1;
                        if i % 4 == 0 {
                            thread::yield_now(); // let the others queue up behind us
                        }
                    }
                })
            })
            .collect();
        workers.into_iter().for_each(|w| w.join().unwrap());
        assert_eq!(*m.lock().unwrap(), 60);
    } // the round's mutex is freed here, possibly right after a waiter left it
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (snapshots, edges) = observer.join().unwrap();
    assert!(
        snapshots > 0 && edges > 0,
        "the observer saw no waiting thread; nothing was tested"
    );
}

#[path = "../benches/workloads/deep_chain.rs"]
#[allow(dead_code)] // std's reference chain is for the example
mod deep_chain;

/// A chain deeper than the walk that lends (1,500 threads on 64 KiB stacks, a nice-0 waiter at
/// the end lending to nice-19 owners as far as it may) is not a cycle: nobody panics, and it
/// unwinds. The ledger's walk over loans used to recurse once per hop (it overflowed such
/// stacks from depth 100) and to redo the whole chain for every owner at every step (800 deep:
/// 129 s). The 100 ms figure for 1,024 is the benchmark's (`examples/deep_chain.rs`); this
/// bound only catches that blow-up.
#[test]
fn a_chain_longer_than_the_walk_bound_unwinds_on_small_stacks() {
    let took = deep_chain::unwind_time(1_500);
    eprintln!("a 1,500-deep chain unwound in {took:?}");
    assert!(
        took < Duration::from_secs(5),
        "a 1,500-deep chain took {took:?}"
    );
}

/// A ring of 1,100 threads, each waiting for the next one's lock, is found and reported, like
/// a short one, although it is longer than a lending walk goes (1,024 hops): the thread that
/// closes it panics naming the cycle, and the others then go on. Rings of 1,025 or more used to
/// hang silently.
#[test]
fn a_cycle_longer_than_the_walk_bound_is_reported() {
    let reports = deep_chain::ring(1_100);
    assert!(!reports.is_empty(), "nobody reported the cycle");
    for r in &reports {
        assert!(
            r.contains("deadlock") && r.contains("the cycle of 1100 threads"),
            "unexpected panic: {r}"
        );
    }
}

/// A lock whose owner exited holding it (its guard forgotten) shows that in the snapshot,
/// not "(running)": the lock stays held for good, as std's would.
#[test]
fn an_owner_that_exited_holding_the_lock_is_shown_so() {
    let m = Arc::new(Mutex::new(()));
    let m2 = Arc::clone(&m);
    let owner = spawn_named("forgetful", move || {
        std::mem::forget(m2.lock().unwrap());
        current_tid()
    })
    .join()
    .unwrap();
    let m3 = Arc::clone(&m);
    let waiter = spawn_named("hopeful", move || {
        m3.try_lock_for(Duration::from_millis(500)).is_err()
    });
    let s = snapshot_until("the waiter on the abandoned lock", |s| {
        s.threads()
            .iter()
            .any(|t| t.waits_for.is_some_and(|w| w.owner == Some(owner)))
    });
    let text = s.to_string();
    assert!(
        text.contains(&format!(
            "held by {owner} (exited holding the lock: it stays held)"
        )),
        "{text}"
    );
    let wait = s
        .threads()
        .iter()
        .find_map(|t| t.waits_for.filter(|w| w.owner == Some(owner)))
        .unwrap();
    assert!(wait.owner_exited);
    assert!(waiter.join().unwrap(), "the abandoned lock stays held");
}
