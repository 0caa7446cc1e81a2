//! What watching a running thread costs that thread.
//!
//! A waiter that spins "while the owner runs" reads the owner's CPU clock every
//! `ON_CPU_PROBE_SPINS` spin hints (`spin::OnCpuWatch`). For a thread that is on a CPU,
//! the kernel answers that read under the owner's runqueue lock and brings the owner's
//! accounting up to date first, which may decide that the owner should make way: a reschedule
//! interrupt to the owner's CPU. This example measures how much work a busy thread on CPU 0
//! gets done while another thread on CPU 1 reads its clock at a given pace, with and without
//! a SCHED_IDLE companion queued beside it, and counts the reschedule interrupts CPU 0
//! received (`RES` in `/proc/interrupts`).
//!
//! ```text
//! cargo run --release --example watch_cost [-- --rounds N --seconds S]
//! ```
//!
//! Rounds interleave every configuration; the table shows medians. Needs two CPUs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Spin hints between two reads, as the crate's watch does (`ON_CPU_PROBE_SPINS`), and slower.
const PACES: [Option<u32>; 4] = [None, Some(64), Some(512), Some(2048)];

#[derive(Clone, Copy)]
struct Config {
    /// The watched thread is SCHED_IDLE (else nice 0).
    idle: bool,
    /// A SCHED_IDLE thread spins beside it on CPU 0.
    companion: bool,
    /// Spin hints between two reads of its clock; `None`: nobody reads it.
    pace: Option<u32>,
}

fn main() {
    let mut rounds = 5;
    let mut seconds = 0.3;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let value = args.next().and_then(|v| v.parse::<f64>().ok());
        match (a.as_str(), value) {
            ("--rounds", Some(v)) if v >= 1.0 => rounds = v as usize,
            ("--seconds", Some(v)) if v > 0.0 => seconds = v,
            _ => {
                eprintln!("usage: watch_cost [--rounds N (>= 1)] [--seconds S (> 0)]");
                std::process::exit(2);
            }
        }
    }
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        println!("skipped: needs two CPUs (the watched thread's and the reader's)");
        return;
    }
    let mut configs = Vec::new();
    for idle in [false, true] {
        for companion in [false, true] {
            for pace in PACES {
                configs.push(Config {
                    idle,
                    companion,
                    pace,
                });
            }
        }
    }
    let mut results: Vec<Vec<(f64, f64)>> = vec![Vec::new(); configs.len()];
    for round in 0..rounds {
        eprintln!("round {}/{rounds}", round + 1);
        for (i, c) in configs.iter().enumerate() {
            results[i].push(measure(*c, Duration::from_secs_f64(seconds)));
        }
    }
    println!(
        "| watched thread | companion on its CPU | reads every | its work (vs unread) | RES interrupts/s on its CPU |"
    );
    println!("|---|---|---|---:|---:|");
    for (i, c) in configs.iter().enumerate() {
        let unread = i - PACES.iter().position(|p| *p == c.pace).unwrap();
        let work = median(results[i].iter().map(|r| r.0).collect());
        let base = median(results[unread].iter().map(|r| r.0).collect());
        let ipis = median(results[i].iter().map(|r| r.1).collect());
        println!(
            "| {} | {} | {} | {:.0}% | {:.0} |",
            if c.idle { "SCHED_IDLE" } else { "nice 0" },
            if c.companion {
                "SCHED_IDLE spinner"
            } else {
                "none"
            },
            c.pace.map_or("never".into(), |p| format!("{p} spin hints")),
            100.0 * work / base,
            ipis
        );
    }
}

/// One measurement: the watched thread's loop count and CPU 0's reschedule interrupts, per
/// second.
fn measure(c: Config, length: Duration) -> (f64, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let work = Arc::new(AtomicU64::new(0));
    let companion = c.companion.then(|| {
        let stop = stop.clone();
        std::thread::spawn(move || {
            pin(0);
            set_idle();
            while !stop.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        })
    });
    let (clock_tx, clock_rx) = std::sync::mpsc::channel();
    let watched = {
        let (stop, work) = (stop.clone(), work.clone());
        std::thread::spawn(move || {
            pin(0);
            if c.idle {
                set_idle();
            }
            clock_tx.send(own_cpu_clock()).unwrap();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                if n.is_multiple_of(1024) {
                    // Relaxed: a counter read after the thread is joined.
                    work.store(n, Ordering::Relaxed);
                }
            }
        })
    };
    let clock = clock_rx.recv().unwrap();
    pin(1);
    std::thread::sleep(Duration::from_millis(20));
    let (ipis_before, work_before) = (reschedule_interrupts_cpu0(), work.load(Ordering::Relaxed));
    let start = Instant::now();
    while start.elapsed() < length {
        match c.pace {
            Some(hints) => {
                read_clock(clock);
                for _ in 0..hints {
                    std::hint::spin_loop();
                }
            }
            None => std::hint::spin_loop(),
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let (ipis_after, work_after) = (reschedule_interrupts_cpu0(), work.load(Ordering::Relaxed));
    stop.store(true, Ordering::Relaxed);
    watched.join().unwrap();
    if let Some(t) = companion {
        t.join().unwrap();
    }
    (
        (work_after - work_before) as f64 / elapsed,
        ipis_after.saturating_sub(ipis_before) as f64 / elapsed,
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn pin(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is below CPU_SETSIZE (checked: two CPUs exist, we use 0 and 1).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: a valid set of the size passed, for the calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
    assert_eq!(
        rc,
        0,
        "pin to CPU {cpu}: {}",
        std::io::Error::last_os_error()
    );
}

fn set_idle() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: a valid parameter for the calling thread; SCHED_IDLE needs no privilege.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    assert_eq!(rc, 0, "SCHED_IDLE: {}", std::io::Error::last_os_error());
}

/// The calling thread's CPU clock, readable by other threads.
fn own_cpu_clock() -> libc::clockid_t {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: the calling thread's own handle and a valid out-pointer.
    let rc = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut clock) };
    assert_eq!(rc, 0, "pthread_getcpuclockid");
    clock
}

fn read_clock(clock: libc::clockid_t) {
    // SAFETY: timespec is plain data; all-zero is valid.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: a clock id of a live thread of ours and a valid out-pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
}

/// CPU 0's count on the `RES` line of `/proc/interrupts` (0 if it cannot be read).
fn reschedule_interrupts_cpu0() -> u64 {
    let text = std::fs::read_to_string("/proc/interrupts").unwrap_or_default();
    text.lines()
        .find_map(|l| l.trim_start().strip_prefix("RES:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}
