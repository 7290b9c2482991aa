//! One driver connection: plain WebSocket, the protocol's handshake (Quire: HELLO / WELCOME),
//! opening each document, the y-protocols sync handshake, then open-loop edits while reading
//! relayed updates, acknowledgements and PINGs. The protocol's bytes are `wire.rs`'s job.
//! Each document is one simulated client with its own yrs `Doc`; it never applies remote
//! updates (it only times them), so its own edits always extend its own text.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use quire_protocol::ysync;
use quire_protocol::{handshake, ChannelId, Frame, Hello, Limits, Message};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpSocket;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;
use yrs::{Doc, ReadTxn, StateVector, Text, TextRef, Transact};

use crate::histogram::Histogram;
use crate::schedule::Schedule;
use crate::tls;
use crate::tracker::Tracker;
use crate::wire::{awareness_update, binary_frame, Codec, Event, Protocol};

/// Where and how one connection connects.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// The URL, or for the y-websocket protocol a template with `{doc}` for the room.
    pub(crate) url: String,
    pub(crate) protocol: Protocol,
    pub(crate) addr: SocketAddr,
    pub(crate) token: Option<String>,
    /// For `wss://`: the TLS client set up to trust the server's certificate.
    pub(crate) tls: Option<tls::Tls>,
}

/// One document this connection opens: its channel, global index and name.
#[derive(Debug, Clone)]
pub(crate) struct ChannelPlan {
    pub(crate) doc_index: u32,
    pub(crate) doc_name: String,
    /// Subscribers of this document besides this one.
    pub(crate) others: u32,
    pub(crate) schedule: Option<Schedule>,
    /// When this client sends awareness updates (its cursor), if it does.
    pub(crate) awareness: Option<Schedule>,
}

#[derive(Debug, Clone)]
pub(crate) struct ConnPlan {
    pub(crate) source: Option<IpAddr>,
    pub(crate) channels: Vec<ChannelPlan>,
    pub(crate) edit_size: usize,
}

/// Sent once every channel of a connection is synced.
#[derive(Debug)]
pub(crate) struct Ready {
    /// TCP connect + WebSocket upgrade + HELLO/WELCOME.
    pub(crate) connect: Duration,
    /// First OPEN → last server step 2.
    pub(crate) sync: Duration,
    pub(crate) synced_at: Instant,
}

/// When load runs: edits go out in `[start, stop_sending)`; the connection closes at `end`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeline {
    pub(crate) start: Instant,
    pub(crate) stop_sending: Instant,
    pub(crate) end: Instant,
}

struct Channel {
    plan: ChannelPlan,
    doc: Doc,
    text: TextRef,
    len: u32,
    sent: u64,
    awareness_sent: u64,
    writes: u64,
    /// (write number, sent at, measured edit)
    unacked: VecDeque<(u64, Instant, bool)>,
    synced: bool,
}

/// A plain or TLS byte stream under the WebSocket.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub(crate) type Ws = WebSocketStream<Box<dyn Io>>;

/// Runs one connection to the end of the timeline.
pub(crate) async fn run(
    target: Arc<Target>,
    plan: ConnPlan,
    tracker: Arc<Tracker>,
    connect_gate: Arc<Semaphore>,
    ready: mpsc::UnboundedSender<Ready>,
    mut go: watch::Receiver<Option<Timeline>>,
) -> Result<()> {
    let permit = connect_gate.acquire().await?;
    let started = Instant::now();
    let names = plan.channels.iter().map(|c| c.doc_name.clone()).collect();
    let mut codec = Codec::new(target.protocol, names)?;
    let mut ws = connect(&target, &codec, plan.source).await?;
    let limits = match codec.protocol() {
        Protocol::Quire => quire_hello(&mut ws).await?,
        Protocol::YWebsocket | Protocol::Hocuspocus => Limits::default(),
    };
    let connect_time = started.elapsed();
    drop(permit);

    let open_at = Instant::now();
    let empty = StateVector::default();
    let mut channels = Vec::with_capacity(plan.channels.len());
    for (i, ch) in plan.channels.into_iter().enumerate() {
        for message in codec.open(i, &limits, &empty)? {
            ws.feed(message).await?;
        }
        let doc = Doc::with_client_id(next_client_id());
        let text = doc.get_or_insert_text("t");
        channels.push(Channel {
            plan: ch,
            doc,
            text,
            len: 0,
            sent: 0,
            awareness_sent: 0,
            writes: 0,
            unacked: VecDeque::new(),
            synced: false,
        });
    }
    ws.flush().await?;
    let mut unsynced = channels.len();
    if unsynced == 0 {
        let _ = ready.send(Ready {
            connect: connect_time,
            sync: Duration::ZERO,
            synced_at: Instant::now(),
        });
    }

    let content: String = "abcdefghijklmnopqrstuvwxyz"
        .chars()
        .cycle()
        .take(plan.edit_size)
        .collect();
    let mut acks = Histogram::default();
    let mut timeline: Option<Timeline> = None;
    let far = Instant::now() + Duration::from_secs(24 * 3600);
    loop {
        let deadline = match timeline {
            None => far,
            Some(t) => {
                let now = Instant::now();
                let next_edit = if now < t.stop_sending {
                    channels
                        .iter()
                        .flat_map(|c| {
                            let edit = c.plan.schedule.map(|s| t.start + s.due(c.sent));
                            let awareness =
                                c.plan.awareness.map(|s| t.start + s.due(c.awareness_sent));
                            edit.into_iter().chain(awareness)
                        })
                        .min()
                } else {
                    None
                };
                next_edit.unwrap_or(t.end).min(t.end)
            }
        };
        tokio::select! {
            incoming = ws.next() => {
                let bytes = match incoming {
                    None => break,
                    Some(Err(e)) => return Err(e.into()),
                    Some(Ok(WsMessage::Binary(b))) => b,
                    Some(Ok(WsMessage::Close(f))) => {
                        if timeline.is_some_and(|t| Instant::now() >= t.stop_sending) {
                            break;
                        }
                        bail!("server closed the connection: {f:?}");
                    }
                    Some(Ok(_)) => continue,
                };
                let now = Instant::now();
                match codec.decode(&bytes)? {
                    Event::Ping(n) => ws.send(codec.pong(n)).await?,
                    Event::Opened(i) => {
                        let ch = channels.get(i).context("OPENED for an unknown document")?;
                        let sv = ch.doc.transact().state_vector();
                        ws.send(codec.sync(i, ysync::encode_step1(&sv))).await?;
                    }
                    Event::Update(i, update) => {
                        let ch = channels.get(i).context("update for an unknown document")?;
                        tracker.received(ch.plan.doc_index, ch.doc.client_id().get(), &update, now);
                    }
                    Event::Step1(i, sv) => {
                        let ch = channels.get_mut(i).context("step 1 for an unknown document")?;
                        let diff = ch.doc.transact().encode_diff_v1(&sv);
                        ch.writes += 1;
                        ch.unacked.push_back((ch.writes, now, false));
                        ws.send(codec.sync(i, ysync::encode_step2(diff))).await?;
                    }
                    Event::Step2(i, _) => {
                        let ch = channels.get_mut(i).context("step 2 for an unknown document")?;
                        if !ch.synced {
                            ch.synced = true;
                            unsynced -= 1;
                            if unsynced == 0 {
                                let _ = ready.send(Ready {
                                    connect: connect_time,
                                    sync: now - open_at,
                                    synced_at: now,
                                });
                            }
                        }
                    }
                    Event::AckedUpTo(i, n) => {
                        let ch = channels.get_mut(i).context("ACK for an unknown document")?;
                        while ch.unacked.front().is_some_and(|(seq, ..)| *seq <= n) {
                            if let Some((_, at, true)) = ch.unacked.pop_front() {
                                acks.record(now.duration_since(at).as_micros() as u64);
                            }
                        }
                    }
                    Event::AckedNext(i) => {
                        let ch = channels.get_mut(i).context("ack for an unknown document")?;
                        if let Some((_, at, true)) = ch.unacked.pop_front() {
                            acks.record(now.duration_since(at).as_micros() as u64);
                        }
                    }
                    Event::Awareness => tracker.awareness(false, now),
                    Event::ChannelClosed(i, why) => bail!("the server closed document {i}: {why}"),
                    Event::Other => {}
                }
            }
            changed = go.changed(), if timeline.is_none() => {
                changed?;
                timeline = *go.borrow();
            }
            _ = tokio::time::sleep_until(deadline.into()) => {
                let Some(t) = timeline else { continue };
                let now = Instant::now();
                if now >= t.end {
                    break;
                }
                if now >= t.stop_sending {
                    continue;
                }
                let elapsed = now - t.start;
                for (i, ch) in channels.iter_mut().enumerate() {
                    if let Some(schedule) = ch.plan.awareness {
                        let due = schedule.due_by(elapsed);
                        while ch.awareness_sent < due {
                            ch.awareness_sent += 1;
                            let client = ch.doc.client_id().get();
                            let update = awareness_update(client, ch.awareness_sent, ch.len);
                            tracker.awareness(true, Instant::now());
                            ws.feed(codec.awareness(i, update)).await?;
                        }
                    }
                    let Some(schedule) = ch.plan.schedule else { continue };
                    let due = schedule.due_by(elapsed);
                    while ch.sent < due {
                        let update = {
                            let mut txn = ch.doc.transact_mut();
                            ch.text.insert(&mut txn, ch.len, &content);
                            txn.encode_update_v1()
                        };
                        let at = Instant::now();
                        let measured = tracker.in_window(at);
                        tracker.sent(ch.plan.doc_index, ch.doc.client_id().get(), ch.len, at, ch.plan.others, measured);
                        ch.len += content.len() as u32;
                        ch.sent += 1;
                        ch.writes += 1;
                        ch.unacked.push_back((ch.writes, at, measured));
                        ws.feed(codec.sync(i, ysync::encode_update(update))).await?;
                    }
                }
                ws.flush().await?;
            }
        }
    }
    tracker.merge_acks(&acks);
    let _ = ws.close(None).await;
    Ok(())
}

/// A client ID for one simulated client: 32 bits, as Yjs makes them (yrs's own are 53 bits,
/// which some servers truncate when they re-encode an update, and which make every update
/// larger than a browser's). Unique within a run; the base differs between runs.
pub(crate) fn next_client_id() -> u64 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    static BASE: OnceLock<u32> = OnceLock::new();
    let base = *BASE.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.subsec_nanos() ^ (d.as_secs() as u32))
    });
    // Never 0: keep clear of IDs a server might treat as special.
    u64::from(
        base.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed))
            .max(1),
    )
}

/// Unsent bytes the kernel may hold per socket (`TCP_NOTSENT_LOWAT`), as in the Quire client.
const NOTSENT_LOWAT: u32 = 128 * 1024;

pub(crate) async fn connect(target: &Target, codec: &Codec, source: Option<IpAddr>) -> Result<Ws> {
    let socket = if target.addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let tcp = socket.connect(target.addr).await?;
    tcp.set_nodelay(true)?;
    // As the Quire client does: a small edit queued behind a large upload waits for at most
    // this much in the kernel, not for a whole socket buffer.
    socket2::SockRef::from(&tcp).set_tcp_notsent_lowat(NOTSENT_LOWAT)?;
    let stream: Box<dyn Io> = match &target.tls {
        Some(tls) => Box::new(tls.connect(tcp).await?),
        None => Box::new(tcp),
    };
    let mut request = codec.url(&target.url).as_str().into_client_request()?;
    let headers = request.headers_mut();
    if codec.protocol() == Protocol::Quire {
        headers.insert("Sec-WebSocket-Protocol", handshake::SUBPROTOCOL.parse()?);
    }
    if let Some(token) = &target.token {
        headers.insert("Authorization", format!("Bearer {token}").parse()?);
    }
    // The peers send a large document (S9) as one message of one frame: allow what Quire's
    // own limit on a message allows.
    let config = WebSocketConfig::default()
        .max_frame_size(Some(Limits::DEFAULT_MAX_MESSAGE_SIZE as usize))
        .max_message_size(Some(Limits::DEFAULT_MAX_MESSAGE_SIZE as usize));
    let (ws, _) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await?;
    Ok(ws)
}

/// Quire's HELLO / WELCOME; returns the limits the server announced.
pub(crate) async fn quire_hello(ws: &mut Ws) -> Result<Limits> {
    let hello = Hello {
        revision: quire_protocol::PROTOCOL_REVISION,
        client: "quire-bench".into(),
    };
    ws.send(binary_frame(ChannelId::CONTROL, Message::Hello(hello)))
        .await?;
    loop {
        match next_frame(ws).await? {
            Frame {
                message: Message::Welcome(w),
                ..
            } => return Ok(w.limits),
            Frame {
                message: Message::Ping(n),
                ..
            } => {
                ws.send(binary_frame(ChannelId::CONTROL, Message::Pong(n)))
                    .await?
            }
            other => bail!("expected WELCOME, got {other:?}"),
        }
    }
}

async fn next_frame(ws: &mut Ws) -> Result<Frame> {
    loop {
        match ws.next().await {
            None => bail!("connection closed"),
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(WsMessage::Binary(b))) => return Ok(Frame::decode(&b, &Limits::default())?),
            Some(Ok(WsMessage::Close(f))) => bail!("server closed the connection: {f:?}"),
            Some(Ok(_)) => {}
        }
    }
}
