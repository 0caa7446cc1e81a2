//! The hackbench workload (`perf bench sched messaging -t` in user space), shared by
//! `examples/hackbench.rs` and `benches/hackbench.rs`.

use std::collections::VecDeque;
use std::sync::Barrier;
use std::time::Instant;

/// A bounded queue of fixed-size messages: a byte ring under a lock, with not-empty and
/// not-full condition variables, each woken one waiter at a time (as a pipe wakes one reader).
pub trait Pipe: Send + Sync {
    fn new(slots: usize, datasize: usize) -> Self;
    fn send(&self, msg: &[u8]);
    fn recv(&self, out: &mut [u8]);
}

/// The queue state every lock protects.
pub struct Ring {
    bytes: VecDeque<u8>,
    slots: usize,
    datasize: usize,
}

impl Ring {
    fn new(slots: usize, datasize: usize) -> Ring {
        Ring {
            bytes: VecDeque::with_capacity(slots * datasize),
            slots,
            datasize,
        }
    }
    fn full(&self) -> bool {
        self.bytes.len() / self.datasize >= self.slots
    }
    fn empty(&self) -> bool {
        self.bytes.is_empty()
    }
    fn push(&mut self, msg: &[u8]) {
        self.bytes.extend(msg);
    }
    fn pop(&mut self, out: &mut [u8]) {
        for (o, b) in out.iter_mut().zip(self.bytes.drain(..self.datasize)) {
            *o = b;
        }
    }
}

/// Implements `Pipe` for a std-shaped Mutex/Condvar pair (`lock()` returns a `LockResult`).
macro_rules! std_shaped_pipe {
    ($name:ident, $mutex:ty, $condvar:ty, $new:expr) => {
        pub struct $name {
            ring: $mutex,
            not_empty: $condvar,
            not_full: $condvar,
        }
        impl Pipe for $name {
            fn new(slots: usize, datasize: usize) -> Self {
                $name {
                    ring: $new(Ring::new(slots, datasize)),
                    not_empty: <$condvar>::new(),
                    not_full: <$condvar>::new(),
                }
            }
            fn send(&self, msg: &[u8]) {
                let mut r = self
                    .not_full
                    .wait_while(self.ring.lock().unwrap(), |r| r.full())
                    .unwrap();
                r.push(msg);
                drop(r);
                self.not_empty.notify_one();
            }
            fn recv(&self, out: &mut [u8]) {
                let mut r = self
                    .not_empty
                    .wait_while(self.ring.lock().unwrap(), |r| r.empty())
                    .unwrap();
                r.pop(out);
                drop(r);
                self.not_full.notify_one();
            }
        }
    };
}

std_shaped_pipe!(
    StdPipe,
    std::sync::Mutex<Ring>,
    std::sync::Condvar,
    std::sync::Mutex::new
);
std_shaped_pipe!(
    PthreadPiPipe,
    super::pthread::PiMutex<Ring>,
    super::pthread::PiCondvar,
    super::pthread::PiMutex::new
);
std_shaped_pipe!(
    SpinPipe,
    proxy_lock::Mutex<Ring>,
    proxy_lock::Condvar,
    |r| { proxy_lock::Mutex::with_policy(r, proxy_lock::Policy::Spin) }
);
std_shaped_pipe!(
    HandoffPipe,
    proxy_lock::Mutex<Ring>,
    proxy_lock::Condvar,
    |r| { proxy_lock::Mutex::with_policy(r, proxy_lock::Policy::Handoff) }
);
std_shaped_pipe!(
    AdaptivePipe,
    proxy_lock::Mutex<Ring>,
    proxy_lock::Condvar,
    |r| { proxy_lock::Mutex::with_policy(r, proxy_lock::Policy::Adaptive) }
);

/// Senders push with `Mutex::run` on a `Handoff` mutex (falling back to a guard and the
/// not-full Condvar only when the queue is full); receivers use guards. A receiver's unlock,
/// or its Condvar wait, runs the pushes published meanwhile.
pub struct RunPipe(HandoffPipe);

impl Pipe for RunPipe {
    fn new(slots: usize, datasize: usize) -> Self {
        RunPipe(HandoffPipe::new(slots, datasize))
    }
    fn send(&self, msg: &[u8]) {
        let p = &self.0;
        let pushed = p
            .ring
            .run(|r| {
                let room = !r.full();
                if room {
                    r.push(msg);
                }
                room
            })
            .unwrap();
        if !pushed {
            let mut r = p
                .not_full
                .wait_while(p.ring.lock().unwrap(), |r| r.full())
                .unwrap();
            r.push(msg);
        }
        p.not_empty.notify_one();
    }
    fn recv(&self, out: &mut [u8]) {
        self.0.recv(out)
    }
}

pub struct ParkingLotPipe {
    ring: parking_lot::Mutex<Ring>,
    not_empty: parking_lot::Condvar,
    not_full: parking_lot::Condvar,
}

impl Pipe for ParkingLotPipe {
    fn new(slots: usize, datasize: usize) -> Self {
        ParkingLotPipe {
            ring: parking_lot::Mutex::new(Ring::new(slots, datasize)),
            not_empty: parking_lot::Condvar::new(),
            not_full: parking_lot::Condvar::new(),
        }
    }
    fn send(&self, msg: &[u8]) {
        let mut r = self.ring.lock();
        self.not_full.wait_while(&mut r, |r| r.full());
        r.push(msg);
        drop(r);
        self.not_empty.notify_one();
    }
    fn recv(&self, out: &mut [u8]) {
        let mut r = self.ring.lock();
        self.not_empty.wait_while(&mut r, |r| r.empty());
        r.pop(out);
        drop(r);
        self.not_full.notify_one();
    }
}

/// The size of one run, as perf's options give it.
pub struct Shape {
    pub groups: usize,
    pub loops: usize,
    pub fds: usize,
    pub datasize: usize,
    pub capacity: usize,
}

/// Runs every group at once; returns the seconds from GO to the last thread's end. Each thread
/// stamps its own start and end, so a descheduled main thread cannot shorten the measurement.
pub fn run<P: Pipe>(a: &Shape) -> f64 {
    let slots = a.capacity / a.datasize;
    let pipes: Vec<Vec<P>> = (0..a.groups)
        .map(|_| (0..a.fds).map(|_| P::new(slots, a.datasize)).collect())
        .collect();
    let go = Barrier::new(a.groups * a.fds * 2);
    let spans: Vec<(Instant, Instant)> = std::thread::scope(|s| {
        let mut handles = Vec::new();
        for group in &pipes {
            for _ in 0..a.fds {
                let go = &go;
                handles.push(s.spawn(move || {
                    let msg = vec![0x5a_u8; a.datasize];
                    go.wait();
                    let start = Instant::now();
                    for _ in 0..a.loops {
                        for pipe in group {
                            pipe.send(&msg);
                        }
                    }
                    (start, Instant::now())
                }));
            }
            for pipe in group {
                let go = &go;
                handles.push(s.spawn(move || {
                    let mut buf = vec![0u8; a.datasize];
                    go.wait();
                    let start = Instant::now();
                    for _ in 0..a.loops * a.fds {
                        pipe.recv(&mut buf);
                    }
                    (start, Instant::now())
                }));
            }
        }
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let start = spans.iter().map(|s| s.0).min().unwrap();
    let end = spans.iter().map(|s| s.1).max().unwrap();
    (end - start).as_secs_f64()
}
