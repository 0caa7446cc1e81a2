//! Priority inversion between ordinary threads, measured.
//!
//! A background thread (SCHED_IDLE, pinned to CPU 0) takes a lock for 100 µs at a time. A nice-0
//! hog on CPU 0 runs in 20 ms bursts, during which the background thread gets no CPU. A
//! foreground thread on CPU 1 takes the same lock every millisecond and records how long each
//! acquisition waited. Whenever the hog preempts the background thread inside its critical
//! section, the foreground waits for the rest of the burst.
//!
//! ```text
//! cargo run --release --example priority_inversion [-- --seconds N]
//! ```
//!
//! This is the first version of the demo: it shows the inversion. proxy-lock's donation (which
//! lends the waiter's scheduling attributes and CPU to the owner) is not built yet, so
//! proxy_lock::Mutex shows the same inversion for now; the table says so.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const SECTION: Duration = Duration::from_micros(100);
const HOG_BURST: Duration = Duration::from_millis(20);
const HOG_REST: Duration = Duration::from_millis(5);
const PERIOD: Duration = Duration::from_millis(1);

/// The lock under test, as each library spells "run this under the lock".
trait DemoLock: Send + Sync + 'static {
    fn hold(&self, f: impl FnOnce());
}

impl DemoLock for std::sync::Mutex<()> {
    fn hold(&self, f: impl FnOnce()) {
        let _g = self.lock().unwrap();
        f()
    }
}

impl DemoLock for parking_lot::Mutex<()> {
    fn hold(&self, f: impl FnOnce()) {
        let _g = self.lock();
        f()
    }
}

impl DemoLock for proxy_lock::Mutex<()> {
    fn hold(&self, f: impl FnOnce()) {
        let _g = self.lock().unwrap();
        f()
    }
}

fn busy(d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        std::hint::spin_loop();
    }
}

/// Pins the calling thread to `cpu`; false (with the reason printed once) if that fails.
fn pin(cpu: usize) -> bool {
    // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: cpu < CPU_SETSIZE (checked by the caller against the CPU count).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: valid set of the size passed; 0 is the calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
    if rc != 0 {
        eprintln!(
            "cannot pin to CPU {cpu}: {}",
            std::io::Error::last_os_error()
        );
    }
    rc == 0
}

/// Makes the calling thread SCHED_IDLE (no privilege needed to lower one's own policy).
fn become_idle() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: valid param; 0 is the calling thread.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } != 0 {
        eprintln!("cannot set SCHED_IDLE: {}", std::io::Error::last_os_error());
    }
}

struct Waits {
    n: usize,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

fn run<L: DemoLock>(lock: L, seconds: f64, pinned: bool) -> Waits {
    let lock = Arc::new(lock);
    let stop = Arc::new(AtomicBool::new(false));
    let (l, s) = (lock.clone(), stop.clone());
    let owner = std::thread::spawn(move || {
        if pinned {
            pin(0);
        }
        become_idle();
        while !s.load(Ordering::Relaxed) {
            l.hold(|| busy(SECTION));
            busy(SECTION);
        }
    });
    let s = stop.clone();
    let hog = std::thread::spawn(move || {
        if pinned {
            pin(0);
        }
        while !s.load(Ordering::Relaxed) {
            busy(HOG_BURST);
            std::thread::sleep(HOG_REST);
        }
    });
    let (l, s) = (lock.clone(), stop.clone());
    let foreground = std::thread::spawn(move || {
        if pinned {
            pin(1);
        }
        let mut waits = Vec::new();
        let end = Instant::now() + Duration::from_secs_f64(seconds);
        let mut next = Instant::now();
        while Instant::now() < end {
            let t0 = Instant::now();
            l.hold(|| waits.push(t0.elapsed()));
            next += PERIOD;
            if let Some(d) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            }
        }
        s.store(true, Ordering::Relaxed);
        waits
    });
    let mut waits = foreground.join().unwrap();
    owner.join().unwrap();
    hog.join().unwrap();
    waits.sort();
    let at = |q: f64| waits[((waits.len() - 1) as f64 * q) as usize];
    Waits {
        n: waits.len(),
        p50: at(0.5),
        p99: at(0.99),
        max: *waits.last().unwrap(),
    }
}

fn main() {
    let mut seconds = 4.0;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next().and_then(|v| v.parse::<f64>().ok())) {
            ("--seconds", Some(s)) if s > 0.0 => seconds = s,
            _ => {
                eprintln!("usage: priority_inversion [--seconds N]");
                std::process::exit(2)
            }
        }
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pinned = cpus >= 2;
    if !pinned {
        eprintln!(
            "only {cpus} CPU: the scenario needs the background owner and the foreground on different CPUs; running unpinned, which shows less"
        );
    }
    println!(
        "background owner: SCHED_IDLE on CPU 0, holds the lock {} µs at a time",
        SECTION.as_micros()
    );
    println!(
        "hog: nice 0 on CPU 0, {} ms bursts; foreground: CPU 1, locks every 1 ms\n",
        HOG_BURST.as_millis()
    );
    println!(
        "{:<36} {:>6} {:>10} {:>10} {:>10}",
        "lock", "n", "p50 µs", "p99 µs", "max µs"
    );
    let report = |name: &str, w: Waits| {
        println!(
            "{name:<36} {:>6} {:>10} {:>10} {:>10}",
            w.n,
            w.p50.as_micros(),
            w.p99.as_micros(),
            w.max.as_micros()
        )
    };
    eprintln!("running std::sync::Mutex for {seconds} s ...");
    report(
        "std::sync::Mutex",
        run(std::sync::Mutex::new(()), seconds, pinned),
    );
    eprintln!("running parking_lot::Mutex for {seconds} s ...");
    report(
        "parking_lot::Mutex",
        run(parking_lot::Mutex::new(()), seconds, pinned),
    );
    eprintln!("running proxy_lock::Mutex for {seconds} s ...");
    report(
        "proxy_lock::Mutex (no donation yet)",
        run(proxy_lock::Mutex::new(()), seconds, pinned),
    );
    println!(
        "\nA max near the hog's burst is the inversion: the foreground waited for a thread the scheduler had set aside."
    );
}
