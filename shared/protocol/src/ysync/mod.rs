//! The y-protocols payloads inside document channels: decoding with yrs behind guards, and
//! encoding the messages a peer sends. yrs trusts its input more than a server can: it
//! reserves memory from attacker-chosen counts, overflows clocks and debug-asserts on
//! out-of-range client IDs. Every decode here first walks the whole payload ([`validate`] for
//! updates) and checks each count against the bytes present, then runs yrs with any panic
//! contained, so a hostile payload costs one channel (closed with 4422), never the process.
//!
//! - [`validate`]: the structural walk of a v1 update that runs before yrs sees it.

use std::panic::{catch_unwind, AssertUnwindSafe};

use yrs::sync::awareness::AwarenessUpdate;
use yrs::sync::SyncMessage;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{StateVector, Update};

use crate::error::PayloadError;
use crate::varint::Reader;

pub mod validate;

pub use validate::{validate_update_v1, walk_update_v1, References, MAX_ANY_DEPTH};

/// y-protocols sync message tags (the first varint of a SYNC payload).
pub const SYNC_STEP_1: u64 = 0;
pub const SYNC_STEP_2: u64 = 1;
pub const SYNC_UPDATE: u64 = 2;

/// The v1 update that holds nothing: no structs, no deletions. What a client with nothing new
/// sends as its step 2.
pub const EMPTY_UPDATE: [u8; 2] = [0, 0];

/// A decoded and validated SYNC payload.
#[derive(Debug)]
pub enum SyncPayload {
    /// "Here is what I have; send me what I lack."
    Step1(StateVector),
    /// The answer to step 1: everything the asker lacked.
    Step2(Update),
    /// A live incremental update.
    Update(Update),
}

impl SyncPayload {
    /// Writes carry document changes and count towards durable acknowledgements.
    pub fn is_write(&self) -> bool {
        !matches!(self, SyncPayload::Step1(_))
    }
}

/// Whether a SYNC payload is a write (step 2 or update), judged from its tag alone.
/// Writes are numbered for `Ack` (docs/PROTOCOL.md §6), including those that fail to decode.
pub fn is_write(payload: &[u8]) -> bool {
    matches!(
        Reader::new(payload).read_varint(),
        Ok(SYNC_STEP_2 | SYNC_UPDATE)
    )
}

/// Decodes a SYNC payload, validating any update it carries.
pub fn decode_sync(payload: &[u8]) -> Result<SyncPayload, PayloadError> {
    decode_sync_with_references(payload).map(|(decoded, _)| decoded)
}

/// [`decode_sync`], with what a carried update refers to outside itself (empty for step 1).
pub fn decode_sync_with_references(
    payload: &[u8],
) -> Result<(SyncPayload, References), PayloadError> {
    let mut reader = Reader::new(payload);
    let tag = reader.read_varint().map_err(malformed)?;
    let len = usize::try_from(reader.read_varint().map_err(malformed)?).map_err(|_| too_short())?;
    let body = reader.read_bytes(len).map_err(malformed)?;
    reader.finish().map_err(malformed)?;
    match tag {
        SYNC_STEP_1 => Ok((
            SyncPayload::Step1(decode_state_vector(body)?),
            References::default(),
        )),
        SYNC_STEP_2 => {
            let (update, references) = decode_update_with_references(body)?;
            Ok((SyncPayload::Step2(update), references))
        }
        SYNC_UPDATE => {
            let (update, references) = decode_update_with_references(body)?;
            Ok((SyncPayload::Update(update), references))
        }
        other => Err(PayloadError::Malformed(format!(
            "unknown sync message tag {other}"
        ))),
    }
}

/// Decodes a v1 update (a step 2 or update payload) after [`validate_update_v1`] has walked
/// all of it. The panic guard stays as a second line of defence.
pub fn decode_update(bytes: &[u8]) -> Result<Update, PayloadError> {
    decode_update_with_references(bytes).map(|(update, _)| update)
}

/// [`decode_update`], with what the update refers to outside itself ([`References`]).
pub fn decode_update_with_references(bytes: &[u8]) -> Result<(Update, References), PayloadError> {
    let references = walk_update_v1(bytes)?;
    Ok((guarded(|| Update::decode_v1(bytes))?, references))
}

/// Decodes a v1 state vector after checking that its count is possible and that every client
/// ID fits in 53 bits (yrs debug-asserts on a larger one and truncates it in release builds).
pub fn decode_state_vector(bytes: &[u8]) -> Result<StateVector, PayloadError> {
    check_leading_count(bytes, 2)?;
    check_state_vector_client_ids(bytes)?;
    guarded(|| StateVector::decode_v1(bytes))
}

/// Walks the state vector entries (`client`, `clock`) and refuses client IDs ≥ 2^53.
fn check_state_vector_client_ids(bytes: &[u8]) -> Result<(), PayloadError> {
    check_client_ids(bytes, |reader| reader.read_varint().map(drop))
}

/// Walks a list whose entries start with a client ID varint and refuses IDs ≥ 2^53;
/// `rest_of_entry` reads what follows the ID in each entry.
fn check_client_ids(
    bytes: &[u8],
    rest_of_entry: impl Fn(&mut Reader<'_>) -> Result<(), crate::error::FrameError>,
) -> Result<(), PayloadError> {
    let mut reader = Reader::new(bytes);
    let count = reader.read_varint().map_err(malformed)?;
    for _ in 0..count {
        let client = reader.read_varint().map_err(malformed)?;
        if client >= 1 << 53 {
            return Err(PayloadError::ClientIdTooLarge(client));
        }
        rest_of_entry(&mut reader).map_err(malformed)?;
    }
    Ok(())
}

/// Decodes a y-protocols awareness update after checking that its count is possible and that
/// every client ID fits in 53 bits. yrs would silently truncate a larger ID in release builds,
/// and JavaScript peers (lib0's `readVarUint`) throw on one, so it must not be relayed.
pub fn decode_awareness(bytes: &[u8]) -> Result<AwarenessUpdate, PayloadError> {
    check_leading_count(bytes, 3)?;
    check_awareness_client_ids(bytes)?;
    guarded(|| AwarenessUpdate::decode_v1(bytes))
}

/// Walks the awareness entries (`client`, `clock`, `json`) and refuses client IDs ≥ 2^53.
fn check_awareness_client_ids(bytes: &[u8]) -> Result<(), PayloadError> {
    check_client_ids(bytes, |reader| {
        reader.read_varint()?;
        reader.read_string().map(drop)
    })
}

/// Each entry of the list a payload starts with takes at least `min_entry_len` bytes, so a
/// count larger than the bytes present is a lie told to make the decoder reserve memory.
fn check_leading_count(bytes: &[u8], min_entry_len: usize) -> Result<(), PayloadError> {
    let mut reader = Reader::new(bytes);
    let claimed = reader.read_varint().map_err(malformed)?;
    let available = reader.remaining();
    if claimed > (available / min_entry_len) as u64 {
        return Err(PayloadError::ImplausibleCount { claimed, available });
    }
    Ok(())
}

/// Runs a yrs decode, turning its error or panic into a [`PayloadError`].
fn guarded<T>(
    decode: impl FnOnce() -> Result<T, yrs::encoding::read::Error>,
) -> Result<T, PayloadError> {
    match catch_unwind(AssertUnwindSafe(decode)) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(PayloadError::Malformed(err.to_string())),
        Err(_) => Err(PayloadError::DecoderPanicked),
    }
}

fn malformed(err: crate::error::FrameError) -> PayloadError {
    PayloadError::Malformed(err.to_string())
}

fn too_short() -> PayloadError {
    PayloadError::Malformed("length does not fit in memory".into())
}

/// `SYNC` payload: sync step 1 carrying `state_vector`.
pub fn encode_step1(state_vector: &StateVector) -> Vec<u8> {
    SyncMessage::SyncStep1(state_vector.clone()).encode_v1()
}

/// `SYNC` payload: sync step 2 carrying a v1 `update`.
pub fn encode_step2(update: Vec<u8>) -> Vec<u8> {
    SyncMessage::SyncStep2(update).encode_v1()
}

/// `SYNC` payload: an incremental v1 `update`.
pub fn encode_update(update: Vec<u8>) -> Vec<u8> {
    SyncMessage::Update(update).encode_v1()
}

/// The v1 update bytes inside a step 2 or update `SYNC` payload (after the message tag and the
/// length), for relaying or storing them without re-encoding. Meant for a payload
/// [`decode_sync`] accepted as a step 2 or an update; for anything else the result is
/// whatever follows two varints (possibly empty).
pub fn update_bytes(payload: &[u8]) -> &[u8] {
    let mut reader = crate::varint::Reader::new(payload);
    let _ = reader.read_varint();
    let _ = reader.read_varint();
    reader.rest()
}

/// Parses the y-protocols awareness update into its entries without applying it:
/// `(client_id, clock, json)` for each client. Used to learn which awareness client IDs a
/// connection owns, so they can be removed when it drops.
pub fn awareness_entries(update: &AwarenessUpdate) -> Vec<(u64, u32, String)> {
    update
        .clients
        .iter()
        .map(|(id, entry)| (id.get(), entry.clock, entry.json.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_four_bytes_are_refused_without_reserving() {
        // Claims ~47.6M client groups in 3 bytes.
        let err = decode_update(&[0xbd, 0x95, 0xa7, 0x16]).unwrap_err();
        assert!(
            matches!(err, PayloadError::ImplausibleCount { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn oversized_client_id_is_refused_before_yrs_sees_it() {
        // One group of one struct from client 2^60 (above 53 bits).
        let mut bytes = vec![0x01, 0x01];
        crate::varint::write_varint(&mut bytes, 1 << 60);
        bytes.extend_from_slice(&[0x00, 0x04, 0x01, 0x01, 0x41, 0x01, 0x41, 0x00]);
        assert_eq!(
            decode_update(&bytes).unwrap_err(),
            PayloadError::ClientIdTooLarge(1 << 60)
        );
    }

    #[test]
    fn awareness_client_id_above_53_bits_is_refused() {
        let mut bytes = vec![0x01];
        crate::varint::write_varint(&mut bytes, 1 << 53);
        bytes.extend_from_slice(&[0x00, 0x04, b'n', b'u', b'l', b'l']);
        assert_eq!(
            decode_awareness(&bytes).unwrap_err(),
            PayloadError::ClientIdTooLarge(1 << 53)
        );
    }

    #[test]
    fn sync_tags_and_writes() {
        let step1 = encode_step1(&StateVector::default());
        assert_eq!(step1, vec![0x00, 0x01, 0x00]);
        assert!(!is_write(&step1));
        assert!(matches!(decode_sync(&step1), Ok(SyncPayload::Step1(_))));
        let update = encode_update(Update::new().encode_v1());
        assert!(is_write(&update));
        assert!(decode_sync(&update).unwrap().is_write());
        assert!(decode_sync(&[0x05, 0x00]).is_err());
        assert!(decode_sync(&[0x02, 0x09, 0x00]).is_err());
    }

    #[test]
    fn update_bytes_are_what_follows_tag_and_length() {
        let update = vec![0x01, 0x02, 0x03];
        assert_eq!(update_bytes(&encode_update(update.clone())), &update[..]);
        assert_eq!(update_bytes(&encode_step2(update.clone())), &update[..]);
    }
}
