//! Server figures, kept in atomics and rendered in the Prometheus text format on `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use parking_lot::Mutex;

/// Upper bounds of the latency histograms, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0,
];

/// A Prometheus histogram of durations over [`BUCKETS`].
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, duration: Duration) {
        let secs = duration.as_secs_f64();
        for (bucket, bound) in self.buckets.iter().zip(BUCKETS) {
            if secs <= bound {
                bucket.fetch_add(1, Relaxed);
            }
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_micros
            .fetch_add(duration.as_micros() as u64, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (bucket, bound) in self.buckets.iter().zip(BUCKETS) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Relaxed)
            );
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_micros.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {count}");
    }
}

#[derive(Debug, Default)]
pub struct Metrics {
    pub connections: AtomicI64,
    pub connections_total: AtomicU64,
    pub channels: AtomicI64,
    pub documents_loaded: AtomicI64,
    pub frames_in: AtomicU64,
    pub frames_out: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub updates_applied: AtomicU64,
    pub updates_persisted: AtomicU64,
    pub commits: AtomicU64,
    pub storage_errors: AtomicU64,
    pub refused_upgrades: AtomicU64,
    /// Connections found reading too slowly, counted when the 4009 is decided (the close
    /// itself is counted in `closes` once the Close frame is out or its deadline passed).
    pub slow_consumers: AtomicU64,
    /// Documents rebuilt from their history after an update yrs refused part way.
    pub document_rebuilds: AtomicU64,
    /// Reads of what other servers stored (a shared database) that brought a loaded document
    /// something new.
    pub remote_catch_ups: AtomicU64,
    /// Updates from other servers that did not follow what their room held: the gap was read
    /// from the database.
    pub remote_gap_reads: AtomicU64,
    /// Quiet documents compared with the shared store by digest.
    pub digest_checks: AtomicU64,
    /// Of those, the ones whose digest differed from the store's at the same head.
    pub digest_mismatches: AtomicU64,
    /// `--redis-url` was given.
    pub redis_configured: AtomicBool,
    /// The publishing connection to Redis works.
    pub redis_publishing: AtomicBool,
    /// The subscription to other servers' updates works.
    pub redis_subscribed: AtomicBool,
    pub redis_published: AtomicU64,
    pub redis_received: AtomicU64,
    /// Updates not published or not handed on: a queue was full or Redis was down.
    pub redis_dropped: AtomicU64,
    /// From a commit to its update's publication on Redis.
    pub redis_publish_lag: Histogram,
    /// From another server's commit to its update's arrival here through Redis (by the two
    /// servers' clocks).
    pub redis_receive_lag: Histogram,
    /// Time from receiving a write to acknowledging it durable.
    pub durable_ack: Histogram,
    /// Time one group commit takes in storage (its fsync included).
    pub commit_duration: Histogram,
    closes: Mutex<BTreeMap<u16, u64>>,
    channel_closes: Mutex<BTreeMap<u16, u64>>,
}

impl Metrics {
    /// A connection ended with `code` (sent or received).
    pub fn count_close(&self, code: u16) {
        *self.closes.lock().entry(code).or_default() += 1;
    }

    /// A channel ended with `code`.
    pub fn count_channel_close(&self, code: u16) {
        *self.channel_closes.lock().entry(code).or_default() += 1;
    }

    /// Whether both connections to Redis work (false when it is not configured).
    pub fn redis_up(&self) -> bool {
        self.redis_publishing.load(Relaxed) && self.redis_subscribed.load(Relaxed)
    }

    /// Redis is configured and one of its connections is down.
    pub fn redis_down(&self) -> bool {
        self.redis_configured.load(Relaxed) && !self.redis_up()
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let gauge = |out: &mut String, name: &str, help: &str, value: i64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        };
        let counter = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        gauge(
            &mut out,
            "quire_connections",
            "Open WebSocket connections.",
            self.connections.load(Relaxed),
        );
        counter(
            &mut out,
            "quire_connections_total",
            "Connections accepted.",
            self.connections_total.load(Relaxed),
        );
        gauge(
            &mut out,
            "quire_channels",
            "Open document channels.",
            self.channels.load(Relaxed),
        );
        gauge(
            &mut out,
            "quire_documents_loaded",
            "Documents in memory.",
            self.documents_loaded.load(Relaxed),
        );
        counter(
            &mut out,
            "quire_frames_in_total",
            "Mux frames received.",
            self.frames_in.load(Relaxed),
        );
        counter(
            &mut out,
            "quire_frames_out_total",
            "Mux frames sent.",
            self.frames_out.load(Relaxed),
        );
        counter(
            &mut out,
            "quire_bytes_in_total",
            "Bytes of mux frames received.",
            self.bytes_in.load(Relaxed),
        );
        counter(
            &mut out,
            "quire_bytes_out_total",
            "Bytes of mux frames sent.",
            self.bytes_out.load(Relaxed),
        );
        counter(
            &mut out,
            "quire_updates_applied_total",
            "Updates that changed a document.",
            self.updates_applied.load(Relaxed),
        );
        counter(
            &mut out,
            "quire_updates_persisted_total",
            "Updates committed to storage.",
            self.updates_persisted.load(Relaxed),
        );
        counter(
            &mut out,
            "quire_commits_total",
            "Storage commits (each one fsync).",
            self.commits.load(Relaxed),
        );
        counter(
            &mut out,
            "quire_storage_errors_total",
            "Failed storage commits.",
            self.storage_errors.load(Relaxed),
        );
        counter(
            &mut out,
            "quire_refused_upgrades_total",
            "WebSocket upgrades refused.",
            self.refused_upgrades.load(Relaxed),
        );
        counter(
            &mut out,
            "quire_slow_consumers_total",
            "Connections closed with 4009 for reading too slowly, counted when decided.",
            self.slow_consumers.load(Relaxed),
        );
        counter(
            &mut out,
            "quire_document_rebuilds_total",
            "Documents rebuilt from their history after an update the CRDT library refused part way.",
            self.document_rebuilds.load(Relaxed),
        );
        counter(
            &mut out,
            "quire_remote_catch_ups_total",
            "Reads of updates other servers stored in the shared database that brought a loaded document something new.",
            self.remote_catch_ups.load(Relaxed),
        );
        counter(
            &mut out,
            "quire_remote_gap_reads_total",
            "Updates from other servers that did not follow what their document held, so the gap was read from the database.",
            self.remote_gap_reads.load(Relaxed),
        );
        counter(
            &mut out,
            "quire_digest_checks_total",
            "Quiet documents whose copy here was compared with the shared database's by state digest.",
            self.digest_checks.load(Relaxed),
        );
        counter(
            &mut out,
            "quire_digest_mismatches_total",
            "Of those, the copies whose digest differed from the database's at the same stored update.",
            self.digest_mismatches.load(Relaxed),
        );
        if self.redis_configured.load(Relaxed) {
            gauge(
                &mut out,
                "quire_redis_up",
                "1 while both connections to Redis work; 0 while updates between servers are found by checking the database.",
                i64::from(self.redis_up()),
            );
            counter(
                &mut out,
                "quire_redis_published_total",
                "Stored updates published to the other servers through Redis.",
                self.redis_published.load(Relaxed),
            );
            counter(
                &mut out,
                "quire_redis_received_total",
                "Updates other servers published through Redis, received here.",
                self.redis_received.load(Relaxed),
            );
            counter(
                &mut out,
                "quire_redis_dropped_total",
                "Updates not published or not handed on (a full queue, Redis down); the database check delivers them.",
                self.redis_dropped.load(Relaxed),
            );
            self.redis_publish_lag.render(
                &mut out,
                "quire_redis_publish_lag_seconds",
                "Time from a commit to its update's publication on Redis.",
            );
            self.redis_receive_lag.render(
                &mut out,
                "quire_redis_receive_lag_seconds",
                "Time from another server's commit to its update's arrival here through Redis, by the two servers' clocks.",
            );
        }

        self.durable_ack.render(
            &mut out,
            "quire_durable_ack_seconds",
            "Time from receiving a write to acknowledging it durable.",
        );
        self.commit_duration.render(
            &mut out,
            "quire_commit_seconds",
            "Time one storage group commit takes, its fsync included.",
        );

        for (name, help, map) in [
            (
                "quire_closes_total",
                "Connections ended, by close code.",
                &self.closes,
            ),
            (
                "quire_channel_closes_total",
                "Channels ended, by channel code.",
                &self.channel_closes,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (code, n) in map.lock().iter() {
                let _ = writeln!(out, "{name}{{code=\"{code}\"}} {n}");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.connections.fetch_add(2, Relaxed);
        m.durable_ack.observe(Duration::from_millis(3));
        m.commit_duration.observe(Duration::from_millis(30));
        m.count_close(1001);
        let text = m.render();
        assert!(text.contains("quire_connections 2\n"));
        assert!(text.contains("quire_durable_ack_seconds_bucket{le=\"0.002\"} 0\n"));
        assert!(text.contains("quire_durable_ack_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("quire_durable_ack_seconds_count 1\n"));
        assert!(text.contains("quire_commit_seconds_bucket{le=\"0.05\"} 1\n"));
        assert!(text.contains("quire_closes_total{code=\"1001\"} 1\n"));
    }
}
