//! How often, and for how long, this machine stops a thread that is running.
//!
//! The inversion demo's `rt` scenario compares worst waits of about 100 µs, so a stall of a
//! few tens of microseconds decides which lock "wins" a run. This example puts one
//! SCHED_FIFO thread on each CPU (SCHED_OTHER if the policy is refused, and it says so) and
//! gives it the demo foreground's rhythm: spin for a window (100 µs), sleep (900 µs). While it
//! spins it reads the clock back to back; a gap between two reads is time the thread did not
//! run: an interrupt, the scheduler's tick, or the hypervisor taking the virtual CPU away. A
//! real-time spinner is preempted by nothing else on an otherwise quiet CPU.
//!
//! ```text
//! cargo run --release --example cpu_stalls [-- --seconds S --window-us W --tick-us T]
//! ```
//!
//! Per CPU it prints how long it spun, how many gaps were over 10, 20, 40 and 80 µs, the median
//! and the longest gap over 10 µs, and the share of the spin they took. With `--tick-us T` it
//! also says how many of the stalls over 20 µs came a whole number of periods `T` after the
//! previous one (within 100 µs): the share that the periodic tick explains (`CONFIG_HZ=250`
//! is a 4000 µs period).

use std::time::{Duration, Instant};

// The demo's own setters for pinning and policy; the rest of that module (cgroups, files) is
// not used here.
#[allow(dead_code)]
#[path = "priority_inversion/setup.rs"]
mod setup;

/// The real-time priority of the spinners: the demo's `rt` foreground's.
const FIFO_PRIORITY: i32 = 10;
/// Gaps shorter than this are the loop itself (a clock read takes about 25 ns).
const COUNTED_GAP: Duration = Duration::from_micros(10);
/// Bounds of the printed gap counts, in µs.
const BOUNDS_US: [u64; 4] = [10, 20, 40, 80];
/// The stalls whose spacing `--tick-us` checks: those over this many µs.
const ALIGNED_OVER_US: u64 = 20;
/// How far off a whole number of tick periods a stall may be and still count as aligned.
const TICK_SLACK_US: u64 = 100;

#[derive(Clone, Copy)]
struct Args {
    seconds: f64,
    window: Duration,
    tick_us: Option<u64>,
}

/// What one CPU's spinner saw.
struct Stalls {
    cpu: usize,
    /// The policy the spinner ran with, or why it runs with SCHED_OTHER.
    policy: Result<(), String>,
    spun: Duration,
    /// Every gap over `COUNTED_GAP`: when it began (from the start) and how long it was, µs.
    gaps: Vec<(u64, u64)>,
}

fn main() {
    let args = parse_args().unwrap_or_else(|e| {
        eprintln!(
            "{e}\nusage: cpu_stalls [--seconds S (> 0)] [--window-us W (>= 1)] [--tick-us T (>= 1)]"
        );
        std::process::exit(2);
    });
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let spinners: Vec<_> = (0..cpus.min(2))
        .map(|cpu| std::thread::spawn(move || spin_on(cpu, args)))
        .collect();
    let mut all: Vec<Stalls> = spinners.into_iter().map(|t| t.join().unwrap()).collect();
    all.sort_by_key(|s| s.cpu);
    for s in &all {
        report(s, args.tick_us);
    }
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        seconds: 5.0,
        window: Duration::from_micros(100),
        tick_us: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag}: missing value"))?;
        let number = value
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v > 0.0)
            .ok_or(format!("{flag}: not a positive number: {value}"))?;
        match flag.as_str() {
            "--seconds" => a.seconds = number,
            "--window-us" if number >= 1.0 => a.window = Duration::from_micros(number as u64),
            "--tick-us" if number >= 1.0 => a.tick_us = Some(number as u64),
            _ => return Err(format!("unknown or out-of-range option: {flag} {value}")),
        }
    }
    Ok(a)
}

/// Spins in windows on `cpu` for `args.seconds`, recording the gaps.
fn spin_on(cpu: usize, args: Args) -> Stalls {
    if let Err(e) = setup::pin(cpu) {
        eprintln!("warning: {e}; the spinners may share a CPU");
    }
    let policy = setup::set_policy(libc::SCHED_FIFO, FIFO_PRIORITY);
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(args.seconds);
    let rest = Duration::from_micros(1000).saturating_sub(args.window);
    let (mut spun, mut gaps) = (Duration::ZERO, Vec::new());
    while Instant::now() < end {
        let window_start = Instant::now();
        let mut last = window_start;
        while last - window_start < args.window && last < end {
            let now = Instant::now();
            let gap = now - last;
            if gap > COUNTED_GAP {
                gaps.push(((last - start).as_micros() as u64, gap.as_micros() as u64));
            }
            last = now;
        }
        spun += last - window_start;
        std::thread::sleep(rest);
    }
    Stalls {
        cpu,
        policy,
        spun,
        gaps,
    }
}

fn report(s: &Stalls, tick_us: Option<u64>) {
    let policy = match &s.policy {
        Ok(()) => format!("SCHED_FIFO {FIFO_PRIORITY}"),
        Err(e) => format!("SCHED_OTHER (SCHED_FIFO refused: {e})"),
    };
    let counts: Vec<String> = BOUNDS_US
        .iter()
        .map(|&b| format!(">{b}: {}", s.gaps.iter().filter(|g| g.1 > b).count()))
        .collect();
    let mut lengths: Vec<u64> = s.gaps.iter().map(|g| g.1).collect();
    lengths.sort_unstable();
    let median = lengths.get(lengths.len() / 2).copied().unwrap_or(0);
    let longest = lengths.last().copied().unwrap_or(0);
    let lost_us: u64 = lengths.iter().sum();
    let spun_us = s.spun.as_micros().max(1) as f64;
    print!(
        "cpu {}: {policy}, spun {:.2} s; gaps {} µs; median {median} µs, longest {longest} µs; {:.2}% of the spin",
        s.cpu,
        s.spun.as_secs_f64(),
        counts.join(", "),
        100.0 * lost_us as f64 / spun_us
    );
    if let Some(period) = tick_us {
        let (aligned, pairs) = tick_aligned(&s.gaps, period);
        print!(
            "; {aligned} of {pairs} stalls over {ALIGNED_OVER_US} µs a whole number of {period} µs periods after the previous one"
        );
    }
    println!();
}

/// Of the stalls over `ALIGNED_OVER_US` after the first, how many began a whole number of `period`s
/// (within `TICK_SLACK_US`) after the previous one; and how many there were.
fn tick_aligned(gaps: &[(u64, u64)], period: u64) -> (usize, usize) {
    let starts: Vec<u64> = gaps
        .iter()
        .filter(|g| g.1 > ALIGNED_OVER_US)
        .map(|g| g.0)
        .collect();
    let aligned = starts
        .windows(2)
        .filter(|w| {
            let off = (w[1] - w[0]) % period;
            off <= TICK_SLACK_US || period - off <= TICK_SLACK_US
        })
        .count();
    (aligned, starts.len().saturating_sub(1))
}
