//! Micro-benchmarks of the server's two per-update costs besides the network: applying an
//! update to a room and fanning it out to every other subscriber's queue, and appending
//! updates to the SQLite store in one durable commit. `cargo bench -p quire-server`.

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use quire_protocol::ysync::{self, SyncPayload};
use quire_protocol::{Access, ChannelId, ConnId, DocId};
use quire_server::connection::ConnHandle;
use quire_server::room::{Room, SubKey};
use quire_server::store::{Append, SqliteStore, Store};
use yrs::{Doc, Text, Transact};

/// `count` SYNC update payloads, each an 8-character insert at the end of one client's text.
fn edits(count: usize) -> Vec<Vec<u8>> {
    let doc = Doc::with_client_id(7);
    let text = doc.get_or_insert_text("t");
    (0..count)
        .map(|i| {
            let mut txn = doc.transact_mut();
            text.insert(&mut txn, (i * 8) as u32, "abcdefgh");
            ysync::encode_update(txn.encode_update_v1())
        })
        .collect()
}

fn fan_out(c: &mut Criterion) {
    let mut group = c.benchmark_group("room_apply_and_fan_out");
    for subscribers in [2usize, 20, 200] {
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(
            BenchmarkId::from_parameter(subscribers),
            &subscribers,
            |b, &subscribers| {
                let room = Room::new(DocId::parse("bench/fanout", 256).unwrap());
                let mut queues = Vec::new();
                for n in 0..subscribers {
                    let (handle, queue) = ConnHandle::queue_only(ConnId(n as u64), 1 << 16);
                    let key = SubKey {
                        conn: ConnId(n as u64),
                        channel: ChannelId(1),
                    };
                    handle.channel_opened(ChannelId(1), 1);
                    room.subscribe(key, handle.clone(), 1, Access::Write);
                    queues.push((handle, queue));
                }
                let from = SubKey {
                    conn: ConnId(0),
                    channel: ChannelId(1),
                };
                // A fresh edit per iteration, made outside the timed part.
                let writer = Doc::with_client_id(7);
                let text = writer.get_or_insert_text("t");
                let mut len = 0u32;
                let mut applied = 0u64;
                b.iter_batched(
                    || {
                        let mut txn = writer.transact_mut();
                        text.insert(&mut txn, len, "abcdefgh");
                        len += 8;
                        ysync::encode_update(txn.encode_update_v1())
                    },
                    |payload| {
                        let Ok((SyncPayload::Update(update), references)) =
                            ysync::decode_sync_with_references(&payload)
                        else {
                            unreachable!()
                        };
                        let raw = ysync::update_bytes(&payload);
                        room.apply(from, (update, &references), raw, &payload, |_| {})
                            .unwrap();
                        applied += 1;
                        if applied % 1024 == 0 {
                            for (handle, queue) in &mut queues {
                                queue.drain(handle);
                            }
                        }
                    },
                    BatchSize::SmallInput,
                );
            },
        );
    }
    group.finish();
}

fn store_append(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = runtime.block_on(SqliteStore::open(dir.path())).unwrap();
    let docs: Vec<String> = (0..32).map(|d| format!("bench/store/{d}")).collect();
    let mut group = c.benchmark_group("store_append_batch");
    group.sample_size(20);
    // (updates, documents they are spread over, round robin as many clients' edits arrive)
    for (batch, spread) in [(1usize, 1usize), (64, 1), (64, 32), (1024, 32)] {
        let payloads = edits(batch);
        group.throughput(Throughput::Elements(batch as u64));
        let id = format!("{batch}_updates_{spread}_docs");
        group.bench_function(BenchmarkId::from_parameter(id), |b| {
            let appends: Vec<Append<'_>> = payloads
                .iter()
                .enumerate()
                .map(|(i, data)| Append {
                    doc: &docs[i % spread],
                    data,
                })
                .collect();
            b.iter(|| runtime.block_on(store.append_batch(&appends)).unwrap());
        });
    }
    group.finish();
}

criterion_group!(benches, fan_out, store_append);
criterion_main!(benches);
