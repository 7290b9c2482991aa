//! Mux frame decoding under hostile input: `Frame::decode` with the default and with small
//! limits, a connection's worth of frames through per-channel `Reassembler`s, and the
//! y-protocols payload of every complete SYNC or AWARENESS message. Any panic is a finding;
//! every refusal must be a typed error that names a close code.
//!
//! The input is read twice: whole, as one WebSocket message, and as a stream of messages, each
//! prefixed by a one-byte length, as a connection would deliver them.

#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use quire_protocol::ysync;
use quire_protocol::{ChannelId, CloseCode, Frame, FrameError, Limits, Message, Reassembler};

/// Tight limits, so that size checks are reached by short inputs.
const SMALL: Limits = Limits {
    max_frame_size: Limits::MIN_FRAME_SIZE,
    max_message_size: 4096,
    max_channels: 8,
    max_doc_id_len: 32,
};

fuzz_target!(|data: &[u8]| {
    for limits in [Limits::default(), SMALL] {
        match Frame::decode(data, &limits) {
            Ok(frame) => {
                // What was accepted re-encodes canonically and decodes the same.
                let again = frame.encode();
                assert!(again.len() <= data.len());
                assert_eq!(Frame::decode(&again, &limits).as_ref(), Ok(&frame));
                check_payload(&frame.message);
            }
            Err(err) => check_error(&err),
        }
    }

    let mut reassemblers: BTreeMap<ChannelId, Reassembler> = BTreeMap::new();
    for bytes in messages(data) {
        let frame = match Frame::decode(bytes, &SMALL) {
            Ok(frame) => frame,
            Err(err) => {
                check_error(&err);
                match err.channel_code() {
                    Some(_) => continue, // only that channel's Open is refused
                    None => break,       // the connection is closed
                }
            }
        };
        if frame.channel.is_control() {
            continue;
        }
        let reassembler = reassemblers.entry(frame.channel).or_default();
        match reassembler.push(frame.message, SMALL.max_message_size) {
            Ok(Some(message)) => check_payload(&message),
            Ok(None) => {}
            Err(err) => {
                check_error(&err);
                break;
            }
        }
        assert!(reassembler.buffered() <= SMALL.max_message_size as usize);
    }
});

/// Splits the input into messages, each prefixed by a one-byte length.
fn messages(mut data: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let (&len, rest) = data.split_first()?;
        let (message, rest) = rest.split_at(usize::from(len).min(rest.len()));
        data = rest;
        Some(message)
    })
}

fn check_error(err: &FrameError) {
    let code = err.close_code();
    assert!(CloseCode::ALL.contains(&code), "{err:?} maps to {code:?}");
    let _ = err.to_string();
}

/// Decodes a complete document message's y-protocols payload, as a server does before
/// applying or relaying it. Errors are expected; panics are not.
fn check_payload(message: &Message) {
    match message {
        Message::Sync(payload) => {
            if let Ok(decoded) = ysync::decode_sync(payload) {
                assert_eq!(decoded.is_write(), ysync::is_write(payload));
            }
        }
        Message::Awareness(payload) => {
            if let Ok(update) = ysync::decode_awareness(payload) {
                assert_eq!(
                    ysync::awareness_entries(&update).len(),
                    update.clients.len()
                );
            }
        }
        _ => {}
    }
}
