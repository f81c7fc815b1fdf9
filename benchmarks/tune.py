"""Tuning benchmark: trials per minute with 1 and 2 workers, and what a fixed budget finds.

Run from the repository root::

    .venv/bin/python -m benchmarks.tune [--budget 90] [--runs 1x2 1x1 2x1] [--json PATH]

Each run copies config/ and data/ into a temporary project (the repository's own study,
MLflow store and config/tuned.yaml are never touched) and runs ``xgbops.tune.tune`` with the
project's real training settings (train.yaml's rounds, early stopping and search space) on a
fresh SQLite study for ``--budget`` seconds, once per WORKERSxTHREADS: by default 1 worker
with every core, 1 worker with one thread, and 2 workers of one thread each. Trials per minute
count finished and pruned trials over the wall time of ``tune``: worker start-up included, as
a user waits for it; the stores' one-off table creation is done before. The best
study's parameters and train.yaml's hand-set ones are then each fitted as ``train`` fits them
and scored on the holdout, which the study never saw. The results are printed as a Markdown
table and written as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xgbops import evaluate
from xgbops.config import Settings, load_settings
from xgbops.data import load_splits
from xgbops.fitting import fit_model
from xgbops.train import score
from xgbops.tracking import Tracker
from xgbops.tune import open_study, threads_per_worker, tune

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tune", description=__doc__)
    parser.add_argument("--budget", type=float, default=90.0, help="seconds per study")
    parser.add_argument(
        "--runs",
        nargs="+",
        default=["1x2", "1x1", "2x1"],
        help="WORKERSxTHREADS per study (default: 1x2 1x1 2x1, the first the default split)",
    )
    parser.add_argument("--json", type=Path, default=REPO / "reports" / "bench-tune.json")
    return parser.parse_args(argv)


def _project(root: Path) -> Path:
    for folder in ("config", "data"):
        shutil.copytree(REPO / folder, root / folder)
    (root / "config" / "tuned.yaml").unlink(missing_ok=True)  # start from the hand-set values
    return root


def run_study(root: Path, workers: int, nthread: int, budget: float) -> dict[str, Any]:
    """One study of ``budget`` seconds, ``workers`` processes of ``nthread`` threads."""
    project = _project(root / f"{workers}x{nthread}")
    settings = load_settings(project_dir=project)
    Tracker(settings)  # the MLflow store's tables are created once per project: not a trial
    open_study(settings)
    started = time.perf_counter()
    result = tune(settings, trials=100_000, timeout=budget, workers=workers, nthread=nthread)
    elapsed = time.perf_counter() - started
    finished = result.states.get("COMPLETE", 0) + result.states.get("PRUNED", 0)
    return {
        "workers": workers,
        "xgboost_threads_per_worker": nthread,
        "default_split": nthread == threads_per_worker(workers),
        "wall_seconds": round(elapsed, 1),
        "trials": result.states,
        "trials_per_minute": round(60 * finished / elapsed, 2),
        "best_validation": result.best_value,
        "hand_set_validation": result.hand_set_value,
        "best_params": result.best_params,
        "project": project,
    }


def holdout_roc_auc(settings: Settings) -> float:
    """Fit as ``train`` does (same split, rounds, early stopping) and score the holdout."""
    splits = load_splits(settings)
    fitted = fit_model(splits, settings.dataset, settings)
    y_true, y_score = score(fitted.model, splits.holdout, settings.dataset)
    return float(evaluate.compute_metrics(y_true, y_score, settings.train.threshold)["roc_auc"])


def main(argv: Sequence[str] | None = None) -> int:
    """Run the studies, compare tuned and hand-set parameters, print and write the results."""
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="xgbops-bench-tune-") as tmp:
        runs = [tuple(int(n) for n in run.split("x")) for run in args.runs]
        studies = [run_study(Path(tmp), workers, nthread, args.budget) for workers, nthread in runs]
        last = max(studies, key=lambda study: float(study["best_validation"]))
        tuned = load_settings(project_dir=last["project"])  # reads the tuned.yaml it wrote
        (last["project"] / "config" / "tuned.yaml").unlink()
        hand_set = load_settings(project_dir=last["project"])  # train.yaml's values alone
        holdout = {"tuned": holdout_roc_auc(tuned), "hand_set": holdout_roc_auc(hand_set)}
    for study in studies:
        del study["project"]
    report = {
        "budget_seconds": args.budget,
        "cores": os.cpu_count(),
        # other processes slow multi-threaded boosters most (see docs/guide/experiments.md)
        "load_average_1m": os.getloadavg()[0],
        "studies": studies,
        "holdout_roc_auc": holdout,
    }
    print("| workers | threads each | trials/min | trials | best val AUC | hand-set val AUC |")
    print("|---|---|---|---|---|---|")
    for study in studies:
        print(
            f"| {study['workers']} | {study['xgboost_threads_per_worker']} "
            f"| {study['trials_per_minute']} | {study['trials']} "
            f"| {study['best_validation']:.4f} "
            f"| {study['hand_set_validation'] or float('nan'):.4f} |"
        )
    print(f"load average {report['load_average_1m']:.1f} on {report['cores']} cores")
    print(f"holdout ROC-AUC: tuned {holdout['tuned']:.4f}, hand-set {holdout['hand_set']:.4f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    print(f"written: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
