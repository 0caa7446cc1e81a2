//! Side-by-side report: std, parking_lot, proxy-lock's three policies and `Mutex::run` (on a
//! Handoff mutex), measured in the same
//! run, interleaved (every round runs every lock once, in rotating order), medians of several
//! rounds, and ratios against std and parking_lot.
//!
//! ```text
//! cargo build --release --examples
//! target/release/examples/bench_report --rounds 7 --write docs/benchmarks.md
//! ```
//!
//! The hackbench rows run the `hackbench` example binary found next to this one. With
//! `--write FILE.md`, a chart of the same medians goes to `FILE.svg`.

use std::fmt::Write as _;
use std::process::{Command, exit};
use std::time::{Duration, Instant};

#[path = "../benches/workloads/mod.rs"]
mod workloads;
use workloads::{Contention, CounterLock, Kind, LockUser, median, with_lock};

const USAGE: &str = "\
usage: bench_report [--rounds N] [--only uncontended|contention|hackbench] [--write FILE]";

/// Short: the section is a counter increment. Long: about a microsecond of work inside.
const SECTIONS: [(&str, u32, u32); 2] = [("short", 0, 20), ("long", 300, 100)];
const THREADS: [usize; 4] = [2, 4, 8, 16];
const HACKBENCH: [(&str, &[&str]); 2] = [
    ("-g 2 -l 200", &["-g", "2", "-l", "200"]),
    ("-g 10 -l 100", &["-g", "10", "-l", "100"]),
];

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

/// Runs `measure(kind)` for every lock, `rounds` times, rotating the order each round.
fn interleaved(rounds: usize, mut measure: impl FnMut(Kind) -> f64) -> Vec<f64> {
    let mut samples = vec![Vec::new(); Kind::ALL.len()];
    for r in 0..rounds {
        for i in 0..Kind::ALL.len() {
            let k = (i + r) % Kind::ALL.len();
            samples[k].push(measure(Kind::ALL[k]));
        }
    }
    samples.iter_mut().map(|s| median(s)).collect()
}

fn hackbench(kind: Kind, args: &[&str]) -> f64 {
    let exe = std::env::current_exe()
        .expect("current_exe")
        .with_file_name("hackbench");
    let out = Command::new(&exe)
        .args(args)
        .args(["--lock", kind.name(), "--json"])
        .output();
    let out = match out {
        Ok(o) if o.status.success() => o,
        Ok(o) => panic!(
            "{} failed: {}",
            exe.display(),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => {
            eprintln!(
                "bench_report: cannot run {} ({e}); build it with `cargo build --release --examples`",
                exe.display()
            );
            exit(2)
        }
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let secs = text
        .split("\"seconds\":")
        .nth(1)
        .and_then(|s| s.split(',').next());
    secs.and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("unexpected hackbench output: {text}"))
}

/// Draws every row as a group of bars, each lock's median relative to std's (std = 1.0), so
/// one axis serves nanoseconds and seconds alike. Bars above the axis are clipped and labelled.
fn chart(path: &str, rows: &[Row]) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    const TOP: f64 = 3.0;
    let colors = [
        RGBColor(120, 120, 120),
        RGBColor(230, 159, 0),
        RGBColor(86, 180, 233),
        RGBColor(204, 121, 167),
        RGBColor(0, 114, 178),
        RGBColor(0, 158, 115),
    ];
    let root = SVGBackend::new(path, (1200, 460)).into_drawing_area();
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

fn table(title: &str, unit: &str, rows: &[Row]) -> String {
    let mut s = format!("### {title}\n\n| {unit} |");
    for k in Kind::ALL {
        let _ = write!(s, " {} |", k.name());
    }
    s.push_str(
        " adaptive / std | adaptive / parking_lot | handoff / spin | run / spin | run / std | run / parking_lot |\n|---|",
    );
    s.push_str(&"---:|".repeat(Kind::ALL.len() + 6));
    s.push('\n');
    let idx = |k: Kind| Kind::ALL.iter().position(|&x| x == k).unwrap();
    for row in rows {
        let _ = write!(s, "| {} |", row.label);
        for m in &row.medians {
            let _ = write!(s, " {} |", fmt_num(*m));
        }
        let m = |k| row.medians[idx(k)];
        let _ = writeln!(
            s,
            " {:.2}x | {:.2}x | {:.2}x | {:.2}x | {:.2}x | {:.2}x |",
            m(Kind::Adaptive) / m(Kind::Std),
            m(Kind::Adaptive) / m(Kind::ParkingLot),
            m(Kind::Handoff) / m(Kind::Spin),
            m(Kind::Run) / m(Kind::Spin),
            m(Kind::Run) / m(Kind::Std),
            m(Kind::Run) / m(Kind::ParkingLot)
        );
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

fn fmt_num(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
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
            "--only" => only = Some(it.next().unwrap_or_else(|| usage())),
            "--write" => write_to = Some(it.next().unwrap_or_else(|| usage())),
            _ => usage(),
        }
    }
    let wants = |part: &str| only.as_deref().is_none_or(|o| o == part);
    let mut report = String::new();
    let mut charted: Vec<Row> = Vec::new();
    let _ = writeln!(
        report,
        "Measured on {} with `bench_report --rounds {rounds}`: every round runs every lock once, in rotating order; each cell is the median of {rounds} rounds. Ratios below 1.00x favour the numerator.\n",
        machine()
    );
    if wants("uncontended") {
        eprintln!("uncontended ...");
        const N: u64 = 20_000_000;
        let med = interleaved(rounds, |k| {
            with_lock(k, Uncontended(N)).as_secs_f64() * 1e9 / N as f64
        });
        let row = Row {
            label: "uncontended".into(),
            medians: med,
        };
        report += &table(
            "Uncontended lock + unlock (ns per pair, lower is better)",
            "",
            std::slice::from_ref(&row),
        );
        charted.push(row);
    }
    if wants("contention") {
        let mut rows = Vec::new();
        for (label, cs, outside) in SECTIONS {
            for threads in THREADS {
                eprintln!("contention {label} {threads} threads ...");
                let ops = if cs == 0 { 4_000_000 } else { 400_000 } / threads as u64;
                let run = Contention {
                    threads,
                    ops_per_thread: ops,
                    cs,
                    outside,
                };
                let med = interleaved(rounds, |k| {
                    with_lock(k, &run).as_secs_f64() * 1e9 / (ops * threads as u64) as f64
                });
                rows.push(Row {
                    label: format!("{label}, {threads} threads"),
                    medians: med,
                });
            }
        }
        report += &table(
            "Contended throughput (ns per critical section, lower is better)",
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
                medians: interleaved(rounds, |k| hackbench(k, args)),
            });
        }
        report += &table("hackbench (seconds, lower is better)", "args", &rows);
        charted.extend(rows.into_iter().map(|r| Row {
            label: format!("hackbench {}", r.label),
            ..r
        }));
    }
    print!("{report}");
    if let Some(path) = write_to {
        let svg = std::path::Path::new(&path).with_extension("svg");
        let svg_name = svg
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        chart(&svg.to_string_lossy(), &charted).unwrap_or_else(|e| {
            eprintln!("bench_report: cannot draw {}: {e}", svg.display());
            exit(1)
        });
        let doc = format!(
            "# Benchmarks\n\nGenerated by `examples/bench_report.rs`; do not edit by hand.\n\n![time relative to std]({svg_name})\n\n{report}"
        );
        std::fs::write(&path, doc).unwrap_or_else(|e| {
            eprintln!("bench_report: cannot write {path}: {e}");
            exit(1)
        });
        eprintln!("wrote {path}");
    }
}

fn usage() -> ! {
    eprintln!("{USAGE}");
    exit(2)
}
