//! The named scenarios of the performance issue, each a bounded composition of runs:
//! S1 steady, S2 saturation (rising rate), S5 idle memory, S7 multiplexing, S8 durable acks.

use anyhow::{bail, Result};
use serde_json::{json, Value};

use crate::run::{run_once, Settings, Shape};

/// Per-client rates S2 tries, in order, on the S1 shape (200 senders → ×200 deliveries/s).
pub(crate) const S2_RATES: &[f64] = &[5.0, 10.0, 15.0, 20.0, 25.0, 35.0, 50.0, 75.0, 100.0, 200.0];
/// S2 stops once p99 propagation exceeds this.
const S2_P99_LIMIT_US: u64 = 50_000;

/// S1's shape: 100 documents × 2 clients, one connection each, 5 edits/s per client.
pub(crate) fn s1(edit_size: usize) -> Shape {
    Shape {
        connections: 200,
        docs_per_conn: 1,
        clients_per_doc: 2,
        rate: 5.0,
        edit_size,
    }
}

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
        "S5" => {
            let shape = Shape {
                connections: 2000,
                docs_per_conn: 1,
                clients_per_doc: 2,
                rate: 0.0,
                edit_size,
            };
            let result = run_once(settings, shape, "S5").await?;
            emit(&result)
        }
        "S7" => {
            let one = Shape {
                connections: 1,
                docs_per_conn: 1000,
                clients_per_doc: 1,
                rate: 0.0,
                edit_size,
            };
            let a = run_once(settings, one, "S7-mux").await?;
            emit(&a)?;
            let many = Shape {
                connections: 1000,
                docs_per_conn: 1,
                ..one
            };
            let b = run_once(settings, many, "S7-conns").await?;
            emit(&b)?;
            emit(&json!({
                "scenario": "S7",
                "one_conn_all_synced_ms": a["all_synced_ms"],
                "one_conn_rss_delta_kib": rss_delta(&a),
                "many_conns_all_synced_ms": b["all_synced_ms"],
                "many_conns_rss_delta_kib": rss_delta(&b),
            }))
        }
        other => bail!("unknown scenario {other} (S1, S2, S5, S7, S8)"),
    }
}

fn rss_delta(run: &Value) -> Option<i64> {
    let rss = &run["server_rss_kib"];
    Some(rss["connected"].as_i64()? - rss["before"].as_i64()?)
}
