//! How long should an `Adaptive` waiter spin before it sleeps (and lends its attributes)?
//!
//! Spinning pays while the owner is running and about to release; once the owner has held the
//! lock for longer than a successful spin usually takes, it is evidently not making progress
//! (preempted, or in a long section), and sleeping frees the CPU (which donation then lends).
//! This sweeps the spin budget over workloads where spinning matters, interleaved (every round
//! runs every budget once, and std and parking_lot once, in rotating order), medians of the
//! rounds:
//!
//! ```text
//! cargo run --release --example spin_budget [-- --rounds N]
//! ```

#[path = "../benches/workloads/mod.rs"]
mod workloads;
use workloads::messaging::{self, AdaptivePipe, ParkingLotPipe, Pipe, StdPipe};
use workloads::{Contention, CounterLock, LockUser, median};

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

fn contention<L: CounterLock>(lock: &L, cs: u32, outside: u32, threads: usize) -> f64 {
    let ops = if cs == 0 { 1_000_000 } else { 200_000 } / threads as u64;
    let run = Contention {
        threads,
        ops_per_thread: ops,
        cs,
        outside,
    };
    (&run).run(lock).as_secs_f64() * 1e9 / (ops * threads as u64) as f64
}

fn hackbench<P: Pipe>() -> f64 {
    messaging::run::<P>(&messaging::Shape {
        groups: 2,
        loops: 200,
        fds: 20,
        datasize: 100,
        capacity: 65536,
    })
}

fn main() {
    let rounds = workloads::rounds_arg(5, "spin_budget");
    // samples[row][workload]: one row per budget, then std, then parking_lot.
    let rows = BUDGETS.len() + 2;
    let mut samples = vec![[Vec::new(), Vec::new(), Vec::new()]; rows];
    for round in 0..rounds {
        eprintln!("round {}/{rounds} ...", round + 1);
        for i in 0..rows {
            let r = (i + round) % rows;
            let s = &mut samples[r];
            if r < BUDGETS.len() {
                proxy_lock::test_hooks::set_spin_budget_for_measurement(Some(BUDGETS[r]));
                s[0].push(contention(&proxy_lock::Mutex::new(0u64), 0, 20, 4));
                s[1].push(contention(&proxy_lock::Mutex::new(0u64), 300, 100, 4));
                s[2].push(hackbench::<AdaptivePipe>() * 1e3);
            } else if r == BUDGETS.len() {
                s[0].push(contention(&std::sync::Mutex::new(0u64), 0, 20, 4));
                s[1].push(contention(&std::sync::Mutex::new(0u64), 300, 100, 4));
                s[2].push(hackbench::<StdPipe>() * 1e3);
            } else {
                s[0].push(contention(&parking_lot::Mutex::new(0u64), 0, 20, 4));
                s[1].push(contention(&parking_lot::Mutex::new(0u64), 300, 100, 4));
                s[2].push(hackbench::<ParkingLotPipe>() * 1e3);
            }
        }
    }
    proxy_lock::test_hooks::set_spin_budget_for_measurement(None);
    println!(
        "Adaptive spin budget sweep, medians of {rounds} interleaved rounds (lower is better)\n"
    );
    println!(
        "| budget (rounds) | spin before sleeping | short sections, 4 threads (ns/section) | ~1 µs sections, 4 threads (ns/section) | hackbench -g 2 -l 200 (ms) |"
    );
    println!("|---:|---:|---:|---:|---:|");
    for (r, s) in samples.iter_mut().enumerate() {
        let label = match BUDGETS.get(r) {
            Some(&b) => format!("{b} | {:.1} µs", spin_us(b)),
            None if r == BUDGETS.len() => "std::sync::Mutex | -".to_string(),
            None => "parking_lot::Mutex | -".to_string(),
        };
        println!(
            "| {label} | {:.1} | {:.0} | {:.1} |",
            median(&mut s[0]),
            median(&mut s[1]),
            median(&mut s[2])
        );
    }
}
