"""The serving benchmark (``benchmarks/serving.py``, ``make bench``).

End to end in its quick mode on the real servers (gunicorn, uvicorn, ``mlflow models serve``,
wrk): the report holds every measurement and every ratio, with sane values. No timing is
asserted: the machine is shared, and the benchmark exists to measure, not to be judged here.
The merge of wrk's slices is checked on its own against wrk's own percentiles.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess  # nosec B404 - runs the benchmark, a fixed command
import sys
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psutil
import pytest

from benchmarks import serving
from benchmarks.load import merge_runs, parse_wrk, percentile_ms, run_wrk, write_lua
from benchmarks.report import (
    GOAL_BATCH_ROWS_PER_S,
    GOAL_C1_P50_FACTOR,
    GOAL_C8_RPS_SHARE,
    GOAL_SHADOW_C1_P50_FACTOR,
    GOAL_SHADOW_C8_SHARE,
    OURS,
    SHADOW,
)

from tests.conftest import REPO

WRK_OUTPUT = """Running 1s test @ http://127.0.0.1:8000/predict
  1 threads and 1 connections
  Latency Distribution
     50%  635.91us
     75%    1.20ms
     90%    1.50ms
     99%    2.00s
  1500 requests in 1.00s, 300.00KB read
  Non-2xx or 3xx responses: 2
Requests/sec:   1498.50
latency-us 600 750
latency-us 900 600
latency-us 1500 150
"""


def _require_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    reason = "wrk is not installed (make system-deps: apt-get install wrk)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; CI=true requires it")
    pytest.skip(reason)


def test_percentiles_rank_as_wrk_ranks():
    histogram = {100: 1, 200: 1, 300: 1, 400: 1}  # wrk: rank = round(p / 100 * 4 + 0.5)
    assert [percentile_ms(histogram, p) for p in (25, 50, 75, 99, 100)] == [
        0.2,
        0.3,
        0.4,
        0.4,
        0.4,
    ]
    assert math.isnan(percentile_ms({}, 50))


def test_slices_merge_into_one_run():
    first = parse_wrk(WRK_OUTPUT, 1, 1)
    second = parse_wrk(WRK_OUTPUT.replace("1500 requests", "500 requests"), 1, 1)
    histogram: Counter[int] = Counter({600: 1001, 2000: 999})
    merged = merge_runs([first, second], histogram)
    assert (merged.requests, merged.duration_s, merged.requests_per_s) == (2000, 2.0, 1000.0)
    assert (merged.p50_ms, merged.p75_ms, merged.p99_ms) == (0.6, 2.0, 2.0)
    assert merged.non_2xx == 4 and merged.errors == 4


class _Answer(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as wrk expects

    def do_POST(self) -> None:  # pylint: disable=invalid-name  # http.server's name
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: Any) -> None:
        del args


def test_the_latency_histogram_gives_wrk_s_own_percentiles(tmp_path):
    _require_wrk()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        lua = write_lua(tmp_path / "post.lua", b'{"a": 1}')
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        run, histogram = run_wrk(url, lua, 2, 1, 1)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert run.requests > 0 and run.non_2xx == 0
    assert sum(histogram.values()) == run.requests
    for percent in (50, 75, 90, 99):
        # wrk prints 2 decimals of its unit: 1234 us is "1.23ms"
        assert percentile_ms(histogram, percent) == pytest.approx(
            getattr(run, f"p{percent}_ms"), abs=0.0051
        ), percent


def test_quick_sets_every_measurement_short():
    args = serving.parse_args(["--quick"])
    assert (args.duration, args.warmup, args.cold_starts) == (1.0, 1.0, 1)
    assert args.servers.split(",") == list(serving.ALL_SERVERS)


@pytest.fixture(scope="module")
def bench(champion_project: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One quick run of the benchmark on the shared champion: its JSON report and its output."""
    _require_wrk()
    path = tmp_path_factory.mktemp("bench") / "bench.json"
    # pytest_configure dropped the caller's settings from the environment: only the project.
    env = {**os.environ, "XGBOPS_PROJECT_DIR": str(champion_project)}
    done = subprocess.run(  # nosec B603 - the benchmark, fixed arguments
        [sys.executable, "-m", "benchmarks.serving", "--quick", "--json", str(path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return {"report": json.loads(path.read_text(encoding="utf-8")), "stdout": done.stdout}


@pytest.mark.slow
@pytest.mark.bench
@pytest.mark.timeout(600)
def test_every_server_is_measured_at_both_loads(bench):
    report = bench["report"]
    servers = report["servers"]
    assert list(servers) == list(serving.ALL_SERVERS)
    workers = report["options"]["workers"]
    for name, server in servers.items():
        assert server["error"] is None, name
        assert server["cold_start_s"] > 0
        assert len(server["rss"]["workers"]) == workers, name
        assert server["rss"]["per_worker_mb"] > 0
        assert set(server["loads"]) == {"c1", "c8"}
        for load, run in server["loads"].items():
            where = f"{name} {load}"
            assert run["connections"] == report["loads"][load]["connections"], where
            assert run["requests"] > 0 and run["requests_per_s"] > 0, where
            assert run["requests_per_s"] == pytest.approx(
                run["requests"] / run["duration_s"], rel=1e-6
            ), where
            assert 0 < run["p50_ms"] <= run["p75_ms"] <= run["p90_ms"] <= run["p99_ms"], where
            assert run["non_2xx"] == 0 and not any(run["socket_errors"].values()), where


@pytest.mark.slow
@pytest.mark.bench
@pytest.mark.timeout(600)
def test_our_apps_record_and_score_batches(bench):
    report = bench["report"]
    for name in OURS:
        server = report["servers"][name]
        assert server["batch"]["records"] == 1_000
        assert server["batch"]["rows_per_s"] > 0
        assert server["history_rows"] >= server["history_expected_min"] > 0
    assert report["in_process_batch"]["rows_per_s"] > 0
    assert set(report["probabilities"]) == {
        "flask",
        "flask-unrecorded",
        SHADOW,
        "fastapi",
        "mlflow",
        "in-process",
    }
    assert report["probability_max_abs_diff"] <= 1e-6
    arms = report["servers"][SHADOW]["arm_rows"]  # both arms recorded (a full queue may drop)
    assert arms["champion"] > 0 and 0.9 * arms["champion"] <= arms["challenger"] <= arms["champion"]


@pytest.mark.slow
@pytest.mark.bench
@pytest.mark.timeout(600)
def test_each_goal_is_the_ratio_of_the_numbers_it_names(bench):
    report = bench["report"]
    servers = report["servers"]
    goals = {(g["server"], g["key"]): g for g in report["goals"]}
    assert len(goals) == len(report["goals"]) == 3 * len(OURS) + 2
    for name in OURS:
        hello = servers[f"hello-{name}"]["loads"]
        loads = servers[name]["loads"]
        expected = {
            "c8_rps_vs_hello": (
                loads["c8"]["requests_per_s"],
                hello["c8"]["requests_per_s"],
                GOAL_C8_RPS_SHARE,
            ),
            "c1_p50_vs_hello": (loads["c1"]["p50_ms"], hello["c1"]["p50_ms"], GOAL_C1_P50_FACTOR),
        }
        for key, (measured, reference, threshold) in expected.items():
            goal = goals[(name, key)]
            assert (goal["measured"], goal["reference"]) == (measured, reference)
            assert goal["value"] == pytest.approx(measured / reference, rel=1e-9)
            assert goal["threshold"] == threshold
        batch = goals[(name, "batch_rows_per_s_per_worker")]
        assert batch["value"] == batch["measured"] == servers[name]["batch"]["rows_per_s"]
        assert batch["reference"] is None and batch["threshold"] == GOAL_BATCH_ROWS_PER_S
    shadow, plain = servers[SHADOW]["loads"], servers["flask"]["loads"]
    for key, (measured, reference, threshold) in {
        "c8_rps_vs_shadow_off": (
            shadow["c8"]["requests_per_s"],
            plain["c8"]["requests_per_s"],
            GOAL_SHADOW_C8_SHARE,
        ),
        "c1_p50_vs_shadow_off": (
            shadow["c1"]["p50_ms"],
            plain["c1"]["p50_ms"],
            GOAL_SHADOW_C1_P50_FACTOR,
        ),
    }.items():
        goal = goals[(SHADOW, key)]
        assert (goal["measured"], goal["reference"], goal["threshold"]) == (
            measured,
            reference,
            threshold,
        )
        assert goal["value"] == pytest.approx(measured / reference, rel=1e-9)
    for goal in report["goals"]:
        beats = goal["value"] >= goal["threshold"]
        met = beats if goal["higher_is_better"] else goal["value"] <= goal["threshold"]
        assert goal["verdict"] == ("PASS" if met else "MISS")
        assert f"{goal['server']} {goal['name']}: " in bench["stdout"]
    passed = sum(g["passed"] for g in report["goals"])
    assert f"goals: {passed}/{len(goals)} PASS" in bench["stdout"]


@pytest.mark.slow
@pytest.mark.bench
@pytest.mark.timeout(600)
def test_targets_compare_with_mlflow_and_recording_with_none(bench):
    report = bench["report"]
    servers = report["servers"]
    targets = {(t["server"], t["name"]): t for t in report["targets"]}
    mlflow_c8 = servers["mlflow"]["loads"]["c8"]["requests_per_s"]
    for name in OURS:
        c8 = servers[name]["loads"]["c8"]["requests_per_s"]
        assert targets[(name, "c8 rps ratio")]["value"] == pytest.approx(c8 / mlflow_c8)
        assert targets[(name, "errors")]["value"] == 0
    c1 = {n: servers[n]["loads"]["c1"]["requests_per_s"] for n in ("flask", "flask-unrecorded")}
    recording = targets[("flask", "c1 rps recorded / unrecorded")]["value"]
    assert recording == pytest.approx(c1["flask"] / c1["flask-unrecorded"])
    assert servers["flask"]["recording_ratio"] == recording
    for name in servers:
        assert f"| {name} | c1 |" in report["table"]


@pytest.mark.slow
@pytest.mark.bench
@pytest.mark.timeout(600)
def test_the_benchmark_leaves_no_server_running(bench):
    pids = {
        process["pid"]
        for server in bench["report"]["servers"].values()
        for report in (server["rss"], server["rss_after_batch"])
        if report
        for process in report["workers"] + report["others"]
    }
    assert pids
    assert [pid for pid in pids if psutil.pid_exists(pid)] == []
