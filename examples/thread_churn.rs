//! Thread churn at full size: a million short-lived threads (by default) that lock a shared
//! mutex under contention, a loan round (a nice-0 waiter lending to a nice-19 owner; needs
//! CAP_SYS_NICE for the loan itself) every 125 batches of four, with the process's memory,
//! open file descriptors and time per thread read every 10,000 threads.
//!
//! ```text
//! cargo run --release --example thread_churn [-- --threads N]
//! ```

#[path = "../benches/workloads/churn.rs"]
mod churn;
#[path = "../benches/workloads/mod.rs"]
mod workloads;

fn main() {
    let threads = workloads::count_arg("--threads", 1_000_000, 40_000, "thread_churn");
    let batches = threads / 4;
    let start = std::time::Instant::now();
    let c = churn::run(batches, 2_500, 125);
    let us = &c.per_thread_us;
    println!(
        "{} threads ({} loan rounds) in {:.1} s; RSS {} kB after the first 10,000, {} kB at the \
         end ({:+.1}%); open fds {} before, {} after; perf rings mapped {} before, {} at most, \
         {} after; µs per thread: first window {:.1}, median {:.1}, last {:.1}, max {:.1}",
        c.threads,
        c.loan_rounds,
        start.elapsed().as_secs_f64(),
        c.rss_after_first_kb,
        c.rss_end_kb,
        (c.rss_end_kb as f64 / c.rss_after_first_kb as f64 - 1.0) * 100.0,
        c.fds_before,
        c.fds_end,
        c.maps_before,
        c.maps_peak,
        c.maps_end,
        us[0],
        workloads::median(&mut us.clone()),
        us[us.len() - 1],
        us.iter().copied().fold(0.0, f64::max)
    );
}
