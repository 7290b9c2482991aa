//! H1, version history (PROTOCOL §6.9), through `quire-client`'s `DocHandle` as the app uses
//! it. Two parts, each against its own fresh server:
//!
//! - `H1` (`--scale 1` or `100`, `--in-content`): S9's document is stored, a client opens
//!   it, names a version, then `--runs` times makes one more edit (in `content`, waited for
//!   until durable) and times `versions()` and `restore_version()` of the named version,
//!   which answers once the restore's edit is durable. Restore changes only the root text
//!   `content`; S9's documents keep their text in `t0`…`t99`, so there the edit is a sentence
//!   inserted into an empty `content` and the restore takes it out again, while the server
//!   still loads, saves and decodes the whole document. `--in-content` stores the B4 trace
//!   replayed into `content` instead (S9's B4-sized document with its text where an editor
//!   has it): the sentence goes into the middle of the paper and the restore diffs its
//!   104,852 characters.
//! - `H1-storage`: the B4 trace's 259,778 updates replayed into `content` by one client,
//!   paced over `--pace-secs`, against a server started with a short automatic-version
//!   interval; then the document's versions as the server lists them (how many, how many
//!   bytes). The calling script reads the same from the server's database.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use quire_client::{
    Access, Client, ClientConfig, DocHandle, DocState, MemoryStore, Trust, VersionInfo, VersionKind,
};
use serde_json::{json, Value};
use yrs::{Text, Transact};

use crate::run::Settings;
use crate::session::Session;
use crate::trace::{self, CONTENT_ROOT};
use crate::wire::Protocol;

/// The edit made before each restore: inserted into `content`, taken out by the restore.
const EDIT: &str = " A sentence added after the named version, for the restore to undo.";
/// How long one step (opening, saving an edit, one request, the restored text) may take.
const STEP_LIMIT: Duration = Duration::from_secs(300);
/// H1-storage: one batch of the trace's updates is sent every this long.
const PACE_TICK: Duration = Duration::from_millis(10);
/// H1-storage: time for automatic versions still being saved (in the background) after the
/// last acknowledgement.
const SETTLE: Duration = Duration::from_secs(2);

/// H1 for S9's document at `scale`, or (`in_content`) for the B4 trace in `content`.
pub(crate) async fn h1(
    settings: &Settings,
    doc: &str,
    scale: usize,
    in_content: bool,
    runs: usize,
    cache_dir: &std::path::Path,
) -> Result<Value> {
    ensure!(
        settings.protocol == Protocol::Quire,
        "H1 needs Quire's protocol"
    );
    ensure!(runs > 0, "--runs must be at least 1");
    ensure!(
        !in_content || scale == 1,
        "--in-content is for the B4-sized document (--scale 1)"
    );
    let (updates, root) = if in_content {
        (vec![trace::content_document(cache_dir)?], CONTENT_ROOT)
    } else {
        (trace::s9_document(scale, cache_dir)?, "t0")
    };
    let stored = trace::store(settings, doc, &updates).await?;

    let pid = settings.server_pid.map(|p| p.to_string());
    let server_rss = || pid.as_deref().and_then(crate::procstat::rss_kib);
    let server_cpu = || pid.as_deref().and_then(crate::procstat::cpu_time);

    let started = Instant::now();
    let (client, handle) = open(settings, doc).await?;
    let synced_ms = ms(started.elapsed());
    let base = handle.text();

    let started = Instant::now();
    let named = within(handle.create_version("H1 named version")).await?;
    let create_ms = ms(started.elapsed());
    ensure!(
        named.kind == VersionKind::Named,
        "not a named version: {named:?}"
    );

    let rss_before = server_rss();
    let (mut list, mut restore, mut restore_cpu) = (Vec::new(), Vec::new(), Vec::new());
    let mut listed = Vec::new();
    for _ in 0..runs {
        edit(&handle);
        until_saved(&client, &handle).await?;
        ensure!(handle.text() != base, "the edit did not change `content`");

        let started = Instant::now();
        let versions = within(handle.versions()).await?;
        list.push(started.elapsed());
        ensure!(
            versions.iter().any(|v| v.id == named.id),
            "the named version is not listed"
        );
        listed.push(versions.len());

        let cpu0 = server_cpu();
        let started = Instant::now();
        let undo = within(handle.restore_version(named.id)).await?;
        restore.push(started.elapsed());
        if let (Some(a), Some(b)) = (cpu0, server_cpu()) {
            restore_cpu.push(b.saturating_sub(a));
        }
        ensure!(
            undo.kind == VersionKind::BeforeRestore,
            "a restore answered {undo:?}"
        );
        until_text(&handle, &base).await?;
    }
    let rss_after = server_rss();
    let versions = within(handle.versions()).await?;
    client.close().await;

    let label = if in_content {
        "H1-x1-content".to_owned()
    } else {
        format!("H1-x{scale}")
    };
    Ok(json!({
        "scenario": label,
        "protocol": format!("{:?}", settings.protocol),
        "doc": doc,
        "scale": scale,
        "text_root": root,
        "document_bytes": stored.bytes,
        "stored_acked_ms": stored.acked_ms,
        "client_synced_ms": synced_ms,
        "content_chars_at_version": base.len(),
        "edit_chars": EDIT.len(),
        "named_version_bytes": named.size,
        "create_version_ms": create_ms,
        "runs": runs,
        "list": stats(&list),
        "versions_listed": listed,
        "restore": stats(&restore),
        "restore_server_cpu_ms": restore_cpu.iter().map(|d| ms(*d)).collect::<Vec<_>>(),
        "restored_text_identical": true,
        "versions_at_end": summary(&versions),
        "server_rss_kib": {
            "before": rss_before.map(|(rss, _)| rss),
            "after": rss_after.map(|(rss, _)| rss),
            "peak": rss_after.map(|(_, hwm)| hwm),
        },
    }))
}

/// H1-storage: the B4 trace into `content`, paced over `pace`, then the document's versions.
pub(crate) async fn storage(settings: &Settings, doc: &str, pace: Duration) -> Result<Value> {
    ensure!(
        settings.protocol == Protocol::Quire,
        "H1 needs Quire's protocol"
    );
    let trace = trace::replay(crate::conn::next_client_id(), CONTENT_ROOT)?;
    let n = trace.updates.len();
    let ticks = (pace.as_secs_f64() / PACE_TICK.as_secs_f64())
        .ceil()
        .max(1.0) as usize;
    let per_tick = n.div_ceil(ticks);

    let mut session = Session::open(settings, doc).await?;
    let started = Instant::now();
    let start = tokio::time::Instant::now();
    for (i, batch) in trace.updates.chunks(per_tick).enumerate() {
        let due = start + PACE_TICK * i as u32;
        // What the server sends meanwhile (ACKs, PINGs) is read while waiting.
        loop {
            tokio::select! {
                biased;
                _ = tokio::time::sleep_until(due) => break,
                r = session.poll_incoming() => r?,
            }
        }
        session.send_updates(batch).await?;
    }
    let sent_ms = ms(started.elapsed());
    let acked = session
        .await_all_acked(STEP_LIMIT)
        .await?
        .map(|at| ms(at - started));
    session.close().await;
    tokio::time::sleep(SETTLE).await;

    let (client, handle) = open(settings, doc).await?;
    ensure!(
        handle.text() == trace.end,
        "the server's text is not the trace's"
    );
    let versions = within(handle.versions()).await?;
    client.close().await;
    Ok(json!({
        "scenario": "H1-storage",
        "protocol": format!("{:?}", settings.protocol),
        "doc": doc,
        "updates": n,
        "update_bytes": trace.updates.iter().map(Vec::len).sum::<usize>(),
        "pace_s": pace.as_secs_f64(),
        "updates_per_batch": per_tick,
        "sent_ms": sent_ms,
        "all_acked_ms": acked,
        "identical_text": true,
        "versions": summary(&versions),
        "server_rss_kib": settings
            .server_pid
            .and_then(|pid| crate::procstat::rss_kib(&pid.to_string()))
            .map(|(rss, _)| rss),
    }))
}

/// A client of its own (memory store) with `doc` open for writing and synced.
async fn open(settings: &Settings, doc: &str) -> Result<(Client, DocHandle)> {
    let trust = settings
        .ca_cert
        .clone()
        .map_or(Trust::WebPki, Trust::CaFile);
    let mut config = ClientConfig::new(settings.url.clone(), trust, settings.token.clone());
    config.client_name = "quire-bench".into();
    let client = Client::start(config, Arc::new(MemoryStore::default()));
    let handle = client.open(doc, Access::Write).await?;
    let mut state = handle.state();
    let reached = tokio::time::timeout(
        STEP_LIMIT,
        state.wait_for(|s| matches!(s, DocState::Synced { .. } | DocState::Failed { .. })),
    )
    .await
    .context("waiting for the document to sync")??
    .clone();
    if let DocState::Failed { code, reason } = reached {
        bail!("the server refused the document: {code} {reason}");
    }
    Ok((client, handle))
}

/// Inserts [`EDIT`] into the middle of `content`, one transaction.
fn edit(handle: &DocHandle) {
    let content = handle.doc().get_or_insert_text(CONTENT_ROOT);
    let mut txn = handle.doc().transact_mut();
    let middle = content.len(&txn) / 2;
    content.insert(&mut txn, middle, EDIT);
}

/// Waits until every edit made so far is durable on the server. Re-opening the open
/// document queues behind the edit's command, so the state read after it counts the edit.
async fn until_saved(client: &Client, handle: &DocHandle) -> Result<()> {
    client.open(handle.id().as_str(), Access::Write).await?;
    let mut state = handle.state();
    let reached = tokio::time::timeout(
        STEP_LIMIT,
        state.wait_for(|s| s.is_saved() || matches!(s, DocState::Failed { .. })),
    )
    .await
    .context("waiting for the edit to be durable")??
    .clone();
    ensure!(reached.is_saved(), "the document failed: {reached:?}");
    Ok(())
}

/// Waits until the restore's edit, relayed to this client too, has made `content` equal to
/// `expected` again.
async fn until_text(handle: &DocHandle, expected: &str) -> Result<()> {
    let deadline = tokio::time::Instant::now() + STEP_LIMIT;
    while handle.text() != expected {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the restored text never arrived"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

async fn within<T>(
    request: impl std::future::Future<Output = Result<T, quire_client::ClientError>>,
) -> Result<T> {
    Ok(tokio::time::timeout(STEP_LIMIT, request)
        .await
        .context("waiting for the server's reply")??)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Median (the mean of the middle two for an even count), p95 (nearest rank), min, max and
/// every sample, in µs.
fn stats(samples: &[Duration]) -> Value {
    let mut us: Vec<u64> = samples.iter().map(|d| d.as_micros() as u64).collect();
    us.sort_unstable();
    let n = us.len();
    if n == 0 {
        return Value::Null;
    }
    let median = if n % 2 == 1 {
        us[n / 2]
    } else {
        (us[n / 2 - 1] + us[n / 2]) / 2
    };
    let p95 = us[((0.95 * n as f64).ceil() as usize).clamp(1, n) - 1];
    json!({
        "count": n,
        "median_us": median,
        "p95_us": p95,
        "min_us": us[0],
        "max_us": us[n - 1],
        "samples_us": samples.iter().map(|d| d.as_micros() as u64).collect::<Vec<_>>(),
    })
}

/// How many versions of each kind and how many bytes they hold.
fn summary(versions: &[VersionInfo]) -> Value {
    let kind = |k: VersionKind| versions.iter().filter(|v| v.kind == k).count();
    let oldest = versions.iter().map(|v| v.created_ms).min();
    let newest = versions.iter().map(|v| v.created_ms).max();
    json!({
        "count": versions.len(),
        "bytes": versions.iter().map(|v| v.size).sum::<u64>(),
        "auto": kind(VersionKind::Auto),
        "named": kind(VersionKind::Named),
        "before_restore": kind(VersionKind::BeforeRestore),
        "largest_bytes": versions.iter().map(|v| v.size).max(),
        "span_ms": oldest.zip(newest).map(|(a, b)| b - a),
    })
}
