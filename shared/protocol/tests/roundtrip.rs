//! Property tests for the wire format: every message round-trips inside a frame, fragmented
//! messages reassemble within their frame size, and no input makes a decoder panic: every
//! refusal is a typed error with a close code.
//!
//! The seed is fixed so runs repeat; set `PROPTEST_RNG_SEED` to explore others (it is printed
//! with any failure) and `PROPTEST_CASES` to run more cases.

use std::collections::HashMap;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::RngSeed;
use quire_protocol::frame::{kind, peek_channel, MAX_HEADER_LEN};
use quire_protocol::varint::write_varint;
use quire_protocol::ysync::{self, SyncPayload};
use quire_protocol::{
    encode_fragmented, Access, ChannelCode, ChannelId, CloseCode, DocId, Frame, FrameError, Hello,
    Limits, Message, PayloadError, Reassembler, Welcome,
};

/// "QUIRE" in ASCII; the seed unless `PROPTEST_RNG_SEED` names another.
const DEFAULT_SEED: u64 = 0x51_55_49_52_45;

fn config(cases: u32) -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = cases;
    }
    if config.rng_seed == RngSeed::Random {
        config.rng_seed = RngSeed::Fixed(DEFAULT_SEED);
    }
    // The seed is fixed, so a failure replays without a regressions file.
    config.failure_persistence = None;
    eprintln!(
        "proptest seed {} (replay with PROPTEST_RNG_SEED={0})",
        config.rng_seed
    );
    config
}

/// Tight limits for the hostile-input properties, so size checks are reached.
const SMALL: Limits = Limits {
    max_frame_size: Limits::MIN_FRAME_SIZE,
    max_message_size: 4096,
    max_channels: 8,
    max_doc_id_len: 32,
};

// ---- strategies ---------------------------------------------------------------------------

/// Document channel IDs, weighted to every varint width.
fn doc_channel() -> impl Strategy<Value = ChannelId> {
    prop_oneof![Just(1u32), 2u32..128, 128u32..=u32::MAX, Just(u32::MAX)].prop_map(ChannelId)
}

/// Any text, control characters and astral planes included.
fn text() -> impl Strategy<Value = String> {
    "(?s).{0,48}"
}

fn access() -> impl Strategy<Value = Access> {
    prop_oneof![Just(Access::Read), Just(Access::Write)]
}

/// Document IDs `DocId::parse` accepts under the default limit, up to its exact length.
fn doc_id() -> impl Strategy<Value = DocId> {
    prop_oneof![
        "[^\\p{Cc}]{1,64}",
        "[ -~]{1,256}",
        "[a-z0-9]{1,12}(/[a-z0-9]{1,12}){0,3}",
    ]
    .prop_map(|text| {
        DocId::parse(&text, Limits::DEFAULT_MAX_DOC_ID_LEN)
            .unwrap_or_else(|err| panic!("strategy made an invalid doc ID {text:?}: {err}"))
    })
}

fn bytes(max_len: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..=max_len)
}

fn limits() -> impl Strategy<Value = Limits> {
    // A `WELCOME` announcing frames below the minimum is refused (frame.rs tests that).
    (
        Limits::MIN_FRAME_SIZE..,
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(
            |(max_frame_size, max_message_size, max_channels, max_doc_id_len)| Limits {
                max_frame_size,
                max_message_size,
                max_channels,
                max_doc_id_len,
            },
        )
}

/// Every message kind that belongs on channel 0.
fn control_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (any::<u32>(), text())
            .prop_map(|(revision, client)| Message::Hello(Hello { revision, client })),
        (any::<u64>(), any::<u32>(), any::<u32>(), limits()).prop_map(
            |(conn_id, heartbeat_interval_ms, heartbeat_timeout_ms, limits)| {
                Message::Welcome(Welcome {
                    conn_id,
                    heartbeat_interval_ms,
                    heartbeat_timeout_ms,
                    limits,
                })
            }
        ),
        any::<u64>().prop_map(Message::Ping),
        any::<u64>().prop_map(Message::Pong),
    ]
}

/// Every message kind that belongs on a document channel.
fn channel_message() -> impl Strategy<Value = Message> {
    prop_oneof![2 => payload_message(), 5 => unfragmented_message()]
}

/// The kinds `encode_fragmented` may split: sync and awareness.
fn payload_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        bytes(2048).prop_map(Message::Sync),
        bytes(2048).prop_map(Message::Awareness),
    ]
}

/// The document-channel kinds `encode_fragmented` always sends as one frame.
fn unfragmented_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (access(), doc_id()).prop_map(|(access, doc)| Message::Open { access, doc }),
        access().prop_map(|access| Message::Opened { access }),
        (any::<u16>(), text()).prop_map(|(code, reason)| Message::Close { code, reason }),
        any::<u64>().prop_map(Message::Ack),
        bytes(2048).prop_map(Message::Fragment),
    ]
}

/// A frame of any kind on a channel valid for it.
fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        control_message().prop_map(Frame::control),
        (doc_channel(), channel_message())
            .prop_map(|(channel, message)| Frame::new(channel, message)),
    ]
}

/// Frame sizes from the smallest that still fits a header and one byte of body to a few KiB.
fn frame_size() -> impl Strategy<Value = u32> {
    let min = MAX_HEADER_LEN as u32 + 1;
    prop_oneof![min..64, 64u32..=4096, Just(Limits::MIN_FRAME_SIZE)]
}

const KINDS: [u8; 11] = [
    kind::HELLO,
    kind::WELCOME,
    kind::PING,
    kind::PONG,
    kind::OPEN,
    kind::OPENED,
    kind::CLOSE,
    kind::SYNC,
    kind::AWARENESS,
    kind::ACK,
    kind::FRAGMENT,
];

/// Bytes a hostile or broken peer might send as one WebSocket message: pure noise, or a
/// plausible header (small channel, mostly known kinds) over a noisy body, sometimes
/// larger than [`SMALL`] allows.
fn hostile_frame() -> impl Strategy<Value = Vec<u8>> {
    let header = (
        prop_oneof![Just(0u32), 1u32..4, any::<u32>()],
        prop_oneof![4 => select(KINDS.to_vec()), 1 => any::<u8>()],
    );
    prop_oneof![
        bytes(64),
        vec(any::<u8>(), 1000..1100),
        (header, bytes(96)).prop_map(|((channel, kind), body)| {
            let mut out = Vec::new();
            write_varint(&mut out, channel.into());
            out.push(kind);
            out.extend_from_slice(&body);
            out
        }),
    ]
}

/// Sync payloads: noise, or a tag and a length prefix (right or wrong) over a body that
/// starts with a small count, so yrs's decoders get past their first checks.
fn hostile_sync() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        bytes(64),
        (0u64..4, hostile_update(), any::<bool>()).prop_map(|(tag, body, honest)| {
            let mut out = Vec::new();
            write_varint(&mut out, tag);
            let len = if honest {
                body.len()
            } else {
                body.len() / 2 + 1
            };
            write_varint(&mut out, len as u64);
            out.extend_from_slice(&body);
            out
        }),
    ]
}

/// Update, state vector or awareness bodies: noise, or a small leading count over noise.
fn hostile_update() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        bytes(64),
        (0u8..4, bytes(96)).prop_map(|(count, rest)| {
            let mut out = vec![count];
            out.extend_from_slice(&rest);
            out
        }),
    ]
}

// ---- checks -------------------------------------------------------------------------------

/// A frame error names a connection close code from the spec's table, and only a bad `Open`
/// (document ID or access byte) may be answered at channel level instead.
fn check_frame_error(err: &FrameError) -> Result<(), TestCaseError> {
    let code = err.close_code();
    prop_assert!(CloseCode::ALL.contains(&code), "{err:?} maps to {code:?}");
    prop_assert!(
        matches!(
            code,
            CloseCode::ProtocolError | CloseCode::InvalidPayload | CloseCode::MessageTooBig
        ),
        "{err:?} maps to {code:?}"
    );
    match err.channel_code() {
        None => {}
        Some(ChannelCode::BadRequest) => prop_assert!(
            matches!(err, FrameError::InvalidDocId | FrameError::InvalidAccess(_)),
            "{err:?}"
        ),
        Some(other) => prop_assert!(false, "{err:?} names channel code {other:?}"),
    }
    prop_assert!(!err.to_string().is_empty());
    Ok(())
}

/// A payload error closes the channel with 4422, and never comes from a panic inside yrs:
/// every payload is walked before yrs sees it (an update by `ysync::validate_update_v1`).
fn check_payload_error(err: &PayloadError) -> Result<(), TestCaseError> {
    prop_assert_eq!(err.channel_code(), ChannelCode::InvalidUpdate);
    prop_assert!(
        !matches!(err, PayloadError::DecoderPanicked),
        "yrs panicked on this input"
    );
    prop_assert!(!err.to_string().is_empty());
    Ok(())
}

fn check_payload<T>(result: Result<T, PayloadError>) -> Result<Option<T>, TestCaseError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(err) => check_payload_error(&err).map(|()| None),
    }
}

/// Decodes a SYNC payload; an accepted one is a write exactly when its tag says so.
fn check_sync(payload: &[u8]) -> Result<Option<SyncPayload>, TestCaseError> {
    let decoded = check_payload(ysync::decode_sync(payload))?;
    if let Some(decoded) = &decoded {
        prop_assert_eq!(decoded.is_write(), ysync::is_write(payload));
    }
    Ok(decoded)
}

/// Decodes a reassembled document message's y-protocols payload the way a server would.
fn check_document_payload(message: &Message) -> Result<(), TestCaseError> {
    match message {
        Message::Sync(payload) => {
            check_sync(payload)?;
        }
        Message::Awareness(payload) => {
            let decoded = check_payload(ysync::decode_awareness(payload))?;
            if let Some(update) = decoded {
                prop_assert_eq!(
                    ysync::awareness_entries(&update).len(),
                    update.clients.len()
                );
            }
        }
        _ => {}
    }
    Ok(())
}

/// Splits `message` with `encode_fragmented` and returns the frames.
fn split(channel: ChannelId, message: &Message, max_frame_size: u32) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    encode_fragmented(channel, message, max_frame_size, |frame| frames.push(frame));
    frames
}

// ---- properties ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn every_message_round_trips_in_a_frame(frame in frame()) {
        let bytes = frame.encode();
        prop_assert_eq!(peek_channel(&bytes), Some(frame.channel));
        prop_assert_eq!(Frame::decode(&bytes, &Limits::default()), Ok(frame.clone()));
        // A frame exactly at the size limit passes; one byte less of limit refuses it.
        let exact = Limits { max_frame_size: bytes.len() as u32, ..Limits::default() };
        prop_assert_eq!(Frame::decode(&bytes, &exact), Ok(frame));
        let under = Limits { max_frame_size: bytes.len() as u32 - 1, ..Limits::default() };
        prop_assert_eq!(
            Frame::decode(&bytes, &under),
            Err(FrameError::FrameTooLarge { len: bytes.len(), max: under.max_frame_size })
        );
    }

    #[test]
    fn kinds_on_the_wrong_channel_are_refused(
        control in control_message(),
        document in channel_message(),
        channel in doc_channel(),
    ) {
        for (channel, message) in [(channel, control), (ChannelId::CONTROL, document)] {
            let kind = message.kind();
            let bytes = Frame::new(channel, message).encode();
            let err = Frame::decode(&bytes, &Limits::default()).unwrap_err();
            prop_assert_eq!(&err, &FrameError::WrongChannel { kind, channel: channel.0 });
            check_frame_error(&err)?;
        }
    }

    #[test]
    fn invalid_doc_ids_refuse_only_the_channel(
        channel in doc_channel(),
        access in access(),
        prefix in "[a-z]{0,8}",
        control in "\\p{Cc}",
        suffix in "[a-z]{0,8}",
        long in "[a-z]{2,40}",
    ) {
        // A control character anywhere, or a name longer than the limit.
        let with_control = format!("{prefix}{control}{suffix}");
        let short = Limits { max_doc_id_len: long.len() as u32 - 1, ..Limits::default() };
        let cases = [(with_control, Limits::default()), (String::new(), short), (long, short)];
        for (name, limits) in cases {
            prop_assert_eq!(
                DocId::parse(&name, limits.max_doc_id_len),
                Err(FrameError::InvalidDocId)
            );
            let mut bytes = Vec::new();
            write_varint(&mut bytes, channel.0.into());
            bytes.push(kind::OPEN);
            bytes.push(access as u8);
            write_varint(&mut bytes, name.len() as u64);
            bytes.extend_from_slice(name.as_bytes());
            let err = Frame::decode(&bytes, &limits).unwrap_err();
            prop_assert_eq!(&err, &FrameError::InvalidDocId);
            prop_assert_eq!(err.channel_code(), Some(ChannelCode::BadRequest));
            prop_assert_eq!(peek_channel(&bytes), Some(channel));
        }
    }

    #[test]
    fn fragmented_messages_reassemble_within_the_frame_size(
        channel in doc_channel(),
        body in bytes(8192),
        awareness in any::<bool>(),
        max_frame_size in frame_size(),
    ) {
        let len = body.len();
        let message = if awareness { Message::Awareness(body) } else { Message::Sync(body) };
        let frames = split(channel, &message, max_frame_size);
        let piece_len = max_frame_size as usize - MAX_HEADER_LEN;
        prop_assert_eq!(frames.len(), len.div_ceil(piece_len).max(1));
        for bytes in &frames {
            let size = bytes.len();
            prop_assert!(size <= max_frame_size as usize, "{size} > {max_frame_size}");
        }

        // The whole message fits a budget of exactly its size.
        let limits = Limits {
            max_frame_size,
            max_message_size: len as u32,
            ..Limits::default()
        };
        let mut reassembler = Reassembler::default();
        let mut out = Vec::new();
        for (index, bytes) in frames.iter().enumerate() {
            let is_last = index + 1 == frames.len();
            let frame = Frame::decode(bytes, &limits)
                .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
            prop_assert_eq!(frame.channel, channel);
            prop_assert_eq!(matches!(frame.message, Message::Fragment(_)), !is_last);
            let done = reassembler
                .push(frame.message, limits.max_message_size)
                .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
            prop_assert_eq!(done.is_some(), is_last);
            out.extend(done);
            prop_assert!(reassembler.buffered() <= len);
        }
        prop_assert_eq!(reassembler.buffered(), 0);
        prop_assert_eq!(out, vec![message]);

        // One byte less of budget is refused, and never by buffering past the budget.
        if len > 0 {
            let max = len as u32 - 1;
            let mut reassembler = Reassembler::default();
            let mut refused = None;
            for bytes in &frames {
                let frame = Frame::decode(bytes, &limits).unwrap();
                match reassembler.push(frame.message, max) {
                    Ok(_) => prop_assert!(reassembler.buffered() <= max as usize),
                    Err(err) => {
                        refused = Some(err);
                        break;
                    }
                }
            }
            let err = refused.expect("an oversized message was accepted");
            prop_assert!(matches!(err, FrameError::MessageTooLarge { .. }), "{err:?}");
            prop_assert_eq!(err.close_code(), CloseCode::MessageTooBig);
        }
    }

    #[test]
    fn other_messages_are_one_frame(
        channel in doc_channel(),
        message in unfragmented_message(),
        max_frame_size in frame_size(),
    ) {
        let frames = split(channel, &message, max_frame_size);
        prop_assert_eq!(frames, vec![Frame::new(channel, message).encode()]);
    }

    #[test]
    fn interleaved_channels_reassemble_independently(
        first in (bytes(3000), any::<bool>()),
        second in (bytes(3000), any::<bool>()),
        schedule in vec(any::<bool>(), 0..256),
        max_frame_size in frame_size(),
    ) {
        let message = |(body, awareness): (Vec<u8>, bool)| {
            if awareness { Message::Awareness(body) } else { Message::Sync(body) }
        };
        let (a, b) = (ChannelId(1), ChannelId(2));
        let (first, second) = (message(first), message(second));
        let mut queues = [split(a, &first, max_frame_size), split(b, &second, max_frame_size)];
        queues.iter_mut().for_each(|q| q.reverse());

        // Merge the two channels' frames in the order `schedule` picks, with a ping from
        // channel 0 between every pair, as a sender's writer would.
        let mut wire = Vec::new();
        let mut picks = schedule.into_iter().chain(std::iter::repeat(true));
        while queues.iter().any(|q| !q.is_empty()) {
            let pick = usize::from(!picks.next().unwrap());
            let from = if queues[pick].is_empty() { 1 - pick } else { pick };
            wire.push(queues[from].pop().unwrap());
            wire.push(Frame::control(Message::Ping(wire.len() as u64)).encode());
        }

        let limits = Limits { max_frame_size, ..Limits::default() };
        let mut reassemblers: HashMap<ChannelId, Reassembler> = HashMap::new();
        let mut received: HashMap<ChannelId, Vec<Message>> = HashMap::new();
        for bytes in &wire {
            let frame = Frame::decode(bytes, &limits).unwrap();
            if frame.channel.is_control() {
                prop_assert!(matches!(frame.message, Message::Ping(_)));
                continue;
            }
            let reassembler = reassemblers.entry(frame.channel).or_default();
            if let Some(done) = reassembler.push(frame.message, limits.max_message_size).unwrap() {
                received.entry(frame.channel).or_default().push(done);
            }
        }
        prop_assert_eq!(received.remove(&a), Some(vec![first]));
        prop_assert_eq!(received.remove(&b), Some(vec![second]));
        prop_assert!(received.is_empty());
    }

    #[test]
    fn frame_decode_never_panics(bytes in hostile_frame()) {
        match Frame::decode(&bytes, &SMALL) {
            Ok(frame) => {
                // Decoding is stable: what was accepted re-encodes (canonically, so never
                // longer) to bytes that decode to the same frame.
                let again = frame.encode();
                prop_assert!(again.len() <= bytes.len());
                prop_assert_eq!(Frame::decode(&again, &SMALL), Ok(frame));
            }
            Err(err) => check_frame_error(&err)?,
        }
    }

    #[test]
    fn sync_decode_never_panics(payload in hostile_sync()) {
        // A state vector that was accepted re-encodes to one that decodes the same.
        if let Some(SyncPayload::Step1(sv)) = check_sync(&payload)? {
            match ysync::decode_sync(&ysync::encode_step1(&sv)) {
                Ok(SyncPayload::Step1(back)) => prop_assert_eq!(back, sv),
                other => prop_assert!(false, "re-encoded step 1 decodes to {other:?}"),
            }
        }
    }

    #[test]
    fn update_and_awareness_decode_never_panic(bytes in hostile_update()) {
        check_payload(ysync::decode_update(&bytes))?;
        check_payload(ysync::decode_state_vector(&bytes))?;
        check_document_payload(&Message::Awareness(bytes))?;
    }
}

proptest! {
    // Each case decodes up to 32 frames and their payloads; fewer cases keep it quick.
    #![proptest_config(config(128))]

    #[test]
    fn reassembly_of_hostile_frames_never_panics(wire in vec(hostile_frame(), 0..32)) {
        let mut reassemblers: HashMap<ChannelId, Reassembler> = HashMap::new();
        for bytes in &wire {
            let frame = match Frame::decode(bytes, &SMALL) {
                Ok(frame) => frame,
                Err(err) => {
                    check_frame_error(&err)?;
                    if err.channel_code().is_some() {
                        continue; // only that channel's Open is refused
                    }
                    break; // the connection is closed
                }
            };
            if frame.channel.is_control() {
                continue;
            }
            let reassembler = reassemblers.entry(frame.channel).or_default();
            match reassembler.push(frame.message, SMALL.max_message_size) {
                Ok(Some(message)) => check_document_payload(&message)?,
                Ok(None) => {}
                Err(err) => {
                    check_frame_error(&err)?;
                    break;
                }
            }
            prop_assert!(reassembler.buffered() <= SMALL.max_message_size as usize);
        }
    }
}
