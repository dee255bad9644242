//! `Room::publish` fanned out to 10,000 in-process members, no sockets:
//! regressions in the core show here without the network.
//! Run with `cargo bench -p wschat-core`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use wschat_core::{Room, RoomConfig};

const MEMBERS: usize = 10_000;
const FRAME: &str = r#"{"usr":"bench","msg":"a hundred-byte message, more or less, as chat messages go.........."}"#;

fn publish_and_deliver(c: &mut Criterion) {
    let room = Room::new(RoomConfig::default().rate_limit(None));
    let mut members: Vec<_> = (0..MEMBERS).map(|_| room.join()).collect();
    let mut group = c.benchmark_group("fanout");
    group.throughput(Throughput::Elements(MEMBERS as u64));
    group.bench_function("publish one, 10k members receive it", |b| {
        b.iter(|| {
            room.publish(FRAME).try_outcome().unwrap().unwrap();
            for m in &mut members {
                m.try_recv().unwrap().unwrap();
            }
        })
    });
    // Publishing alone costs the same whatever the number of members: the
    // message goes into the ring once (members left behind here lag).
    group.throughput(Throughput::Elements(1));
    group.bench_function("publish only, 10k members joined", |b| {
        b.iter(|| room.publish(FRAME).try_outcome().unwrap().unwrap())
    });
    group.finish();
}

criterion_group!(benches, publish_and_deliver);
criterion_main!(benches);
