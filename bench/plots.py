"""PNG plots of the benchmark results (matplotlib, no display needed)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after use(): the backend must be chosen first
from matplotlib.ticker import FuncFormatter

OPERATOR_COLOR = "#1f77b4"
CLI_COLOR = "#ff7f0e"
ACTIONS = ("pull", "push", "tag")


def write_all(results: dict[str, Any], out: Path) -> list[Path]:
    """Every plot the results allow; returns the files written."""
    written: list[Path] = []
    if "p1" in results:
        written += [_p1_latency(results["p1"], out), _p1_ratio(results["p1"], out)]
    if "p4" in results:
        written.append(_p4_latency(results["p4"], out))
    if "p5" in results:
        written.append(_p5_events(results["p5"], out))
    return written


def _p1_latency(p1: dict[str, Any], out: Path) -> Path:
    sizes = list(p1)
    fig, axes = plt.subplots(1, 3, figsize=(15, 5))
    jitter = random.Random(1)
    for ax, action in zip(axes, ACTIONS, strict=True):
        for i, size in enumerate(sizes):
            for offset, side, color in (
                (-0.18, "operator", OPERATOR_COLOR),
                (0.18, "cli", CLI_COLOR),
            ):
                values = p1[size]["samples"][action][side]
                xs = [i + offset + jitter.uniform(-0.05, 0.05) for _ in values]
                ax.scatter(xs, values, color=color, alpha=0.6, s=22, zorder=3)
                median = p1[size]["summary"][action][side]["median"]
                ax.hlines(median, i + offset - 0.13, i + offset + 0.13, color=color, lw=2.5)
        ax.set_xticks(range(len(sizes)), sizes, fontsize=9)
        values = [v for s in sizes for side in p1[s]["samples"][action].values() for v in side]
        # A log axis only when the sizes spread the values over more than a factor of 5.
        if max(values) > 5 * min(values):
            ax.set_yscale("log")
            ax.yaxis.set_minor_formatter(FuncFormatter(_seconds))
            ax.tick_params(axis="y", which="minor", labelsize=7)
            ax.set_ylabel("latency (log scale)")
        else:
            ax.set_ylim(0, max(values) * 1.15)
            ax.set_ylabel("latency")
        ax.yaxis.set_major_formatter(FuncFormatter(_seconds))
        ax.set_title(f"{action}: create → Succeeded vs docker {action}")
        ax.grid(axis="y", which="both", alpha=0.3)
    axes[0].scatter([], [], color=OPERATOR_COLOR, label="operator (dots: runs, bar: median)")
    axes[0].scatter([], [], color=CLI_COLOR, label="docker CLI")
    axes[0].legend(loc="upper left", fontsize=9)
    fig.suptitle("P1 latency per image size")
    fig.tight_layout()
    path = out / "p1_latency.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _seconds(value: float, _pos: object = None) -> str:
    """Tick label: milliseconds below one second, seconds above."""
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"


def _p1_ratio(p1: dict[str, Any], out: Path) -> Path:
    sizes = list(p1)
    fig, ax = plt.subplots(figsize=(9, 5))
    width = 0.26
    colors = {"pull": "#2ca02c", "push": "#d62728", "tag": "#9467bd"}
    for j, action in enumerate(ACTIONS):
        ratios = [p1[s]["summary"][action]["ratio"] for s in sizes]
        xs = [i + (j - 1) * width for i in range(len(sizes))]
        bars = ax.bar(xs, ratios, width, label=action, color=colors[action])
        ax.bar_label(bars, fmt="%.2fx", fontsize=8)
    ax.axhline(1.10, color="black", ls="--", lw=1, label="target 1.10x")
    ax.axhline(1.0, color="grey", lw=0.8)
    highest = max(s["summary"][a]["ratio"] for s in p1.values() for a in ACTIONS)
    ax.set_ylim(0, max(2.0, highest) * 1.15)
    ax.set_xticks(range(len(sizes)), sizes)
    ax.set_ylabel("median operator / median CLI")
    ax.set_title("P1 overhead ratio per image size")
    ax.legend()
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    path = out / "p1_ratio.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _p4_latency(p4: dict[str, Any], out: Path) -> Path:
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    ops = p4["latency_samples"]
    left.hist(ops, bins=40, color=OPERATOR_COLOR)
    for name, style in (("p50", "--"), ("p95", ":")):
        value = p4["latency"][name]
        left.axvline(value, color="black", ls=style, label=f"{name} {value:.2f}s")
    left.set_title(f"{p4['ops']} Tag operations created at once: create → Succeeded, per op")
    left.set_xlabel("seconds")
    left.set_ylabel("operations")
    left.legend()
    cli = p4["cli"]["samples"]
    right.hist(cli, bins=40, color=CLI_COLOR)
    for name, style in (("p50", "--"), ("p95", ":")):
        value = p4["cli"]["latency"][name]
        right.axvline(value, color="black", ls=style, label=f"{name} {value * 1000:.0f} ms")
    right.set_title(f"{p4['ops']} sequential docker tag calls: per call")
    right.set_xlabel("seconds")
    right.legend()
    fig.suptitle(
        f"P4 throughput ({p4['runs']} runs, all operations pooled): operator "
        f"{p4['seconds_to_all_ready']['median']:.1f}s for all, CLI loop "
        f"{p4['cli']['seconds_total']['median']:.1f}s (median ratio {p4['ratio']['median']:.2f}x)"
    )
    fig.tight_layout()
    path = out / "p4_latency.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _p5_events(p5: dict[str, Any], out: Path) -> Path:
    rows = p5["per_agent"]
    fig, ax = plt.subplots(figsize=(13, 5))
    xs = range(len(rows))
    width = 0.28
    series = (
        ("addressed", "events for the node's objects (bench watch)", "#7f7f7f"),
        ("received_own", "received: own node's objects", OPERATOR_COLOR),
        ("received_other", "received: other nodes' objects", "#d62728"),
    )
    for j, (key, label, color) in enumerate(series):
        ax.bar(
            [x + (j - 1) * width for x in xs],
            [r[key] for r in rows],
            width,
            label=label,
            color=color,
        )
    ax.set_xticks(list(xs), [r["node"] for r in rows], rotation=60, fontsize=8)
    ax.set_ylabel("watch events")
    ax.set_ylim(0, max([1, *(r["addressed"] for r in rows)]) * 1.4)
    ax.set_title(
        f"P5 fan-out: {p5['agents']} agents, {p5['ops']} operations — "
        f"events for other nodes received: {p5['received_other_total']}"
    )
    ax.legend(loc="upper center", ncol=3, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path = out / "p5_events.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
