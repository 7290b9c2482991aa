//! One driver connection run as a reader task and a writer task, for S11 (`isolation.rs`),
//! where one connection uploads a large update while its small edits must keep flowing. The
//! writer sends urgent frames (edits, heartbeat and sync answers, OPENs) ahead of queued bulk
//! frames (the fragments of a large upload), so the driver never holds an edit behind its own
//! upload; the reader stamps every message as it arrives, answers the server's PINGs and sync
//! step 1s itself, feeds relayed edits to the tracker and reports the rest as [`Note`]s.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use quire_protocol::{ysync, Limits};
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use yrs::{ReadTxn, StateVector, Transact};

use crate::conn::{connect, quire_hello, Target, Ws};
use crate::tracker::Tracker;
use crate::wire::{Codec, Event, Protocol};

/// How long `close` waits for the server's answer to the Close frame.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// One document a link opens. `stream`: the tracker's document index and this client's ID,
/// when edits are exchanged on it (relayed updates then go to the tracker).
#[derive(Debug, Clone)]
pub(crate) struct LinkDoc {
    pub(crate) name: String,
    pub(crate) stream: Option<(u32, u64)>,
}

/// What the reader reports.
#[derive(Debug)]
pub(crate) enum Note {
    /// The server's sync step 2 for document `doc`: it is synced.
    Synced { doc: usize, state: Vec<u8> },
    /// An update on a document without an edit stream (the rest of a lazily sent state).
    Update { doc: usize, update: Vec<u8> },
    /// Writes 1 to `upto` on `doc` are acknowledged.
    Acked { doc: usize, upto: u64 },
    /// The connection or one of its channels ended: why, with the close code if there was one.
    Ended(String),
}

#[derive(Debug)]
pub(crate) struct Noted {
    pub(crate) link: usize,
    pub(crate) at: Instant,
    pub(crate) note: Note,
}

/// The sending half of a link, cheap to clone: edit streams and the scenario hold one each.
#[derive(Debug, Clone)]
pub(crate) struct Outbox {
    codec: Arc<Codec>,
    limits: Limits,
    urgent: UnboundedSender<WsMessage>,
    bulk: UnboundedSender<WsMessage>,
    /// Writes queued per document, numbered as the server numbers them (PROTOCOL §6.5).
    writes: Arc<Vec<AtomicU64>>,
}

impl Outbox {
    /// Queues what opens document `doc` (Quire's OPEN; the others' step 1 at once).
    pub(crate) fn open(&self, doc: usize) -> Result<()> {
        for message in self
            .codec
            .open(doc, &self.limits, &StateVector::default())?
        {
            self.urgent.send(message).context("link closed")?;
        }
        Ok(())
    }

    /// Queues a small update on `doc` ahead of any bulk frames; returns its write number.
    pub(crate) fn update(&self, doc: usize, update: Vec<u8>) -> Result<u64> {
        let message = self.codec.sync(doc, ysync::encode_update(update));
        let n = self.count_write(doc);
        self.urgent.send(message).context("link closed")?;
        Ok(n)
    }

    /// The frames of one (large) update on `doc`, made ahead of sending them.
    pub(crate) fn bulk_frames(&self, doc: usize, update: Vec<u8>) -> Vec<WsMessage> {
        self.codec
            .sync_frames(doc, ysync::encode_update(update), &self.limits)
    }

    /// Queues frames made by [`Outbox::bulk_frames`] behind every urgent frame; returns
    /// the update's write number.
    pub(crate) fn send_bulk(&self, doc: usize, frames: Vec<WsMessage>) -> Result<u64> {
        let n = self.count_write(doc);
        for frame in frames {
            self.bulk.send(frame).context("link closed")?;
        }
        Ok(n)
    }

    fn count_write(&self, doc: usize) -> u64 {
        self.writes[doc].fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// One connection: its outbox and its two tasks.
pub(crate) struct Link {
    pub(crate) outbox: Outbox,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

impl Link {
    /// Connects (and for Quire says HELLO) and starts the tasks; opens nothing yet.
    pub(crate) async fn connect(
        target: &Target,
        id: usize,
        docs: Vec<LinkDoc>,
        tracker: Arc<Tracker>,
        notes: UnboundedSender<Noted>,
    ) -> Result<Self> {
        let names: Vec<String> = docs.iter().map(|d| d.name.clone()).collect();
        let decoder = Codec::new(target.protocol, names.clone())?;
        let codec = Arc::new(Codec::new(target.protocol, names)?);
        let mut ws = connect(target, &codec, None).await?;
        let limits = match target.protocol {
            Protocol::Quire => quire_hello(&mut ws).await?,
            Protocol::YWebsocket | Protocol::Hocuspocus => Limits::default(),
        };
        let (sink, stream) = ws.split();
        let (urgent, urgent_rx) = mpsc::unbounded_channel();
        let (bulk, bulk_rx) = mpsc::unbounded_channel();
        let outbox = Outbox {
            codec,
            limits,
            urgent,
            bulk,
            writes: Arc::new(docs.iter().map(|_| AtomicU64::new(0)).collect()),
        };
        let writer = tokio::spawn(write(sink, urgent_rx, bulk_rx, id, notes.clone()));
        let reader = tokio::spawn(read(
            stream,
            decoder,
            Reading {
                id,
                docs,
                outbox: outbox.clone(),
                tracker,
                notes,
            },
        ));
        Ok(Self {
            outbox,
            reader,
            writer,
        })
    }

    /// Sends a Close frame and waits a little for the server's answer.
    pub(crate) async fn close(self) {
        let _ = self.outbox.urgent.send(WsMessage::Close(None));
        let mut reader = self.reader;
        if tokio::time::timeout(CLOSE_WAIT, &mut reader).await.is_err() {
            reader.abort();
        }
        self.writer.abort();
    }
}

/// Frames at least this large are each followed by a yield to the driver's other tasks.
const YIELD_BYTES: usize = 64 * 1024;

/// Urgent frames first; a batch of them goes out with one flush, then the other tasks run.
async fn write(
    mut sink: SplitSink<Ws, WsMessage>,
    mut urgent: UnboundedReceiver<WsMessage>,
    mut bulk: UnboundedReceiver<WsMessage>,
    id: usize,
    notes: UnboundedSender<Noted>,
) {
    let result: Result<()> = async {
        loop {
            let message = tokio::select! {
                biased;
                Some(m) = urgent.recv() => m,
                Some(m) = bulk.recv() => m,
                else => return Ok(()),
            };
            sink.feed(message).await?;
            while let Ok(m) = urgent.try_recv() {
                sink.feed(m).await?;
            }
            sink.flush().await?;
            tokio::task::yield_now().await;
        }
    }
    .await;
    if let Err(e) = result {
        let _ = notes.send(Noted {
            link: id,
            at: Instant::now(),
            note: Note::Ended(format!("sending failed: {e:#}")),
        });
    }
}

struct Reading {
    id: usize,
    docs: Vec<LinkDoc>,
    outbox: Outbox,
    tracker: Arc<Tracker>,
    notes: UnboundedSender<Noted>,
}

async fn read(mut stream: SplitStream<Ws>, mut codec: Codec, r: Reading) {
    let note = |at: Instant, note: Note| {
        let _ = r.notes.send(Noted {
            link: r.id,
            at,
            note,
        });
    };
    let empty = StateVector::default();
    // Every document starts empty on the driver's side: its step 2 carries nothing.
    let empty_state = yrs::Doc::new().transact().encode_state_as_update_v1(&empty);
    let mut acked = vec![0u64; r.docs.len()];
    let ended = loop {
        let bytes = match stream.next().await {
            None => break "closed without a Close frame (1006)".to_owned(),
            Some(Err(e)) => break format!("read failed: {e}"),
            Some(Ok(WsMessage::Binary(b))) => b,
            Some(Ok(WsMessage::Close(f))) => {
                break match f {
                    Some(f) => format!("closed by the server: {} {}", u16::from(f.code), f.reason),
                    None => "closed by the server without a code".to_owned(),
                }
            }
            Some(Ok(_)) => continue,
        };
        let now = Instant::now();
        let event = match codec.decode(&bytes) {
            Ok(event) => event,
            Err(e) => break format!("undecodable message: {e:#}"),
        };
        let sent = match event {
            Event::Ping(n) => r.outbox.urgent.send(codec.pong(n)),
            Event::Opened(i) => r
                .outbox
                .urgent
                .send(codec.sync(i, ysync::encode_step1(&empty))),
            Event::Step1(i, _) if i < r.docs.len() => {
                r.outbox.count_write(i);
                let step2 = codec.sync(i, ysync::encode_step2(empty_state.clone()));
                r.outbox.urgent.send(step2)
            }
            Event::Step2(doc, state) => {
                note(now, Note::Synced { doc, state });
                Ok(())
            }
            Event::Update(doc, update) => {
                match r.docs.get(doc).and_then(|d| d.stream) {
                    Some((index, own)) => r.tracker.received(index, own, &update, now),
                    None => note(now, Note::Update { doc, update }),
                }
                Ok(())
            }
            Event::AckedUpTo(doc, n) if doc < acked.len() => {
                acked[doc] = acked[doc].max(n);
                note(now, Note::Acked { doc, upto: n });
                Ok(())
            }
            Event::AckedNext(doc) if doc < acked.len() => {
                acked[doc] += 1;
                note(
                    now,
                    Note::Acked {
                        doc,
                        upto: acked[doc],
                    },
                );
                Ok(())
            }
            Event::ChannelClosed(doc, why) => {
                let name = r.docs.get(doc).map_or("?", |d| d.name.as_str());
                note(now, Note::Ended(format!("channel of {name} closed: {why}")));
                Ok(())
            }
            _ => Ok(()),
        };
        if sent.is_err() {
            break "the writer stopped".to_owned();
        }
        // A socket with data ready never makes this task wait, and tokio's budget counts
        // reads, not bytes: a large message's frames would keep the driver's thread from the
        // other links' tasks, and their small edits would look late.
        if bytes.len() >= YIELD_BYTES {
            tokio::task::yield_now().await;
        }
    };
    note(Instant::now(), Note::Ended(ended));
}
