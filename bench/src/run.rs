//! One bounded load run against a running server: connect every connection, wait until all
//! documents are synced, run warm-up then the measurement window, drain, and turn what the
//! tracker, the connections and /proc saw into one JSON result.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;

use crate::conn::{self, ChannelPlan, ConnPlan, Target, Timeline};
use crate::histogram::Histogram;
use crate::procstat;
use crate::schedule::Schedule;
use crate::tracker::Tracker;

/// Above this share of one core the driver, not the server, may be the bottleneck.
pub(crate) const DRIVER_CPU_LIMIT: f64 = 0.8;
/// How long to wait for every connection to be connected and synced (S3 connects 10,000).
const READY_TIMEOUT: Duration = Duration::from_secs(180);
/// Gap between releasing the load and its first edit, so every connection sees the timeline.
const START_DELAY: Duration = Duration::from_millis(200);

/// Runs so far in this process, so document names never repeat across runs.
static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// What is offered: how many connections, documents and clients, and how fast they edit.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shape {
    pub(crate) connections: usize,
    pub(crate) docs_per_conn: usize,
    pub(crate) clients_per_doc: usize,
    /// Edits per second per client (channel); 0 = idle.
    pub(crate) rate: f64,
    pub(crate) edit_size: usize,
    /// How many of a document's clients edit (the first ones); 0 = all of them.
    pub(crate) writers_per_doc: usize,
    /// Awareness updates per second per client; 0 = none.
    pub(crate) awareness_rate: f64,
}

impl Shape {
    /// `connections` connections of one document each, `clients_per_doc` per document, every
    /// client editing at `rate`, no awareness.
    pub(crate) fn pairs(
        connections: usize,
        clients_per_doc: usize,
        rate: f64,
        edit_size: usize,
    ) -> Self {
        Self {
            connections,
            docs_per_conn: 1,
            clients_per_doc,
            rate,
            edit_size,
            writers_per_doc: 0,
            awareness_rate: 0.0,
        }
    }
}

/// Where to connect and how long to run.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) url: String,
    pub(crate) protocol: crate::wire::Protocol,
    pub(crate) token: Option<String>,
    pub(crate) server_pid: Option<u32>,
    /// Every server process (a cluster's nodes): scenarios sum their CPU and RSS.
    pub(crate) server_pids: Vec<u32>,
    pub(crate) sources: Vec<IpAddr>,
    pub(crate) warmup: Duration,
    pub(crate) duration: Duration,
    pub(crate) drain: Duration,
    pub(crate) connect_concurrency: usize,
    /// For `wss://`: the PEM certificate to trust.
    pub(crate) ca_cert: Option<std::path::PathBuf>,
}

/// Runs `shape` once and returns its JSON result.
pub(crate) async fn run_once(settings: &Settings, shape: Shape, label: &str) -> Result<Value> {
    let mut targets = Vec::new();
    for url in settings.url.split(',') {
        let node = Settings {
            url: url.trim().to_owned(),
            ..settings.clone()
        };
        targets.push(Arc::new(target(&node).await?));
    }
    let pids: Vec<String> = settings.server_pids.iter().map(u32::to_string).collect();
    // Summed over a cluster's nodes; none if any is unreadable.
    let server_rss = || {
        (!pids.is_empty()).then_some(())?;
        pids.iter().try_fold((0, 0), |(now, peak), pid| {
            let (n, p) = procstat::rss_kib(pid)?;
            Some((now + n, peak + p))
        })
    };
    let server_anon = || {
        (!pids.is_empty()).then_some(())?;
        pids.iter()
            .try_fold(0, |sum, pid| Some(sum + procstat::anon_kib(pid)?))
    };
    let server_cpu = || {
        (!pids.is_empty()).then_some(())?;
        pids.iter().try_fold(Duration::ZERO, |sum, pid| {
            Some(sum + procstat::cpu_time(pid)?)
        })
    };
    let rss_before = server_rss();
    let anon_before = server_anon();

    let slots = shape.connections * shape.docs_per_conn;
    let docs = slots.div_ceil(shape.clients_per_doc.max(1)).max(1);
    let subscribers = |doc: usize| slots / docs + usize::from(doc < slots % docs);
    let run_id = format!(
        "{}-{}",
        std::process::id(),
        RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let tracker = Arc::new(Tracker::new());
    let gate = Arc::new(Semaphore::new(settings.connect_concurrency.max(1)));
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    let (go_tx, go_rx) = watch::channel(None);
    let mut tasks = JoinSet::new();
    let spawned = Instant::now();
    for c in 0..shape.connections {
        let channels = (0..shape.docs_per_conn)
            .map(|j| {
                let slot = c * shape.docs_per_conn + j;
                let doc = slot % docs;
                // Slots of one document are `docs` apart: this is its (slot / docs)-th client.
                let writes = shape.writers_per_doc == 0 || slot / docs < shape.writers_per_doc;
                ChannelPlan {
                    doc_index: doc as u32,
                    doc_name: format!("bench/{label}/{run_id}/{doc}"),
                    others: subscribers(doc).saturating_sub(1) as u32,
                    schedule: Schedule::new(
                        if writes { shape.rate } else { 0.0 },
                        slot as u64,
                        slots as u64,
                    ),
                    awareness: Schedule::new(shape.awareness_rate, slot as u64, slots as u64),
                }
            })
            .collect();
        let plan = ConnPlan {
            source: (!settings.sources.is_empty())
                .then(|| settings.sources[c % settings.sources.len()]),
            channels,
            edit_size: shape.edit_size,
        };
        // Document d's k-th client goes to node d + k (mod the nodes): each document's
        // clients are on different nodes, and every node has as many clients.
        let first_slot = c * shape.docs_per_conn;
        let node = (first_slot % docs + first_slot / docs) % targets.len();
        tasks.spawn(conn::run(
            targets[node].clone(),
            plan,
            tracker.clone(),
            gate.clone(),
            ready_tx.clone(),
            go_rx.clone(),
        ));
    }
    drop(ready_tx);

    let (mut connect, mut sync) = (Histogram::default(), Histogram::default());
    let mut ready = 0;
    let mut failures = Vec::new();
    let mut last_synced = spawned;
    let ready_deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    while ready + failures.len() < shape.connections {
        tokio::select! {
            r = ready_rx.recv() => {
                let Some(r) = r else { break };
                ready += 1;
                connect.record(r.connect.as_micros() as u64);
                sync.record(r.sync.as_micros() as u64);
                last_synced = last_synced.max(r.synced_at);
            }
            Some(done) = tasks.join_next() => {
                failures.push(match done {
                    Ok(Ok(())) => "ended early".to_owned(),
                    Ok(Err(e)) => format!("{e:#}"),
                    Err(e) => e.to_string(),
                });
            }
            _ = tokio::time::sleep_until(ready_deadline) => bail!("only {ready} of {} connections synced in {READY_TIMEOUT:?}", shape.connections),
        }
    }
    if let Some(first) = failures.first() {
        eprintln!("{} connection(s) failed; first: {first}", failures.len());
    }
    let all_synced = last_synced - spawned;
    let rss_connected = server_rss();
    let anon_connected = server_anon();

    let start = Instant::now() + START_DELAY;
    let from = start + settings.warmup;
    let to = from + settings.duration;
    let end = to + settings.drain;
    tracker.set_window(from, to);
    go_tx.send(Some(Timeline {
        start,
        stop_sending: to,
        end,
    }))?;
    tokio::time::sleep_until(from.into()).await;
    let (server0, driver0) = (server_cpu(), procstat::cpu_time("self"));
    tokio::time::sleep_until(to.into()).await;
    let (server1, driver1) = (server_cpu(), procstat::cpu_time("self"));
    let rss_loaded = server_rss();
    let join_deadline = tokio::time::Instant::now() + settings.drain + Duration::from_secs(10);
    while let Ok(Some(done)) = tokio::time::timeout_at(join_deadline, tasks.join_next()).await {
        if let Ok(Err(e)) = done {
            failures.push(format!("{e:#}"));
        }
    }
    tasks.abort_all();
    let rss_end = server_rss();

    // VmHWM lags VmRSS slightly (per-CPU counters), so the peak is the highest of both seen.
    let peak = [rss_connected, rss_loaded, rss_end]
        .iter()
        .flatten()
        .map(|(rss, hwm)| *rss.max(hwm))
        .max();
    let totals = tracker.totals();
    let secs = settings.duration.as_secs_f64();
    let expected = totals.sent_measured as f64 * (shape.clients_per_doc.max(1) - 1) as f64;
    let delivered_fraction = if expected > 0.0 {
        totals.delivered_measured as f64 / expected
    } else {
        1.0
    };
    let cpu = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
        (Some(a), Some(b)) => Some((b - a).as_secs_f64()),
        _ => None,
    };
    let server_cpu_s = cpu(server0, server1);
    let driver_cpu_s = cpu(driver0, driver1).context("reading /proc/self/stat")?;
    let driver_core_share = driver_cpu_s / secs;
    let delivered_per_s = totals.delivered_in_window as f64 / secs;
    let kib = |v: Option<(u64, u64)>| v.map(|(rss, _)| rss);
    let per_conn_kib = match (kib(rss_before), kib(rss_connected)) {
        (Some(a), Some(b)) => Some((b as f64 - a as f64) / shape.connections as f64),
        _ => None,
    };
    let pct = |h: &Histogram| {
        json!({
            "count": h.count(),
            "p50_us": h.quantile(0.5), "p90_us": h.quantile(0.9), "p99_us": h.quantile(0.99),
            "p999_us": h.quantile(0.999), "max_us": h.max(),
        })
    };
    Ok(json!({
        "scenario": label,
        "protocol": format!("{:?}", settings.protocol),
        "shape": {
            "connections": shape.connections, "docs_per_conn": shape.docs_per_conn,
            "clients_per_doc": shape.clients_per_doc, "documents": docs,
            "rate_per_client": shape.rate, "edit_size": shape.edit_size,
            "writers_per_doc": shape.writers_per_doc, "awareness_rate_per_client": shape.awareness_rate,
        },
        "warmup_s": settings.warmup.as_secs_f64(),
        "duration_s": secs,
        "connections_failed": failures.len(),
        "first_failure": failures.first(),
        "offered_updates_per_s": totals.sent_measured as f64 / secs,
        "expected_deliveries_per_s": expected / secs,
        "delivered_updates_per_s": delivered_per_s,
        "delivered_fraction": delivered_fraction,
        "unmatched_updates": totals.unmatched,
        "awareness_sent_per_s": totals.awareness_sent as f64 / secs,
        "awareness_received_per_s": totals.awareness_received as f64 / secs,
        "propagation": pct(&totals.propagation),
        "durable_ack": pct(&totals.ack),
        "acked_writes_per_s": totals.ack.count() as f64 / secs,
        "connect": pct(&connect),
        "sync_per_conn": pct(&sync),
        "all_synced_ms": all_synced.as_secs_f64() * 1e3,
        "server_cpu_s": server_cpu_s,
        "server_cpu_us_per_delivered": server_cpu_s
            .filter(|_| totals.delivered_in_window > 0)
            .map(|s| s * 1e6 / totals.delivered_in_window as f64),
        "server_cpu_share": server_cpu_s.map(|s| s / secs),
        "server_rss_kib": {
            "before": kib(rss_before), "connected": kib(rss_connected),
            "loaded": kib(rss_loaded), "peak": peak,
        },
        "server_anon_kib": { "before": anon_before, "connected": anon_connected },
        "server_kib_per_connection": per_conn_kib,
        "driver_core_share": driver_core_share,
        "valid": driver_core_share <= DRIVER_CPU_LIMIT && failures.is_empty(),
    }))
}

pub(crate) async fn target(settings: &Settings) -> Result<Target> {
    let (rest, tls) = if let Some(rest) = settings.url.strip_prefix("ws://") {
        (rest, None)
    } else if let Some(rest) = settings.url.strip_prefix("wss://") {
        let ca = settings.ca_cert.as_deref().context(
            "wss:// needs --ca-cert (a --dev server's is dev-cert.pem in its data directory)",
        )?;
        (rest, Some(crate::tls::Tls::trusting(ca)?))
    } else {
        bail!("the URL must start with ws:// or wss://");
    };
    let authority = rest.split('/').next().unwrap_or(rest);
    let addr = tokio::net::lookup_host(authority)
        .await?
        .next()
        .with_context(|| format!("resolving {authority}"))?;
    Ok(Target {
        url: settings.url.clone(),
        protocol: settings.protocol,
        addr,
        token: settings.token.clone(),
        tls,
    })
}
