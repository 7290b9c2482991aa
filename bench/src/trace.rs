//! The B4 editing trace (`bench/data/automerge-paper.json.gz`: 259,778 edits writing a LaTeX
//! paper, from the crdt-benchmarks suite) turned into yrs updates, and the two scenarios built
//! on it: F0, the floor (yrs alone applying the trace's updates, then the same updates sent
//! by one client through a server while a second observes), and S9, cold load (a stored
//! document of the trace's size, and one 100 times larger, opened by a new client after the
//! server restarts; the restart is the calling script's job, between `S9-store` and
//! `S9-open`). H1 (`history.rs`) stores the same documents, and the trace in `content`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};
use tokio::sync::Notify;
use yrs::updates::decoder::Decode;
use yrs::{Doc, GetString, ReadTxn, Text, Transact, Update};

use crate::run::Settings;
use crate::session::Session;

const B4_GZ: &[u8] = include_bytes!("../data/automerge-paper.json.gz");
/// F0: updates the sender may have sent that the observer has not received yet.
const WINDOW: u64 = 1024;
/// F0: updates sent per flush.
const BATCH: usize = 64;
/// F0: how long the whole run through a server may take.
const F0_LIMIT: Duration = Duration::from_secs(60);
/// The root text Quire's editors bind to, and the only one a restore changes.
pub(crate) const CONTENT_ROOT: &str = "content";
/// The client of S9's first copy (fixed, so a cached document is the same on every run).
const S9_CLIENT: u64 = 1_000_000;

/// The trace's updates, one per trace transaction, and the text they make.
pub(crate) struct Trace {
    pub(crate) end: String,
    pub(crate) updates: Vec<Vec<u8>>,
    /// The replaying client and its clock at the end.
    pub(crate) client: u64,
    pub(crate) final_clock: u32,
}

/// Replays the trace into a document of `client` (root text `root`), one transaction per
/// trace transaction, and keeps each transaction's update.
pub(crate) fn replay(client: u64, root: &str) -> Result<Trace> {
    let doc = Doc::with_client_id(client);
    let (end, updates) = replay_into(&parse()?, &doc, root, true)?;
    let final_clock = doc
        .transact()
        .state_vector()
        .get(&yrs::block::ClientID::new(client));
    Ok(Trace {
        end,
        updates,
        client,
        final_clock,
    })
}

/// Replays the trace into `root` of `doc`, one yrs transaction per trace transaction;
/// returns the final text and, if `keep`, each transaction's update.
fn replay_into(trace: &Value, doc: &Doc, root: &str, keep: bool) -> Result<(String, Vec<Vec<u8>>)> {
    let end = trace["endContent"]
        .as_str()
        .context("endContent")?
        .to_owned();
    let txns = trace["txns"].as_array().context("txns")?;
    let text = doc.get_or_insert_text(root);
    let mut updates = Vec::with_capacity(if keep { txns.len() } else { 0 });
    for txn in txns {
        let mut t = doc.transact_mut();
        for patch in txn["patches"].as_array().context("patches")? {
            // [position, characters deleted, text inserted]; the trace is ASCII, so
            // character and byte offsets agree.
            let pos = patch[0].as_u64().context("position")? as u32;
            let deleted = patch[1].as_u64().context("deleted")? as u32;
            let inserted = patch[2].as_str().context("inserted")?;
            if deleted > 0 {
                text.remove_range(&mut t, pos, deleted);
            }
            if !inserted.is_empty() {
                text.insert(&mut t, pos, inserted);
            }
        }
        if keep {
            updates.push(t.encode_update_v1());
        }
    }
    ensure!(
        text.get_string(&doc.transact()) == end,
        "replaying the trace did not give its final text"
    );
    Ok((end, updates))
}

fn parse() -> Result<Value> {
    let mut json = String::new();
    flate2::read::GzDecoder::new(B4_GZ).read_to_string(&mut json)?;
    Ok(serde_json::from_str(&json)?)
}

/// yrs alone: decodes and applies every update to a fresh document, one transaction each.
fn apply_all(updates: &[Vec<u8>], root: &str) -> Result<(Duration, String)> {
    let doc = Doc::new();
    let text = doc.get_or_insert_text(root);
    let started = Instant::now();
    for update in updates {
        doc.transact_mut()
            .apply_update(Update::decode_v1(update)?)?;
    }
    let took = started.elapsed();
    let result = text.get_string(&doc.transact());
    Ok((took, result))
}

/// F0: the floor, then the trace through the server at `settings.url`.
pub(crate) async fn f0(settings: &Settings) -> Result<Value> {
    let trace = replay(crate::conn::next_client_id(), "t")?;
    let total_bytes: usize = trace.updates.iter().map(Vec::len).sum();
    let mut floors = Vec::new();
    for _ in 0..3 {
        let (took, text) = apply_all(&trace.updates, "t")?;
        ensure!(
            text == trace.end,
            "yrs alone did not reach the trace's text"
        );
        floors.push(took);
    }
    floors.sort();
    let floor = floors[1];

    let doc_name = format!("bench/F0/{}", std::process::id());
    let mut sender = Session::open(settings, &doc_name).await?;
    let mut observer = Session::open(settings, &doc_name).await?;
    let n = trace.updates.len() as u64;
    let received = Arc::new(AtomicU64::new(0));
    let progress = Arc::new(Notify::new());
    let (client, final_clock) = (yrs::block::ClientID::new(trace.client), trace.final_clock);
    let mut observe = {
        let (received, progress) = (received.clone(), progress.clone());
        tokio::spawn(async move {
            let doc = Doc::new();
            let text = doc.get_or_insert_text("t");
            loop {
                let update = observer.next_update().await?;
                doc.transact_mut()
                    .apply_update(Update::decode_v1(&update)?)?;
                received.fetch_add(1, Ordering::Relaxed);
                progress.notify_one();
                let txn = doc.transact();
                // (The text's length alone passes through its final value on the way.)
                if txn.state_vector().get(&client) >= final_clock {
                    let text = text.get_string(&txn);
                    drop(txn);
                    observer.close().await;
                    return anyhow::Ok((Instant::now(), text));
                }
            }
        })
    };

    let started = Instant::now();
    // A server far slower than the others is reported as such rather than waited for.
    let deadline = tokio::time::Instant::now() + F0_LIMIT;
    let mut sent = 0u64;
    let mut timed_out = false;
    while sent < n && !timed_out {
        let room = sent < received.load(Ordering::Relaxed) + WINDOW;
        tokio::select! {
            biased;
            // What the server sends the sender (ACKs, PINGs, echoes) is read as it comes.
            r = sender.poll_incoming() => r?,
            // The observer ends only once it has everything: before that, only by failing.
            r = &mut observe => bail!("the observer stopped early: {:?}", r?.err()),
            _ = progress.notified(), if !room => {}
            _ = tokio::time::sleep_until(deadline) => timed_out = true,
            _ = std::future::ready(()), if room => {
                let until = (sent + BATCH as u64)
                    .min(n)
                    .min(received.load(Ordering::Relaxed) + WINDOW);
                sender.send_updates(&trace.updates[sent as usize..until as usize]).await?;
                sent = until;
            }
        }
    }
    let sent_at = started.elapsed();
    let finished = match tokio::time::timeout_at(deadline, &mut observe).await {
        Ok(done) if !timed_out => Some(done??),
        _ => None,
    };
    let (observed_at, text) = match finished {
        Some(done) => done,
        None => {
            observe.abort();
            sender.close().await;
            return Ok(json!({
                "scenario": "F0",
                "protocol": format!("{:?}", settings.protocol),
                "updates": n,
                "floor_ms": floor.as_secs_f64() * 1e3,
                "finished": false,
                "observed_within_limit": received.load(Ordering::Relaxed),
                "limit_s": F0_LIMIT.as_secs(),
            }));
        }
    };
    let through = observed_at - started;
    let acked = sender.await_all_acked(Duration::from_secs(120)).await?;
    sender.close().await;
    let acked_ms = acked.map(|at| (at - started).as_secs_f64() * 1e3);
    Ok(json!({
        "scenario": "F0",
        "protocol": format!("{:?}", settings.protocol),
        "updates": n,
        "update_bytes": total_bytes,
        "final_text_chars": trace.end.len(),
        "floor_ms": floor.as_secs_f64() * 1e3,
        "floor_runs_ms": floors.iter().map(|d| d.as_secs_f64() * 1e3).collect::<Vec<_>>(),
        "sent_ms": sent_at.as_secs_f64() * 1e3,
        "through_server_ms": through.as_secs_f64() * 1e3,
        "ratio_to_floor": through.as_secs_f64() / floor.as_secs_f64(),
        "all_durably_acked_ms": acked_ms,
        "identical_text": text == trace.end,
        "finished": true,
        "window_updates": WINDOW,
    }))
}

/// S9's document at `scale`: `scale` copies of the trace, copy `k` replayed by client
/// `S9_CLIENT + k` into root text `t{k}`, sent as one update per copy. Replaying takes ~5 s
/// per copy here, so copies are made on every
/// core and the result is cached in `cache_dir`.
pub(crate) fn s9_document(scale: usize, cache_dir: &Path) -> Result<Vec<Vec<u8>>> {
    let path = cache_dir.join(format!("b4-x{scale}.updates"));
    if let Ok(bytes) = std::fs::read(&path) {
        return split_lengths(&bytes);
    }
    // Parsed once for every copy (the JSON is ~10 MB).
    let trace = parse()?;
    let copy = |k: usize| -> Result<Vec<u8>> {
        let doc = Doc::with_client_id(S9_CLIENT + k as u64);
        replay_into(&trace, &doc, &format!("t{k}"), false)?;
        let state = doc
            .transact()
            .encode_state_as_update_v1(&yrs::StateVector::default());
        Ok(state)
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let copies: Vec<Vec<u8>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    (t..scale)
                        .step_by(threads)
                        .map(|k| Ok((k, copy(k)?)))
                        .collect::<Result<Vec<_>>>()
                })
            })
            .collect();
        let mut all = Vec::with_capacity(scale);
        for worker in workers {
            all.extend(
                worker
                    .join()
                    .map_err(|_| anyhow::anyhow!("a replay thread panicked"))??,
            );
        }
        all.sort_by_key(|(k, _)| *k);
        anyhow::Ok(all.into_iter().map(|(_, bytes)| bytes).collect())
    })?;
    std::fs::create_dir_all(cache_dir)?;
    let mut out = Vec::new();
    for copy in &copies {
        out.extend_from_slice(&(copy.len() as u64).to_le_bytes());
        out.extend_from_slice(copy);
    }
    std::fs::write(&path, out)?;
    Ok(copies)
}

/// The B4 trace replayed by S9's first client into the root text `content`, the one every
/// Quire editor binds to (PROTOCOL §6.4): S9's B4-sized document with its text where a
/// restore looks for it. One update, cached in `cache_dir` like S9's.
pub(crate) fn content_document(cache_dir: &Path) -> Result<Vec<u8>> {
    let path = cache_dir.join("b4-content.updates");
    if let Ok(bytes) = std::fs::read(&path) {
        let mut parts = split_lengths(&bytes)?;
        ensure!(
            parts.len() == 1,
            "{} holds more than one update",
            path.display()
        );
        return Ok(parts.remove(0));
    }
    let doc = Doc::with_client_id(S9_CLIENT);
    replay_into(&parse()?, &doc, CONTENT_ROOT, false)?;
    let state = doc
        .transact()
        .encode_state_as_update_v1(&yrs::StateVector::default());
    std::fs::create_dir_all(cache_dir)?;
    let mut out = (state.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&state);
    std::fs::write(&path, out)?;
    Ok(state)
}

fn split_lengths(mut bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
    let mut parts = Vec::new();
    while !bytes.is_empty() {
        ensure!(bytes.len() >= 8, "truncated cache file");
        let (len, rest) = bytes.split_at(8);
        let len = u64::from_le_bytes(len.try_into()?) as usize;
        ensure!(rest.len() >= len, "truncated cache file");
        parts.push(rest[..len].to_vec());
        bytes = &rest[len..];
    }
    Ok(parts)
}

/// S9, first half: stores the document of `scale` copies on the server as document `doc`
/// and waits until the server says it has it (Quire: the durable ACK; Hocuspocus: applied;
/// the y-websocket protocol has no acknowledgement, so the caller waits for the store).
pub(crate) async fn s9_store(
    settings: &Settings,
    doc: &str,
    scale: usize,
    cache_dir: &Path,
) -> Result<Value> {
    let copies = s9_document(scale, cache_dir)?;
    let stored = store(settings, doc, &copies).await?;
    Ok(json!({
        "scenario": format!("S9-store-x{scale}"),
        "protocol": format!("{:?}", settings.protocol),
        "doc": doc,
        "scale": scale,
        "update_bytes": stored.bytes,
        "acked_ms": stored.acked_ms,
        "held_ms": stored.held_ms,
    }))
}

/// What storing a document took.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stored {
    pub(crate) bytes: usize,
    /// Until the durable ACK (`None` for the y-websocket protocol, which has none).
    pub(crate) acked_ms: Option<f64>,
    /// Until the server's state held every update.
    pub(crate) held_ms: f64,
}

/// Stores `updates` as document `doc` from one new connection and waits until the server
/// says it has them (see [`s9_store`]).
pub(crate) async fn store(settings: &Settings, doc: &str, updates: &[Vec<u8>]) -> Result<Stored> {
    let bytes: usize = updates.iter().map(Vec::len).sum();
    let mut session = Session::open(settings, doc).await?;
    let started = Instant::now();
    session.send_updates(updates).await?;
    let acked = session
        .await_all_acked(Duration::from_secs(300))
        .await?
        .map(|at| (at - started).as_secs_f64() * 1e3);
    // Without acknowledgements, ask the server for its state until it holds every update.
    let mut expected = yrs::StateVector::default();
    for update in updates {
        expected.merge(Update::decode_v1(update)?.state_vector());
    }
    let held = session
        .confirm_held(&expected, Duration::from_secs(300))
        .await?;
    session.close().await;
    Ok(Stored {
        bytes,
        acked_ms: acked,
        held_ms: (held - started).as_secs_f64() * 1e3,
    })
}

/// S9, second half (after the server restarted): a new client opens `doc`; the time from
/// starting to connect until it holds the whole document, checked against the trace. (Some
/// servers answer the sync before they have loaded what they stored, and send the rest as
/// updates after: the clock stops when everything has arrived.)
pub(crate) async fn s9_open(settings: &Settings, doc: &str, scale: usize) -> Result<Value> {
    let end = replay_end()?;
    let rss_before = settings
        .server_pid
        .and_then(|pid| crate::procstat::rss_kib(&pid.to_string()));
    let started = Instant::now();
    let (mut session, state) = Session::open_with_state(settings, doc).await?;
    let doc_state = Doc::new();
    let roots: Vec<_> = (0..scale)
        .map(|k| doc_state.get_or_insert_text(format!("t{k}").as_str()))
        .collect();
    // The length first, as it is cheap; the text only once every length is right.
    let complete = |txn: &yrs::Transaction| {
        roots.iter().all(|t| t.len(txn) as usize == end.len())
            && roots.iter().all(|t| t.get_string(txn) == end)
    };
    doc_state
        .transact_mut()
        .apply_update(Update::decode_v1(&state)?)?;
    let mut updates_after_sync = 0u32;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while !complete(&doc_state.transact()) {
        let update = tokio::time::timeout_at(deadline, session.next_update())
            .await
            .context("waiting for the rest of the document")??;
        doc_state
            .transact_mut()
            .apply_update(Update::decode_v1(&update)?)?;
        updates_after_sync += 1;
    }
    let synced = started.elapsed();
    session.close().await;
    let rss_after = settings
        .server_pid
        .and_then(|pid| crate::procstat::rss_kib(&pid.to_string()));
    Ok(json!({
        "scenario": format!("S9-x{scale}"),
        "protocol": format!("{:?}", settings.protocol),
        "doc": doc,
        "scale": scale,
        "state_bytes": state.len(),
        "updates_after_sync": updates_after_sync,
        "synced_ms": synced.as_secs_f64() * 1e3,
        "identical_text": true,
        "server_rss_kib": {
            "before": rss_before.map(|(rss, _)| rss),
            "after": rss_after.map(|(rss, _)| rss),
        },
    }))
}

/// The trace's final text.
fn replay_end() -> Result<String> {
    Ok(parse()?["endContent"]
        .as_str()
        .context("endContent")?
        .to_owned())
}

/// Where S9 caches its generated documents unless told otherwise.
pub(crate) fn default_cache_dir() -> PathBuf {
    PathBuf::from("target/bench/cache")
}
