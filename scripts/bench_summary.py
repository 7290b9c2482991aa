#!/usr/bin/env python3
"""Summarises quire-bench JSON lines (scripts/bench.sh's output) as a Markdown table:
median of the runs with min-max, per scenario and metric; lines tagged with a "build"
(scripts/bench.sh's BUILD=) are summarised per build, in the order they first appear.
Usage: bench_summary.py results.jsonl"""
import json
import statistics
import sys

METRICS = {
    "S1": [
        ("offered updates/s", "offered_updates_per_s", 1),
        ("delivered updates/s", "delivered_updates_per_s", 1),
        ("delivered fraction", "delivered_fraction", 1),
        ("propagation p50 ms", "propagation.p50_us", 1e-3),
        ("propagation p90 ms", "propagation.p90_us", 1e-3),
        ("propagation p99 ms", "propagation.p99_us", 1e-3),
        ("propagation p99.9 ms", "propagation.p999_us", 1e-3),
        ("propagation max ms", "propagation.max_us", 1e-3),
        ("server CPU µs / delivered update", "server_cpu_us_per_delivered", 1),
        ("server CPU (share of a core)", "server_cpu_share", 1),
        ("server RSS connected KiB", "server_rss_kib.connected", 1),
        ("server RSS peak KiB", "server_rss_kib.peak", 1),
        ("connect p50 ms", "connect.p50_us", 1e-3),
        ("connect p99 ms", "connect.p99_us", 1e-3),
        ("driver CPU (share of a core)", "driver_core_share", 1),
    ],
    "S8": [
        ("durable ack p50 ms", "durable_ack.p50_us", 1e-3),
        ("durable ack p99 ms", "durable_ack.p99_us", 1e-3),
        ("durable ack p99.9 ms", "durable_ack.p999_us", 1e-3),
        ("acked writes/s", "acked_writes_per_s", 1),
        ("server CPU (share of a core)", "server_cpu_share", 1),
        ("driver CPU (share of a core)", "driver_core_share", 1),
    ],
    "S2": [
        ("best sustained delivered updates/s", "best_sustained_delivered_updates_per_s", 1),
        ("rate per client at best", "best_rate_per_client", 1),
        ("p99 ms at best", "best_p99_us", 1e-3),
        ("server CPU share at best", "best_server_cpu_share", 1),
    ],
    "S5": [
        ("server KiB per idle connection", "server_kib_per_connection", 1),
        ("server RSS before KiB", "server_rss_kib.before", 1),
        ("server RSS connected KiB", "server_rss_kib.connected", 1),
        ("all 2,000 connected+synced ms", "all_synced_ms", 1),
        ("connect p99 ms", "connect.p99_us", 1e-3),
    ],
    "S7": [
        ("1 conn × 1,000 docs: all synced ms", "one_conn_all_synced_ms", 1),
        ("1 conn × 1,000 docs: RSS delta KiB", "one_conn_rss_delta_kib", 1),
        ("1,000 conns × 1 doc: all synced ms", "many_conns_all_synced_ms", 1),
        ("1,000 conns × 1 doc: RSS delta KiB", "many_conns_rss_delta_kib", 1),
    ],
    "S11": [
        ("same connection (C): edits p50 ms, heavy", "streams.same_conn.heavy.p50_us", 1e-3),
        ("same connection (C): edits p99 ms, heavy", "streams.same_conn.heavy.p99_us", 1e-3),
        ("same connection (C): edits max ms, heavy", "streams.same_conn.heavy.max_us", 1e-3),
        ("same connection (C): edits timed, heavy", "streams.same_conn.heavy.count", 1),
        ("same connection (C): edits p99 ms, at rest", "streams.same_conn.rest.p99_us", 1e-3),
        ("other connection: edits p50 ms, heavy", "streams.other_conn.heavy.p50_us", 1e-3),
        ("other connection: edits p99 ms, heavy", "streams.other_conn.heavy.p99_us", 1e-3),
        ("other connection: edits max ms, heavy", "streams.other_conn.heavy.max_us", 1e-3),
        ("other connection: edits timed, heavy", "streams.other_conn.heavy.count", 1),
        ("other connection: edits p99 ms, at rest", "streams.other_conn.rest.p99_us", 1e-3),
        ("A: 20 MB upload acknowledged ms", "a_acked_ms", 1),
        ("B: 26.7 MB cold document synced ms", "b_synced_ms", 1),
        ("B: whole document received", "b_complete", 1),
        ("server CPU (share of a core), heavy window", "server_cpu_share", 1),
        ("driver CPU (share of a core), heavy window", "driver_core_share", 1),
    ],
}

# H1: each line holds its own repeated runs (median, p95, min, max of them, in µs).
H1_TIMES = [
    ("list median ms", "list.median_us", 1e-3),
    ("list p95 ms", "list.p95_us", 1e-3),
    ("list min ms", "list.min_us", 1e-3),
    ("list max ms", "list.max_us", 1e-3),
    ("restore median ms", "restore.median_us", 1e-3),
    ("restore p95 ms", "restore.p95_us", 1e-3),
    ("restore min ms", "restore.min_us", 1e-3),
    ("restore max ms", "restore.max_us", 1e-3),
    ("timed runs", "runs", 1),
    ("document bytes", "document_bytes", 1),
    ("named version bytes", "named_version_bytes", 1),
    ("create (name) version ms", "create_version_ms", 1),
    ("server RSS after KiB", "server_rss_kib.after", 1),
]
for name in ("H1-x1", "H1-x1-content", "H1-x100"):
    METRICS[name] = H1_TIMES
METRICS["H1-storage"] = [
    ("replay s (paced)", "sent_ms", 1e-3),
    ("versions made", "sqlite.versions_made", 1),
    ("versions kept (database)", "sqlite.versions", 1),
    ("bytes kept (database, size column)", "sqlite.bytes", 1),
    ("bytes kept (database, state blobs)", "sqlite.state_bytes", 1),
    ("versions listed (client)", "versions.count", 1),
    ("bytes listed (client)", "versions.bytes", 1),
    ("largest version bytes", "versions.largest_bytes", 1),
    ("database file bytes", "sqlite.db_file_bytes", 1),
]


def get(record, path):
    for part in path.split("."):
        if not isinstance(record, dict) or record.get(part) is None:
            return None
        record = record[part]
    return record


def fmt(x):
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 1:
        return f"{x:.2f}"
    return f"{x:.3f}"


def main():
    runs = {}
    with open(sys.argv[1]) as f:
        for line in f:
            line = line.strip()
            if line:
                record = json.loads(line)
                key = (record["scenario"], record.get("build"))
                runs.setdefault(key, []).append(record)
    builds = list(dict.fromkeys(build for _, build in runs))
    print("| scenario | metric | median | min – max | runs (valid) |")
    print("|---|---|---:|---:|---:|")
    for (scenario, metrics), build in [(m, b) for m in METRICS.items() for b in builds]:
        records = runs.get((scenario, build), [])
        if not records:
            continue
        if build is not None:
            scenario = f"{scenario} ({build})"
        valid = sum(1 for r in records if r.get("valid", True))
        for name, path, scale in metrics:
            values = [get(r, path) for r in records]
            values = [v * scale for v in values if isinstance(v, (int, float))]
            if not values:
                print(f"| {scenario} | {name} | not measured | | 0 |")
                continue
            print(f"| {scenario} | {name} | {fmt(statistics.median(values))} | "
                  f"{fmt(min(values))} – {fmt(max(values))} | {len(values)} ({valid}) |")
    for build in builds:
        for record in runs.get(("S2", build), []):
            label = f" ({build})" if build is not None else ""
            print(f"\nS2{label} stopped: {record.get('stopped')}")


if __name__ == "__main__":
    main()
