//! How long should an `Adaptive` waiter spin before it sleeps (and lends its attributes)?
//!
//! Spinning pays while the owner is running and about to release; once the owner has held the
//! lock for longer than a successful spin usually takes, it is evidently not making progress
//! (preempted, or in a long section), and sleeping frees the CPU (which donation then lends).
//! This sweeps the spin budget over workloads where spinning matters, interleaved (every round
//! runs every budget once, in rotating order), medians of the rounds:
//!
//! ```text
//! cargo run --release --example spin_budget [-- --rounds N]
//! ```

#[path = "../benches/workloads/mod.rs"]
mod workloads;
use workloads::messaging::{self, AdaptivePipe};
use workloads::{Contention, LockUser, median};

/// Budgets in rounds; round r pauses 2^min(r, 10) times (see `mutex::raw::SpinWait`).
const BUDGETS: [u32; 7] = [0, 3, 5, 6, 7, 9, 11];
/// Nanoseconds a `pause` takes on these machines (measured for the foundation).
const PAUSE_NS: f64 = 25.0;

fn spin_us(budget: u32) -> f64 {
    (1..=budget)
        .map(|r| (1u64 << r.min(10)) as f64)
        .sum::<f64>()
        * PAUSE_NS
        / 1e3
        + 0.0
}

fn contention(cs: u32, outside: u32, threads: usize) -> f64 {
    let ops = if cs == 0 { 1_000_000 } else { 200_000 } / threads as u64;
    let run = Contention {
        threads,
        ops_per_thread: ops,
        cs,
        outside,
    };
    let lock = proxy_lock::Mutex::new(0u64);
    (&run).run(&lock).as_secs_f64() * 1e9 / (ops * threads as u64) as f64
}

fn hackbench() -> f64 {
    messaging::run::<AdaptivePipe>(&messaging::Shape {
        groups: 2,
        loops: 200,
        fds: 20,
        datasize: 100,
        capacity: 65536,
    })
}

fn main() {
    let mut rounds = 5;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next().and_then(|v| v.parse().ok())) {
            ("--rounds", Some(n)) if n > 0 => rounds = n,
            _ => {
                eprintln!("usage: spin_budget [--rounds N]");
                std::process::exit(2)
            }
        }
    }
    // samples[budget][workload]
    let mut samples = vec![[Vec::new(), Vec::new(), Vec::new()]; BUDGETS.len()];
    for round in 0..rounds {
        eprintln!("round {}/{rounds} ...", round + 1);
        for i in 0..BUDGETS.len() {
            let b = (i + round) % BUDGETS.len();
            proxy_lock::set_spin_budget_for_measurement(Some(BUDGETS[b]));
            samples[b][0].push(contention(0, 20, 4));
            samples[b][1].push(contention(300, 100, 4));
            samples[b][2].push(hackbench() * 1e3);
        }
    }
    proxy_lock::set_spin_budget_for_measurement(None);
    println!(
        "Adaptive spin budget sweep, medians of {rounds} interleaved rounds (lower is better)\n"
    );
    println!(
        "| budget (rounds) | spin before sleeping | short sections, 4 threads (ns/section) | ~1 µs sections, 4 threads (ns/section) | hackbench -g 2 -l 200 (ms) |"
    );
    println!("|---:|---:|---:|---:|---:|");
    for (b, s) in BUDGETS.iter().zip(&mut samples) {
        println!(
            "| {b} | {:.1} µs | {:.1} | {:.0} | {:.1} |",
            spin_us(*b),
            median(&mut s[0]),
            median(&mut s[1]),
            median(&mut s[2])
        );
    }
}
