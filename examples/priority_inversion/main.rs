//! Priority inversion between ordinary threads, measured.
//!
//! A background thread (SCHED_IDLE, pinned to CPU 0) takes a lock for 100 µs at a time. A nice-0
//! hog on CPU 0 runs in 20 ms bursts, during which the background thread gets no CPU. A
//! foreground thread on CPU 1 takes the same lock every millisecond and records how long each
//! acquisition waited. Whenever the hog preempts the background thread inside its critical
//! section, the foreground waits for the rest of the burst.
//!
//! ```text
//! cargo run --release --example priority_inversion [-- --seconds N] [--scenario direct|chain]
//! ```
//!
//! Scenarios: `direct` (as above) and `chain` (the foreground waits on A, whose owner waits on
//! B, whose owner the hog preempts). proxy-lock's waiter lends its scheduling attributes and
//! its CPU to every owner on the chain, so the owner finishes its section on the CPU the
//! foreground freed instead of waiting out the burst.

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

/// Which inversion to stage.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scenario {
    /// The foreground waits on a lock a SCHED_IDLE thread on the hog's CPU holds.
    Direct,
    /// The foreground waits on A; A's owner waits on B; B's owner is the one the hog preempts.
    /// Both owners are SCHED_IDLE on the hog's CPU, so donation must be transitive.
    Chain,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Direct => "direct",
            Scenario::Chain => "chain",
        }
    }
}

/// Sets up proxy-lock's per-thread state (task record, parking and epoch registration) before
/// the measurement, in every thread and for every lock alike. A thread's first blocking lock
/// otherwise goes through first-use paths that take process-wide locks, and a SCHED_IDLE
/// thread preempted inside one while starting up made the foreground's very first wait last a
/// whole hog burst in about one run in five (see the README's known limits).
fn warm_up() {
    let m = proxy_lock::Mutex::new(());
    let cv = proxy_lock::Condvar::new();
    let _ = cv.wait_timeout(m.lock().unwrap(), Duration::from_micros(1));
    let _ = m.owner_tid();
}

/// A background thread: SCHED_IDLE, pinned to CPU 0 beside the hog, runs `body` until stopped.
fn background(
    pinned: bool,
    stop: &Arc<AtomicBool>,
    body: impl Fn() + Send + 'static,
) -> std::thread::JoinHandle<()> {
    let stop = stop.clone();
    std::thread::spawn(move || {
        if pinned {
            pin(0);
        }
        warm_up();
        become_idle();
        while !stop.load(Ordering::Relaxed) {
            body();
        }
    })
}

fn run<L: DemoLock + Default>(scenario: Scenario, seconds: f64, pinned: bool) -> Waits {
    let (a, b) = (Arc::new(L::default()), Arc::new(L::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    match scenario {
        Scenario::Direct => {
            let a = a.clone();
            threads.push(background(pinned, &stop, move || {
                a.hold(|| busy(SECTION));
                busy(SECTION);
            }));
        }
        Scenario::Chain => {
            // The middle owner holds A while it waits for B.
            let (a, b1) = (a.clone(), b.clone());
            threads.push(background(pinned, &stop, move || {
                a.hold(|| b1.hold(|| busy(SECTION / 10)));
                busy(SECTION);
            }));
            let b = b.clone();
            threads.push(background(pinned, &stop, move || {
                b.hold(|| busy(SECTION));
                busy(SECTION);
            }));
        }
    }
    let s = stop.clone();
    threads.push(std::thread::spawn(move || {
        if pinned {
            pin(0);
        }
        while !s.load(Ordering::Relaxed) {
            busy(HOG_BURST);
            std::thread::sleep(HOG_REST);
        }
    }));
    let (l, s) = (a.clone(), stop.clone());
    let foreground = std::thread::spawn(move || {
        if pinned {
            pin(1);
        }
        warm_up();
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
    for t in threads {
        t.join().unwrap();
    }
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
    let mut scenarios = vec![Scenario::Direct, Scenario::Chain];
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let value = args.next();
        match (a.as_str(), value.as_deref()) {
            ("--seconds", Some(v)) if v.parse::<f64>().is_ok_and(|s| s > 0.0) => {
                seconds = v.parse().unwrap()
            }
            ("--scenario", Some("direct")) => scenarios = vec![Scenario::Direct],
            ("--scenario", Some("chain")) => scenarios = vec![Scenario::Chain],
            ("--cpu-donation", Some("move")) => {
                proxy_lock::set_cpu_donation(proxy_lock::CpuDonation::Move)
            }
            ("--cpu-donation", Some("union")) => {
                proxy_lock::set_cpu_donation(proxy_lock::CpuDonation::Union)
            }
            ("--cpu-donation", Some("off")) => {
                proxy_lock::set_cpu_donation(proxy_lock::CpuDonation::Off)
            }
            _ => {
                eprintln!(
                    "usage: priority_inversion [--seconds N] [--scenario direct|chain] [--cpu-donation move|union|off]"
                );
                std::process::exit(2)
            }
        }
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pinned = cpus >= 2;
    if !pinned {
        eprintln!(
            "only {cpus} CPU: the scenarios need the background owner and the foreground on different CPUs; running unpinned, which shows less"
        );
    }
    let caps = proxy_lock::capabilities();
    if !caps.can_leave_idle {
        eprintln!("{caps}\n(donation cannot lift the SCHED_IDLE owner here; CPU loans still work)");
    }
    println!(
        "background owner(s): SCHED_IDLE on CPU 0, holding the lock {} µs at a time",
        SECTION.as_micros()
    );
    println!(
        "hog: nice 0 on CPU 0, {} ms bursts; foreground: CPU 1, locks every 1 ms",
        HOG_BURST.as_millis()
    );
    for scenario in scenarios {
        println!(
            "\n{}: {:<28} {:>6} {:>10} {:>10} {:>10}",
            scenario.name(),
            "lock",
            "n",
            "p50 µs",
            "p99 µs",
            "max µs"
        );
        let pad = " ".repeat(scenario.name().len() + 2);
        let report = |name: &str, w: &Waits| {
            println!(
                "{pad}{name:<28} {:>6} {:>10} {:>10} {:>10}",
                w.n,
                w.p50.as_micros(),
                w.p99.as_micros(),
                w.max.as_micros()
            )
        };
        let progress =
            |lock: &str| eprintln!("{}: running {lock} for {seconds} s ...", scenario.name());
        progress("std::sync::Mutex");
        let std_waits = run::<std::sync::Mutex<()>>(scenario, seconds, pinned);
        report("std::sync::Mutex", &std_waits);
        progress("parking_lot::Mutex");
        report(
            "parking_lot::Mutex",
            &run::<parking_lot::Mutex<()>>(scenario, seconds, pinned),
        );
        progress("proxy_lock::Mutex");
        let before = proxy_lock::counters();
        let ours = run::<proxy_lock::Mutex<()>>(scenario, seconds, pinned);
        let after = proxy_lock::counters();
        report("proxy_lock::Mutex", &ours);
        println!(
            "{pad}proxy_lock counters: donations {}, restores {}, skipped {}, failed {}",
            after.donations - before.donations,
            after.restores - before.restores,
            after.skipped - before.skipped,
            after.failed() - before.failed()
        );
        println!(
            "{}: worst wait {:.1} ms with std, {:.2} ms with proxy_lock ({:.0}x)",
            scenario.name(),
            std_waits.max.as_secs_f64() * 1e3,
            ours.max.as_secs_f64() * 1e3,
            std_waits.max.as_secs_f64() / ours.max.as_secs_f64().max(1e-9)
        );
    }
    println!(
        "\nA max near the hog's burst is the inversion: the foreground waited for a thread the scheduler had set aside."
    );
}
