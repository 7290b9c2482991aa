//! Micro-benchmarks of the codec: a frame carrying one 8-character edit encoded and decoded,
//! and the edit's sync payload validated and decoded (what the server does with every
//! write), beside the same for a 10,000-edit document's state; and a document's state digest
//! (§6.10) against encoding its state, for a document two clients wrote with insertions and
//! deletions all over it. `cargo bench -p quire-protocol`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use quire_protocol::{ysync, ChannelId, Frame, Limits, Message, StateDigest};
use yrs::updates::decoder::Decode;
use yrs::{Doc, ReadTxn, StateVector, Text, Transact, Update};

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

/// Two clients taking turns: 50,000 insertions of 1 to 8 characters at pseudo-random places
/// and 10,000 deletions of 1 to 16, each turn's update applied at the other client: a document
/// of many blocks and many deleted ranges, as long editing leaves it.
fn interleaved_document() -> Doc {
    let docs = [Doc::with_client_id(1), Doc::with_client_id(2)];
    let mut seed: u64 = 0x5eed;
    let mut next = |bound: u32| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((seed >> 33) % u64::from(bound.max(1))) as u32
    };
    for turn in 0..60_000u32 {
        let (doc, other) = (&docs[(turn % 2) as usize], &docs[1 - (turn % 2) as usize]);
        let text = doc.get_or_insert_text("t");
        let update = {
            let mut txn = doc.transact_mut();
            let len = text.len(&txn);
            if turn % 6 == 5 && len > 16 {
                let count = 1 + next(16);
                text.remove_range(&mut txn, next(len - count), count);
            } else {
                let piece = &"abcdefgh"[..1 + next(8) as usize];
                text.insert(&mut txn, next(len + 1), piece);
            }
            txn.encode_update_v1()
        };
        other
            .transact_mut()
            .apply_update(Update::decode_v1(&update).unwrap())
            .unwrap();
    }
    let [doc, _] = docs;
    doc
}

fn digest(c: &mut Criterion) {
    let doc = interleaved_document();
    let mut group = c.benchmark_group("digest");
    group.sample_size(20);
    group.bench_function("digest_interleaved_60k_edits", |b| {
        b.iter(|| StateDigest::of(&doc.transact()))
    });
    group.bench_function("encode_state_interleaved_60k_edits", |b| {
        b.iter(|| {
            doc.transact()
                .encode_state_as_update_v1(&StateVector::default())
        })
    });
    group.finish();
}

criterion_group!(benches, codec, digest);
criterion_main!(benches);
