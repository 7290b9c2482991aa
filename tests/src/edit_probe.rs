//! A good client's view during an attack: two peers on one document, one typing a marked edit
//! every 50 ms (20/s) and the other waiting to see each one, recording how long each took to
//! arrive (the propagation time the hardening tests report as p99).

use std::time::{Duration, Instant};

use quire_protocol::ChannelId;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::doc_peer::Peer;
use crate::server_process::ServerProcess;

const CH: ChannelId = ChannelId(1);
const EDIT_INTERVAL: Duration = Duration::from_millis(50);
/// An edit that has not arrived by then fails the probe: the good client was cut off.
const EDIT_DEADLINE: Duration = Duration::from_secs(30);

/// A running probe; [`EditProbe::stop`] ends it and returns what it recorded.
#[derive(Debug)]
pub struct EditProbe {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Latencies>,
}

/// Propagation times of the probe's edits, in the order they were made.
#[derive(Debug, Clone)]
pub struct Latencies(pub Vec<Duration>);

impl Latencies {
    /// The `q`-quantile (0.99 for p99), nearest rank.
    pub fn quantile(&self, q: f64) -> Duration {
        let mut sorted = self.0.clone();
        sorted.sort_unstable();
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1]
    }

    pub fn max(&self) -> Duration {
        self.0.iter().copied().max().unwrap_or_default()
    }
}

impl EditProbe {
    /// Connects the two peers to `doc` and starts editing.
    pub async fn start(server: &ServerProcess, token: &str, doc: &str) -> Self {
        let mut writer = Peer::connect(server, Some(token)).await;
        writer.open_synced(CH, doc).await;
        let mut reader = Peer::connect(server, Some(token)).await;
        reader.open_synced(CH, doc).await;
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut tick = tokio::time::interval(EDIT_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            for n in 0u64.. {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = tick.tick() => {}
                }
                let marker = format!("<{n}>");
                let sent = Instant::now();
                writer.append(CH, &marker).await;
                let arrived = tokio::time::timeout(EDIT_DEADLINE, async {
                    while !reader.text(CH).ends_with(&marker) {
                        assert!(reader.pump().await, "the probe's reader was disconnected");
                    }
                })
                .await;
                assert!(
                    arrived.is_ok(),
                    "edit {n} did not arrive within {EDIT_DEADLINE:?}"
                );
                latencies.push(sent.elapsed());
                // The writer reads its ACKs (and stays within its queue) as it goes.
                assert!(
                    writer.pump_ready().await,
                    "the probe's writer was disconnected"
                );
            }
            Latencies(latencies)
        });
        Self { stop, task }
    }

    pub async fn stop(self) -> Latencies {
        let _ = self.stop.send(());
        self.task.await.expect("the edit probe failed")
    }
}
