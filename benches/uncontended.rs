//! Uncontended lock + unlock, every lock in one run. Target: proxy-lock within 1.10x of std.
//! The interleaved medians in the README come from `examples/bench_report.rs`.

use criterion::{Criterion, criterion_group, criterion_main};
use std::time::Duration;

mod workloads;
use workloads::{CounterLock, Kind, LockUser, with_lock};

struct Uncontended<'a, 'b>(
    &'a mut criterion::BenchmarkGroup<'b, criterion::measurement::WallTime>,
    Kind,
);

impl LockUser<()> for Uncontended<'_, '_> {
    fn run<L: CounterLock>(self, lock: &L) {
        self.0
            .bench_function(self.1.name(), |b| b.iter(|| lock.with(|v| *v += 1)));
    }
}

fn uncontended(c: &mut Criterion) {
    let mut g = c.benchmark_group("uncontended");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for kind in Kind::ALL {
        with_lock(kind, Uncontended(&mut g, kind));
    }
    g.finish();
}

criterion_group!(benches, uncontended);
criterion_main!(benches);
