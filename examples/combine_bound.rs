//! What the combining bound costs and gains: how many published sections one unlock may run
//! before it passes the role on (`Mutex::run`; the default is 64).
//!
//! ```text
//! cargo run --release --example combine_bound -- [--rounds N]
//! ```
//!
//! For each bound, 16 threads on this machine's CPUs call `run` on one `Handoff` mutex, with
//! ~0.4 µs and ~2 µs sections (with tiny sections callers rarely publish at all: they find the
//! lock free within their brief spin). Each round measures every bound once, in rotating
//! order; cells are medians of the rounds. Reported per bound: time per section (throughput),
//! the 99th and 99.9th percentile of a `run` call's latency (a thread that serves many
//! sections pays for them in its own call), and the share of sections that ran by proxy. Then
//! the same for the hackbench analog (`-g 10 -l 100`, senders on `run`), where hundreds of
//! callers sleep at once and batches are large: seconds, and the share of sends run by proxy.

#[path = "../benches/workloads/mod.rs"]
mod workloads;

use proxy_lock::test_hooks::set_combine_bound_for_measurement;
use proxy_lock::{Mutex, Policy, counters};
use std::sync::Barrier;
use std::time::{Duration, Instant};
use workloads::messaging::{self, RunPipe, Shape};
use workloads::work;

const BOUNDS: [u32; 6] = [1, 4, 16, 64, 256, u32::MAX];
const THREADS: usize = 16;

struct Sample {
    ns_per_section: f64,
    p99_us: f64,
    p999_us: f64,
    proxied_share: f64,
}

fn measure(bound: u32, cs: u32, ops: u64) -> Sample {
    set_combine_bound_for_measurement(bound);
    let m = Mutex::with_policy(0u64, Policy::Handoff);
    let barrier = Barrier::new(THREADS);
    let before = counters().proxied;
    let spans: Vec<(Instant, Instant, Vec<Duration>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    let start = Instant::now();
                    let mut calls = Vec::with_capacity(ops as usize);
                    for _ in 0..ops {
                        let t = Instant::now();
                        m.run(|v| {
                            work(cs);
                            *v += 1;
                        })
                        .unwrap();
                        calls.push(t.elapsed());
                        work(20);
                    }
                    (start, Instant::now(), calls)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let total = THREADS as u64 * ops;
    assert_eq!(*m.lock().unwrap(), total);
    let start = spans.iter().map(|s| s.0).min().unwrap();
    let end = spans.iter().map(|s| s.1).max().unwrap();
    let mut calls: Vec<Duration> = spans.iter().flat_map(|s| s.2.iter().copied()).collect();
    calls.sort_unstable();
    let pct = |p: f64| calls[((calls.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e6;
    Sample {
        ns_per_section: (end - start).as_secs_f64() * 1e9 / total as f64,
        p99_us: pct(0.99),
        p999_us: pct(0.999),
        proxied_share: (counters().proxied - before) as f64 / total as f64,
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    workloads::median(&mut xs)
}

fn main() {
    let rounds = workloads::rounds_arg(5, "combine_bound");
    println!(
        "{THREADS} threads calling Mutex::run on one Handoff mutex; medians of {rounds} rounds\n"
    );
    println!(
        "| section | bound | ns per section | run call p99 (µs) | p99.9 (µs) | run by proxy |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for (label, cs, ops) in [("~0.4 µs", 300, 10_000), ("~2 µs", 1500, 2_000)] {
        let mut samples: Vec<Vec<Sample>> = BOUNDS.iter().map(|_| Vec::new()).collect();
        for r in 0..rounds {
            for i in 0..BOUNDS.len() {
                let b = (i + r) % BOUNDS.len();
                samples[b].push(measure(BOUNDS[b], cs, ops));
            }
        }
        for (bound, s) in BOUNDS.iter().zip(&samples) {
            let name = bound_name(*bound);
            println!(
                "| {label} | {name} | {:.1} | {:.0} | {:.0} | {:.1}% |",
                median(s.iter().map(|x| x.ns_per_section).collect()),
                median(s.iter().map(|x| x.p99_us).collect()),
                median(s.iter().map(|x| x.p999_us).collect()),
                100.0 * median(s.iter().map(|x| x.proxied_share).collect()),
            );
        }
    }
    println!(
        "\n| guard holder, 15 `run` callers | bound | guard unlock p50 (µs) | max (µs) | sections run by proxy |"
    );
    println!("|---|---:|---:|---:|---:|");
    let mut samples: Vec<Vec<(f64, f64, f64)>> = BOUNDS.iter().map(|_| Vec::new()).collect();
    for r in 0..rounds {
        for i in 0..BOUNDS.len() {
            let b = (i + r) % BOUNDS.len();
            samples[b].push(burst(BOUNDS[b]));
        }
    }
    for (bound, s) in BOUNDS.iter().zip(&samples) {
        println!(
            "| | {} | {:.1} | {:.1} | {:.1}% |",
            bound_name(*bound),
            median(s.iter().map(|x| x.0).collect()),
            median(s.iter().map(|x| x.1).collect()),
            100.0 * median(s.iter().map(|x| x.2).collect()),
        );
    }
    println!("\n| hackbench -g 10 -l 100 | bound | seconds | sends run by proxy |");
    println!("|---|---:|---:|---:|");
    let shape = Shape {
        groups: 10,
        loops: 100,
        fds: 20,
        datasize: 100,
        capacity: 65536,
    };
    let sends = (shape.groups * shape.fds * shape.fds * shape.loops) as f64;
    let mut samples: Vec<Vec<(f64, f64)>> = BOUNDS.iter().map(|_| Vec::new()).collect();
    for r in 0..rounds {
        for i in 0..BOUNDS.len() {
            let b = (i + r) % BOUNDS.len();
            set_combine_bound_for_measurement(BOUNDS[b]);
            let before = counters().proxied;
            let secs = messaging::run::<RunPipe>(&shape);
            samples[b].push((secs, (counters().proxied - before) as f64 / sends));
        }
    }
    for (bound, s) in BOUNDS.iter().zip(&samples) {
        println!(
            "| | {} | {:.3} | {:.1}% |",
            bound_name(*bound),
            median(s.iter().map(|x| x.0).collect()),
            100.0 * median(s.iter().map(|x| x.1).collect()),
        );
    }
    set_combine_bound_for_measurement(0);
}

/// One thread takes the lock with a guard every millisecond and holds it for ~100 µs, while 15
/// threads call `run` with ~0.4 µs sections: the callers that arrive meanwhile publish, and the
/// guard's unlock serves them up to the bound. Returns the guard unlock's median and worst time
/// (µs) and the share of sections run by proxy.
fn burst(bound: u32) -> (f64, f64, f64) {
    set_combine_bound_for_measurement(bound);
    let m = Mutex::with_policy(0u64, Policy::Handoff);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let calls = std::sync::atomic::AtomicU64::new(0);
    let before = counters().proxied;
    let mut unlocks: Vec<f64> = std::thread::scope(|s| {
        for _ in 0..15 {
            s.spawn(|| {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    m.run(|v| {
                        work(300);
                        *v += 1;
                    })
                    .unwrap();
                    calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    work(20);
                }
            });
        }
        let holder = s.spawn(|| {
            let mut unlocks = Vec::new();
            for _ in 0..100 {
                let g = m.lock().unwrap();
                let held = Instant::now();
                while held.elapsed() < Duration::from_micros(100) {
                    work(50);
                }
                let t = Instant::now();
                drop(g);
                unlocks.push(t.elapsed().as_secs_f64() * 1e6);
                std::thread::sleep(Duration::from_millis(1));
            }
            unlocks
        });
        let unlocks = holder.join().unwrap();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        unlocks
    });
    let calls = calls.load(std::sync::atomic::Ordering::Relaxed) as f64;
    let proxied = (counters().proxied - before) as f64 / calls.max(1.0);
    unlocks.sort_by(|a, b| a.total_cmp(b));
    (
        unlocks[unlocks.len() / 2],
        unlocks[unlocks.len() - 1],
        proxied,
    )
}

fn bound_name(bound: u32) -> String {
    if bound == u32::MAX {
        "none".to_string()
    } else {
        bound.to_string()
    }
}
