//! `quire-bench`: a load driver for quire-server and its peers. It starts nothing; it
//! connects to a running server over WebSocket (plain, or TLS to measure its cost) and speaks Quire's mux protocol, the
//! y-websocket protocol (y-websocket, y-sweet) or Hocuspocus's (`--protocol`).
//! Results: one JSON line per run on stdout, a readable summary on stderr.
//!
//! # Layout
//! - [`histogram`]: the latency histogram (percentiles in µs).
//! - [`schedule`]: open-loop edit timing.
//! - [`tracker`]: matches relayed updates to the edits that made them.
//! - [`wire`]: the three protocols' bytes, as events for the connection loop.
//! - [`tls`]: the TLS client for `wss://` (trusting one given certificate).
//! - [`conn`]: one driver connection (handshake, sync, edits, acks).
//! - [`session`]: one connection with one document, driven step by step (for `trace`).
//! - [`trace`]: the B4 editing trace, F0 (the floor) and S9 (cold load).
//! - [`link`]: one connection as a reader and a writer task, small frames ahead of bulk ones.
//! - [`isolation`]: S11 (small edits beside a large upload and a cold load).
//! - [`history`]: H1 (listing and restoring versions; automatic versions' storage).
//! - [`procstat`]: server and driver CPU and RSS from /proc.
//! - [`run`]: one bounded run and its JSON result.
//! - [`scenario`]: the named scenarios (S1 to S8, S10).

mod conn;
mod histogram;
mod history;
mod isolation;
mod link;
mod procstat;
mod run;
mod scenario;
mod schedule;
mod session;
mod tls;
mod trace;
mod tracker;
mod wire;

use std::io::Write;
use std::net::IpAddr;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use serde_json::Value;

use crate::run::{Settings, Shape};

#[derive(Debug, Parser)]
#[command(name = "quire-bench", about = "Load driver for quire-server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// One run with an explicit shape.
    Run {
        #[command(flatten)]
        common: Common,
        /// Connections to open.
        #[arg(long, default_value_t = 200)]
        connections: usize,
        /// Documents (channels) each connection opens.
        #[arg(long, default_value_t = 1)]
        docs_per_conn: usize,
        /// Subscribers per document (spread over different connections).
        #[arg(long, default_value_t = 2)]
        clients_per_doc: usize,
        /// Edits per second per client; 0 for idle.
        #[arg(long, default_value_t = 5.0)]
        rate: f64,
        /// How many clients of each document edit; 0 for all.
        #[arg(long, default_value_t = 0)]
        writers_per_doc: usize,
        /// Awareness updates per second per client; 0 for none.
        #[arg(long, default_value_t = 0.0)]
        awareness_rate: f64,
    },
    /// A named scenario: S1 to S8, or S10.
    Scenario {
        name: String,
        #[command(flatten)]
        common: Common,
    },
    /// A scenario replaying the B4 editing trace: F0 (the floor, then through the server),
    /// S9-store (store the cold-load document) or S9-open (open it after a restart); S11-store
    /// (S9-store for S11) and S11 (isolation: after a restart, small edits beside a large
    /// upload and the cold load of the stored document; pass --scale 100); H1 (version
    /// history: list and restore on S9's document at --scale 1 or 100, or with --in-content
    /// the B4 trace in `content`) and H1-storage (the trace paced over --pace-secs against a
    /// server with a short --version-interval-secs, then its versions).
    Trace {
        name: String,
        #[command(flatten)]
        common: Common,
        /// S9, S11: copies of the trace in the document (1, or 100 for the large one).
        #[arg(long, default_value_t = 1)]
        scale: usize,
        /// S9, S11: the document's name (the same for the store and the open).
        #[arg(long, default_value = "bench/S9/doc")]
        doc: String,
        /// S9: where generated documents are cached.
        #[arg(long)]
        cache_dir: Option<std::path::PathBuf>,
        /// H1: the B4 trace replayed into the root text `content` (which a restore changes)
        /// instead of S9's document (its text in `t0`…); --scale 1 only.
        #[arg(long)]
        in_content: bool,
        /// H1: edits, lists and restores timed (default 20, or 5 at --scale 100 and up).
        #[arg(long)]
        runs: Option<usize>,
        /// H1-storage: seconds over which the trace's updates are sent.
        #[arg(long, default_value_t = 120.0)]
        pace_secs: f64,
    },
}

#[derive(Debug, Args)]
struct Common {
    /// Server URL, e.g. ws://127.0.0.1:PORT/ws, or wss:// with --ca-cert. Against a Quire
    /// cluster, the nodes' URLs separated by commas: the clients of each document are spread
    /// over the nodes (scenarios; the other subcommands use the first). For the y-websocket protocol
    /// a template: `{doc}` stands for the document's name (ws://127.0.0.1:1234/{doc};
    /// y-sweet: ws://127.0.0.1:8080/d/{doc}/ws/{doc}).
    #[arg(long)]
    url: String,
    /// The protocol the server speaks.
    #[arg(long, value_enum, default_value = "quire")]
    protocol: wire::Protocol,
    /// PEM certificate to trust for wss:// (a `--dev` server's dev-cert.pem).
    #[arg(long)]
    ca_cert: Option<std::path::PathBuf>,
    /// Bearer token (omit against a server started with --no-auth).
    #[arg(long)]
    token: Option<String>,
    /// Server process id, for CPU and RSS from /proc; several, separated by commas, for a
    /// cluster (their CPU and RSS are summed).
    #[arg(long, value_delimiter = ',')]
    server_pid: Vec<u32>,
    /// Comma-separated local addresses to spread connections over (e.g. 127.0.0.2,127.0.0.3).
    #[arg(long, value_delimiter = ',')]
    source_addrs: Vec<IpAddr>,
    /// Characters per edit.
    #[arg(long, default_value_t = 8)]
    edit_size: usize,
    /// Seconds of load before measuring.
    #[arg(long)]
    warmup: Option<f64>,
    /// Seconds measured.
    #[arg(long)]
    duration: Option<f64>,
    /// Seconds after the last edit to wait for deliveries and acks.
    #[arg(long, default_value_t = 2.0)]
    drain: f64,
    /// Connections handshaking at once.
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
    /// Runtime worker threads (1 keeps the driver on one core).
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

impl Common {
    fn settings(&self, warmup: f64, duration: f64) -> Settings {
        Settings {
            url: self.url.clone(),
            protocol: self.protocol,
            token: self.token.clone(),
            server_pid: self.server_pid.first().copied(),
            server_pids: self.server_pid.clone(),
            sources: self.source_addrs.clone(),
            warmup: Duration::from_secs_f64(self.warmup.unwrap_or(warmup)),
            duration: Duration::from_secs_f64(self.duration.unwrap_or(duration)),
            drain: Duration::from_secs_f64(self.drain),
            connect_concurrency: self.connect_concurrency,
            ca_cert: self.ca_cert.clone(),
        }
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let threads = match &cli.command {
        Command::Run { common, .. }
        | Command::Scenario { common, .. }
        | Command::Trace { common, .. } => common.threads,
    };
    let runtime = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    runtime.block_on(async_main(cli))
}

async fn async_main(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run {
            common,
            connections,
            docs_per_conn,
            clients_per_doc,
            rate,
            writers_per_doc,
            awareness_rate,
        } => {
            let shape = Shape {
                connections,
                docs_per_conn,
                clients_per_doc,
                rate,
                edit_size: common.edit_size,
                writers_per_doc,
                awareness_rate,
            };
            let result = run::run_once(&common.settings(3.0, 15.0), shape, "run").await?;
            emit(&result)
        }
        Command::Scenario { name, common } => {
            // Idle and multiplexing scenarios measure the connected state, not a load window.
            let (warmup, duration) = match name.as_str() {
                "S2" => (2.0, 6.0),
                "S5" | "S7" | "S10" => (0.0, 1.0),
                _ => (3.0, 15.0),
            };
            let settings = common.settings(warmup, duration);
            scenario::run(&name, &settings, common.edit_size, emit).await
        }
        Command::Trace {
            name,
            common,
            scale,
            doc,
            cache_dir,
            in_content,
            runs,
            pace_secs,
        } => {
            let settings = common.settings(0.0, 0.0);
            let cache_dir = cache_dir.unwrap_or_else(trace::default_cache_dir);
            let result = match name.as_str() {
                "F0" => trace::f0(&settings).await?,
                "S9-store" => trace::s9_store(&settings, &doc, scale, &cache_dir).await?,
                "S9-open" => trace::s9_open(&settings, &doc, scale).await?,
                "S11-store" => {
                    let mut stored = trace::s9_store(&settings, &doc, scale, &cache_dir).await?;
                    stored["scenario"] = format!("S11-store-x{scale}").into();
                    stored
                }
                "S11" => {
                    isolation::s11(&settings, &doc, scale, &cache_dir, common.edit_size).await?
                }
                "H1" => {
                    let runs = runs.unwrap_or(if scale >= 100 { 5 } else { 20 });
                    history::h1(&settings, &doc, scale, in_content, runs, &cache_dir).await?
                }
                "H1-storage" => {
                    history::storage(&settings, &doc, Duration::from_secs_f64(pace_secs)).await?
                }
                other => anyhow::bail!(
                    "unknown trace scenario {other} (F0, S9-store, S9-open, S11-store, S11, H1, H1-storage)"
                ),
            };
            emit(&result)
        }
    }
}

/// Writes `result` as a JSON line on stdout and a one-line summary on stderr.
fn emit(result: &Value) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{result}")?;
    out.flush()?;
    eprintln!("{}", summary(result));
    Ok(())
}

fn summary(r: &Value) -> String {
    let ms = |v: &Value| {
        v.as_f64()
            .map_or("-".to_owned(), |us| format!("{:.2}", us / 1e3))
    };
    let num = |v: &Value, digits: usize| {
        v.as_f64()
            .map_or("-".to_owned(), |x| format!("{x:.digits$}"))
    };
    if r["scenario"] == "S11" {
        let p99 = |stream: &str, phase: &str| ms(&r["streams"][stream][phase]["p99_us"]);
        return format!(
            "S11 same conn p99 ms rest {} heavy {} | other conn p99 ms rest {} heavy {} | A acked {} ms, B synced {} ms | errors {} | {}",
            p99("same_conn", "rest"),
            p99("same_conn", "heavy"),
            p99("other_conn", "rest"),
            p99("other_conn", "heavy"),
            num(&r["a_acked_ms"], 0),
            num(&r["b_synced_ms"], 0),
            r["errors"],
            if r["valid"].as_bool() == Some(true) { "valid" } else { "INVALID" },
        );
    }
    if r["scenario"]
        .as_str()
        .is_some_and(|s| s.starts_with("H1-x"))
    {
        let stat = |what: &str| {
            let s = &r[what];
            format!(
                "median {} p95 {} min {} max {}",
                ms(&s["median_us"]),
                ms(&s["p95_us"]),
                ms(&s["min_us"]),
                ms(&s["max_us"])
            )
        };
        return format!(
            "{} ({} bytes, {} runs) | list ms {} | restore ms {}",
            r["scenario"].as_str().unwrap_or("?"),
            r["document_bytes"],
            r["runs"],
            stat("list"),
            stat("restore"),
        );
    }
    if r.get("propagation").is_none() {
        return format!("summary {r}");
    }
    let p = &r["propagation"];
    let a = &r["durable_ack"];
    format!(
        "{:<9} conns {:>5} docs {:>5} | offered {:>8}/s delivered {:>8}/s ({}) | prop ms p50 {} p90 {} p99 {} p99.9 {} max {} | ack ms p50 {} p99 {} ({} /s) | synced {} ms | srv {} µs/upd, cpu {}, rss {}→{} KiB ({} KiB/conn) peak {} | driver {} {}",
        r["scenario"].as_str().unwrap_or("?"),
        r["shape"]["connections"],
        r["shape"]["documents"],
        num(&r["offered_updates_per_s"], 0),
        num(&r["delivered_updates_per_s"], 0),
        num(&r["delivered_fraction"], 4),
        ms(&p["p50_us"]),
        ms(&p["p90_us"]),
        ms(&p["p99_us"]),
        ms(&p["p999_us"]),
        ms(&p["max_us"]),
        ms(&a["p50_us"]),
        ms(&a["p99_us"]),
        num(&r["acked_writes_per_s"], 0),
        num(&r["all_synced_ms"], 1),
        num(&r["server_cpu_us_per_delivered"], 1),
        num(&r["server_cpu_share"], 2),
        r["server_rss_kib"]["before"],
        r["server_rss_kib"]["connected"],
        num(&r["server_kib_per_connection"], 1),
        r["server_rss_kib"]["peak"],
        num(&r["driver_core_share"], 2),
        if r["valid"].as_bool() == Some(true) { "valid" } else { "INVALID" },
    )
}
