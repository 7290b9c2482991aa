//! One driver connection: plain WebSocket, HELLO / WELCOME, OPEN per document, the
//! y-protocols sync handshake, then open-loop edits while reading relayed updates, ACKs and
//! PINGs. Each channel is one simulated client with its own yrs `Doc`; it never applies remote
//! updates (it only times them), so its own edits always extend its own text.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use quire_protocol::varint::Reader;
use quire_protocol::ysync::{self, SyncPayload};
use quire_protocol::{handshake, Access, ChannelId, DocId, Frame, Hello, Limits, Message};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;
use yrs::{Doc, ReadTxn, Text, TextRef, Transact};

use crate::histogram::Histogram;
use crate::schedule::Schedule;
use crate::tracker::Tracker;

/// Where and how one connection connects.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) url: String,
    pub(crate) addr: SocketAddr,
    pub(crate) token: Option<String>,
}

/// One document this connection opens: its channel, global index and name.
#[derive(Debug, Clone)]
pub(crate) struct ChannelPlan {
    pub(crate) doc_index: u32,
    pub(crate) doc_name: String,
    /// Subscribers of this document besides this one.
    pub(crate) others: u32,
    pub(crate) schedule: Option<Schedule>,
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
    writes: u64,
    /// (write number, sent at, measured edit)
    unacked: VecDeque<(u64, Instant, bool)>,
    synced: bool,
}

type Ws = WebSocketStream<TcpStream>;

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
    let mut ws = connect(&target, plan.source).await?;
    let hello = Hello {
        revision: quire_protocol::PROTOCOL_REVISION,
        client: "quire-bench".into(),
    };
    send(&mut ws, ChannelId::CONTROL, Message::Hello(hello)).await?;
    let limits = loop {
        match next_frame(&mut ws).await? {
            Frame {
                message: Message::Welcome(w),
                ..
            } => break w.limits,
            Frame {
                message: Message::Ping(n),
                ..
            } => send(&mut ws, ChannelId::CONTROL, Message::Pong(n)).await?,
            other => bail!("expected WELCOME, got {other:?}"),
        }
    };
    let connect_time = started.elapsed();
    drop(permit);

    let open_at = Instant::now();
    let mut channels = Vec::with_capacity(plan.channels.len());
    for (i, ch) in plan.channels.into_iter().enumerate() {
        let doc = DocId::parse(&ch.doc_name, limits.max_doc_id_len).context("doc id")?;
        let id = ChannelId(i as u32 + 1);
        ws.feed(binary(
            id,
            Message::Open {
                access: Access::Write,
                doc,
            },
        ))
        .await?;
        let doc = Doc::new();
        let text = doc.get_or_insert_text("t");
        channels.push(Channel {
            plan: ch,
            doc,
            text,
            len: 0,
            sent: 0,
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
                        .filter_map(|c| c.plan.schedule.map(|s| t.start + s.due(c.sent)))
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
                let frame = Frame::decode(&bytes, &Limits::default())?;
                let now = Instant::now();
                let index = frame.channel.0 as usize;
                match frame.message {
                    Message::Ping(n) => send(&mut ws, ChannelId::CONTROL, Message::Pong(n)).await?,
                    Message::Opened { .. } => {
                        let ch = channels.get(index - 1).context("OPENED on an unknown channel")?;
                        let sv = ch.doc.transact().state_vector();
                        send(&mut ws, frame.channel, Message::Sync(ysync::encode_step1(&sv))).await?;
                    }
                    Message::Sync(payload) => {
                        let ch = channels.get_mut(index - 1).context("SYNC on an unknown channel")?;
                        let mut reader = Reader::new(&payload);
                        match reader.read_varint()? {
                            ysync::SYNC_UPDATE => {
                                let len = reader.read_varint()? as usize;
                                let update = reader.read_bytes(len)?;
                                tracker.received(ch.plan.doc_index, ch.doc.client_id().get(), update, now);
                            }
                            _ => match ysync::decode_sync(&payload)? {
                                SyncPayload::Step1(sv) => {
                                    let diff = ch.doc.transact().encode_diff_v1(&sv);
                                    ch.writes += 1;
                                    ch.unacked.push_back((ch.writes, now, false));
                                    send(&mut ws, frame.channel, Message::Sync(ysync::encode_step2(diff))).await?;
                                }
                                SyncPayload::Step2(_) if !ch.synced => {
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
                                _ => {}
                            },
                        }
                    }
                    Message::Ack(n) => {
                        let ch = channels.get_mut(index - 1).context("ACK on an unknown channel")?;
                        while ch.unacked.front().is_some_and(|(seq, ..)| *seq <= n) {
                            if let Some((_, at, true)) = ch.unacked.pop_front() {
                                acks.record(now.duration_since(at).as_micros() as u64);
                            }
                        }
                    }
                    Message::Close { code, reason } => {
                        bail!("server closed channel {} with {code} {reason}", frame.channel.0)
                    }
                    _ => {}
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
                        ws.feed(binary(ChannelId(i as u32 + 1), Message::Sync(ysync::encode_update(update)))).await?;
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

async fn connect(target: &Target, source: Option<IpAddr>) -> Result<Ws> {
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
    let mut request = target.url.as_str().into_client_request()?;
    let headers = request.headers_mut();
    headers.insert("Sec-WebSocket-Protocol", handshake::SUBPROTOCOL.parse()?);
    if let Some(token) = &target.token {
        headers.insert("Authorization", format!("Bearer {token}").parse()?);
    }
    let (ws, _) = tokio_tungstenite::client_async(request, tcp).await?;
    Ok(ws)
}

fn binary(channel: ChannelId, message: Message) -> WsMessage {
    WsMessage::Binary(Frame::new(channel, message).encode().into())
}

async fn send(ws: &mut Ws, channel: ChannelId, message: Message) -> Result<()> {
    ws.send(binary(channel, message)).await?;
    Ok(())
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
