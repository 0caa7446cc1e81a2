//! Priority inversion between ordinary threads, measured, for five locks side by side (four
//! reader-writer locks in the `rwlock-*` scenarios).
//!
//! In every scenario a background owner takes a lock over and over, a hog on the owner's CPU
//! runs in 20 ms bursts that leave the owner without a CPU, and a foreground thread on the
//! other CPU takes the same lock every millisecond, recording how long each acquisition
//! waited. Whenever the hog preempts the owner inside its critical section, the foreground
//! waits for the rest of the burst, unless the lock does something about it.
//!
//! ```text
//! cargo run --release --example priority_inversion --
//!     [--scenario direct|chain|cgroup|rt|rwlock-readers|rwlock-writer|all]
//!     [--seconds N] [--section cpu|rename] [--json] [--svg PATH] [--cpu-donation move|union|off]
//!     [--trace-stop-us US]
//! ```
//!
//! Scenarios (`scenario.rs`): `direct` (a SCHED_IDLE owner), `chain` (the foreground waits on
//! A, whose owner waits on B), `cgroup` (owner in a cgroup with cpu.shares 4, hog in one with
//! 512; needs root and the cgroup v1 cpu controller), `rt` (SCHED_FIFO foreground, SCHED_OTHER
//! owner, lower SCHED_FIFO hog; needs the right to use SCHED_FIFO), `rwlock-readers` (two
//! SCHED_IDLE readers of an RwLock; the foreground writes), `rwlock-writer` (a SCHED_IDLE
//! writer; the foreground reads). Locks (`locks.rs`): std, parking_lot, a pthread mutex with
//! PTHREAD_PRIO_INHERIT, proxy-lock's guard API and its `Mutex::run`; for the rwlock scenarios
//! std's, parking_lot's, a pthread rwlock (there is no PI protocol for rwlocks) and
//! proxy-lock's. Output: a table per scenario with the headline ratio last, a CDF chart of the
//! waits (`target/priority_inversion.svg` unless `--svg` says otherwise), or with `--json` one
//! JSON object per line and (scenario, lock). `--trace-stop-us US` (root) stops a kernel trace
//! the caller started at the first proxy-lock wait over US µs (`scripts/trace_long_waits.sh`).

mod cgroup;
mod locks;
mod report;
mod scenario;
mod setup;

use locks::{
    DemoRwLock, LOCKS, PiMutex, PthreadRwLock, RW_LOCKS, ReadersHold, RunLock, WriterHolds,
};
use report::Result;
use scenario::{Scenario, Section, Stage};
use setup::TraceStop;
use std::sync::Arc;
use std::time::Duration;

const USAGE: &str = "usage: priority_inversion \
[--scenario direct|chain|cgroup|rt|rwlock-readers|rwlock-writer|all] [--seconds N] \
[--section cpu|rename] [--json] [--svg PATH] [--cpu-donation move|union|off] [--unprivileged] \
[--trace-stop-us US]";

struct Args {
    scenarios: Vec<Scenario>,
    seconds: f64,
    rename: bool,
    json: bool,
    svg: String,
    trace_stop_after: Option<Duration>,
    unprivileged: bool,
}

fn parse_args() -> std::result::Result<Args, String> {
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    let mut a = Args {
        scenarios: Scenario::ALL.to_vec(),
        // 4 scenarios x 5 locks and 2 x 4: the whole demo in about a minute.
        seconds: 2.2,
        rename: false,
        json: false,
        svg: format!("{target}/priority_inversion.svg"),
        trace_stop_after: None,
        unprivileged: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--scenario" => {
                let v = value()?;
                a.scenarios = match v.as_str() {
                    "all" => Scenario::ALL.to_vec(),
                    name => vec![
                        *Scenario::ALL
                            .iter()
                            .find(|s| s.name() == name)
                            .ok_or(format!("unknown scenario {name}"))?,
                    ],
                }
            }
            "--seconds" => {
                let v = value()?;
                a.seconds = v
                    .parse()
                    .ok()
                    .filter(|s: &f64| *s > 0.0 && s.is_finite())
                    .ok_or(format!("--seconds: not a positive number: {v}"))?
            }
            "--section" => match value()?.as_str() {
                "cpu" => a.rename = false,
                "rename" => a.rename = true,
                other => return Err(format!("unknown section {other}")),
            },
            "--trace-stop-us" => {
                let v = value()?;
                a.trace_stop_after = Some(
                    v.parse()
                        .ok()
                        .and_then(|us: f64| Duration::try_from_secs_f64(us / 1e6).ok())
                        .ok_or(format!("--trace-stop-us: not a number of µs: {v}"))?,
                )
            }
            "--json" => a.json = true,
            "--unprivileged" => a.unprivileged = true,
            "--svg" => a.svg = value()?,
            "--cpu-donation" => proxy_lock::set_cpu_donation(match value()?.as_str() {
                "move" => proxy_lock::CpuDonation::Move,
                "union" => proxy_lock::CpuDonation::Union,
                "off" => proxy_lock::CpuDonation::Off,
                other => return Err(format!("unknown --cpu-donation {other}")),
            }),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0)
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(a)
}

/// Runs the stage with every lock, in table order. `trace_stop` watches proxy-lock's waits
/// only: the other locks' long waits are the inversion the demo shows.
fn run_all(
    stage: &Stage,
    trace_stop: Option<&Arc<TraceStop>>,
    progress: &mut impl FnMut(&str),
) -> Vec<Result> {
    let mut out = Vec::new();
    let locks: &[(&'static str, &'static str)] = if stage.scenario.is_rwlock() {
        &RW_LOCKS
    } else {
        &LOCKS
    };
    for (i, (lock, label)) in locks.iter().enumerate() {
        progress(label);
        let watch = trace_stop
            .filter(|_| lock.starts_with("proxy_lock"))
            .map(|t| (Arc::clone(t), *lock));
        let before = proxy_lock::counters();
        let waits = match (stage.scenario.is_rwlock(), i) {
            (false, 0) => stage.run::<std::sync::Mutex<()>>(watch),
            (false, 1) => stage.run::<parking_lot::Mutex<()>>(watch),
            (false, 2) => stage.run::<PiMutex>(watch),
            (false, 3) => stage.run::<proxy_lock::Mutex<()>>(watch),
            (false, _) => stage.run::<RunLock>(watch),
            (true, 0) => run_rw::<std::sync::RwLock<()>>(stage, watch),
            (true, 1) => run_rw::<parking_lot::RwLock<()>>(stage, watch),
            (true, 2) => run_rw::<PthreadRwLock>(stage, watch),
            (true, _) => run_rw::<proxy_lock::RwLock<()>>(stage, watch),
        };
        let after = proxy_lock::counters();
        out.push(Result {
            scenario: stage.scenario.name(),
            lock,
            label,
            waits,
            counted: lock.starts_with("proxy_lock").then(|| {
                (
                    after.donations - before.donations,
                    after.proxied - before.proxied,
                )
            }),
        });
    }
    out
}

/// `Stage::run` for a reader-writer lock, with the roles the scenario gives readers and writers.
fn run_rw<L: DemoRwLock>(
    stage: &Stage,
    watch: Option<(Arc<TraceStop>, &'static str)>,
) -> Vec<Duration> {
    if stage.scenario == Scenario::RwlockReaders {
        stage.run::<ReadersHold<L>>(watch)
    } else {
        stage.run::<WriterHolds<L>>(watch)
    }
}

fn main() {
    let args = parse_args().unwrap_or_else(|e| {
        eprintln!("priority_inversion: {e}\n{USAGE}");
        std::process::exit(2)
    });
    if args.unprivileged {
        // First, before any thread exists: every thread made later starts without it.
        setup::drop_cap_sys_nice().unwrap_or_else(|e| {
            eprintln!("priority_inversion: --unprivileged: {e}");
            std::process::exit(1)
        });
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pinned = cpus >= 2;
    if !pinned {
        eprintln!(
            "only {cpus} CPU: every scenario needs the owner and the foreground on different CPUs (the foreground's CPU is what the owner borrows); running unpinned, which shows less"
        );
    }
    let trace_stop = args.trace_stop_after.map(|after| {
        Arc::new(TraceStop::open(after).unwrap_or_else(|e| {
            eprintln!("priority_inversion: --trace-stop-us: {e}");
            std::process::exit(1)
        }))
    });
    let caps = proxy_lock::capabilities();
    if args.unprivileged {
        eprintln!(
            "--unprivileged: CAP_SYS_NICE dropped, RLIMIT_NICE and RLIMIT_RTPRIO 0: proxy-lock can lend CPUs only\n{caps}"
        );
    } else if !caps.can_leave_idle {
        eprintln!("{caps}\n(donation cannot lift a SCHED_IDLE owner here; CPU loans still work)");
    }
    let rename = args.rename.then(|| {
        setup::RenameDir::create().unwrap_or_else(|e| {
            eprintln!("priority_inversion: --section rename: {e}");
            std::process::exit(1)
        })
    });
    let section = match rename {
        Some(dir) => Section::Rename(std::sync::Arc::new(dir)),
        None => Section::Cpu(Duration::from_micros(100)),
    };
    if !args.json {
        println!(
            "each owner's critical section: {}; {} s per lock",
            section.describe(),
            args.seconds
        );
    }
    let locks_of = |s: &Scenario| {
        if s.is_rwlock() {
            RW_LOCKS.len()
        } else {
            LOCKS.len()
        }
    };
    let total: usize = args.scenarios.iter().map(locks_of).sum();
    let mut done = 0;
    let mut all: Vec<Vec<Result>> = Vec::new();
    for scenario in &args.scenarios {
        let groups = match scenario.prepare() {
            Ok(g) => g,
            Err(why) => {
                // Once: in the table, or on stderr beside the JSON lines.
                let line = format!("{}: skipped: {why}", scenario.name());
                if args.json {
                    eprintln!("{line}");
                } else {
                    println!("\n{line}");
                }
                done += locks_of(scenario);
                continue;
            }
        };
        let stage = Stage {
            scenario: *scenario,
            pinned,
            section: section.clone(),
            groups,
            seconds: args.seconds,
        };
        let results = run_all(&stage, trace_stop.as_ref(), &mut |label| {
            done += 1;
            eprintln!(
                "[{done}/{total}] {}: {label} for {} s ...",
                scenario.name(),
                args.seconds
            );
        });
        // The groups go (are removed) once their threads have exited.
        drop(stage);
        if args.json {
            for r in &results {
                println!("{}", r.json());
            }
        } else {
            println!("\n{}: {}", scenario.name(), scenario.describe());
            println!("{}", Result::header());
            for r in &results {
                println!("{}", r.row());
            }
            let refs: Vec<&Result> = results.iter().collect();
            println!("{}", report::headline(scenario.name(), &refs));
        }
        all.push(results);
    }
    if !args.json {
        println!(
            "\nA max near the hog's {} ms burst is the inversion: the foreground waited for a thread the scheduler had set aside.",
            scenario::HOG_BURST.as_millis()
        );
    }
    let panels: Vec<(&str, Vec<&Result>)> = all
        .iter()
        .map(|rs| (rs[0].scenario, rs.iter().collect()))
        .collect();
    if panels.is_empty() {
        return;
    }
    if let Some(dir) = std::path::Path::new(&args.svg).parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    match report::chart(&args.svg, &panels) {
        Ok(()) => eprintln!("wrote {}", args.svg),
        Err(e) => {
            eprintln!("priority_inversion: cannot draw {}: {e}", args.svg);
            std::process::exit(1)
        }
    }
}
