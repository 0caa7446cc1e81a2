//! Workloads shared by the criterion benches and the interleaved report
//! (`examples/bench_report.rs`), so both measure exactly the same code.
#![allow(dead_code)] // each includer uses a different part

pub mod messaging;
pub mod pthread;
pub mod rwlock;

use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

/// Every lock compared, in report order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Std,
    ParkingLot,
    /// A pthread mutex with `PTHREAD_PRIO_INHERIT`: the kernel's strict handoff.
    PthreadPi,
    Spin,
    Handoff,
    Adaptive,
    /// `Mutex::run` on a `Handoff` mutex: sections published and run by whoever holds it.
    Run,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Std,
        Kind::ParkingLot,
        Kind::PthreadPi,
        Kind::Spin,
        Kind::Handoff,
        Kind::Adaptive,
        Kind::Run,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Std => "std",
            Kind::ParkingLot => "parking_lot",
            Kind::PthreadPi => "pthread_pi",
            Kind::Spin => "spin",
            Kind::Handoff => "handoff",
            Kind::Adaptive => "adaptive",
            Kind::Run => "run",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == s)
    }
}

/// A mutex over a `u64` counter, as each library spells it.
pub trait CounterLock: Send + Sync {
    fn with(&self, f: impl FnOnce(&mut u64) + Send);
    fn get(&self) -> u64;
}

impl CounterLock for std::sync::Mutex<u64> {
    #[inline]
    fn with(&self, f: impl FnOnce(&mut u64) + Send) {
        f(&mut self.lock().unwrap())
    }
    fn get(&self) -> u64 {
        *self.lock().unwrap()
    }
}

impl CounterLock for parking_lot::Mutex<u64> {
    #[inline]
    fn with(&self, f: impl FnOnce(&mut u64) + Send) {
        f(&mut self.lock())
    }
    fn get(&self) -> u64 {
        *self.lock()
    }
}

impl CounterLock for proxy_lock::Mutex<u64> {
    #[inline]
    fn with(&self, f: impl FnOnce(&mut u64) + Send) {
        f(&mut self.lock().unwrap())
    }
    fn get(&self) -> u64 {
        *self.lock().unwrap()
    }
}

impl CounterLock for pthread::PiMutex<u64> {
    #[inline]
    fn with(&self, f: impl FnOnce(&mut u64) + Send) {
        f(&mut self.lock().unwrap())
    }
    fn get(&self) -> u64 {
        *self.lock().unwrap()
    }
}

/// A proxy-lock mutex used through `Mutex::run` instead of guards.
pub struct RunMutex(pub proxy_lock::Mutex<u64>);

impl CounterLock for RunMutex {
    #[inline]
    fn with(&self, f: impl FnOnce(&mut u64) + Send) {
        self.0.run(f).unwrap()
    }
    fn get(&self) -> u64 {
        self.0.run(|v| *v).unwrap()
    }
}

fn policy(kind: Kind) -> proxy_lock::Policy {
    match kind {
        Kind::Spin => proxy_lock::Policy::Spin,
        Kind::Handoff | Kind::Run => proxy_lock::Policy::Handoff,
        _ => proxy_lock::Policy::Adaptive,
    }
}

/// Calls `body` with a fresh counter lock of the given kind.
pub fn with_lock<R>(kind: Kind, body: impl LockUser<R>) -> R {
    match kind {
        Kind::Std => body.run(&std::sync::Mutex::new(0u64)),
        Kind::ParkingLot => body.run(&parking_lot::Mutex::new(0u64)),
        Kind::PthreadPi => body.run(&pthread::PiMutex::new(0u64)),
        Kind::Run => body.run(&RunMutex(proxy_lock::Mutex::with_policy(
            0u64,
            policy(kind),
        ))),
        _ => body.run(&proxy_lock::Mutex::with_policy(0u64, policy(kind))),
    }
}

/// Something generic over the lock type (a closure cannot be generic, a trait can).
pub trait LockUser<R> {
    fn run<L: CounterLock>(self, lock: &L) -> R;
}

/// Busy work standing in for a critical section or the work between sections.
#[inline]
pub fn work(units: u32) {
    let mut x = 1u64;
    for i in 0..units {
        x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i as u64));
    }
    black_box(x);
}

/// `threads` threads each take the lock `ops_per_thread` times, doing `cs` units of work inside
/// and `outside` units between sections. Returns the wall time from a common start to the last
/// thread's end; the counter is checked exactly.
pub struct Contention {
    pub threads: usize,
    pub ops_per_thread: u64,
    pub cs: u32,
    pub outside: u32,
}

impl LockUser<Duration> for &Contention {
    fn run<L: CounterLock>(self, lock: &L) -> Duration {
        let barrier = Barrier::new(self.threads);
        // Each thread stamps its own start and end: from the first start to the last end.
        let spans: Vec<(Instant, Instant)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..self.threads)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        let start = Instant::now();
                        for _ in 0..self.ops_per_thread {
                            lock.with(|v| {
                                work(self.cs);
                                *v += 1;
                            });
                            work(self.outside);
                        }
                        (start, Instant::now())
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(lock.get(), self.threads as u64 * self.ops_per_thread);
        let start = spans.iter().map(|s| s.0).min().unwrap();
        spans.iter().map(|s| s.1).max().unwrap() - start
    }
}

/// As [`Contention`], for a fixed time instead of a fixed number of sections, so that a slow
/// lock (pthread PI hands over in microseconds) costs a report no more time than a fast one:
/// `threads` threads take the lock until `duration` has passed. Returns nanoseconds per
/// section, from a common start to the last thread's end; the counter is checked exactly.
pub struct TimedContention {
    pub threads: usize,
    pub duration: Duration,
    pub cs: u32,
    pub outside: u32,
}

impl LockUser<f64> for &TimedContention {
    fn run<L: CounterLock>(self, lock: &L) -> f64 {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = AtomicBool::new(false);
        let barrier = Barrier::new(self.threads + 1);
        let runs: Vec<(Instant, Instant, u64)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..self.threads)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        let start = Instant::now();
                        let mut done = 0u64;
                        // Relaxed: a stop signal; the joins order everything that matters.
                        while !stop.load(Ordering::Relaxed) {
                            for _ in 0..16 {
                                lock.with(|v| {
                                    work(self.cs);
                                    *v += 1;
                                });
                                work(self.outside);
                            }
                            done += 16;
                        }
                        (start, Instant::now(), done)
                    })
                })
                .collect();
            barrier.wait();
            std::thread::sleep(self.duration);
            stop.store(true, Ordering::Relaxed);
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let total: u64 = runs.iter().map(|r| r.2).sum();
        assert_eq!(lock.get(), total);
        let start = runs.iter().map(|r| r.0).min().unwrap();
        let end = runs.iter().map(|r| r.1).max().unwrap();
        (end - start).as_secs_f64() * 1e9 / total as f64
    }
}

/// The `--rounds N` option of a measurement example (its only option), or `default`. Exits
/// with a usage line on anything else.
pub fn rounds_arg(default: usize, program: &str) -> usize {
    count_arg("--rounds", default, 1, program)
}

/// The program's only option, `flag N` with N at least `min`; `default` without it. Anything
/// else prints the usage and exits with code 2.
pub fn count_arg(flag: &str, default: usize, min: usize, program: &str) -> usize {
    let mut n = default;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a == flag, args.next().and_then(|v| v.parse().ok())) {
            (true, Some(v)) if v >= min => n = v,
            _ => {
                eprintln!("usage: {program} [{flag} N]  (N at least {min})");
                std::process::exit(2)
            }
        }
    }
    n
}

/// Median of a sample (sorted in place).
pub fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}
