//! The named scenarios of the performance issue, each a bounded composition of runs: S1
//! steady, S2 saturation (rising rate), S3 connections, S4 fan-out, S5 idle memory, S6
//! awareness, S7 multiplexing, S8 durable acks, S10 connection storm. S9 (cold load) and F0
//! (the floor) replay an editing trace: `trace.rs`.

use anyhow::{bail, Result};
use serde_json::{json, Value};

use crate::run::{run_once, Settings, Shape};
use crate::wire::Protocol;

/// Per-client rates S2 tries, in order, on the S1 shape (200 senders → ×200 deliveries/s):
/// 5,000/s (S1 covers less), then 10,000/s and up in finer steps around where every server
/// measured so far saturates (10,000–20,000/s).
pub(crate) const S2_RATES: &[f64] = &[25.0, 50.0, 60.0, 70.0, 80.0, 100.0, 125.0, 150.0, 200.0];
/// S2 stops once p99 propagation exceeds this.
const S2_P99_LIMIT_US: u64 = 50_000;

/// S1's shape: 100 documents × 2 clients, one connection each, 5 edits/s per client.
pub(crate) fn s1(edit_size: usize) -> Shape {
    Shape::pairs(200, 2, 5.0, edit_size)
}

/// S3's connection counts: 500 × 2, then 5,000 and 10,000 connections, 2 clients per document
/// (one connection each) at 2 edits/s.
const S3_CONNECTIONS: &[usize] = &[1000, 5000, 10000];
/// S10: this many clients (one connection and document each, two per document) connect at once.
const S10_CLIENTS: usize = 1000;

/// Runs scenario `name`; every run's JSON goes to `emit`, summaries included.
pub(crate) async fn run(
    name: &str,
    settings: &Settings,
    edit_size: usize,
    mut emit: impl FnMut(&Value) -> Result<()>,
) -> Result<()> {
    match name {
        "S1" | "S8" => {
            let result = run_once(settings, s1(edit_size), name).await?;
            emit(&result)
        }
        "S2" => {
            let mut best: Option<Value> = None;
            let mut stop_reason = "all rates sustained".to_owned();
            for &rate in S2_RATES {
                let shape = Shape {
                    rate,
                    ..s1(edit_size)
                };
                let step = run_once(settings, shape, "S2-step").await?;
                emit(&step)?;
                let p99 = step["propagation"]["p99_us"].as_u64().unwrap_or(u64::MAX);
                let fraction = step["delivered_fraction"].as_f64().unwrap_or(0.0);
                if !step["valid"].as_bool().unwrap_or(false) {
                    stop_reason = format!("driver-bound at {rate}/s per client (run invalid)");
                    break;
                }
                if p99 > S2_P99_LIMIT_US || fraction < 0.9999 {
                    stop_reason =
                        format!("at {rate}/s per client: p99 {p99} µs, delivered {fraction:.4}");
                    break;
                }
                best = Some(step);
            }
            emit(&json!({
                "scenario": "S2",
                "protocol": format!("{:?}", settings.protocol),
                "best_sustained_delivered_updates_per_s": best.as_ref().map(|b| b["delivered_updates_per_s"].clone()),
                "best_rate_per_client": best.as_ref().map(|b| b["shape"]["rate_per_client"].clone()),
                "best_p99_us": best.as_ref().map(|b| b["propagation"]["p99_us"].clone()),
                "best_server_cpu_share": best.as_ref().map(|b| b["server_cpu_share"].clone()),
                "stopped": stop_reason,
            }))
        }
        "S3" => {
            for &connections in S3_CONNECTIONS {
                let shape = Shape::pairs(connections, 2, 2.0, edit_size);
                let result = run_once(settings, shape, &format!("S3-{connections}")).await?;
                emit(&result)?;
            }
            Ok(())
        }
        "S4" => {
            // 10 documents × 20 clients at 1/s; then 1 document × 200 clients, one writing 20/s.
            let docs = Shape::pairs(200, 20, 1.0, edit_size);
            emit(&run_once(settings, docs, "S4-docs").await?)?;
            let broadcast = Shape {
                writers_per_doc: 1,
                ..Shape::pairs(200, 200, 20.0, edit_size)
            };
            emit(&run_once(settings, broadcast, "S4-broadcast").await?)
        }
        "S5" => {
            let shape = Shape::pairs(2000, 2, 0.0, edit_size);
            let result = run_once(settings, shape, "S5").await?;
            emit(&result)
        }
        "S6" => {
            let shape = Shape {
                awareness_rate: 5.0,
                ..s1(edit_size)
            };
            emit(&run_once(settings, shape, "S6").await?)
        }
        "S7" => {
            // The y-websocket protocol has one document per socket: no multiplexed half.
            let a = if settings.protocol == Protocol::YWebsocket {
                Value::Null
            } else {
                let one = Shape {
                    docs_per_conn: 1000,
                    ..Shape::pairs(1, 1, 0.0, edit_size)
                };
                let a = run_once(settings, one, "S7-mux").await?;
                emit(&a)?;
                a
            };
            let many = Shape::pairs(1000, 1, 0.0, edit_size);
            let b = run_once(settings, many, "S7-conns").await?;
            emit(&b)?;
            emit(&json!({
                "scenario": "S7",
                "protocol": format!("{:?}", settings.protocol),
                "one_conn_all_synced_ms": a["all_synced_ms"],
                "one_conn_rss_delta_kib": rss_delta(&a, "server_rss_kib"),
                "one_conn_anon_delta_kib": rss_delta(&a, "server_anon_kib"),
                "many_conns_all_synced_ms": b["all_synced_ms"],
                "many_conns_rss_delta_kib": rss_delta(&b, "server_rss_kib"),
                "many_conns_anon_delta_kib": rss_delta(&b, "server_anon_kib"),
            }))
        }
        "S10" => {
            // Every connection starts its handshake at once.
            let storm = Settings {
                connect_concurrency: S10_CLIENTS,
                ..settings.clone()
            };
            let shape = Shape::pairs(S10_CLIENTS, 2, 0.0, edit_size);
            emit(&run_once(&storm, shape, "S10").await?)
        }
        "S9" | "F0" => bail!("{name} replays an editing trace: use the `trace` subcommand"),
        other => bail!("unknown scenario {other} (S1 … S8, S10)"),
    }
}

/// What connecting added to `figure` (`server_rss_kib` or `server_anon_kib`).
fn rss_delta(run: &Value, figure: &str) -> Option<i64> {
    let rss = &run[figure];
    Some(rss["connected"].as_i64()? - rss["before"].as_i64()?)
}
