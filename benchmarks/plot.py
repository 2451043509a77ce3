"""Bar charts of an echo_bench.py result file: one PNG per scenario.

    python benchmarks/plot.py                       # the newest benchmarks/results/*.json
    python benchmarks/plot.py results.json --out-dir docs/img

Each chart has the rate (requests/s or MB/s) and the server's CPU time per
request (or per MB) side by side: bars are medians, whiskers span min to max,
and the label on each bar is its ratio to asyncio. The idle scenario shows
server memory per connection instead. Needs matplotlib (the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE.parent / "docs" / "img"
BASELINE = "asyncio"

COLORS = {"reactor": "#1f77b4", BASELINE: "#7f7f7f"}
PEER_COLOR = "#ff7f0e"


def newest_result() -> Path:
    files = sorted((HERE / "results").glob("*.json"), key=lambda p: p.stat().st_mtime)
    if not files:
        raise SystemExit("no benchmarks/results/*.json: run benchmarks/echo_bench.py first")
    return files[-1]


def color(server: str) -> str:
    if server.startswith("reactor-"):
        return COLORS["reactor"]
    return COLORS.get(server, PEER_COLOR)


def panel(
    ax: Any, servers: list[str], entries: dict[str, Any], metric: str, ratio: str, label: str
) -> None:
    names = [s for s in servers if metric in entries[s]]
    medians = [entries[s][metric]["median"] for s in names]
    lows = [entries[s][metric]["median"] - entries[s][metric]["min"] for s in names]
    highs = [entries[s][metric]["max"] - entries[s][metric]["median"] for s in names]
    bars = ax.bar(
        names,
        medians,
        yerr=[lows, highs],
        capsize=4,
        color=[color(s) for s in names],
        edgecolor="black",
        linewidth=0.5,
    )
    for bar, name in zip(bars, names, strict=True):
        r = entries[name].get(ratio)
        if r is not None:
            ax.annotate(
                f"{r:.2f}x",
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                xytext=(0, 3),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=8,
            )
    ax.set_ylabel(label)
    ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)


def plot(document: dict[str, Any], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    meta = document.get("meta", {})
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, entries in document["summary"].items():
        scenario = document.get("scenarios", {}).get(name, {})
        client = meta.get("client", "?")
        if scenario.get("mode") == "stream" and meta.get("stream_client", "same") != "same":
            client = meta["stream_client"]
        note = (
            f"{meta.get('repeats', '?')} rounds x {meta.get('duration_s', '?')} s, client "
            f"{client}, pinned: {meta.get('pinned')}, Python {meta.get('python')}, "
            f"{meta.get('cpus', '?')} CPUs, {str(meta.get('date', ''))[:10]}"
        )
        servers = list(entries)
        if scenario.get("mode") == "idle":
            fig, axes = plt.subplots(1, 1, figsize=(6, 4))
            panel(
                axes,
                servers,
                entries,
                "rss_per_conn_bytes",
                "rss_ratio",
                "server RSS per idle connection (bytes)",
            )
        else:
            unit = scenario.get("unit", "req")
            fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
            panel(
                axes[0],
                servers,
                entries,
                "rate",
                "rate_ratio",
                "MB/s" if unit == "MB" else "requests/s",
            )
            panel(
                axes[1],
                servers,
                entries,
                "cpu_per_unit_us",
                "cpu_ratio",
                f"server CPU per {'MB' if unit == 'MB' else 'request'} (us), lower is better",
            )
        fig.suptitle(f"{name}: {scenario.get('title', '')}\n(labels: ratio to {BASELINE})")
        fig.text(0.5, 0.01, note, ha="center", fontsize=7, color="#555555")
        fig.tight_layout(rect=(0, 0.04, 1, 1))
        path = out_dir / f"bench_{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("result", nargs="?", help="a JSON file from echo_bench.py")
    parser.add_argument("--out-dir", default=str(DEFAULT_OUT), help="default: docs/img")
    args = parser.parse_args(argv)
    path = Path(args.result) if args.result else newest_result()
    document = json.loads(path.read_text())
    for written in plot(document, Path(args.out_dir)):
        print(written)
    return 0


if __name__ == "__main__":
    sys.exit(main())
