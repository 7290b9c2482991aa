#!/usr/bin/env python3
"""Summarises scripts/peers.sh's JSON lines as Markdown tables: per scenario (and step) and
server, the median of the runs with min-max, then Quire's ratio to the best peer on each
scenario's headline figure. Usage: peers_summary.py results.jsonl"""
import json
import statistics
import sys
from collections import defaultdict

# (column, JSON path, scale)
LOAD = [
    ("delivered/s", "delivered_updates_per_s", 1),
    ("delivered fraction", "delivered_fraction", 1),
    ("p50 ms", "propagation.p50_us", 1e-3),
    ("p99 ms", "propagation.p99_us", 1e-3),
    ("server CPU µs/update", "server_cpu_us_per_delivered", 1),
    ("server core", "server_cpu_share", 1),
    ("server KiB/conn", "server_kib_per_connection", 1),
    ("server RSS peak KiB", "server_rss_kib.peak", 1),
    ("ack p50 ms", "durable_ack.p50_us", 1e-3),
    ("ack p99 ms", "durable_ack.p99_us", 1e-3),
    ("driver core", "driver_core_share", 1),
]
CONNECTIONS = [
    ("all synced ms", "all_synced_ms", 1),
    ("connect p99 ms", "connect.p99_us", 1e-3),
    ("failed", "connections_failed", 1),
]
TABLES = [  # (title, scenario labels, columns)
    ("S1 steady: 100 documents × 2 clients, 5 edits/s each", ["S1"], LOAD),
    ("S2 saturation: the S1 shape at rising rates, best step with p99 ≤ 50 ms and every update delivered", ["S2"], [
        ("best sustained delivered/s", "best_sustained_delivered_updates_per_s", 1),
        ("p99 ms at it", "best_p99_us", 1e-3),
        ("server core at it", "best_server_cpu_share", 1),
    ]),
    ("S3 connections: 2 clients per document at 2 edits/s", ["S3-1000", "S3-5000", "S3-10000"],
     LOAD[:6] + CONNECTIONS),
    ("S4 fan-out: 10 documents × 20 clients at 1/s; 1 document × 200 clients, one writing 20/s",
     ["S4-docs", "S4-broadcast"], LOAD[:6]),
    ("S5 idle: 1,000 documents × 2 clients, no traffic", ["S5"], [
        ("server KiB/conn", "server_kib_per_connection", 1),
        ("server RSS connected KiB", "server_rss_kib.connected", 1),
        ("server core idle", "server_cpu_share", 1),
        ("all synced ms", "all_synced_ms", 1),
    ]),
    ("S6 awareness: S1 plus 5 awareness updates/s per client", ["S6"], LOAD[:6] + [
        ("awareness received/s", "awareness_received_per_s", 1),
    ]),
    ("S7 multiplexing: 1,000 documents on one connection, and on 1,000 connections", ["S7"], [
        ("one connection: all synced ms", "one_conn_all_synced_ms", 1),
        ("one connection: RSS delta KiB", "one_conn_rss_delta_kib", 1),
        ("1,000 connections: all synced ms", "many_conns_all_synced_ms", 1),
        ("1,000 connections: RSS delta KiB", "many_conns_rss_delta_kib", 1),
    ]),
    ("S8 persistence: S1 with every server persisting", ["S8"], LOAD),
    ("S9 cold load: a stored document opened after a restart", ["S9-x1", "S9-x100"], [
        ("document bytes", "state_bytes", 1),
        ("synced ms", "synced_ms", 1),
        ("identical text", "identical_text", 1),
        ("server RSS after KiB", "server_rss_kib.after", 1),
    ]),
    ("S10 connection storm: 1,000 clients connecting at once", ["S10"], CONNECTIONS),
    ("S11 isolation: small edits (20/s each way) beside a 20 MB upload and a 26.7 MB cold load on one connection",
     ["S11"], [
        ("same conn p50 ms", "streams.same_conn.heavy.p50_us", 1e-3),
        ("same conn p99 ms", "streams.same_conn.heavy.p99_us", 1e-3),
        ("same conn max ms", "streams.same_conn.heavy.max_us", 1e-3),
        ("other conn p50 ms", "streams.other_conn.heavy.p50_us", 1e-3),
        ("other conn p99 ms", "streams.other_conn.heavy.p99_us", 1e-3),
        ("other conn max ms", "streams.other_conn.heavy.max_us", 1e-3),
        ("at rest p99 ms (same)", "streams.same_conn.rest.p99_us", 1e-3),
        ("at rest p99 ms (other)", "streams.other_conn.rest.p99_us", 1e-3),
        ("A acked ms", "a_acked_ms", 1),
        ("B synced ms", "b_synced_ms", 1),
        ("B complete", "b_complete", 1),
    ]),
    ("F0 floor: the B4 trace's 259,778 updates, yrs alone and through the server", ["F0"], [
        ("yrs alone ms", "floor_ms", 1),
        ("through the server ms", "through_server_ms", 1),
        ("ratio to the floor", "ratio_to_floor", 1),
        ("all acknowledged ms", "all_durably_acked_ms", 1),
        ("identical text", "identical_text", 1),
    ]),
]
# Headline figure per scenario label: (JSON path, higher is better, what it is).
HEADLINES = {
    "S1": ("server_cpu_us_per_delivered", False, "server CPU µs per delivered update"),
    "S1 ": ("propagation.p99_us", False, "propagation p99"),
    "S2": ("best_sustained_delivered_updates_per_s", True, "sustained delivered updates/s"),
    "S3-10000": ("server_cpu_us_per_delivered", False, "server CPU µs per delivered update"),
    "S4-broadcast": ("propagation.p99_us", False, "propagation p99"),
    "S5": ("server_kib_per_connection", False, "KiB per idle connection"),
    "S6": ("server_cpu_us_per_delivered", False, "server CPU µs per delivered update"),
    "S7": ("one_conn_all_synced_ms", False, "1,000 documents on one connection, synced ms"),
    "S8": ("server_cpu_us_per_delivered", False, "server CPU µs per delivered update"),
    "S9-x1": ("synced_ms", False, "synced ms"),
    "S9-x100": ("synced_ms", False, "synced ms"),
    "S10": ("all_synced_ms", False, "all synced ms"),
    "F0": ("through_server_ms", False, "through the server ms"),
}


def lookup(record, path):
    for key in path.split("."):
        if not isinstance(record, dict) or record.get(key) is None:
            return None
        record = record[key]
    if isinstance(record, bool):
        return 1.0 if record else 0.0
    return record


def get(record, path):
    # A server that sends no acknowledgements has none to time: "-", not 0.
    if path.startswith("durable_ack.") and not lookup(record, "durable_ack.count"):
        return None
    return lookup(record, path)


def fmt(x):
    if x is None:
        return "-"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 1:
        return f"{x:.2f}"
    return f"{x:.3f}"


def cell(values):
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    median = statistics.median(values)
    if len(values) == 1:
        return fmt(median)
    return f"{fmt(median)} ({fmt(min(values))}–{fmt(max(values))})"


def median_of(records, path):
    values = [v for v in (get(r, path) for r in records) if v is not None]
    return statistics.median(values) if values else None


def main(path):
    runs = defaultdict(list)
    servers = []
    with open(path) as f:
        for line in f:
            record = json.loads(line)
            server = record.get("server", "?")
            if server not in servers:
                servers.append(server)
            runs[(record.get("scenario"), server)].append(record)
    for title, labels, columns in TABLES:
        rows = [(label, s) for label in labels for s in servers if runs.get((label, s))]
        if not rows:
            continue
        print(f"\n### {title}\n")
        step = len(labels) > 1
        head = "| " + ("step | " if step else "") + "server | runs | "
        print(head + " | ".join(c for c, _, _ in columns) + " |")
        print("|" + ("---|" if step else "") + "---|---:|" + "---:|" * len(columns))
        for label, server in rows:
            records = runs[(label, server)]
            cells = []
            for _, key, scale in columns:
                values = [get(r, key) for r in records]
                cells.append(cell([v * scale if v is not None else None for v in values]))
            prefix = f"| {label} " if step else ""
            print(f"{prefix}| {server} | {len(records)} | " + " | ".join(cells) + " |")

    print("\n### Quire against the best peer (medians)\n")
    print("| scenario | figure | Quire | best peer | Quire ÷ best peer |")
    print("|---|---|---:|---:|---:|")
    for label, (key, higher, what) in HEADLINES.items():
        label = label.strip()
        quire = median_of(runs.get((label, "quire"), []), key)
        peers = [(median_of(runs[(label, s)], key), s) for s in servers
                 if not s.startswith("quire") and runs.get((label, s))]
        peers = [(v, s) for v, s in peers if v is not None]
        if quire is None or not peers:
            continue
        best, who = (max if higher else min)(peers)
        scale = 1e-3 if key.endswith("_us") else 1
        ratio = quire / best if best else float("nan")
        print(f"| {label} | {what}{' (ms)' if scale != 1 else ''} | {fmt(quire * scale)} | "
              f"{fmt(best * scale)} ({who}) | {ratio:.2f} |")


if __name__ == "__main__":
    main(sys.argv[1])
