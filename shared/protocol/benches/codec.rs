//! Micro-benchmarks of the codec: a frame carrying one 8-character edit encoded and decoded,
//! and the edit's sync payload validated and decoded (what the server does with every
//! write), beside the same for a 10,000-edit document's state. `cargo bench -p quire-protocol`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use quire_protocol::{ysync, ChannelId, Frame, Limits, Message};
use yrs::{Doc, ReadTxn, StateVector, Text, Transact};

fn codec(c: &mut Criterion) {
    let doc = Doc::with_client_id(7);
    let text = doc.get_or_insert_text("t");
    let mut edit = Vec::new();
    for i in 0..10_000u32 {
        let mut txn = doc.transact_mut();
        text.insert(&mut txn, i * 8, "abcdefgh");
        edit = txn.encode_update_v1();
    }
    let payload = ysync::encode_update(edit);
    let state = ysync::encode_step2(
        doc.transact()
            .encode_state_as_update_v1(&StateVector::default()),
    );
    let frame = Frame::new(ChannelId(1), Message::Sync(payload.clone())).encode();
    let limits = Limits::default();

    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::Elements(1));
    group.bench_function("frame_encode_edit", |b| {
        b.iter(|| Frame::new(ChannelId(1), Message::Sync(payload.clone())).encode())
    });
    group.bench_function("frame_decode_edit", |b| {
        b.iter(|| Frame::decode(&frame, &limits).unwrap())
    });
    group.bench_function("sync_validate_decode_edit", |b| {
        b.iter(|| ysync::decode_sync(&payload).unwrap())
    });
    group.throughput(Throughput::Bytes(state.len() as u64));
    group.bench_function("sync_validate_decode_10k_edit_state", |b| {
        b.iter(|| ysync::decode_sync(&state).unwrap())
    });
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
