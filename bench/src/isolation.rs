//! S11, isolation: does heavy work on some channels hold up small edits elsewhere? On one
//! connection ("heavy"), channel A uploads one ~20 MB update (fragmented, PROTOCOL §7) into a
//! new document while channel B opens a 26.7 MB stored document the server has not loaded yet
//! (S9's document at scale 100, stored by `S11-store` before the server restarted); channel C
//! of the same connection, and a channel on a second connection ("light"), each exchange small
//! edits at 20/s in both directions with a peer on a connection of its own. The edit streams
//! run at rest first; then A's upload and B's open start at the same moment, and the edits are
//! measured until both have finished (A's ACK, B's step 2) plus a tail.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use yrs::updates::decoder::Decode;
use yrs::{Doc, StateVector, Text, Transact, Update};

use crate::conn::next_client_id;
use crate::histogram::Histogram;
use crate::link::{Link, LinkDoc, Note, Outbox};
use crate::procstat;
use crate::run::{Settings, DRIVER_CPU_LIMIT};
use crate::schedule::Schedule;
use crate::tracker::{TagTotals, Tracker};

/// Small edits per second, each way, on each stream.
const EDIT_RATE: f64 = 20.0;
/// Gap between starting the edit streams and their first edit, so every task is waiting.
const START_DELAY: Duration = Duration::from_millis(100);
/// Edits sent earlier than this after the start are not counted (connections settling).
const SETTLE: Duration = Duration::from_millis(500);
/// From the start to the heavy moment; edits sent in `[SETTLE, REST)` are "at rest".
const REST: Duration = Duration::from_secs(2);
/// Edits keep being measured this long after both heavy operations have finished.
const TAIL: Duration = Duration::from_secs(1);
/// A server that has not finished the heavy work by then is reported as such.
const HEAVY_LIMIT: Duration = Duration::from_secs(120);
/// How long opening and syncing the small documents may take.
const SETUP_LIMIT: Duration = Duration::from_secs(30);
/// How long to wait after the last edit for the edits still in flight.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);
const DRAIN_POLL: Duration = Duration::from_millis(10);
/// Characters in A's upload: one insert, one transaction, ~20 MB as a v1 update.
const UPLOAD_CHARS: usize = 20_000_000;

/// The two edit streams: channel C on the heavy connection, and the light connection's.
const STREAMS: [&str; 2] = ["same_conn", "other_conn"];
/// Links (connections), in this order: heavy (A, B, C), C's peer, light (D), D's peer.
const LINK_NAMES: [&str; 4] = ["heavy", "peer of C", "light", "peer of D"];
const HEAVY: usize = 0;
/// Documents on the heavy link.
const DOC_A: usize = 0;
const DOC_B: usize = 1;
const DOC_C: usize = 2;

/// Tracker tag of an edit: its stream, its direction (0: from the measured connection to its
/// peer, 1: back) and its phase (0: at rest, 1: heavy).
fn tag(stream: usize, dir: usize, phase: usize) -> usize {
    stream * 4 + dir * 2 + phase
}

/// A's upload: one insert of `UPLOAD_CHARS` characters into a fresh document.
fn upload_update() -> Vec<u8> {
    let doc = Doc::with_client_id(next_client_id());
    let text = doc.get_or_insert_text("t");
    let content: String = "abcdefghijklmnopqrstuvwxyz"
        .chars()
        .cycle()
        .take(UPLOAD_CHARS)
        .collect();
    let mut txn = doc.transact_mut();
    text.insert(&mut txn, 0, &content);
    txn.encode_update_v1()
}

/// One direction of one stream: a client editing its document at `EDIT_RATE`.
struct Sender {
    outbox: Outbox,
    /// The document's index on its link.
    doc: usize,
    stream: usize,
    dir: usize,
    client: u64,
    schedule: Schedule,
}

/// When the streams start and the heavy moment comes.
#[derive(Clone, Copy)]
struct Clock {
    start: Instant,
    rest_from: Instant,
    heavy_from: Instant,
}

impl Clock {
    fn phase(&self, at: Instant) -> Option<usize> {
        if at < self.rest_from {
            None
        } else if at < self.heavy_from {
            Some(0)
        } else {
            Some(1)
        }
    }
}

/// Sends edits open loop (edit k is due at `start + phase + k / rate`) until told to stop.
async fn send_edits(
    s: Sender,
    tracker: Arc<Tracker>,
    clock: Clock,
    edit_size: usize,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let doc = Doc::with_client_id(s.client);
    let text = doc.get_or_insert_text("t");
    let content: String = "abcdefghijklmnopqrstuvwxyz"
        .chars()
        .cycle()
        .take(edit_size)
        .collect();
    let mut len = 0u32;
    for k in 0.. {
        let due = clock.start + s.schedule.due(k);
        tokio::select! {
            _ = tokio::time::sleep_until(due.into()) => {}
            _ = stop.changed() => break,
        }
        let update = {
            let mut txn = doc.transact_mut();
            text.insert(&mut txn, len, &content);
            txn.encode_update_v1()
        };
        let at = Instant::now();
        if let Some(phase) = clock.phase(at) {
            let tag = tag(s.stream, s.dir, phase);
            tracker.sent_tagged(s.stream as u32, s.client, len, at, 1, tag);
        }
        len += content.len() as u32;
        s.outbox.update(s.doc, update)?;
    }
    Ok(())
}

/// S11 against the server at `settings.url`, which holds `cold_doc` (S9's document at
/// `scale`, cached in `cache_dir`) stored but not loaded.
pub(crate) async fn s11(
    settings: &Settings,
    cold_doc: &str,
    scale: usize,
    cache_dir: &Path,
    edit_size: usize,
) -> Result<Value> {
    let target = crate::run::target(settings).await?;
    let mut expected = StateVector::default();
    for copy in crate::trace::s9_document(scale, cache_dir)? {
        expected.merge(Update::decode_v1(&copy)?.state_vector());
    }
    let upload = upload_update();
    let upload_bytes = upload.len();

    let run = std::process::id();
    let name = |what: &str| format!("bench-S11-{run}-{what}");
    let stream_docs = [name("c"), name("d")];
    // clients[stream][dir]: dir 0 edits on the measured connection, dir 1 on its peer.
    let clients: [[u64; 2]; 2] = std::array::from_fn(|_| [next_client_id(), next_client_id()]);
    let stream_doc = |s: usize, dir: usize| LinkDoc {
        name: stream_docs[s].clone(),
        stream: Some((s as u32, clients[s][dir])),
    };
    let plans = [
        vec![
            LinkDoc {
                name: name("a"),
                stream: None,
            },
            LinkDoc {
                name: cold_doc.to_owned(),
                stream: None,
            },
            stream_doc(0, 0),
        ],
        vec![stream_doc(0, 1)],
        vec![stream_doc(1, 0)],
        vec![stream_doc(1, 1)],
    ];
    let tracker = Arc::new(Tracker::new());
    let (notes_tx, mut notes) = mpsc::unbounded_channel();
    let mut links = Vec::new();
    for (id, docs) in plans.into_iter().enumerate() {
        links.push(Link::connect(&target, id, docs, tracker.clone(), notes_tx.clone()).await?);
    }
    drop(notes_tx);

    // Open everything but B, and wait until it is synced.
    let mut unsynced = vec![(HEAVY, DOC_A), (HEAVY, DOC_C), (1, 0), (2, 0), (3, 0)];
    for &(link, doc) in &unsynced {
        links[link].outbox.open(doc)?;
    }
    let setup_deadline = tokio::time::Instant::now() + SETUP_LIMIT;
    while !unsynced.is_empty() {
        let noted = tokio::time::timeout_at(setup_deadline, notes.recv())
            .await
            .context("opening the small documents")?
            .context("every link ended")?;
        match noted.note {
            Note::Synced { doc, .. } => unsynced.retain(|&d| d != (noted.link, doc)),
            Note::Ended(why) => bail!("{} connection: {why}", LINK_NAMES[noted.link]),
            _ => {}
        }
    }

    let frames = links[HEAVY].outbox.bulk_frames(DOC_A, upload);
    let upload_frames = frames.len();
    let start = Instant::now() + START_DELAY;
    let clock = Clock {
        start,
        rest_from: start + SETTLE,
        heavy_from: start + REST,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    // (link, document on it, stream, direction)
    let senders = [
        (HEAVY, DOC_C, 0, 0),
        (1, 0, 0, 1),
        (2, 0, 1, 0),
        (3, 0, 1, 1),
    ];
    let mut tasks = Vec::new();
    for (slot, &(link, doc, stream, dir)) in senders.iter().enumerate() {
        let sender = Sender {
            outbox: links[link].outbox.clone(),
            doc,
            stream,
            dir,
            client: clients[stream][dir],
            schedule: Schedule::new(EDIT_RATE, slot as u64, senders.len() as u64)
                .context("edit rate")?,
        };
        tasks.push(tokio::spawn(send_edits(
            sender,
            tracker.clone(),
            clock,
            edit_size,
            stop_rx.clone(),
        )));
    }

    tokio::time::sleep_until(clock.heavy_from.into()).await;
    let pid = settings.server_pid.map(|p| p.to_string());
    let server_cpu = || pid.as_deref().and_then(procstat::cpu_time);
    let server_rss = || {
        pid.as_deref()
            .and_then(procstat::rss_kib)
            .map(|(rss, _)| rss)
    };
    let (server0, driver0) = (server_cpu(), procstat::cpu_time("self"));
    let rss_before = server_rss();
    // A's upload and B's open, at the same moment.
    let heavy_at = Instant::now();
    links[HEAVY].outbox.open(DOC_B)?;
    let a_write = links[HEAVY].outbox.send_bulk(DOC_A, frames)?;

    let (mut a_acked, mut b_synced) = (None, None);
    let mut b_parts = Vec::new();
    let mut errors = Vec::new();
    let deadline = tokio::time::Instant::from_std(heavy_at + HEAVY_LIMIT);
    while a_acked.is_none() || b_synced.is_none() {
        let Ok(Some(noted)) = tokio::time::timeout_at(deadline, notes.recv()).await else {
            errors.push(format!("not finished within {HEAVY_LIMIT:?}"));
            break;
        };
        match (noted.link, noted.note) {
            (HEAVY, Note::Acked { doc: DOC_A, upto }) if upto >= a_write => {
                a_acked.get_or_insert(noted.at);
            }
            (HEAVY, Note::Synced { doc: DOC_B, state }) => {
                b_synced.get_or_insert(noted.at);
                b_parts.push(state);
            }
            (HEAVY, Note::Update { doc: DOC_B, update }) => b_parts.push(update),
            (link, Note::Ended(why)) => {
                errors.push(format!("{} connection: {why}", LINK_NAMES[link]));
                break;
            }
            _ => {}
        }
    }
    let finished = a_acked.into_iter().chain(b_synced).max();
    let end = finished.unwrap_or_else(Instant::now) + TAIL;
    tokio::time::sleep_until(end.into()).await;
    let (server1, driver1) = (server_cpu(), procstat::cpu_time("self"));
    let rss_after = server_rss();
    stop_tx.send(true)?;
    for task in tasks {
        if let Err(e) = task.await? {
            errors.push(format!("an edit stream stopped: {e:#}"));
        }
    }
    let drain_deadline = Instant::now() + DRAIN_LIMIT;
    while tracker.tagged_outstanding() > 0 && Instant::now() < drain_deadline {
        tokio::time::sleep(DRAIN_POLL).await;
    }
    // Anything that ended the connections while the tail ran.
    while let Ok(noted) = notes.try_recv() {
        if let Note::Ended(why) = noted.note {
            errors.push(format!("{} connection: {why}", LINK_NAMES[noted.link]));
        }
    }
    for link in links {
        link.close().await;
    }

    // Checked only now: decoding 26.7 MB would have held the driver during the window.
    let b_bytes: usize = b_parts.iter().map(Vec::len).sum();
    let mut held = StateVector::default();
    for part in &b_parts {
        held.merge(Update::decode_v1(part)?.state_vector());
    }
    let b_complete = b_synced.is_some() && expected.iter().all(|(c, clock)| held.get(c) >= *clock);

    let totals = tracker.totals();
    let window = end - heavy_at;
    let cpu = |a: Option<Duration>, b: Option<Duration>| Some((b? - a?).as_secs_f64());
    let driver_core_share = cpu(driver0, driver1).map(|s| s / window.as_secs_f64());
    let server_cpu_s = cpu(server0, server1);
    let since = |at: Option<Instant>| at.map(|at| (at - heavy_at).as_secs_f64() * 1e3);
    let all_delivered = totals
        .tagged
        .iter()
        .all(|t| t.sent > 0 && t.delivered == t.sent);
    let streams: serde_json::Map<String, Value> = STREAMS
        .iter()
        .enumerate()
        .map(|(s, name)| ((*name).to_owned(), stream_stats(&totals.tagged, s)))
        .collect();
    Ok(json!({
        "scenario": "S11",
        "protocol": format!("{:?}", settings.protocol),
        "cold_doc": cold_doc,
        "scale": scale,
        "upload_bytes": upload_bytes,
        "upload_frames": upload_frames,
        "edit_rate_per_s": EDIT_RATE,
        "edit_size": edit_size,
        "rest_s": (REST - SETTLE).as_secs_f64(),
        "tail_s": TAIL.as_secs_f64(),
        "a_acked_ms": since(a_acked),
        "b_synced_ms": since(b_synced),
        "b_state_bytes": b_bytes,
        "b_complete": b_complete,
        "window_ms": window.as_secs_f64() * 1e3,
        "streams": streams,
        "server_cpu_s": server_cpu_s,
        "server_cpu_share": server_cpu_s.map(|s| s / window.as_secs_f64()),
        "server_rss_kib": { "before": rss_before, "after": rss_after },
        "driver_core_share": driver_core_share,
        "errors": errors,
        "valid": errors.is_empty() && b_complete && a_acked.is_some() && all_delivered
            && driver_core_share.is_some_and(|s| s <= DRIVER_CPU_LIMIT),
    }))
}

/// One stream's figures: both directions together per phase, then each direction.
fn stream_stats(tagged: &[TagTotals], stream: usize) -> Value {
    let get = |dir: usize, phase: usize| {
        tagged
            .get(tag(stream, dir, phase))
            .cloned()
            .unwrap_or_default()
    };
    let mut out = serde_json::Map::new();
    for (phase, phase_name) in ["rest", "heavy"].iter().enumerate() {
        let (a, b) = (get(0, phase), get(1, phase));
        out.insert((*phase_name).to_owned(), stats(&[&a, &b]));
        out.insert(format!("{phase_name}_out"), stats(&[&a]));
        out.insert(format!("{phase_name}_in"), stats(&[&b]));
    }
    Value::Object(out)
}

fn stats(parts: &[&TagTotals]) -> Value {
    let mut h = Histogram::default();
    for part in parts {
        h.merge(&part.propagation);
    }
    json!({
        "sent": parts.iter().map(|p| p.sent).sum::<u64>(),
        "delivered": parts.iter().map(|p| p.delivered).sum::<u64>(),
        "count": h.count(),
        "p50_us": h.quantile(0.5), "p90_us": h.quantile(0.9), "p99_us": h.quantile(0.99),
        "max_us": h.max(),
    })
}
