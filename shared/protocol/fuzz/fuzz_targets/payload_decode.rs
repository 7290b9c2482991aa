//! The y-protocols decoders under hostile input: the raw bytes as a v1 update, as a state
//! vector, as a SYNC payload and as an awareness update. yrs trusts its input;
//! `quire_protocol::ysync` must turn every bad input into a `PayloadError` without panicking
//! or reserving memory the input cannot justify (libFuzzer's `-rss_limit_mb` and
//! `-malloc_limit_mb` catch the latter), and an update that `validate_update_v1` accepts must
//! decode in yrs (a differential check that the walk reads exactly what yrs reads).

#![no_main]

use libfuzzer_sys::fuzz_target;
use quire_protocol::yrs::encoding::read::Error;
use quire_protocol::yrs::updates::decoder::Decode;
use quire_protocol::yrs::Update;
use quire_protocol::ysync::{self, SyncPayload};

fuzz_target!(|data: &[u8]| {
    // The walk reads what yrs reads: an update it accepts, yrs decodes, unless an embed's or
    // format value's JSON text (whose syntax the walk leaves to yrs) does not parse.
    if ysync::validate_update_v1(data).is_ok() {
        match Update::decode_v1(data) {
            Ok(_) | Err(Error::InvalidJSON(_)) => {}
            Err(err) => panic!("validated update refused by yrs: {err}"),
        }
    }
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
