//! How long a blocked_on chain takes to unwind, against its depth: a chain of nice-19 threads
//! on 64 KiB stacks (thread k holds lock k and waits for lock k-1), a nice-0 waiter at the end
//! lending down the chain (needs CAP_SYS_NICE for the loans; without it they fail, counted),
//! and the time from the first owner's release to the last thread's exit; and the same chain
//! with `std::sync::Mutex`, which lends nothing, for reference. Medians of `--rounds` runs
//! per depth.
//!
//! ```text
//! cargo run --release --example deep_chain [-- --rounds N]
//! ```

#[path = "../benches/workloads/deep_chain.rs"]
#[allow(dead_code)] // the ring is for the tests
mod deep_chain;
#[path = "../benches/workloads/mod.rs"]
mod workloads;

fn main() {
    let rounds = workloads::rounds_arg(3, "deep_chain");
    println!(
        "unwind time of a blocked_on chain (medians of {rounds} runs; CAP_SYS_NICE: {})",
        proxy_lock::capabilities().cap_sys_nice
    );
    println!(
        "| depth | unwind (ms) | per hop (µs) | std (ms) | std per hop (µs) |\n\
         |---:|---:|---:|---:|---:|"
    );
    for depth in [100, 200, 400, 800, 1_024, 1_500, 2_048] {
        // Interleaved, so both see the same machine.
        let (mut ours, mut std): (Vec<f64>, Vec<f64>) = (0..rounds)
            .map(|_| {
                let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
                (
                    ms(deep_chain::unwind_time(depth)),
                    ms(deep_chain::unwind_time_std(depth)),
                )
            })
            .unzip();
        let (ours, std) = (workloads::median(&mut ours), workloads::median(&mut std));
        let per_hop = |ms: f64| ms * 1e3 / depth as f64;
        println!(
            "| {depth} | {ours:.1} | {:.1} | {std:.1} | {:.1} |",
            per_hop(ours),
            per_hop(std)
        );
    }
}
