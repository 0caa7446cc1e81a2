//! hackbench at small sizes under criterion: one group of 20 senders and 20 receivers, every
//! lock in one run. The full-size, interleaved comparison is `examples/bench_report.rs`.

use criterion::{Criterion, criterion_group, criterion_main};
use std::time::Duration;

mod workloads;
use workloads::messaging::{
    self, AdaptivePipe, HandoffPipe, ParkingLotPipe, Pipe, PthreadPiPipe, Shape, SpinPipe, StdPipe,
};

const SHAPE: Shape = Shape {
    groups: 1,
    loops: 20,
    fds: 20,
    datasize: 100,
    capacity: 65536,
};

fn bench<P: Pipe>(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
) {
    g.bench_function(name, |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| Duration::from_secs_f64(messaging::run::<P>(&SHAPE)))
                .sum()
        })
    });
}

fn hackbench(c: &mut Criterion) {
    let mut g = c.benchmark_group("hackbench/g1-l20");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    bench::<StdPipe>(&mut g, "std");
    bench::<ParkingLotPipe>(&mut g, "parking_lot");
    bench::<PthreadPiPipe>(&mut g, "pthread_pi");
    bench::<SpinPipe>(&mut g, "spin");
    bench::<HandoffPipe>(&mut g, "handoff");
    bench::<AdaptivePipe>(&mut g, "adaptive");
    g.finish();
}

criterion_group!(benches, hackbench);
criterion_main!(benches);
