"""Scale benchmark: training and batch scoring rows/s, local engine vs ``dask-local``.

Run from the repository root::

    .venv/bin/python -m benchmarks.scale --rows 100000 1000000 [--rounds 100]

For each size it writes a synthetic table (``xgbops data synth``; Parquet, and a CSV for the
local engine, which reads one), then runs, each as its own ``xgbops`` process in a throw-away
project: ``xgbops train --no-promote`` with each engine, then ``xgbops score`` of the whole
table with each engine. Every run is timed end to end (what a user waits for) and its process
tree is sampled for resident memory: the peak of the main process and of the biggest other
process (a Dask worker). Results go to ``reports/scale.json`` and the curve of time vs rows
to ``reports/scale.png``; the table is printed in markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess  # nosec B404 - runs our own CLI, fixed commands
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import psutil

REPO = Path(__file__).resolve().parents[1]
XGBOPS = str(Path(sys.executable).parent / "xgbops")
ENGINES = ("local", "dask-local")


@dataclass
class Run:
    """One timed command: what, on how many rows, how long, and its peak memory."""

    step: str
    engine: str
    rows: int
    seconds: float
    rows_per_second: float
    peak_main_mb: float
    peak_worker_mb: float
    ok: bool


def _project(root: Path, table: Path, csv: Path, rounds: int) -> dict[str, str]:
    """A project whose dataset is ``csv``; the environment the runs use."""
    shutil.copytree(REPO / "config", root / "config")
    (root / "config" / "tuned.yaml").unlink(missing_ok=True)
    (root / "data").mkdir()
    (root / "data" / "churn.csv").symlink_to(csv)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XGBOPS_", "MLFLOW_"))}
    env.update(
        XGBOPS_PROJECT_DIR=str(root),
        XGBOPS_TRAIN__NUM_BOOST_ROUND=str(rounds),
        XGBOPS_TRAIN__BASELINES='["majority"]',  # a logistic fit on 10^7 rows measures sklearn
        XGBOPS_DASK__DATA=str(table),
        XGBOPS_LOG_LEVEL="WARNING",
    )
    return env


def _timed(command: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, float, bool]:
    """Run ``command``; wall seconds, peak RSS (MB) of it and of its biggest child, success."""
    started = time.perf_counter()
    with subprocess.Popen(  # nosec B603 - our own CLI
        command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    ) as process:
        watched = psutil.Process(process.pid)
        peak_main = peak_child = 0.0
        while process.poll() is None:
            try:
                peak_main = max(peak_main, watched.memory_info().rss / 2**20)
                for child in watched.children(recursive=True):
                    peak_child = max(peak_child, child.memory_info().rss / 2**20)
            except psutil.Error:
                pass
            time.sleep(0.2)
        errors = process.stderr.read().decode(errors="replace") if process.stderr else ""
    if process.returncode:
        print(f"{' '.join(command[1:3])} failed:\n{errors[-2000:]}", file=sys.stderr)
    return time.perf_counter() - started, peak_main, peak_child, process.returncode == 0


def bench(rows: int, rounds: int, work: Path) -> list[Run]:
    """Train and score ``rows`` synthetic rows with each engine."""
    table, csv = work / f"table-{rows}", work / f"table-{rows}.csv"
    project = work / f"project-{rows}"
    env = _project(project, table, csv, rounds)
    subprocess.run(  # nosec B603 - our own CLI
        [XGBOPS, "data", "synth", "--rows", str(rows), "--out", str(table)],
        env=env,
        cwd=project,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    for index, part in enumerate(sorted(table.glob("*.parquet"))):
        pd.read_parquet(part).to_csv(csv, mode="a", header=index == 0, index=False)
    runs = []
    for engine in ENGINES:
        source = str(csv if engine == "local" else table)
        for step, command in (
            ("train", [XGBOPS, "train", "--no-promote"]),
            ("score", [XGBOPS, "score", source, str(work / f"scored-{rows}-{engine}"), "-v", "1"]),
        ):
            seconds, peak, worker, ok = _timed(command, {**env, "XGBOPS_ENGINE": engine}, project)
            runs.append(Run(step, engine, rows, seconds, rows / seconds, peak, worker, ok))
            print(f"  {step:<5} {engine:<10} {rows:>9} rows {seconds:7.1f} s", flush=True)
    return runs


def _plot(runs: list[Run], path: Path) -> None:
    figure, axes = plt.subplots(figsize=(7, 4))
    for step in ("train", "score"):
        for engine in ENGINES:
            points = sorted(
                (r.rows, r.seconds) for r in runs if (r.step, r.engine) == (step, engine)
            )
            if points:
                axes.plot(*zip(*points), marker="o", label=f"{step}, {engine}")
    axes.set(xscale="log", yscale="log", xlabel="rows", ylabel="seconds (end to end)")
    axes.set_title("xgbops on one 2-core machine: time vs rows")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)


def main() -> None:
    """Parse the options, run every size, write reports/scale.json and reports/scale.png."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--rounds", type=int, default=100, help="boosting rounds of each run")
    parser.add_argument("--reports", type=Path, default=REPO / "reports")
    args = parser.parse_args()
    args.reports.mkdir(parents=True, exist_ok=True)
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="xgbops-scale-") as tmp:
        for rows in args.rows:
            print(f"{rows} rows:", flush=True)
            runs.extend(bench(rows, args.rounds, Path(tmp)))
            (args.reports / "scale.json").write_text(
                json.dumps({"cpus": os.cpu_count(), "runs": [asdict(r) for r in runs]}, indent=2),
                encoding="utf-8",
            )
    _plot(runs, args.reports / "scale.png")
    print("\n| step | engine | rows | s | rows/s | peak main MB | peak worker MB | ok |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for r in runs:
        print(
            f"| {r.step} | {r.engine} | {r.rows} | {r.seconds:.1f} | {r.rows_per_second:,.0f} "
            f"| {r.peak_main_mb:.0f} | {r.peak_worker_mb:.0f} | {r.ok} |"
        )


if __name__ == "__main__":
    main()
