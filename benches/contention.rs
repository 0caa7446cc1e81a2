//! Contended throughput: 2, 4, 8 and 16 threads on one lock, short and long critical sections,
//! every lock in one run. Targets: Adaptive at or above std and parking_lot; Handoff within
//! 1.25x of Spin. The interleaved medians in the README come from `examples/bench_report.rs`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::time::Duration;

mod workloads;
use workloads::{Contention, Kind, with_lock};

/// Short: the section is a counter increment. Long: about a microsecond of work inside.
pub const SECTIONS: [(&str, u32, u32); 2] = [("short", 0, 20), ("long", 300, 100)];

fn contention(c: &mut Criterion) {
    for (label, cs, outside) in SECTIONS {
        let mut g = c.benchmark_group(format!("contention/{label}"));
        g.sample_size(10)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(1));
        for threads in [2, 4, 8, 16] {
            g.throughput(Throughput::Elements(threads as u64));
            for kind in Kind::ALL {
                g.bench_with_input(
                    BenchmarkId::new(kind.name(), threads),
                    &threads,
                    |b, &threads| {
                        b.iter_custom(|iters| {
                            let run = Contention {
                                threads,
                                ops_per_thread: iters,
                                cs,
                                outside,
                            };
                            with_lock(kind, &run)
                        })
                    },
                );
            }
        }
        g.finish();
    }
}

criterion_group!(benches, contention);
criterion_main!(benches);
