//! Side-by-side report: std, parking_lot, a pthread `PTHREAD_PRIO_INHERIT` mutex (the kernel's
//! strict handoff, the reference for `Handoff`), proxy-lock's three policies and `Mutex::run`
//! (on a Handoff mutex), measured in the same run, interleaved (every round runs every lock
//! once, in rotating order), medians of several rounds, and ratios between them.
//!
//! ```text
//! cargo build --release --examples
//! target/release/examples/bench_report --rounds 9 --write docs/benchmarks.md
//! target/release/examples/bench_report --smoke     # the CI guard rail, about a minute
//! ```
//!
//! The hackbench rows run the `hackbench` example binary found next to this one. With
//! `--write FILE.md`, a chart of the same medians goes to `FILE.svg`. Instruction counts come
//! from `valgrind --tool=callgrind` when it is installed (they do not depend on the machine's
//! noise); without it that table is left out.
//!
//! `--smoke` measures a few rows, prints every figure it judges with its bound, and exits 1 if
//! one is an order of magnitude off: the bounds catch regressions like a strict handoff that
//! sleeps on every section, never this machine's noise.

use std::fmt::Write as _;
use std::process::{Command, exit};
use std::time::{Duration, Instant};

#[path = "../benches/workloads/mod.rs"]
mod workloads;
use workloads::{CounterLock, Kind, LockUser, TimedContention, median, with_lock};

const USAGE: &str = "\
usage: bench_report [--rounds N] [--only uncontended|contention|hackbench|rwlock|waits] [--write FILE]
       bench_report --smoke";

/// Short: the section is a counter increment. Long: about a microsecond of work inside.
const SECTIONS: [(&str, u32, u32); 2] = [("short", 0, 20), ("long", 300, 100)];
const THREADS: [usize; 4] = [2, 4, 8, 16];
/// How long each lock runs in each contention round.
const CONTENTION_RUN: Duration = Duration::from_millis(250);
const HACKBENCH: [(&str, &[&str]); 2] = [
    ("-g 2 -l 200", &["-g", "2", "-l", "200"]),
    ("-g 10 -l 100", &["-g", "10", "-l", "100"]),
];
/// Lock+unlock pairs per uncontended sample.
const UNCONTENDED_PAIRS: u64 = 20_000_000;
/// Read or write lock+unlock pairs per uncontended rwlock sample.
const RW_PAIRS: u64 = 10_000_000;
/// How long each rwlock runs in each mixed round.
const RW_RUN: Duration = Duration::from_millis(250);
/// The rwlock mixes: label and percentage of writes.
const RW_MIXES: [(&str, u32); 2] = [("95/5", 5), ("50/50", 50)];
/// The proxy-lock kinds, whose counters the wait-path table reads.
const PROXY_KINDS: [Kind; 4] = [Kind::Spin, Kind::Handoff, Kind::Adaptive, Kind::Run];

struct Uncontended(u64);

impl LockUser<Duration> for Uncontended {
    fn run<L: CounterLock>(self, lock: &L) -> Duration {
        let start = Instant::now();
        for _ in 0..self.0 {
            lock.with(|v| *v += 1);
        }
        let t = start.elapsed();
        assert_eq!(lock.get(), self.0);
        t
    }
}

/// One table row: a label and the median of each lock's samples (lower is better).
struct Row {
    label: String,
    medians: Vec<f64>,
}

impl Row {
    fn of(&self, kind: Kind) -> f64 {
        self.medians[Kind::ALL.iter().position(|&k| k == kind).unwrap()]
    }
}

/// Runs `measure(kind)` for every mutex, `rounds` times, rotating the order each round.
fn interleaved(rounds: usize, measure: impl FnMut(Kind) -> f64) -> Vec<f64> {
    rotated(&Kind::ALL, rounds, measure)
}

/// Runs `measure(kind)` for every one of `kinds`, `rounds` times, rotating the order each
/// round; the median of each kind's samples.
fn rotated<K: Copy>(kinds: &[K], rounds: usize, mut measure: impl FnMut(K) -> f64) -> Vec<f64> {
    let mut samples = vec![Vec::new(); kinds.len()];
    for r in 0..rounds {
        for i in 0..kinds.len() {
            let k = (i + r) % kinds.len();
            samples[k].push(measure(kinds[k]));
        }
    }
    samples.iter_mut().map(|s| median(s)).collect()
}

fn uncontended_ns(kind: Kind, pairs: u64) -> f64 {
    with_lock(kind, Uncontended(pairs)).as_secs_f64() * 1e9 / pairs as f64
}

fn contention_ns(kind: Kind, threads: usize, cs: u32, outside: u32) -> f64 {
    let run = TimedContention {
        threads,
        duration: CONTENTION_RUN,
        cs,
        outside,
    };
    with_lock(kind, &run)
}

/// One run of the `hackbench` example: its JSON line.
fn hackbench_run(kind: Kind, args: &[&str]) -> String {
    let exe = sibling("hackbench");
    let out = Command::new(&exe)
        .args(args)
        .args(["--lock", kind.name(), "--json"])
        .output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        Ok(o) => fail(&format!(
            "{} failed: {}",
            exe.display(),
            String::from_utf8_lossy(&o.stderr)
        )),
        Err(e) => fail(&format!(
            "cannot run {} ({e}); build it with `cargo build --release --examples`",
            exe.display()
        )),
    }
}

/// A number field of a hackbench JSON line.
fn json_field(json: &str, field: &str) -> f64 {
    json.split(&format!("\"{field}\":"))
        .nth(1)
        .and_then(|s| s.split([',', '}']).next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fail(&format!("no {field} in hackbench output: {json}")))
}

fn hackbench_secs(kind: Kind, args: &[&str]) -> f64 {
    json_field(&hackbench_run(kind, args), "seconds")
}

/// The path of another example binary built next to this one.
fn sibling(name: &str) -> std::path::PathBuf {
    std::env::current_exe()
        .expect("current_exe")
        .with_file_name(name)
}

/// Instructions per uncontended lock+unlock, for every lock, counted by callgrind: this
/// binary's `--uncontended-loop` mode run for N and 2N pairs, so start-up cancels out. `None`
/// when valgrind is not installed.
fn instructions_per_pair() -> Option<Vec<f64>> {
    const N: u64 = 1_000_000;
    let total = |kind: Kind, pairs: u64| -> Option<f64> {
        let out = Command::new("valgrind")
            .args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
            .arg(std::env::current_exe().ok()?)
            .args(["--uncontended-loop", kind.name(), &pairs.to_string()])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stderr);
        let line = text.lines().find(|l| l.contains("Collected"))?;
        line.split_whitespace()
            .last()?
            .replace(',', "")
            .parse()
            .ok()
    };
    Kind::ALL
        .iter()
        .map(|&k| Some((total(k, 2 * N)? - total(k, N)?) / N as f64))
        .collect()
}

/// Draws every row as a group of bars, each lock's median relative to std's (std = 1.0), so
/// one axis serves nanoseconds and seconds alike. Bars above the axis are clipped and labelled.
fn chart(path: &str, rows: &[Row]) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    const TOP: f64 = 3.0;
    let colors = [
        RGBColor(120, 120, 120),
        RGBColor(230, 159, 0),
        RGBColor(213, 94, 0),
        RGBColor(86, 180, 233),
        RGBColor(204, 121, 167),
        RGBColor(0, 114, 178),
        RGBColor(0, 158, 115),
    ];
    let root = SVGBackend::new(path, (1300, 460)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "time relative to std (lower is better; std = 1.0)",
            ("sans-serif", 20),
        )
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..rows.len() as f64, 0f64..TOP)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .disable_x_axis()
        .max_light_lines(1)
        .y_desc("x std")
        .draw()?;
    let width = 0.8 / Kind::ALL.len() as f64;
    for (k, kind) in Kind::ALL.iter().enumerate() {
        let color = colors[k];
        let bars = rows.iter().enumerate().map(|(i, row)| {
            let ratio = row.medians[k] / row.medians[0];
            let x0 = i as f64 + 0.1 + k as f64 * width;
            Rectangle::new(
                [(x0, 0.0), (x0 + width * 0.9, ratio.min(TOP))],
                color.filled(),
            )
        });
        chart
            .draw_series(bars)?
            .label(kind.name())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
        for (i, row) in rows.iter().enumerate() {
            let ratio = row.medians[k] / row.medians[0];
            if ratio > TOP {
                let x = i as f64 + 0.1 + k as f64 * width;
                chart.draw_series([Text::new(
                    format!("{ratio:.0}x"),
                    (x, TOP * 0.97),
                    ("sans-serif", 11),
                )])?;
            }
        }
    }
    for (i, row) in rows.iter().enumerate() {
        chart.draw_series([Text::new(
            short_label(&row.label),
            (i as f64 + 0.1, -0.12),
            ("sans-serif", 12),
        )])?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// "short, 16 threads" -> "short 16t", "hackbench -g 10 -l 100" -> "hackbench g10 l100".
fn short_label(label: &str) -> String {
    label
        .replace(" threads", "t")
        .replace(", ", " ")
        .replace("-g ", "g")
        .replace("-l ", "l")
}

/// The ratios every table shows: (label, numerator, denominator).
const RATIOS: [(&str, Kind, Kind); 6] = [
    ("adaptive / std", Kind::Adaptive, Kind::Std),
    ("adaptive / parking_lot", Kind::Adaptive, Kind::ParkingLot),
    ("handoff / pthread_pi", Kind::Handoff, Kind::PthreadPi),
    ("handoff / spin", Kind::Handoff, Kind::Spin),
    ("run / std", Kind::Run, Kind::Std),
    ("run / parking_lot", Kind::Run, Kind::ParkingLot),
];

fn table(title: &str, unit: &str, rows: &[Row]) -> String {
    let mut s = format!("### {title}\n\n| {unit} |");
    for k in Kind::ALL {
        let _ = write!(s, " {} |", k.name());
    }
    for (label, _, _) in RATIOS {
        let _ = write!(s, " {label} |");
    }
    s.push_str("\n|---|");
    s.push_str(&"---:|".repeat(Kind::ALL.len() + RATIOS.len()));
    s.push('\n');
    for row in rows {
        let _ = write!(s, "| {} |", row.label);
        for m in &row.medians {
            let _ = write!(s, " {} |", fmt_num(*m));
        }
        for (_, a, b) in RATIOS {
            let _ = write!(s, " {:.2}x |", row.of(a) / row.of(b));
        }
        s.push('\n');
    }
    s.push('\n');
    s
}

/// "2 CPUs (AMD EPYC), Linux 6.18.44": what the figures were measured on.
fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cpus} CPUs ({model}), Linux {}", kernel.trim())
}

/// The commit the report measures (`git describe --always --dirty`), or "an unknown commit".
fn commit() -> String {
    Command::new("git")
        .args([
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "describe",
            "--always",
            "--dirty",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| format!("commit `{}`", String::from_utf8_lossy(&o.stdout).trim()))
        .unwrap_or_else(|| "an unknown commit".into())
}

fn fmt_num(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// What the wait path did between equal threads, in runs long enough for steady state: how
/// often threads slept on a lock (counted as skipped, since nobody was lent anything), and how
/// many reads of scheduling attributes (syscalls besides the futex) they made meanwhile: a
/// thread reads its own and each owner's at most once per 10 ms once they have settled, so
/// reads follow time, not waits.
fn wait_path_table() -> String {
    let mut s = String::from(
        "### Wait path between equal threads (one run each; syscalls other than the futex)\n\n\
         | workload | lock | seconds | sleeps | attribute reads | reads per sleep | reads per thread per 10 ms |\n\
         |---|---|---:|---:|---:|---:|---:|\n",
    );
    let mut row = |workload: &str, kind: Kind, threads: f64, secs: f64, sleeps: f64, reads: f64| {
        let per_sleep = if sleeps > 0.0 {
            format!("{:.3}", reads / sleeps)
        } else {
            "-".into()
        };
        let _ = writeln!(
            s,
            "| {workload} | {} | {secs:.2} | {sleeps:.0} | {reads:.0} | {per_sleep} | {:.2} |",
            kind.name(),
            reads / (threads * secs / 0.01)
        );
    };
    // Sections of about 20 µs: waiters outlast their spin and sleep.
    const SLEEPY: (u32, u32) = (15_000, 100);
    for kind in PROXY_KINDS {
        let before = proxy_lock::counters();
        let start = Instant::now();
        with_lock(
            kind,
            &TimedContention {
                threads: 8,
                duration: Duration::from_secs(1),
                cs: SLEEPY.0,
                outside: SLEEPY.1,
            },
        );
        let secs = start.elapsed().as_secs_f64();
        let after = proxy_lock::counters();
        row(
            "contention, ~20 µs sections, 8 threads",
            kind,
            8.0,
            secs,
            (after.skipped - before.skipped) as f64,
            (after.attribute_reads - before.attribute_reads) as f64,
        );
    }
    for kind in PROXY_KINDS {
        let json = hackbench_run(kind, &["-g", "2", "-l", "2000"]);
        row(
            "hackbench -g 2 -l 2000 (80 threads)",
            kind,
            80.0,
            json_field(&json, "seconds"),
            json_field(&json, "sleeps_without_loan"),
            json_field(&json, "attribute_reads"),
        );
    }
    s.push('\n');
    s
}

/// Reader-writer locks side by side, interleaved as the mutexes are: uncontended read and write,
/// and threads that mix reads and writes.
fn rwlock_table(rounds: usize) -> String {
    use workloads::rwlock::{RwKind, mixed_ns, uncontended_ns};
    let interleave =
        |measure: &mut dyn FnMut(RwKind) -> f64| rotated(&RwKind::ALL, rounds, measure);
    let mut rows = vec![
        (
            "uncontended read".to_string(),
            interleave(&mut |k| uncontended_ns(k, false, RW_PAIRS)),
        ),
        (
            "uncontended write".to_string(),
            interleave(&mut |k| uncontended_ns(k, true, RW_PAIRS)),
        ),
    ];
    for (mix, writes) in RW_MIXES {
        for threads in THREADS {
            rows.push((
                format!("{mix} read/write, {threads} threads"),
                interleave(&mut |k| mixed_ns(k, threads, writes, RW_RUN)),
            ));
        }
    }
    let mut s = String::from(
        "### RwLock (ns per lock + unlock, or per operation across all threads; lower is better)\n\n\
         Mixed rows: each thread reads or writes a cache line (writes with the given share, chosen at random) and spins 2 pause hints between operations, for 0.25 s per lock and round.\n\n\
         | workload | std | parking_lot | proxy_lock | proxy_lock / std | proxy_lock / parking_lot |\n\
         |---|---:|---:|---:|---:|---:|\n",
    );
    for (label, m) in rows {
        let _ = writeln!(
            s,
            "| {label} | {} | {} | {} | {:.2}x | {:.2}x |",
            fmt_num(m[0]),
            fmt_num(m[1]),
            fmt_num(m[2]),
            m[2] / m[0],
            m[2] / m[1]
        );
    }
    s.push('\n');
    s
}

/// One bound the smoke run judges.
struct Check {
    what: String,
    value: f64,
    bound: f64,
}

/// The CI guard rail: a few rows, three rounds each, bounds an order of magnitude above what
/// this code measures. Exits 1 naming the figures out of bounds.
fn smoke() -> ! {
    let rounds = 3;
    let mut checks = Vec::new();
    let ratio = |row: &[f64], a: Kind, b: Kind| {
        let of = |k: Kind| row[Kind::ALL.iter().position(|&x| x == k).unwrap()];
        of(a) / of(b)
    };
    eprintln!("smoke: uncontended ...");
    let unc = interleaved(rounds, |k| uncontended_ns(k, 5_000_000));
    checks.push(Check {
        what: "uncontended lock+unlock, adaptive / std (time)".into(),
        value: ratio(&unc, Kind::Adaptive, Kind::Std),
        bound: 1.5,
    });
    match instructions_per_pair() {
        Some(ins) => checks.push(Check {
            what: "uncontended lock+unlock, adaptive / std (instructions)".into(),
            value: ratio(&ins, Kind::Adaptive, Kind::Std),
            bound: 1.25,
        }),
        None => println!("valgrind not installed: instruction counts not judged"),
    }
    eprintln!("smoke: contention ...");
    let short4 = interleaved(rounds, |k| contention_ns(k, 4, 0, 20));
    let short8 = interleaved(rounds, |k| contention_ns(k, 8, 0, 20));
    for (threads, row) in [(4, &short4), (8, &short8)] {
        checks.push(Check {
            what: format!("contention, short, {threads} threads, handoff / pthread_pi"),
            value: ratio(row, Kind::Handoff, Kind::PthreadPi),
            bound: 0.25,
        });
    }
    checks.push(Check {
        what: "contention, short, 4 threads, adaptive / std".into(),
        value: ratio(&short4, Kind::Adaptive, Kind::Std),
        bound: 2.0,
    });
    eprintln!("smoke: hackbench ...");
    let args = ["-g", "2", "-l", "200"];
    let hb = interleaved(rounds, |k| hackbench_secs(k, &args));
    checks.push(Check {
        what: "hackbench -g 2 -l 200, adaptive / std".into(),
        value: ratio(&hb, Kind::Adaptive, Kind::Std),
        bound: 2.0,
    });
    checks.push(Check {
        what: "hackbench -g 2 -l 200, handoff / pthread_pi".into(),
        value: ratio(&hb, Kind::Handoff, Kind::PthreadPi),
        bound: 4.0,
    });
    eprintln!("smoke: wait path ...");
    let before = proxy_lock::counters();
    contention_ns(Kind::Spin, 8, 300, 100);
    let after = proxy_lock::counters();
    let (sleeps, reads) = (
        after.skipped - before.skipped,
        after.attribute_reads - before.attribute_reads,
    );
    // In steady state a thread reads its own attributes and each owner's at most once per
    // 10 ms: reads grow with time, not with waits.
    let ten_ms_per_thread = 8.0 * CONTENTION_RUN.as_secs_f64() / 0.01;
    checks.push(Check {
        what: format!(
            "attribute reads per thread per 10 ms between equals (spin, 8 threads, {sleeps} sleeps, {reads} reads)"
        ),
        value: reads as f64 / ten_ms_per_thread,
        bound: 4.0,
    });
    println!("smoke on {} at {}:", machine(), commit());
    let mut failed = 0;
    for c in &checks {
        let ok = c.value <= c.bound;
        failed += usize::from(!ok);
        println!(
            "  {} {:<78} {:>8.3} (bound {})",
            if ok { "ok  " } else { "FAIL" },
            c.what,
            c.value,
            c.bound
        );
    }
    println!(
        "  (uncontended ns: std {:.2}, adaptive {:.2}; contention ns (4 threads): handoff {:.1}, pthread_pi {:.1}; hackbench s: std {:.3}, adaptive {:.3}, handoff {:.3}, pthread_pi {:.3})",
        unc[0],
        ratio(&unc, Kind::Adaptive, Kind::Std) * unc[0],
        ratio(&short4, Kind::Handoff, Kind::Std) * short4[0],
        ratio(&short4, Kind::PthreadPi, Kind::Std) * short4[0],
        hb[0],
        ratio(&hb, Kind::Adaptive, Kind::Std) * hb[0],
        ratio(&hb, Kind::Handoff, Kind::Std) * hb[0],
        ratio(&hb, Kind::PthreadPi, Kind::Std) * hb[0],
    );
    if failed > 0 {
        println!("bench smoke: {failed} figure(s) out of bounds");
        exit(1)
    }
    println!("bench smoke: every figure within bounds");
    exit(0)
}

fn main() {
    let mut rounds = 7;
    let mut only: Option<String> = None;
    let mut write_to: Option<String> = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--rounds" => {
                rounds = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|&n| n > 0)
                    .unwrap_or_else(|| usage())
            }
            "--only" => {
                only = Some(it.next().unwrap_or_else(|| usage()));
                if !["uncontended", "contention", "hackbench", "rwlock", "waits"]
                    .contains(&only.as_deref().unwrap_or_default())
                {
                    usage()
                }
            }
            "--write" => write_to = Some(it.next().unwrap_or_else(|| usage())),
            "--smoke" => smoke(),
            "--uncontended-loop" => {
                // Internal: the loop callgrind counts (`instructions_per_pair`).
                let kind = it.next().as_deref().and_then(Kind::parse);
                let pairs = it.next().and_then(|v| v.parse().ok());
                let (Some(kind), Some(pairs)) = (kind, pairs) else {
                    usage()
                };
                with_lock(kind, Uncontended(pairs));
                exit(0)
            }
            _ => usage(),
        }
    }
    let wants = |part: &str| only.as_deref().is_none_or(|o| o == part);
    let mut report = String::new();
    let mut charted: Vec<Row> = Vec::new();
    let _ = writeln!(
        report,
        "Measured on {} at {} with `bench_report --rounds {rounds}`: every round runs every lock once, in rotating order; each cell is the median of {rounds} rounds. Ratios below 1.00x favour the numerator. `pthread_pi` is a pthread mutex with `PTHREAD_PRIO_INHERIT` (with a pthread condition variable in hackbench): the kernel's strict handoff.\n",
        machine(),
        commit()
    );
    if wants("uncontended") {
        eprintln!("uncontended ...");
        let row = Row {
            label: "uncontended".into(),
            medians: interleaved(rounds, |k| uncontended_ns(k, UNCONTENDED_PAIRS)),
        };
        report += &table(
            "Uncontended lock + unlock (ns per pair, lower is better)",
            "",
            std::slice::from_ref(&row),
        );
        charted.push(row);
        eprintln!("instructions (callgrind) ...");
        match instructions_per_pair() {
            Some(medians) => {
                report += &table(
                    "Uncontended lock + unlock (instructions per pair, `valgrind --tool=callgrind`; exact, not timed)",
                    "",
                    &[Row {
                        label: "instructions".into(),
                        medians,
                    }],
                )
            }
            None => eprintln!("valgrind not installed: no instruction counts"),
        }
    }
    if wants("contention") {
        let mut rows = Vec::new();
        for (label, cs, outside) in SECTIONS {
            for threads in THREADS {
                eprintln!("contention {label} {threads} threads ...");
                rows.push(Row {
                    label: format!("{label}, {threads} threads"),
                    medians: interleaved(rounds, |k| contention_ns(k, threads, cs, outside)),
                });
            }
        }
        report += &table(
            "Contended throughput (ns per critical section, lower is better; each lock runs 0.25 s per round)",
            "section, threads",
            &rows,
        );
        charted.extend(rows);
    }
    if wants("hackbench") {
        let mut rows = Vec::new();
        for (label, args) in HACKBENCH {
            eprintln!("hackbench {label} ...");
            rows.push(Row {
                label: label.into(),
                medians: interleaved(rounds, |k| hackbench_secs(k, args)),
            });
        }
        report += &table("hackbench (seconds, lower is better)", "args", &rows);
        charted.extend(rows.into_iter().map(|r| Row {
            label: format!("hackbench {}", r.label),
            ..r
        }));
    }
    if wants("rwlock") {
        eprintln!("rwlock ...");
        report += &rwlock_table(rounds);
    }
    if wants("waits") {
        eprintln!("wait path ...");
        report += &wait_path_table();
    }
    print!("{report}");
    if let Some(path) = write_to {
        let svg = std::path::Path::new(&path).with_extension("svg");
        let svg_name = svg
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        chart(&svg.to_string_lossy(), &charted)
            .unwrap_or_else(|e| fail(&format!("cannot draw {}: {e}", svg.display())));
        let doc = format!(
            "# Benchmarks\n\nGenerated by `examples/bench_report.rs`; do not edit by hand.\n\n![time relative to std]({svg_name})\n\n{report}"
        );
        std::fs::write(&path, doc).unwrap_or_else(|e| fail(&format!("cannot write {path}: {e}")));
        eprintln!("wrote {path}");
    }
}

fn fail(message: &str) -> ! {
    eprintln!("bench_report: {message}");
    exit(2)
}

fn usage() -> ! {
    eprintln!("{USAGE}");
    exit(2)
}
