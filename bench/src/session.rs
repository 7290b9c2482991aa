//! One connection holding one document, driven step by step: what the trace scenarios
//! (`trace.rs`) need, where the load runs (`conn.rs`) are a loop of their own. Opens and
//! syncs the document, sends updates (fragmented where Quire needs it), waits for relayed
//! updates and for every write to be acknowledged, and answers heartbeats meanwhile.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use quire_protocol::{ysync, Limits};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use yrs::updates::decoder::Decode;
use yrs::{ReadTxn, StateVector, Transact, Update};

use crate::conn::{connect, quire_hello, Ws};
use crate::run::Settings;
use crate::wire::{Codec, Event, Protocol};

pub(crate) struct Session {
    ws: Ws,
    codec: Codec,
    limits: Limits,
    /// Writes sent (the step 2 answering the server's step 1 included, as Quire counts them).
    writes: u64,
    acked: u64,
    all_acked_at: Option<Instant>,
    /// Updates that arrived before the server's step 2, handed out first by `next_update`.
    early: VecDeque<Vec<u8>>,
}

impl Session {
    /// Connects, opens `doc` for writing and waits until it is synced.
    pub(crate) async fn open(settings: &Settings, doc: &str) -> Result<Self> {
        Ok(Self::open_with_state(settings, doc).await?.0)
    }

    /// Like [`Session::open`], also returning the server's step 2 (the whole document).
    pub(crate) async fn open_with_state(settings: &Settings, doc: &str) -> Result<(Self, Vec<u8>)> {
        let target = crate::run::target(settings).await?;
        let codec = Codec::new(settings.protocol, vec![doc.to_owned()])?;
        let mut ws = connect(&target, &codec, settings.sources.first().copied()).await?;
        let limits = match settings.protocol {
            Protocol::Quire => quire_hello(&mut ws).await?,
            Protocol::YWebsocket | Protocol::Hocuspocus => Limits::default(),
        };
        let mut session = Self {
            ws,
            codec,
            limits,
            writes: 0,
            acked: 0,
            all_acked_at: None,
            early: VecDeque::new(),
        };
        let empty = StateVector::default();
        for message in session.codec.open(0, &session.limits, &empty)? {
            session.ws.feed(message).await?;
        }
        session.ws.flush().await?;
        loop {
            match session.next_event().await? {
                Event::Opened(_) => {
                    let step1 = session.codec.sync(0, ysync::encode_step1(&empty));
                    session.ws.send(step1).await?;
                }
                Event::Step1(..) => {
                    // This client starts empty: its step 2 carries nothing, but is a write.
                    let diff = yrs::Doc::new().transact().encode_state_as_update_v1(&empty);
                    session.writes += 1;
                    let step2 = session.codec.sync(0, ysync::encode_step2(diff));
                    session.ws.send(step2).await?;
                }
                Event::Step2(_, state) => return Ok((session, state)),
                Event::Update(_, update) => session.early.push_back(update),
                _ => {}
            }
        }
    }

    /// Sends each update as a sync update message, then flushes.
    pub(crate) async fn send_updates(&mut self, updates: &[Vec<u8>]) -> Result<()> {
        self.all_acked_at = None;
        for update in updates {
            self.writes += 1;
            let payload = ysync::encode_update(update.clone());
            for frame in self.codec.sync_frames(0, payload, &self.limits) {
                self.ws.feed(frame).await?;
            }
        }
        self.ws.flush().await?;
        Ok(())
    }

    /// Reads and handles one message from the server (acknowledgements, heartbeats).
    pub(crate) async fn poll_incoming(&mut self) -> Result<()> {
        self.next_event().await.map(drop)
    }

    /// The next update another client made, as v1 bytes.
    pub(crate) async fn next_update(&mut self) -> Result<Vec<u8>> {
        if let Some(update) = self.early.pop_front() {
            return Ok(update);
        }
        loop {
            if let Event::Update(_, update) = self.next_event().await? {
                return Ok(update);
            }
        }
    }

    /// Waits until every write is acknowledged and returns when that happened; `None` for
    /// the y-websocket protocol, which has no acknowledgement.
    pub(crate) async fn await_all_acked(&mut self, limit: Duration) -> Result<Option<Instant>> {
        if self.codec.protocol() == Protocol::YWebsocket {
            return Ok(None);
        }
        let deadline = tokio::time::Instant::now() + limit;
        while self.all_acked_at.is_none() {
            tokio::time::timeout_at(deadline, self.next_event())
                .await
                .context("waiting for acknowledgements")??;
        }
        Ok(self.all_acked_at)
    }

    /// Waits until the server's document holds everything in `expected`, by asking for its
    /// whole state (a step 1 with an empty state vector) until its step 2 covers it. For the
    /// y-websocket protocol, which acknowledges nothing: closing right after sending can
    /// otherwise lose what the server had not yet applied.
    pub(crate) async fn confirm_held(
        &mut self,
        expected: &StateVector,
        limit: Duration,
    ) -> Result<Instant> {
        let deadline = tokio::time::Instant::now() + limit;
        let empty = StateVector::default();
        loop {
            let step1 = self.codec.sync(0, ysync::encode_step1(&empty));
            self.ws.send(step1).await?;
            let state = loop {
                let event = tokio::time::timeout_at(deadline, self.next_event())
                    .await
                    .context("waiting for the server to hold what was sent")??;
                if let Event::Step2(_, state) = event {
                    break state;
                }
            };
            let held = Update::decode_v1(&state)?.state_vector();
            if expected
                .iter()
                .all(|(client, clock)| held.get(client) >= *clock)
            {
                return Ok(Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(crate) async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }

    async fn next_event(&mut self) -> Result<Event> {
        loop {
            let bytes = match self.ws.next().await {
                None => bail!("the server closed the connection"),
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(WsMessage::Binary(b))) => b,
                Some(Ok(WsMessage::Close(f))) => bail!("the server closed the connection: {f:?}"),
                Some(Ok(_)) => continue,
            };
            let event = self.codec.decode(&bytes)?;
            match &event {
                Event::Ping(n) => self.ws.send(self.codec.pong(*n)).await?,
                Event::AckedUpTo(_, n) => self.acked = self.acked.max(*n),
                Event::AckedNext(_) => self.acked += 1,
                Event::ChannelClosed(_, why) => bail!("the server closed the document: {why}"),
                _ => {}
            }
            if self.acked >= self.writes && self.all_acked_at.is_none() {
                self.all_acked_at = Some(Instant::now());
            }
            return Ok(event);
        }
    }
}
