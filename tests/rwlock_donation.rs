//! Donation through `RwLock`s with real threads and real attributes: a waiting writer lends to
//! every reader, waiting readers lend to the writer, and chains pass through rwlocks both ways.
//! Each test sets nice values and policies with the kernel's calls and reads the holders'
//! attributes back from `/proc/self/task/<tid>/stat`.
//!
//! They need CAP_SYS_NICE (CI runs as root). Without it, each test says so and skips.
#![cfg(donates)]

mod common;

use common::{
    Owner, asleep_on, asleep_on_lock, eventually, nice_of, privileged, sched_of, serial, set_nice,
    set_policy,
};
use proxy_lock::{LockId, Mutex, RwLock, current_tid};
use std::sync::Arc;
use std::sync::mpsc::channel;
use std::thread::{self, JoinHandle};

/// A thread that holds `lock` for reading (after `setup`) until released.
fn reader(lock: &Arc<RwLock<()>>, setup: impl FnOnce() + Send + 'static) -> Owner {
    let lock = Arc::clone(lock);
    Owner::holding("reader", setup, move |held| {
        let _r = lock.read().unwrap();
        held();
    })
}

/// A thread that holds `lock` for writing (after `setup`) until released.
fn writer(lock: &Arc<RwLock<()>>, setup: impl FnOnce() + Send + 'static) -> Owner {
    let lock = Arc::clone(lock);
    Owner::holding("writer", setup, move |held| {
        let _w = lock.write().unwrap();
        held();
    })
}

/// A thread that runs `setup`, then `take`s (and releases) a lock; returns once it sleeps on
/// the lock `id`.
fn waiter(
    id: LockId,
    setup: impl FnOnce() + Send + 'static,
    take: impl FnOnce() + Send + 'static,
) -> (i32, JoinHandle<()>) {
    let (tid_tx, tid_rx) = channel();
    let handle = thread::Builder::new()
        .name("waiter".into())
        .spawn(move || {
            setup();
            tid_tx.send(current_tid()).unwrap();
            take();
        })
        .unwrap();
    let tid = tid_rx.recv().unwrap();
    eventually("the waiter to sleep on the lock", || {
        asleep_on_lock(tid, id)
    });
    (tid, handle)
}

#[test]
fn a_waiting_writer_lends_to_every_reader_and_each_gets_its_own_back_at_its_unlock() {
    let _s = serial();
    if !privileged("a_waiting_writer_lends_to_every_reader") {
        return;
    }
    let lock = Arc::new(RwLock::new(()));
    let r1 = reader(&lock, || set_nice(10));
    let r2 = reader(&lock, || set_policy(0, libc::SCHED_IDLE, 0));
    assert_eq!(
        (nice_of(r1.tid), sched_of(r2.tid).0),
        (10, libc::SCHED_IDLE)
    );
    let l = Arc::clone(&lock);
    let (_, w) = waiter(lock.id(), || set_nice(-3), move || drop(l.write().unwrap()));
    assert_eq!(
        nice_of(r1.tid),
        -3,
        "the writer's nice is lent to the first reader"
    );
    assert_eq!(
        sched_of(r2.tid),
        (libc::SCHED_OTHER, -3, 0),
        "and to the second, out of SCHED_IDLE"
    );
    r1.release();
    assert_eq!(
        nice_of(r1.tid),
        10,
        "a reader gets its own back at its unlock"
    );
    assert_eq!(
        sched_of(r2.tid),
        (libc::SCHED_OTHER, -3, 0),
        "the other keeps the loan"
    );
    assert!(!w.is_finished());
    r2.release();
    w.join().unwrap();
    assert_eq!(
        sched_of(r2.tid),
        (libc::SCHED_IDLE, 0, 0),
        "back to SCHED_IDLE"
    );
    r1.finish();
    r2.finish();
}

#[test]
fn waiting_readers_lend_to_the_writer() {
    let _s = serial();
    if !privileged("waiting_readers_lend_to_the_writer") {
        return;
    }
    let lock = Arc::new(RwLock::new(()));
    let w = writer(&lock, || set_policy(0, libc::SCHED_IDLE, 0));
    let l = Arc::clone(&lock);
    let (_, r1) = waiter(lock.id(), || set_nice(5), move || drop(l.read().unwrap()));
    assert_eq!(sched_of(w.tid), (libc::SCHED_OTHER, 5, 0));
    let l = Arc::clone(&lock);
    let (_, r2) = waiter(lock.id(), || set_nice(-4), move || drop(l.read().unwrap()));
    assert_eq!(
        sched_of(w.tid),
        (libc::SCHED_OTHER, -4, 0),
        "the best of the waiting readers"
    );
    w.release();
    r1.join().unwrap();
    r2.join().unwrap();
    assert_eq!(sched_of(w.tid), (libc::SCHED_IDLE, 0, 0));
    w.finish();
}

#[test]
fn a_mutex_waiter_reaches_the_readers_of_the_rwlock_its_owner_waits_to_write() {
    let _s = serial();
    if !privileged("a_mutex_waiter_reaches_the_readers") {
        return;
    }
    let (m, lock) = (Arc::new(Mutex::new(())), Arc::new(RwLock::new(())));
    let r = reader(&lock, || set_nice(12));
    // B holds M and waits to write the rwlock.
    let (b_tid_tx, b_tid_rx) = channel();
    let (b_go_tx, b_go_rx) = channel::<()>();
    let (mb, lb) = (Arc::clone(&m), Arc::clone(&lock));
    let b = thread::spawn(move || {
        set_nice(8);
        let g = mb.lock().unwrap();
        b_tid_tx.send(current_tid()).unwrap();
        let w = lb.write().unwrap();
        b_go_rx.recv().unwrap();
        drop(w);
        drop(g);
    });
    let b_tid = b_tid_rx.recv().unwrap();
    eventually("B to sleep on the rwlock", || {
        asleep_on_lock(b_tid, lock.id())
    });
    assert_eq!(nice_of(r.tid), 8, "B lends to the reader");
    let mw = Arc::clone(&m);
    let (_, a) = waiter(m.id(), || set_nice(0), move || drop(mw.lock().unwrap()));
    assert_eq!(nice_of(b_tid), 0, "the mutex's owner is boosted");
    assert_eq!(
        nice_of(r.tid),
        0,
        "and so is the reader at the end of the chain"
    );
    r.release();
    assert_eq!(
        nice_of(r.tid),
        12,
        "the reader gets its own back at its unlock"
    );
    eventually("B to hold the rwlock", || lock.try_read().is_err());
    assert_eq!(nice_of(b_tid), 0);
    b_go_tx.send(()).unwrap();
    a.join().unwrap();
    b.join().unwrap();
    r.finish();
}

#[test]
fn a_waiting_writer_reaches_through_a_reader_to_the_owner_of_the_mutex_it_waits_for() {
    let _s = serial();
    if !privileged("a_waiting_writer_reaches_through_a_reader") {
        return;
    }
    let (m, lock) = (Arc::new(Mutex::new(())), Arc::new(RwLock::new(())));
    let c = Owner::spawn(&m, || set_nice(15));
    // The reader holds the rwlock and waits for the mutex.
    let (r_tid_tx, r_tid_rx) = channel();
    let (mr, lr) = (Arc::clone(&m), Arc::clone(&lock));
    let r = thread::spawn(move || {
        set_nice(10);
        let g = lr.read().unwrap();
        r_tid_tx.send(current_tid()).unwrap();
        drop(mr.lock().unwrap());
        drop(g);
    });
    let r_tid = r_tid_rx.recv().unwrap();
    eventually("the reader to sleep on the mutex", || asleep_on(r_tid, &m));
    assert_eq!(nice_of(c.tid), 10, "the reader lends to the mutex's owner");
    let l = Arc::clone(&lock);
    let (_, w) = waiter(lock.id(), || set_nice(1), move || drop(l.write().unwrap()));
    assert_eq!(nice_of(r_tid), 1, "the writer lends to the reader");
    assert_eq!(nice_of(c.tid), 1, "and, through it, to the mutex's owner");
    c.release();
    w.join().unwrap();
    r.join().unwrap();
    assert_eq!(nice_of(c.tid), 15, "everything given back");
    c.finish();
}

#[test]
fn snapshot_shows_the_readers_a_writer_waits_for() {
    let _s = serial();
    let lock = Arc::new(RwLock::new(()));
    let (r1, r2) = (reader(&lock, || ()), reader(&lock, || ()));
    let l = Arc::clone(&lock);
    let (w_tid, w) = waiter(lock.id(), || (), move || drop(l.write().unwrap()));
    let snapshot = proxy_lock::snapshot();
    let mut on = snapshot.waits_on(w_tid);
    on.sort();
    let mut readers = vec![r1.tid, r2.tid];
    readers.sort();
    assert_eq!(on, readers, "{snapshot}");
    let wait = snapshot
        .threads()
        .iter()
        .find(|t| t.tid == w_tid)
        .and_then(|t| t.waits_for)
        .unwrap();
    assert_eq!((wait.kind, wait.owner), (proxy_lock::WaitKind::Write, None));
    for t in snapshot
        .threads()
        .iter()
        .filter(|t| readers.contains(&t.tid))
    {
        assert_eq!(t.reading, vec![lock.id()], "{snapshot}");
    }
    let text = snapshot.to_string();
    for r in &readers {
        assert!(
            text.contains(&format!("to write, read by {r} \"reader\" (running)")),
            "{text}"
        );
    }
    r1.release();
    r2.release();
    w.join().unwrap();
    r1.finish();
    r2.finish();
}
