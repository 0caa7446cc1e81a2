//! Reader-writer workloads for std's, parking_lot's and proxy-lock's `RwLock`: uncontended read
//! and write, and threads mixing reads and writes in a given proportion. The report's rwlock
//! table (`examples/bench_report.rs`) runs them interleaved, as it does the mutexes.

use std::hint::black_box;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Every reader-writer lock compared, in report order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RwKind {
    Std,
    ParkingLot,
    ProxyLock,
}

impl RwKind {
    pub const ALL: [RwKind; 3] = [RwKind::Std, RwKind::ParkingLot, RwKind::ProxyLock];

    pub fn name(self) -> &'static str {
        match self {
            RwKind::Std => "std",
            RwKind::ParkingLot => "parking_lot",
            RwKind::ProxyLock => "proxy_lock",
        }
    }
}

/// What a section touches: one cache line.
type Data = [u64; 8];

/// A reader-writer lock over `Data`, as each library spells it.
trait RwData: Sync {
    /// Sums the data under a read lock.
    fn read_sum(&self) -> u64;
    /// Adds one to every element under the write lock.
    fn bump(&self);
}

impl RwData for std::sync::RwLock<Data> {
    fn read_sum(&self) -> u64 {
        self.read().unwrap().iter().sum()
    }
    fn bump(&self) {
        self.write().unwrap().iter_mut().for_each(|v| *v += 1);
    }
}

impl RwData for parking_lot::RwLock<Data> {
    fn read_sum(&self) -> u64 {
        self.read().iter().sum()
    }
    fn bump(&self) {
        self.write().iter_mut().for_each(|v| *v += 1);
    }
}

impl RwData for proxy_lock::RwLock<Data> {
    fn read_sum(&self) -> u64 {
        self.read().unwrap().iter().sum()
    }
    fn bump(&self) {
        self.write().unwrap().iter_mut().for_each(|v| *v += 1);
    }
}

/// Runs `f` on a fresh lock of `kind`.
fn with_rwlock<R>(kind: RwKind, f: impl FnOnce(&dyn RwData) -> R) -> R {
    match kind {
        RwKind::Std => f(&std::sync::RwLock::new(Data::default())),
        RwKind::ParkingLot => f(&parking_lot::RwLock::new(Data::default())),
        RwKind::ProxyLock => f(&proxy_lock::RwLock::new(Data::default())),
    }
}

/// Nanoseconds per uncontended read lock + unlock (`write`: per write lock + unlock), over
/// `pairs` pairs on one thread.
pub fn uncontended_ns(kind: RwKind, write: bool, pairs: u64) -> f64 {
    with_rwlock(kind, |lock| {
        let start = Instant::now();
        for _ in 0..pairs {
            if write {
                lock.bump();
            } else {
                black_box(lock.read_sum());
            }
        }
        start.elapsed().as_secs_f64() * 1e9 / pairs as f64
    })
}

/// Nanoseconds per operation (wall time over every thread's operations, lower is better) of
/// `threads` threads that each, for `run`, write with probability `write_percent`% and read
/// otherwise, with a little work between operations.
pub fn mixed_ns(kind: RwKind, threads: usize, write_percent: u32, run: Duration) -> f64 {
    with_rwlock(kind, |lock| {
        let start = Barrier::new(threads + 1);
        let stop = AtomicBool::new(false);
        let (ops, elapsed) = std::thread::scope(|s| {
            let workers: Vec<_> = (0..threads)
                .map(|i| {
                    let (start, stop) = (&start, &stop);
                    s.spawn(move || {
                        // xorshift64, seeded per thread: the mix, not its order, matters.
                        let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (i as u64 + 1);
                        let mut ops = 0u64;
                        start.wait();
                        while !stop.load(Ordering::Relaxed) {
                            for _ in 0..64 {
                                x ^= x << 13;
                                x ^= x >> 7;
                                x ^= x << 17;
                                if (x % 100) < write_percent as u64 {
                                    lock.bump();
                                } else {
                                    black_box(lock.read_sum());
                                }
                                for _ in 0..2 {
                                    std::hint::spin_loop();
                                }
                            }
                            ops += 64;
                        }
                        ops
                    })
                })
                .collect();
            start.wait();
            let began = Instant::now();
            std::thread::sleep(run);
            stop.store(true, Ordering::Relaxed);
            let ops: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
            (ops, began.elapsed())
        });
        elapsed.as_secs_f64() * 1e9 / ops as f64
    })
}
