//! Journal write rate: records of 200 bytes (a small wave's envelope and
//! channel) appended and flushed in batches of 1,024, as the gateway's
//! writer does, under each fsync policy but `always` (one disk flush per
//! record, measured apart with fewer records).

use std::time::Duration;

use aether_journal::{FsyncPolicy, Journal, Options};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const PAYLOAD: [u8; 200] = [0x5a; 200];
const BATCH: u64 = 1024;

fn append(c: &mut Criterion) {
    let mut group = c.benchmark_group("journal_append");
    group.throughput(Throughput::Elements(BATCH));
    for (name, fsync) in [
        ("never", FsyncPolicy::Never),
        (
            "every_1000ms",
            FsyncPolicy::Every {
                interval: Duration::from_millis(1000),
                records: 0,
            },
        ),
    ] {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let options = Options {
            fsync,
            ..Options::default()
        };
        let (mut journal, _) = Journal::open(dir.path(), options).expect("the journal opens");
        group.bench_function(name, |b| {
            b.iter(|| {
                for i in 0..BATCH {
                    journal.append(i, &PAYLOAD).expect("append");
                }
                journal.flush().expect("flush");
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("journal_append_always");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let options = Options {
        fsync: FsyncPolicy::Always,
        ..Options::default()
    };
    let (mut journal, _) = Journal::open(dir.path(), options).expect("the journal opens");
    group.bench_function("always", |b| {
        b.iter(|| journal.append(0, &PAYLOAD).expect("append"))
    });
    group.finish();
}

criterion_group!(benches, append);
criterion_main!(benches);
