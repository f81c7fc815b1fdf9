"""What the serving benchmark measured, how it is judged, printed and written to JSON.

Two sets of judgements:

- **targets**, against ``mlflow models serve`` of the same champion (and the booster called
  in-process): PASS or FAIL;
- **goals**, the ones the project set itself (issue 13), against a hello-world app of the same
  framework under the same server and settings: ``/predict`` at 8 connections keeps at least
  half the hello-world's requests/s with recording on, its median latency at one connection
  stays within twice the hello-world's, and ``/predict/batch`` of 1,000 rows scores at least
  150,000 rows/s per worker: PASS or MISS.
"""

from __future__ import annotations

import json
import math
import os
import subprocess  # nosec B404 - reads the git commit benchmarked
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.load import LOADS, BatchResult, WrkResult

REPO = Path(__file__).resolve().parents[1]
#: The project's apps, each judged against MLflow and against its framework's hello-world.
OURS = ("flask", "fastapi")
PROBABILITY_TOLERANCE = 1e-6
#: Goals (issue 13): /predict c8 req/s over hello-world's, at least; /predict c1 p50 over
#: hello-world's, at most; /predict/batch rows/s per worker, at least.
GOAL_C8_RPS_SHARE = 0.5
GOAL_C1_P50_FACTOR = 2.0
GOAL_BATCH_ROWS_PER_S = 150_000.0
#: Goals (issue 14): the Flask app with a challenger shadowing every request against the same
#: app without, in the same interleaved run: c8 req/s at least, c1 p50 at most.
SHADOW = "flask-shadow"
GOAL_SHADOW_C8_SHARE = 0.7
GOAL_SHADOW_C1_P50_FACTOR = 1.3


def hello_of(name: str) -> str:
    """The hello-world server of the same framework as ``name``."""
    return f"hello-{name}"


@dataclass
class WorkerRss:
    """Memory of one process counted as a worker."""

    pid: int
    name: str
    cmdline: str
    rss_mb: float
    uss_mb: float | None


@dataclass
class RssReport:
    """Worker processes of one server and their memory, plus the whole tree's total."""

    workers: list[WorkerRss]
    per_worker_mb: float
    tree_total_mb: float
    #: The other processes of the tree (master, supervisor, CLI, resource tracker): not counted.
    others: list[WorkerRss]


@dataclass
class ServerResult:  # pylint: disable=too-many-instance-attributes  # one per measurement
    """Everything measured on one server."""

    name: str
    command: list[str]
    url: str
    cold_start_s: float | None = None  # median of cold_starts_s
    cold_starts_s: list[float] = field(default_factory=list)
    probability: float | None = None
    #: Each load's slices merged: all requests over all the time, percentiles of all requests.
    loads: dict[str, WrkResult] = field(default_factory=dict)
    #: CPU time of the server's processes during each load, per answered request.
    cpu_ms_per_request: dict[str, float] = field(default_factory=dict)
    #: Cores busy with anything but the server, wrk and the bench during each load.
    other_load_cores: dict[str, float] = field(default_factory=dict)
    rss: RssReport | None = None
    rss_after_batch: RssReport | None = None
    batch: BatchResult | None = None
    history_rows: int | None = None
    #: Predictions the server answered for sure (warm-up, loads, batches, first 200): the
    #: history should hold at least these (plus up to one request in flight per connection).
    history_expected_min: int | None = None
    #: System-wide CPU use just before the server started; high means another load interfered.
    background_cpu_pct: float | None = None
    #: c1 requests/s with recording over without, in the same interleaved run (flask only).
    recording_ratio: float | None = None
    #: Rows per rollout arm in the history (the shadow server: both arms recorded).
    arm_rows: dict[str, int] = field(default_factory=dict)
    error: str | None = None


@dataclass
class Target:
    """One target of one server, with the measured value and the verdict."""

    server: str
    name: str
    value: float | None
    threshold: float
    higher_is_better: bool

    @property
    def passed(self) -> bool:
        """True when the value exists and meets the threshold."""
        if self.value is None or math.isnan(self.value):
            return False
        if self.higher_is_better:
            return self.value >= self.threshold
        return self.value <= self.threshold

    @property
    def verdict(self) -> str:
        """PASS, FAIL, or n/a when it could not be measured."""
        if self.value is None:
            return "n/a"
        return "PASS" if self.passed else "FAIL"


@dataclass
class Goal(Target):
    """A goal of the project: ``value`` is ``measured / reference``, or ``measured`` itself
    when there is no reference."""

    #: A stable name for programs reading the JSON: ``c8_rps_vs_hello`` and so on.
    key: str = ""
    measured: float | None = None
    reference: float | None = None
    unit: str = ""

    @property
    def verdict(self) -> str:
        """PASS, MISS, or n/a when it could not be measured."""
        if self.value is None:
            return "n/a"
        return "PASS" if self.passed else "MISS"

    def describe(self) -> str:
        """One line: what is compared, the numbers, the threshold and the verdict."""
        bound = ">=" if self.higher_is_better else "<="
        if self.reference is None:
            compared = f"{_num(self.measured, ',.0f')} {self.unit} ({bound} {self.threshold:,.0f})"
        else:
            fmt = ",.0f" if self.unit == "req/s" else ".2f"
            compared = (
                f"{_num(self.measured, fmt)} / {_num(self.reference, fmt)} {self.unit}"
                f" = {_num(self.value, '.3f')}x ({bound} {self.threshold:g}x)"
            )
        return f"{self.server} {self.name}: {compared} {self.verdict}"


@dataclass
class Outcome:
    """Everything one run measured and judged."""

    results: dict[str, ServerResult]
    in_process: BatchResult | None
    #: Each server's probability for the example, and the in-process one.
    probabilities: dict[str, float]
    targets: list[Target] = field(default_factory=list)
    goals: list[Goal] = field(default_factory=list)

    @property
    def probabilities_agree(self) -> bool:
        """Every probability within :data:`PROBABILITY_TOLERANCE` of the others."""
        values = self.probabilities.values()
        return not values or max(values) - min(values) <= PROBABILITY_TOLERANCE


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def _rps(result: ServerResult | None, load: str) -> float | None:
    run = result.loads.get(load) if result else None
    return run.requests_per_s if run else None


def _p50(result: ServerResult | None, load: str) -> float | None:
    run = result.loads.get(load) if result else None
    return run.p50_ms if run else None


def _rss(result: ServerResult | None) -> float | None:
    return result.rss.per_worker_mb if result and result.rss else None


def _cold(result: ServerResult | None) -> float | None:
    return result.cold_start_s if result else None


def _rows(batch: BatchResult | None) -> float | None:
    return batch.rows_per_s if batch else None


def evaluate_targets(
    results: Mapping[str, ServerResult], in_process: BatchResult | None
) -> list[Target]:
    """The six targets of each of our apps, relative to ``mlflow models serve``."""
    ref = results.get("mlflow")
    targets = []
    for name in OURS:
        res = results.get(name)
        if res is None:
            continue
        errors = float(sum(r.errors for r in res.loads.values())) if res.loads else None
        if name == "flask" and res.recording_ratio is not None:
            # c1: one connection, one worker; at c8 how gunicorn's workers happen to share the 8
            # connections moves the rate more than recording does.
            targets.append(
                Target(name, "c1 rps recorded / unrecorded", res.recording_ratio, 0.95, True)
            )
        targets += [
            Target(name, "c8 rps ratio", _ratio(_rps(res, "c8"), _rps(ref, "c8")), 5.0, True),
            Target(name, "c1 p50 ratio", _ratio(_p50(res, "c1"), _p50(ref, "c1")), 0.2, False),
            Target(name, "RSS/worker ratio", _ratio(_rss(res), _rss(ref)), 0.5, False),
            Target(name, "cold start ratio", _ratio(_cold(res), _cold(ref)), 0.5, False),
            Target(name, "errors", errors, 0.0, False),
            Target(
                name, "batch / in-process", _ratio(_rows(res.batch), _rows(in_process)), 0.5, True
            ),
        ]
    return targets


def evaluate_goals(results: Mapping[str, ServerResult]) -> list[Goal]:
    """The three goals of each of our apps, against its framework's hello-world."""
    goals = []
    for name in OURS:
        res = results.get(name)
        if res is None:
            continue
        hello = results.get(hello_of(name))
        rps, hello_rps = _rps(res, "c8"), _rps(hello, "c8")
        p50, hello_p50 = _p50(res, "c1"), _p50(hello, "c1")
        rows = _rows(res.batch)
        size = f"{res.batch.records:,}" if res.batch else "?"
        goals += [
            Goal(
                name,
                f"/predict c8 req/s (recording on) vs {hello_of(name)} c8",
                _ratio(rps, hello_rps),
                GOAL_C8_RPS_SHARE,
                True,
                key="c8_rps_vs_hello",
                measured=rps,
                reference=hello_rps,
                unit="req/s",
            ),
            Goal(
                name,
                f"/predict c1 p50 vs {hello_of(name)} c1 p50",
                _ratio(p50, hello_p50),
                GOAL_C1_P50_FACTOR,
                False,
                key="c1_p50_vs_hello",
                measured=p50,
                reference=hello_p50,
                unit="ms",
            ),
            Goal(
                name,
                f"/predict/batch {size} rows, rows/s per worker",
                rows,
                GOAL_BATCH_ROWS_PER_S,
                True,
                key="batch_rows_per_s_per_worker",
                measured=rows,
                unit="rows/s",
            ),
        ]
    return goals + _shadow_goals(results)


def _shadow_goals(results: Mapping[str, ServerResult]) -> list[Goal]:
    """Shadow scoring must not slow the champion's path (the Flask app is the reference)."""
    shadow, plain = results.get(SHADOW), results.get("flask")
    if shadow is None:
        return []
    rps, plain_rps = _rps(shadow, "c8"), _rps(plain, "c8")
    p50, plain_p50 = _p50(shadow, "c1"), _p50(plain, "c1")
    return [
        Goal(
            SHADOW,
            "/predict c8 req/s with shadow on vs flask (shadow off) c8",
            _ratio(rps, plain_rps),
            GOAL_SHADOW_C8_SHARE,
            True,
            key="c8_rps_vs_shadow_off",
            measured=rps,
            reference=plain_rps,
            unit="req/s",
        ),
        Goal(
            SHADOW,
            "/predict c1 p50 with shadow on vs flask (shadow off) c1 p50",
            _ratio(p50, plain_p50),
            GOAL_SHADOW_C1_P50_FACTOR,
            False,
            key="c1_p50_vs_shadow_off",
            measured=p50,
            reference=plain_p50,
            unit="ms",
        ),
    ]


def judge(outcome: Outcome) -> None:
    """Fill in the outcome's targets and goals from its results."""
    outcome.targets = evaluate_targets(outcome.results, outcome.in_process)
    outcome.goals = evaluate_goals(outcome.results)


def _num(value: float | None, fmt: str) -> str:
    return "–" if value is None or math.isnan(value) else format(value, fmt)


def _judged(target: Target | None, fmt: str, reference: bool = False, unit: str = "x") -> str:
    """A ratio cell: ``0.15x PASS``; ``ref`` on MLflow's row; empty where it does not apply."""
    if reference:
        return "ref"
    if target is None:
        return ""
    if target.value is None:
        return "n/a"
    return f"{format(target.value, fmt)}{unit} {target.verdict}"


TABLE_HEADER = (
    "| server | load | req/s | p50 ms | p99 ms | errors | RSS/worker MB | cold start s "
    "| c8 rps vs mlflow (≥5x) | c1 p50 vs mlflow (≤0.2x) | RSS vs mlflow (≤0.5x) "
    "| cold start vs mlflow (≤0.5x) | batch rows/s vs in-process (≥50%) |"
)


def table_row(result: ServerResult, load: str, found: Mapping[tuple[str, str], Target]) -> str:
    """One row: a server under one load; per-server columns are filled on its c1 row."""
    run, first, ref = result.loads.get(load), load == "c1", result.name == "mlflow"

    def target(name: str) -> Target | None:
        return found.get((result.name, name))

    errors = "–" if run is None else str(run.errors)
    if run is not None and result.name in OURS:
        errors += " PASS" if run.errors == 0 else " FAIL"
    batch = ""
    if first and result.name in OURS:
        judged = _judged(target("batch / in-process"), ".0%", unit="")
        batch = f"{_num(_rows(result.batch), ',.0f')} = {judged}" if result.batch else judged
    cells = [
        result.name if first else "",
        load,
        _num(run.requests_per_s if run else None, ",.0f"),
        _num(run.p50_ms if run else None, ".2f"),
        _num(run.p99_ms if run else None, ".2f"),
        errors,
        _num(_rss(result), ".1f") if first else "",
        _num(result.cold_start_s, ".2f") if first else "",
        "" if first else _judged(target("c8 rps ratio"), ".2f", ref),
        _judged(target("c1 p50 ratio"), ".2f", ref) if first else "",
        _judged(target("RSS/worker ratio"), ".2f", ref) if first else "",
        _judged(target("cold start ratio"), ".2f", ref) if first else "",
        batch,
    ]
    return "| " + " | ".join(cells) + " |"


def render_table(outcome: Outcome) -> str:
    """One markdown table: a row per server and load, ratios vs mlflow with PASS/FAIL."""
    found = {(t.server, t.name): t for t in outcome.targets}
    lines = [TABLE_HEADER, "|" + "---|" * (TABLE_HEADER.count(" | ") + 1)]
    for result in outcome.results.values():
        lines += [table_row(result, load, found) for load in LOADS]
    if outcome.in_process is not None:
        rate = outcome.in_process.rows_per_s
        cells = ["in-process", "batch", *[""] * 10, f"{rate:,.0f} (ref)"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _processes(found: Sequence[WorkerRss]) -> str:
    return "; ".join(
        f"pid {w.pid} [{w.cmdline[-60:]}] rss {w.rss_mb:.1f} MB"
        + (f" uss {w.uss_mb:.1f} MB" if w.uss_mb is not None else "")
        for w in found
    )


def print_details(outcome: Outcome) -> None:
    """Probabilities, counted worker processes and the target summary."""
    if outcome.probabilities:
        values = outcome.probabilities.values()
        verdict = "PASS" if outcome.probabilities_agree else "FAIL"
        shown = ", ".join(f"{n}={p:.9f}" for n, p in outcome.probabilities.items())
        print(
            f"\nprobability of data/example.json: {shown};"
            f" max |diff| {max(values) - min(values):.2e} {verdict}"
        )
    for name, res in outcome.results.items():
        if res.error:
            print(f"{name}: FAILED: {res.error.splitlines()[0]}")
        if res.cold_starts_s:
            cpu = ", ".join(f"{k} {v:.2f} ms" for k, v in res.cpu_ms_per_request.items())
            cpu += "; other load: " + ", ".join(
                f"{k} {v:.2f} cores" for k, v in res.other_load_cores.items()
            )
            print(
                f"{name}: cold starts {', '.join(f'{c:.2f}' for c in res.cold_starts_s)} s"
                f" (median in the table); server CPU per request: {cpu};"
                f" machine {res.background_cpu_pct or 0:.0f}% busy before it started"
            )
        if res.rss:
            print(f"{name} workers counted: {_processes(res.rss.workers)}")
            print(
                f"{name} not counted: {_processes(res.rss.others)};"
                f" whole tree {res.rss.tree_total_mb:.1f} MB RSS"
            )
        if res.arm_rows:
            arms = ", ".join(f"{arm} {rows:,}" for arm, rows in sorted(res.arm_rows.items()))
            print(f"{name} prediction history by arm: {arms}")
        if res.history_rows is not None:
            print(
                f"{name} prediction history: {res.history_rows:,} rows recorded,"
                f" >= {res.history_expected_min or 0:,} answered"
            )
    if outcome.in_process is not None:
        print(f"in-process Predictor.predict_proba: {outcome.in_process.rows_per_s:,.0f} rows/s")
    passed = sum(t.passed for t in outcome.targets)
    print(f"targets vs mlflow: {passed}/{len(outcome.targets)} PASS")


def print_goals(goals: Sequence[Goal]) -> None:
    """Each goal with the measured values and PASS/MISS, then the count."""
    print("\ngoals (issue 13), against the same framework's hello-world in the same run:")
    for goal in goals:
        print(f"  {goal.describe()}")
    print(f"goals: {sum(g.passed for g in goals)}/{len(goals)} PASS")


def git_state() -> dict[str, Any]:
    """The commit benchmarked and the files that differ from it (the code served may differ)."""

    def git(*arguments: str) -> str:
        done = subprocess.run(  # nosec B603 B607 - fixed git commands
            ["git", *arguments], cwd=REPO, capture_output=True, text=True, timeout=30, check=False
        )
        return done.stdout.rstrip("\n")  # keep the status column of the first line

    return {
        "commit": git("rev-parse", "HEAD"),
        "modified": git(
            "status", "--porcelain", "--", "api", "src", "config", "benchmarks"
        ).splitlines(),
    }


def _judgements(found: Sequence[Target]) -> list[dict[str, Any]]:
    return [{**asdict(t), "passed": t.passed, "verdict": t.verdict} for t in found]


def write_json(
    path: Path, options: Mapping[str, Any], outcome: Outcome, table: str, code: Mapping[str, Any]
) -> None:
    """The same results as JSON."""
    values = list(outcome.probabilities.values())
    document = {
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in options.items()},
        "host": {"cpus": os.cpu_count(), "load_avg": os.getloadavg()},
        "git": code,
        "loads": {k: {"connections": c, "threads": t} for k, (c, t) in LOADS.items()},
        "servers": {name: asdict(res) for name, res in outcome.results.items()},
        "in_process_batch": asdict(outcome.in_process) if outcome.in_process else None,
        "probabilities": dict(outcome.probabilities),
        "probability_max_abs_diff": max(values) - min(values) if values else None,
        "targets": _judgements(outcome.targets),
        "goals": _judgements(outcome.goals),
        "table": table,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, default=str), encoding="utf-8")
