//! Inputs found by the property tests (tests/roundtrip.rs) and the fuzz targets (fuzz/),
//! reduced and kept so they stay fixed. Each test names where its input came from.

use quire_protocol::varint::write_varint;
use quire_protocol::yrs::ClientID;
use quire_protocol::ysync::{self, SyncPayload};
use quire_protocol::PayloadError;

/// The largest client ID a Yjs peer can hold (2^53 - 1).
const MAX_CLIENT_ID: u64 = (1 << 53) - 1;

/// Found by `update_and_awareness_decode_never_panic` (proptest, default seed): a state
/// vector of "3 entries" whose first client ID is 2^53. yrs's `ClientID::new` debug-asserts
/// on it (a panic that `ysync` had to catch) and truncates it to 0 in release builds.
const STATE_VECTOR_CLIENT_2_POW_53: [u8; 10] =
    [3, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10, 0];

#[test]
fn state_vector_client_id_above_53_bits_is_refused() {
    assert_eq!(
        ysync::decode_state_vector(&STATE_VECTOR_CLIENT_2_POW_53).unwrap_err(),
        PayloadError::ClientIdTooLarge(1 << 53)
    );

    // The same state vector inside a sync step 1.
    let mut step1 = vec![0];
    write_varint(&mut step1, STATE_VECTOR_CLIENT_2_POW_53.len() as u64);
    step1.extend_from_slice(&STATE_VECTOR_CLIENT_2_POW_53);
    assert_eq!(
        ysync::decode_sync(&step1).unwrap_err(),
        PayloadError::ClientIdTooLarge(1 << 53)
    );
}

#[test]
fn state_vector_client_id_of_53_bits_is_accepted() {
    let mut bytes = vec![1];
    write_varint(&mut bytes, MAX_CLIENT_ID);
    bytes.push(5);
    let sv = ysync::decode_state_vector(&bytes).unwrap();
    assert_eq!(sv.get(&ClientID::new(MAX_CLIENT_ID)), 5);
    assert!(matches!(
        ysync::decode_sync(&ysync::encode_step1(&sv)),
        Ok(SyncPayload::Step1(back)) if back == sv
    ));
}

#[test]
fn awareness_client_ids_are_checked_at_the_53_bit_boundary() {
    let awareness = |client: u64| {
        let mut bytes = vec![1];
        write_varint(&mut bytes, client);
        bytes.extend_from_slice(&[0x01, 0x02, b'{', b'}']);
        bytes
    };
    let update = ysync::decode_awareness(&awareness(MAX_CLIENT_ID)).unwrap();
    assert_eq!(
        ysync::awareness_entries(&update),
        vec![(MAX_CLIENT_ID, 1, "{}".to_owned())]
    );
    assert_eq!(
        ysync::decode_awareness(&awareness(MAX_CLIENT_ID + 1)).unwrap_err(),
        PayloadError::ClientIdTooLarge(MAX_CLIENT_ID + 1)
    );
}

// ---- yrs's `Update::decode` ------------------------------------------------------------------
//
// Each input below was found by the `frame_decode` and `payload_decode` fuzz targets (fuzz/)
// and reduced by hand to the field that triggers it inside yrs 0.28.1's `Update::decode`.
// `decode_update` now walks the whole update first (`ysync::validate_update_v1`), so each is
// refused with a precise error before yrs reads a byte of it. The comments say what yrs does
// with the input unguarded.

/// update.rs:855: one group claiming ~203M blocks in 7 bytes. yrs `try_reserve`s 24 bytes per
/// block (4.9 GB of address space, untouched) before finding the input truncated.
const UPDATE_BLOCK_COUNT_BOMB: [u8; 7] = [0x01, 0xfc, 0xfc, 0xfc, 0x60, 0x08, 0x54];

/// block.rs:2062: one `ContentAny` block under root type "a" claiming 2^28 - 1 values; yrs
/// reserves 6.4 GB for them before reading the first.
const UPDATE_ANY_COUNT_BOMB: [u8; 12] = [
    0x01, 0x01, 0x01, 0x00, 0x08, 0x01, 0x01, b'a', 0xff, 0xff, 0xff, 0x7f,
];

/// update.rs:862: a GC block of length 2 at clock u32::MAX; `clock += len` overflows (a
/// panic in debug builds, a silent wrap in release builds, where the update is accepted).
const UPDATE_CLOCK_OVERFLOW: [u8; 11] = [
    0x01, 0x01, 0x01, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x00, 0x02, 0x00,
];

/// id_set.rs:30: no blocks, and a delete-set range of length 1 at clock u32::MAX; its end
/// overflows (a panic in debug builds, an inverted range accepted in release builds).
const UPDATE_DELETE_RANGE_OVERFLOW: [u8; 10] =
    [0x00, 0x01, 0x01, 0x01, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01];

/// block.rs:93 (a known yrs 0.28.1 hazard): one group of one struct from client
/// 2^53. yrs debug-asserts; release builds accept it with the ID truncated to 0.
const UPDATE_CLIENT_ID_2_POW_53: [u8; 16] = [
    0x01, 0x01, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10, 0x00, 0x04, 0x00, 0x01, 0x41, 0x00,
];

#[test]
fn update_count_bombs_are_refused_before_yrs_reserves() {
    assert_eq!(
        ysync::decode_update(&UPDATE_BLOCK_COUNT_BOMB).unwrap_err(),
        PayloadError::ImplausibleCount {
            claimed: 203_374_204,
            available: 2
        }
    );
    assert_eq!(
        ysync::decode_update(&UPDATE_ANY_COUNT_BOMB).unwrap_err(),
        PayloadError::ImplausibleCount {
            claimed: (1 << 28) - 1,
            available: 0
        }
    );
}

#[test]
fn update_clock_overflows_are_refused() {
    assert_eq!(
        ysync::decode_update(&UPDATE_CLOCK_OVERFLOW).unwrap_err(),
        PayloadError::ClockOverflow {
            client: 1,
            clock: u32::MAX,
            len: 2
        }
    );
    assert_eq!(
        ysync::decode_update(&UPDATE_DELETE_RANGE_OVERFLOW).unwrap_err(),
        PayloadError::ClockOverflow {
            client: 1,
            clock: u32::MAX,
            len: 1
        }
    );
}

#[test]
fn update_client_id_above_53_bits_is_refused() {
    assert_eq!(
        ysync::decode_update(&UPDATE_CLIENT_ID_2_POW_53).unwrap_err(),
        PayloadError::ClientIdTooLarge(1 << 53)
    );
}

#[test]
fn update_findings_are_refused_inside_sync_messages_too() {
    for update in [
        &UPDATE_BLOCK_COUNT_BOMB[..],
        &UPDATE_ANY_COUNT_BOMB[..],
        &UPDATE_CLOCK_OVERFLOW[..],
        &UPDATE_DELETE_RANGE_OVERFLOW[..],
        &UPDATE_CLIENT_ID_2_POW_53[..],
    ] {
        let direct = ysync::decode_update(update).unwrap_err();
        for message in [
            ysync::encode_step2(update.to_vec()),
            ysync::encode_update(update.to_vec()),
        ] {
            assert_eq!(ysync::decode_sync(&message).unwrap_err(), direct);
        }
    }
}

/// Found by the server's `channel_payload` fuzz target (server/fuzz/) in its first seeded run:
/// an update from client 0 at clock 5 (so yrs keeps it pending) holding legacy JSON content
/// with a count of 0. yrs read it as one value and accepted it; encoding the document's state
/// afterwards merged the pending part, which yrs could not read back, and panicked
/// (`EndOfBuffer` unwrapped in `merge_pending`), outside any `catch_unwind`. Legacy JSON
/// content is now refused.
const PENDING_LEGACY_JSON: [u8; 21] = [
    0x01, 0x01, 0x00, 0x05, 0x02, 0x02, 0x03, 0xff, 0x01, 0x01, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x6c, 0x6c, 0x6f, 0x00,
];

#[test]
fn legacy_json_content_that_yrs_cannot_reencode_is_refused() {
    assert!(matches!(
        ysync::validate_update_v1(&PENDING_LEGACY_JSON),
        Err(PayloadError::Unsupported(_))
    ));
    assert!(matches!(
        ysync::decode_sync(&ysync::encode_step2(PENDING_LEGACY_JSON.to_vec())),
        Err(PayloadError::Unsupported(_))
    ));
}

/// Found by the server's `channel_payload` fuzz target under AddressSanitizer: client 1's
/// " world" at clock 5 with its origin at client 1's clock 12. After client 1's clocks 10..15
/// had been applied, yrs freed a block it still used while integrating this item (heap
/// use-after-free). An item's origin, right origin or parent from its own client must have a
/// lower clock than the item.
const ORIGIN_FROM_OWN_FUTURE: [u8; 15] = [
    0x01, 0x01, 0x01, 0x05, 0x84, 0x01, 0x0c, 0x06, b' ', b'w', b'o', b'r', b'l', b'd', 0x00,
];

#[test]
fn an_origin_in_the_items_own_future_is_refused() {
    assert_eq!(
        ysync::validate_update_v1(&ORIGIN_FROM_OWN_FUTURE),
        Err(PayloadError::ImpossibleReference {
            client: 1,
            clock: 5,
            refers_to: 12
        })
    );
}
