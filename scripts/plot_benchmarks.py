#!/usr/bin/env python3
"""Plots of the benchmark scripts' last results (docs/benchmarks/data/*.csv, written by the
scripts through scripts/results.sh) as SVG files in docs/benchmarks/, which docs/BENCHMARKS.md
shows. Run by scripts/report.sh; a missing results file skips its plot with a note.

    python3 scripts/plot_benchmarks.py [DATA_DIR [OUT_DIR]]
"""

import csv
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# Reproducible SVG: no date, fixed ids, text kept as text.
plt.rcParams.update(
    {
        "svg.hashsalt": "statefs",
        "svg.fonttype": "none",
        "font.size": 10,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "figure.dpi": 100,
    }
)

COLORS = {"statefs": "#1f77b4", "local": "#7f7f7f", "copy": "#d62728", "embedded": "#ff7f0e", "flink": "#2ca02c"}


def read(data_dir, name):
    """The rows of NAME.csv as dicts, and its `# date: what` line; None if absent."""
    path = os.path.join(data_dir, name + ".csv")
    if not os.path.exists(path):
        print(f"report: no {path}: run its benchmark script (scripts/report.sh --run)", file=sys.stderr)
        return None, None
    with open(path) as f:
        first = f.readline().strip()
        rows = list(csv.DictReader(f))
    return rows, first.lstrip("# ")


def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def save(fig, out_dir, name, note):
    fig.text(0.01, 0.01, note, fontsize=7, color="#555555", ha="left", va="bottom")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    path = os.path.join(out_dir, name + ".svg")
    fig.savefig(path, format="svg", metadata={"Date": None})
    plt.close(fig)
    print(f"report: wrote {path}", file=sys.stderr)


def dbbench(data_dir, out_dir):
    rows, note = read(data_dir, "dbbench")
    if not rows:
        return
    names = [r["benchmark"] for r in rows]
    ratios = [num(r["statefs_ops"]) / num(r["local_ops"]) for r in rows]
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    bars = ax.bar(names, ratios, color=COLORS["statefs"])
    ax.axhline(1.0, color=COLORS["local"], linestyle="--", label="local disk = 1.0")
    for b, r in zip(bars, ratios):
        ax.text(b.get_x() + b.get_width() / 2, r + 0.02, f"{r:.2f}x", ha="center", fontsize=9)
    ax.set_ylim(0, max(1.2, max(ratios) + 0.15))
    ax.set_ylabel("statefs ops/s ÷ local disk ops/s")
    ax.set_title("db_bench: RocksDB on statefs vs on local disk")
    ax.legend(loc="lower right")
    save(fig, out_dir, "dbbench-ratio", note)


def cache(data_dir, out_dir):
    rows, note = read(data_dir, "cache")
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for pt, style in (("on", "-o"), ("off", "--s")):
        pts = sorted(
            ((num(r["cache_pct"]), num(r["statefs_ops"]) / num(r["local_ops"])) for r in rows if r["passthrough"] == pt),
            key=lambda p: p[0],
        )
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=f"passthrough {pt}")
    ax.axhline(1.0, color=COLORS["local"], linestyle=":", label="local disk = 1.0")
    ax.set_xlabel("local cache limit, % of the SST data")
    ax.set_ylabel("readrandom ops/s ÷ local disk")
    ax.set_title("Cache-size sweep: cold readrandom after dropping the page cache")
    ax.set_xticks([0, 10, 30, 100])
    ax.legend()
    save(fig, out_dir, "cache-sweep", note)


def checkpoint(data_dir, out_dir):
    rows, note = read(data_dir, "checkpoint")
    if not rows:
        return
    rows = sorted(rows, key=lambda r: num(r["sst_bytes"]))
    gb = [num(r["sst_bytes"]) / 1e9 for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.8))
    series = [
        ("statefs (RocksDB checkpoint + publish)", lambda r: num(r["rocksdb_checkpoint_ms"]) + num(r["publish_ms"]), "statefs"),
        ("statefs publish alone", lambda r: num(r["publish_ms"]), None),
        ("RocksDB backend (local checkpoint + copy)", lambda r: num(r.get("embedded_checkpoint_ms")), "embedded"),
        ("full copy into the store", lambda r: num(r["full_copy_ms"]), "copy"),
    ]
    for label, f, c in series:
        ys = [f(r) for r in rows]
        if all(y is not None for y in ys):
            a.plot(gb, ys, "-o" if c else ":^", label=label, color=COLORS.get(c))
    a.set_xscale("log")
    a.set_yscale("log")
    a.set_xlabel("state (SST bytes, GB)")
    a.set_ylabel("checkpoint time, ms")
    a.set_title("Checkpoint")
    a.legend(fontsize=7)
    for label, key, c in (
        ("statefs restore (lazy) to first read", "restore_ms", "statefs"),
        ("RocksDB backend: download, then first read", "embedded_restore_ms", "embedded"),
    ):
        ys = [num(r.get(key)) for r in rows]
        if all(y is not None for y in ys):
            b.plot(gb, ys, "-o", label=label, color=COLORS[c])
    b.set_xscale("log")
    b.set_yscale("log")
    b.set_xlabel("state (SST bytes, GB)")
    b.set_ylabel("restore time to first read, ms")
    b.set_title("Restore")
    b.legend(fontsize=7)
    save(fig, out_dir, "checkpoint-restore", note)


def state_ops(data_dir, out_dir):
    rows, note = read(data_dir, "state-ops")
    if not rows:
        return
    ops = [r["operation"] for r in rows]
    fig, ax = plt.subplots(figsize=(9, 3.8))
    width = 0.4
    xs = range(len(ops))
    for i, (label, key, c) in enumerate(
        (
            ("vs Flink's heap backend, same machine and run", "flink_here_ops_ms", "flink"),
            ("vs Flink's published heap figures", "flink_published_ops_ms", "local"),
        )
    ):
        # An operation Flink publishes no figure for gets no bar.
        ys = []
        for r in rows:
            ours, theirs = num(r.get("statefs_ops_ms")), num(r.get(key))
            ys.append(ours / theirs if ours and theirs else float("nan"))
        ax.bar([x + (i - 0.5) * width for x in xs], ys, width, label=label, color=COLORS[c])
    ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
    ax.set_xticks(list(xs))
    ax.set_xticklabels(ops, rotation=40, ha="right")
    ax.set_ylabel("statefs heap ops/ms ÷ Flink's")
    ax.set_title("Heap state operations: statefs vs Flink's HeapKeyedStateBackend (one thread)")
    ax.legend(fontsize=8, loc="upper right")
    save(fig, out_dir, "state-ops", note)


def main():
    data_dir = sys.argv[1] if len(sys.argv) > 1 else "docs/benchmarks/data"
    out_dir = sys.argv[2] if len(sys.argv) > 2 else "docs/benchmarks"
    os.makedirs(out_dir, exist_ok=True)
    for plot in (dbbench, cache, checkpoint, state_ops):
        plot(data_dir, out_dir)


if __name__ == "__main__":
    main()
