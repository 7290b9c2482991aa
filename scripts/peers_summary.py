#!/usr/bin/env python3
"""Summarises scripts/peers.sh's JSON lines as Markdown tables: per server and scenario, the
median of the runs with min-max. Usage: peers_summary.py results.jsonl"""
import json
import statistics
import sys
from collections import defaultdict

STEADY = [  # (column, JSON path, scale)
    ("delivered/s", "delivered_updates_per_s", 1),
    ("delivered fraction", "delivered_fraction", 1),
    ("p50 ms", "propagation.p50_us", 1e-3),
    ("p99 ms", "propagation.p99_us", 1e-3),
    ("server CPU µs/update", "server_cpu_us_per_delivered", 1),
    ("server KiB/conn", "server_kib_per_connection", 1),
    ("server RSS peak KiB", "server_rss_kib.peak", 1),
    ("ack p50 ms", "durable_ack.p50_us", 1e-3),
    ("ack p99 ms", "durable_ack.p99_us", 1e-3),
    ("driver core", "driver_core_share", 1),
]
SATURATION = [
    ("best sustained delivered/s", "best_sustained_delivered_updates_per_s", 1),
    ("p99 ms at it", "best_p99_us", 1e-3),
]


def lookup(record, path):
    for key in path.split("."):
        if not isinstance(record, dict) or record.get(key) is None:
            return None
        record = record[key]
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


def main(path):
    runs = defaultdict(list)
    with open(path) as f:
        for line in f:
            record = json.loads(line)
            scenario = record.get("scenario")
            if scenario in ("S1", "S2", "S8"):
                runs[(scenario, record.get("server", "?"))].append(record)
    for scenario in ("S1", "S8", "S2"):
        servers = [s for (sc, s) in runs if sc == scenario]
        if not servers:
            continue
        columns = SATURATION if scenario == "S2" else STEADY
        print(f"\n### {scenario}\n")
        print("| server | runs | " + " | ".join(c for c, _, _ in columns) + " |")
        print("|---|---:|" + "---:|" * len(columns))
        for server in servers:
            records = runs[(scenario, server)]
            cells = []
            for _, key, scale in columns:
                values = [get(r, key) for r in records]
                cells.append(cell([v * scale if v is not None else None for v in values]))
            print(f"| {server} | {len(records)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1])
