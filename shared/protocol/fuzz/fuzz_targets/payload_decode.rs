//! The y-protocols decoders under hostile input: the raw bytes as a v1 update, as a state
//! vector, as a SYNC payload and as an awareness update. yrs trusts its input;
//! `quire_protocol::ysync` must turn every bad input into a `PayloadError` without panicking
//! or reserving memory the input cannot justify (libFuzzer's `-rss_limit_mb` and
//! `-malloc_limit_mb` catch the latter).

#![no_main]

use libfuzzer_sys::fuzz_target;
use quire_protocol::ysync::{self, SyncPayload};

fuzz_target!(|data: &[u8]| {
    let _ = ysync::decode_update(data);

    if let Ok(sv) = ysync::decode_state_vector(data) {
        // An accepted state vector survives a round trip through a step 1.
        match ysync::decode_sync(&ysync::encode_step1(&sv)) {
            Ok(SyncPayload::Step1(back)) => assert_eq!(back, sv),
            other => panic!("re-encoded state vector decodes to {other:?}"),
        }
    }

    if let Ok(decoded) = ysync::decode_sync(data) {
        assert_eq!(decoded.is_write(), ysync::is_write(data));
    }

    if let Ok(update) = ysync::decode_awareness(data) {
        assert_eq!(
            ysync::awareness_entries(&update).len(),
            update.clients.len()
        );
    }
});
