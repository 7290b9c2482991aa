//! Inputs of the `channel_payload` fuzz target (server/fuzz/) replayed through the same check,
//! on stable, in the normal test run: each finding stays fixed, and the committed seeds keep
//! passing.

mod support {
    pub(crate) mod channel_payload;
}

use support::channel_payload::check_channel_payload;

/// Found by the first seeded run (120 s): a SYNC with trailing bytes, then a step 2 whose update
/// from client 0 starts at clock 5 (so yrs keeps it pending) and holds legacy JSON content.
/// yrs applied it; encoding the room's state then merged the pending part, which yrs could not
/// read back, and panicked outside any `catch_unwind` (every snapshot, compaction and export
/// of the document would have). The validator now refuses legacy JSON content (4422).
const PENDING_LEGACY_JSON: &[u8] = &[
    0x00, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x6c, 0x6c, 0x6f, 0x00, 0x00, 0x17, 0x00, 0x01, 0x15,
    0x01, 0x01, 0x00, 0x05, 0x02, 0x02, 0x03, 0xff, 0x01, 0x01, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x6c, 0x6c, 0x6f, 0x00,
];

#[test]
fn a_pending_update_with_legacy_json_content_leaves_the_room_encodable() {
    check_channel_payload(PENDING_LEGACY_JSON);
}

/// Found by the second seeded run (under AddressSanitizer): a step 2 with client 1's "hello"
/// at clock 10, then an update with client 1's " world" at clock 5 whose origin is client 1's
/// clock 12, i.e. the item's own client at a later clock, which no real history holds; then a
/// delete. yrs split and freed a block it still pointed to and read it again while integrating
/// (heap use-after-free in `Update::exclude` / `integrate_item`). The validator now refuses an
/// item whose origin, right origin or parent is its own client at a clock not below its own.
const ORIGIN_FROM_OWN_FUTURE: &[u8] = &[
    0x00, 0x03, 0x00, 0x00, 0x01, 0x00, 0x00, 0x17, 0x00, 0x01, 0x15, 0x01, 0x01, 0x01, 0x0a, 0x04,
    0x01, 0x07, 0x63, 0x6e, 0x6f, 0x74, 0x65, 0x6e, 0x74, 0x05, 0x68, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
    0x00, 0x11, 0x00, 0x02, 0x0f, 0x01, 0x01, 0x01, 0x05, 0x84, 0x01, 0x0c, 0x06, 0x20, 0x77, 0x6f,
    0x72, 0x6c, 0x00, 0x00, 0x00, 0x39, 0x01,
];

#[test]
fn an_origin_in_the_items_own_future_is_refused_before_yrs_sees_it() {
    check_channel_payload(ORIGIN_FROM_OWN_FUTURE);
}

/// Found by the third seeded run (under AddressSanitizer), after the fix above: client 1's
/// clocks 10..15 with no origin (yrs integrated them although it held none of clocks 0..10),
/// then client 1's clocks 8..13 with other content. yrs again freed a block it still used. The
/// room now refuses an update whose structs for a client start past the clocks it holds of
/// that client (a correct peer's update always continues what the receiver holds).
const STRUCTS_PAST_A_GAP: &[u8] = &[
    0x00, 0x03, 0x00, 0x00, 0x01, 0x00, 0x00, 0x17, 0x00, 0x01, 0x15, 0x01, 0x01, 0x01, 0x0a, 0x04,
    0x01, 0x07, 0x63, 0x6e, 0x6f, 0x74, 0x65, 0x6e, 0x74, 0x05, 0x68, 0x65, 0x00, 0x00, 0x01, 0x00,
    0x00, 0x17, 0x00, 0x01, 0x15, 0x01, 0x01, 0x01, 0x08, 0x04, 0x01, 0x07, 0x63, 0x6f, 0x6e, 0x74,
    0x65, 0x6e, 0x74, 0x05, 0x68, 0x65, 0x6c, 0x6f, 0x02, 0x00, 0x6c, 0x01, 0x05,
];

#[test]
fn structs_past_a_gap_in_their_clients_clocks_are_refused() {
    check_channel_payload(STRUCTS_PAST_A_GAP);
}

#[test]
fn the_committed_seeds_pass() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/channel_payload");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("the seeds directory") {
        let path = entry.unwrap().path();
        check_channel_payload(&std::fs::read(&path).unwrap());
        seen += 1;
    }
    assert!(
        seen >= 3,
        "expected the committed seeds in {}",
        dir.display()
    );
}
