//! The wire protocols the driver speaks, so every server is measured by the same client code:
//! Quire's mux protocol; the y-websocket protocol (one document per socket, the room in the
//! URL; y-sweet speaks it too); and Hocuspocus's (each message starts with the document's
//! name, many documents per socket). A [`Codec`] turns the driver's intents into WebSocket
//! messages and the server's messages into [`Event`]s; the connection loop in `conn.rs` is
//! the same for all three. All three carry y-protocols sync messages unchanged, the same bytes
//! Quire's `SYNC` payload holds (docs/BENCHMARKS.md, "Not yet measured", has the sources).

use std::collections::HashMap;

use anyhow::{bail, Context, Result};
use quire_protocol::fragment::{encode_body_fragmented, Reassembler};
use quire_protocol::frame::kind;
use quire_protocol::varint::{write_varint, Reader};
use quire_protocol::ysync::{self, SyncPayload};
use quire_protocol::{Access, ChannelId, DocId, Frame, Limits, Message};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use yrs::StateVector;

/// Which server protocol to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Protocol {
    /// Quire: HELLO, then OPEN per document on one socket; durable ACKs.
    Quire,
    /// y-websocket and y-sweet: one socket per document, `{doc}` in the URL names it; no ACK.
    YWebsocket,
    /// Hocuspocus: documents named in each message; an Auth message opens each; SyncStatus
    /// acknowledges each applied update (not its durability).
    Hocuspocus,
}

/// y-websocket / Hocuspocus message types.
const MSG_SYNC: u64 = 0;
const MSG_AWARENESS: u64 = 1;
const HOCUSPOCUS_AUTH: u64 = 2;
const HOCUSPOCUS_SYNC_STATUS: u64 = 8;
/// Hocuspocus Auth sub-type "token" (client → server).
const HOCUSPOCUS_AUTH_TOKEN: u64 = 0;

/// What a server message means to the driver. `usize` is the document's index on this
/// connection.
#[derive(Debug)]
pub(crate) enum Event {
    /// The document may start its sync (Quire's OPENED).
    Opened(usize),
    /// The server's sync step 1: answer with what it lacks.
    Step1(usize, StateVector),
    /// The server's sync step 2 (its v1 update bytes): the document is synced.
    Step2(usize, Vec<u8>),
    /// A relayed update (the raw v1 bytes).
    Update(usize, Vec<u8>),
    /// Writes up to `n` acknowledged (Quire: cumulative and durable).
    AckedUpTo(usize, u64),
    /// The next write acknowledged (Hocuspocus: applied, in order).
    AckedNext(usize),
    /// Another client's awareness update.
    Awareness,
    /// A Quire heartbeat PING to answer.
    Ping(u64),
    /// The server closed a document's channel.
    ChannelClosed(usize, String),
    /// Nothing the driver acts on.
    Other,
}

/// One connection's encoder and decoder.
#[derive(Debug)]
pub(crate) struct Codec {
    protocol: Protocol,
    doc_names: Vec<String>,
    by_name: HashMap<String, usize>,
    /// Quire: fragmented messages being put back together, per channel.
    reassembly: HashMap<ChannelId, Reassembler>,
}

impl Codec {
    pub(crate) fn new(protocol: Protocol, doc_names: Vec<String>) -> Result<Self> {
        if protocol == Protocol::YWebsocket && doc_names.len() > 1 {
            bail!(
                "the y-websocket protocol carries one document per socket (use --docs-per-conn 1)"
            );
        }
        let by_name = doc_names
            .iter()
            .enumerate()
            .map(|(i, name)| (name.clone(), i))
            .collect();
        Ok(Self {
            protocol,
            doc_names,
            by_name,
            reassembly: HashMap::new(),
        })
    }

    pub(crate) fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The URL to connect to: `{doc}` in the template is replaced by the socket's document
    /// (y-websocket: `ws://host:port/{doc}`; y-sweet: `ws://host:port/d/{doc}/ws/{doc}`),
    /// with `/` in its name made `-` (y-sweet's routes take one path segment).
    pub(crate) fn url(&self, template: &str) -> String {
        match (self.protocol, self.doc_names.first()) {
            (Protocol::YWebsocket, Some(doc)) => template.replace("{doc}", &doc.replace('/', "-")),
            _ => template.to_owned(),
        }
    }

    /// What opens document `i`. Quire sends its step 1 once OPENED arrives; the others send
    /// it right away (Hocuspocus after the Auth message that opens the document).
    pub(crate) fn open(
        &self,
        i: usize,
        limits: &Limits,
        empty: &StateVector,
    ) -> Result<Vec<WsMessage>> {
        Ok(match self.protocol {
            Protocol::Quire => {
                let doc =
                    DocId::parse(&self.doc_names[i], limits.max_doc_id_len).context("doc id")?;
                vec![quire(
                    i,
                    Message::Open {
                        access: Access::Write,
                        doc,
                    },
                )]
            }
            Protocol::YWebsocket => vec![self.sync(i, ysync::encode_step1(empty))],
            Protocol::Hocuspocus => {
                let mut auth = self.hocuspocus_prefix(i, HOCUSPOCUS_AUTH);
                write_varint(&mut auth, HOCUSPOCUS_AUTH_TOKEN);
                write_var_string(&mut auth, "");
                vec![
                    WsMessage::Binary(auth.into()),
                    self.sync(i, ysync::encode_step1(empty)),
                ]
            }
        })
    }

    /// A y-protocols sync message (step 1, step 2 or update) for document `i`.
    pub(crate) fn sync(&self, i: usize, payload: Vec<u8>) -> WsMessage {
        match self.protocol {
            Protocol::Quire => quire(i, Message::Sync(payload)),
            Protocol::YWebsocket => {
                let mut out = Vec::with_capacity(payload.len() + 1);
                write_varint(&mut out, MSG_SYNC);
                out.extend_from_slice(&payload);
                WsMessage::Binary(out.into())
            }
            Protocol::Hocuspocus => {
                let mut out = self.hocuspocus_prefix(i, MSG_SYNC);
                out.extend_from_slice(&payload);
                WsMessage::Binary(out.into())
            }
        }
    }

    /// A y-protocols awareness update for document `i`. Quire's AWARENESS body is the update
    /// itself; y-websocket and Hocuspocus carry it as a length-prefixed byte array
    /// (`writeVarUint8Array`) after the message type.
    pub(crate) fn awareness(&self, i: usize, payload: Vec<u8>) -> WsMessage {
        let mut out = match self.protocol {
            Protocol::Quire => return quire(i, Message::Awareness(payload)),
            Protocol::YWebsocket => {
                let mut out = Vec::with_capacity(payload.len() + 6);
                write_varint(&mut out, MSG_AWARENESS);
                out
            }
            Protocol::Hocuspocus => self.hocuspocus_prefix(i, MSG_AWARENESS),
        };
        write_varint(&mut out, payload.len() as u64);
        out.extend_from_slice(&payload);
        WsMessage::Binary(out.into())
    }

    /// The answer to a Quire PING.
    pub(crate) fn pong(&self, nonce: u64) -> WsMessage {
        binary_frame(ChannelId::CONTROL, Message::Pong(nonce))
    }

    /// A sync message for document `i` as one or more WebSocket messages: Quire splits a
    /// body larger than a frame into fragments (PROTOCOL §7); the others send it whole.
    pub(crate) fn sync_frames(
        &self,
        i: usize,
        payload: Vec<u8>,
        limits: &Limits,
    ) -> Vec<WsMessage> {
        if self.protocol != Protocol::Quire {
            return vec![self.sync(i, payload)];
        }
        let mut frames = Vec::new();
        encode_body_fragmented(
            ChannelId(i as u32 + 1),
            kind::SYNC,
            &payload,
            limits.max_frame_size,
            |frame| frames.push(WsMessage::Binary(frame.into())),
        );
        frames
    }

    /// Reads one binary message from the server.
    pub(crate) fn decode(&mut self, bytes: &[u8]) -> Result<Event> {
        match self.protocol {
            Protocol::Quire => {
                let frame = Frame::decode(bytes, &Limits::default())?;
                let reassembler = self.reassembly.entry(frame.channel).or_default();
                match reassembler.push(frame.message, Limits::DEFAULT_MAX_MESSAGE_SIZE)? {
                    Some(message) => quire_event(frame.channel, message),
                    None => Ok(Event::Other),
                }
            }
            Protocol::YWebsocket => {
                let mut reader = Reader::new(bytes);
                match reader.read_varint()? {
                    MSG_SYNC => decode_sync(0, reader.rest()),
                    MSG_AWARENESS => Ok(Event::Awareness),
                    _ => Ok(Event::Other),
                }
            }
            Protocol::Hocuspocus => {
                let mut reader = Reader::new(bytes);
                let len = reader.read_varint()? as usize;
                let name = std::str::from_utf8(reader.read_bytes(len)?)?;
                let Some(&i) = self.by_name.get(name) else {
                    return Ok(Event::Other);
                };
                match reader.read_varint()? {
                    MSG_SYNC => decode_sync(i, reader.rest()),
                    MSG_AWARENESS => Ok(Event::Awareness),
                    HOCUSPOCUS_SYNC_STATUS if reader.read_varint()? == 1 => Ok(Event::AckedNext(i)),
                    HOCUSPOCUS_SYNC_STATUS => Ok(Event::ChannelClosed(i, "update refused".into())),
                    _ => Ok(Event::Other),
                }
            }
        }
    }

    fn hocuspocus_prefix(&self, i: usize, kind: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.doc_names[i].len() + 8);
        write_var_string(&mut out, &self.doc_names[i]);
        write_varint(&mut out, kind);
        out
    }
}

/// A y-protocols sync message: the update bytes of an update are passed on undecoded.
fn decode_sync(i: usize, payload: &[u8]) -> Result<Event> {
    let mut reader = Reader::new(payload);
    let tag = reader.read_varint()?;
    if tag == ysync::SYNC_UPDATE || tag == ysync::SYNC_STEP_2 {
        let len = reader.read_varint()? as usize;
        let update = reader.read_bytes(len)?.to_vec();
        return Ok(if tag == ysync::SYNC_UPDATE {
            Event::Update(i, update)
        } else {
            Event::Step2(i, update)
        });
    }
    Ok(match ysync::decode_sync(payload)? {
        SyncPayload::Step1(sv) => Event::Step1(i, sv),
        SyncPayload::Step2(_) | SyncPayload::Update(_) => Event::Other,
    })
}

fn quire_event(channel: ChannelId, message: Message) -> Result<Event> {
    if channel == ChannelId::CONTROL {
        return Ok(match message {
            Message::Ping(n) => Event::Ping(n),
            _ => Event::Other,
        });
    }
    let i = (channel.0 as usize)
        .checked_sub(1)
        .context("channel 0 carries no document")?;
    Ok(match message {
        Message::Opened { .. } => Event::Opened(i),
        Message::Sync(payload) => decode_sync(i, &payload)?,
        Message::Ack(n) => Event::AckedUpTo(i, n),
        Message::Awareness(_) => Event::Awareness,
        Message::Close { code, reason } => Event::ChannelClosed(i, format!("{code} {reason}")),
        _ => Event::Other,
    })
}

/// Document `i` of a connection rides on Quire channel `i + 1`.
fn quire(i: usize, message: Message) -> WsMessage {
    binary_frame(ChannelId(i as u32 + 1), message)
}

pub(crate) fn binary_frame(channel: ChannelId, message: Message) -> WsMessage {
    WsMessage::Binary(Frame::new(channel, message).encode().into())
}

/// A y-protocols awareness update holding one client's state: its cursor at `at`.
pub(crate) fn awareness_update(client: u64, clock: u64, at: u32) -> Vec<u8> {
    let state =
        format!(r#"{{"user":{{"name":"bench-{client}"}},"cursor":{{"anchor":{at},"head":{at}}}}}"#);
    let mut out = Vec::with_capacity(state.len() + 16);
    write_varint(&mut out, 1);
    write_varint(&mut out, client);
    write_varint(&mut out, clock);
    write_var_string(&mut out, &state);
    out
}

/// lib0's `writeVarString`: the UTF-8 length as a varuint, then the bytes.
fn write_var_string(out: &mut Vec<u8>, text: &str) {
    write_varint(out, text.len() as u64);
    out.extend_from_slice(text.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(message: WsMessage) -> Vec<u8> {
        match message {
            WsMessage::Binary(b) => b.to_vec(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn hocuspocus_messages_carry_the_document_name() {
        let mut codec = Codec::new(Protocol::Hocuspocus, vec!["a".into(), "doc-b".into()]).unwrap();
        let open = codec
            .open(1, &Limits::default(), &StateVector::default())
            .unwrap();
        // Auth (type 2, token sub-type 0, empty token), then sync step 1 of an empty state.
        assert_eq!(bytes(open[0].clone()), b"\x05doc-b\x02\x00\x00");
        assert_eq!(bytes(open[1].clone()), b"\x05doc-b\x00\x00\x01\x00");
        let status = b"\x05doc-b\x08\x01";
        assert!(matches!(codec.decode(status).unwrap(), Event::AckedNext(1)));
        let update = b"\x01a\x00\x02\x03\x01\x02\x03";
        assert!(matches!(codec.decode(update).unwrap(), Event::Update(0, u) if u == [1, 2, 3]));
    }

    #[test]
    fn awareness_updates_decode_as_y_protocols_awareness() {
        let update = awareness_update(7, 3, 12);
        let decoded = ysync::decode_awareness(&update).unwrap();
        let (client, entry) = decoded.clients.iter().next().unwrap();
        assert_eq!((client.get(), entry.clock), (7, 3));
        assert!(entry.json.contains(r#""anchor":12"#));
        let mut codec = Codec::new(Protocol::YWebsocket, vec!["a".into()]).unwrap();
        assert_eq!(bytes(codec.awareness(0, vec![5, 6]))[..], [1, 2, 5, 6]);
        assert!(matches!(codec.decode(&[1, 5]).unwrap(), Event::Awareness));
    }

    #[test]
    fn y_websocket_messages_are_typed_sync_messages() {
        let mut codec = Codec::new(Protocol::YWebsocket, vec!["bench/s1/room".into()]).unwrap();
        assert_eq!(
            codec.url("ws://h:1/d/{doc}/ws/{doc}"),
            "ws://h:1/d/bench-s1-room/ws/bench-s1-room"
        );
        assert_eq!(
            bytes(codec.sync(0, ysync::encode_update(vec![9]))),
            [0, 2, 1, 9]
        );
        assert!(matches!(
            codec.decode(&[0, 0, 1, 0]).unwrap(),
            Event::Step1(0, _)
        ));
        // Type 1 is awareness; type 3 (auth) means nothing to the driver.
        assert!(matches!(
            codec.decode(&[1, 3, 0]).unwrap(),
            Event::Awareness
        ));
        assert!(matches!(codec.decode(&[3, 0]).unwrap(), Event::Other));
        assert!(Codec::new(Protocol::YWebsocket, vec!["a".into(), "b".into()]).is_err());
    }
}
