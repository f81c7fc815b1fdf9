"""Prometheus metrics as gunicorn workers write them (multi-process mode, one file per worker),
and the documented metrics as both apps expose them (docs/operations/observability.md)."""

from __future__ import annotations

import re
import subprocess  # nosec B404 - runs this interpreter on a fixed script
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from xgbops.config import Settings
from xgbops.monitoring.check import load_reference
from xgbops.monitoring.drift import Inputs, build_report

from api.core import metrics
from tests.api.conftest import Server, start_server, stop_server
from tests.api.test_contract import EXAMPLE
from tests.conftest import project_settings

SWAP = """
from api.core import metrics
metrics.set_model("churn-xgboost", "1")
metrics.observe_request("/predict", "POST", 200, 0.002)
metrics.set_model("churn-xgboost", "2")
metrics.set_model("churn-xgboost", "2")
print(metrics.render().decode())
"""


def run_as_worker(script: str, metrics_dir: Path) -> subprocess.CompletedProcess[str]:
    """Run ``script`` as a worker does: PROMETHEUS_MULTIPROC_DIR set before prometheus-client is
    imported, and every warning an error."""
    return subprocess.run(  # nosec B603 - this interpreter, a fixed script
        [sys.executable, "-W", "error", "-c", script],
        env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "PYTHONPATH": str(Path.cwd())},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_swapped_model_is_served_and_the_replaced_one_reads_zero(tmp_path: Path):
    """Run as a worker does: PROMETHEUS_MULTIPROC_DIR set before prometheus-client is imported,
    and every warning an error (prometheus-client warns when asked to drop a series)."""
    done = run_as_worker(SWAP, tmp_path)
    assert done.returncode == 0, done.stderr
    served = dict(
        re.findall(r'^xgbops_model_info\{.*model_version="(\d+)".*\} (\S+)$', done.stdout, re.M)
    )
    assert served == {"1": "0.0", "2": "1.0"}
    assert re.search(r'^xgbops_http_requests_total\{.*status="200"\} 1\.0$', done.stdout, re.M)


# -- the documented metrics, as both apps expose them ---------------------------------------

DOC = Path(__file__).resolve().parents[2] / "docs" / "operations" / "observability.md"
#: Labels prometheus-client adds itself: ``pid`` (live gauges), ``le`` (histogram buckets).
ADDED_LABELS = {"pid", "le"}
#: Counted on events this traffic does not make (a worker writes a family's file on its first
#: sample): checked by test_what_traffic_cannot_reach_is_exposed_with_the_documented_labels.
NOT_REACHED = {
    "xgbops_database_errors_total": {"operation": "write"},
    "xgbops_retrain_jobs_total": {"status": "queued"},
    "xgbops_rollout_outcomes_total": {"arm": "challenger", "outcome": "incorrect"},
}


def documented_metrics() -> dict[str, tuple[str, set[str]]]:
    """The metrics table of docs/operations/observability.md: name -> (type, label names)."""
    rows = re.findall(r"^\| `(xgbops_\w+)` \| (\w+) \|([^|]*)\|", DOC.read_text(), re.M)
    return {name: (kind, set(re.findall(r"`(\w+)`", labels))) for name, kind, labels in rows}


def exposition(text: str) -> dict[str, tuple[str, list[set[str]], list[Sample]]]:
    """family name -> (type, label-name sets of its samples, samples)."""
    found = {}
    for family in text_string_to_metric_families(text):
        name = family.name + ("_total" if family.type == "counter" else "")
        samples = list(family.samples)
        labels = [set(s.labels) - ADDED_LABELS for s in samples]
        found[name] = (family.type, labels, samples)
    return found


def write_drift_report(settings: Settings, reports: Path, shifted: str) -> set[str]:
    """A real drift report (the job's own code) of the training data against itself with
    ``shifted`` moved far out of range; returns the features it judged drifted."""
    reference = load_reference(settings)
    window = reference.sample(n=400, random_state=1).reset_index(drop=True)
    window[shifted] = window[shifted] * 3 + 100
    now = datetime.now(UTC)
    report = build_report(
        Inputs(reference, window),
        settings.dataset,
        settings.monitoring.drift,
        model_name=settings.model_name,
        model_versions=["1"],
        window=(now - timedelta(hours=1), now),
        generated_at=now,
    )
    report.write(reports)
    return set(report.drifted_features)


def scrape(server: Server) -> str:
    with server.client() as client:
        client.post("/predict", json=EXAMPLE)
        client.post("/predict/batch", json={"records": [EXAMPLE, EXAMPLE, EXAMPLE]})
        client.post("/predict", json={**EXAMPLE, "state": "ZZ"})  # 422
        client.get("/retrain/0123456789abcdef0123456789abcdef")  # a templated route
        deadline = time.monotonic() + 10
        while True:  # until the history writer (every 0.2 s) has written the predictions
            response = client.get("/metrics")
            assert response.status_code == 200
            if "xgbops_history_database_up " in response.text or time.monotonic() > deadline:
                return response.text
            time.sleep(0.2)


@pytest.fixture(scope="module")
def observed(champion_project: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Both apps started as in production (gunicorn with 2 workers, uvicorn), the drift job's
    latest report in their reports folder, traffic sent, /metrics read."""
    root = tmp_path_factory.mktemp("metrics")
    reports = root / "reports"
    settings = project_settings(champion_project)
    numeric = next(f.name for f in settings.dataset.features if f.type == "numeric")
    drifted = write_drift_report(settings, reports, numeric)
    texts: dict[str, str] = {}
    for kind, workers in (("flask", "2"), ("fastapi", "1")):
        server = start_server(
            kind,
            champion_project,
            root,
            DATABASE_URL=f"sqlite:///{root / kind}.db",
            XGBOPS_REPORTS_DIR=str(reports),
            XGBOPS_SERVE__WORKERS=workers,
        )
        try:
            texts[kind] = scrape(server)
        finally:
            stop_server(server)
    return {"texts": texts, "settings": settings, "drifted": drifted}


def test_both_apps_expose_every_documented_metric_with_its_type(observed):
    documented = documented_metrics()
    assert len(documented) >= 15  # the table was read
    for kind, text in observed["texts"].items():
        exposed = exposition(text)
        for name, (doc_type, _) in documented.items():
            if name in NOT_REACHED and name not in exposed:
                continue
            assert name in exposed, f"{kind} does not expose {name}"
            assert exposed[name][0] == doc_type, (kind, name, exposed[name][0])
        undocumented = {n for n in exposed if n.startswith("xgbops_")} - set(documented)
        assert not undocumented, f"{kind} exposes undocumented metrics {undocumented}"


def test_every_sample_carries_exactly_the_documented_labels_in_both_apps(observed):
    documented = documented_metrics()
    label_values: dict[str, dict[str, set[str]]] = {}
    for kind, text in observed["texts"].items():
        exposed = exposition(text)
        for name, (_, labels) in documented.items():
            for sample_labels in exposed.get(name, ("", [], []))[1]:
                assert sample_labels == labels, (kind, name, sample_labels, labels)
        requests = exposed["xgbops_http_requests_total"][2]
        label_values[kind] = {
            "endpoint": {s.labels["endpoint"] for s in requests} - {"/metrics"},  # polled
            "status": {s.labels["status"] for s in requests},
        }
    # the same request gives the same label values, route templates spelled alike
    assert label_values["flask"] == label_values["fastapi"]
    assert {"/predict", "/predict/batch", "/retrain/{job_id}"} <= label_values["flask"]["endpoint"]
    assert {"200", "422"} <= label_values["flask"]["status"]


def test_traffic_shows_in_the_metrics_of_both_apps(observed):
    for kind, text in observed["texts"].items():
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

        def total(name: str, **labels: str) -> float:
            return sum(
                value
                for (sample, pairs), value in samples.items()
                if sample == name and labels.items() <= dict(pairs).items()
            )

        assert total("xgbops_predictions_total", arm="champion", model_version="1") == 4, kind
        assert total("xgbops_prediction_score_count", arm="champion") == 4, kind
        assert total("xgbops_http_requests_total", endpoint="/predict", status="422") == 1
        assert total("xgbops_model_info", model_version="1") >= 1, kind
        run_ids = {dict(p)["run_id"] for (n, p) in samples if n == "xgbops_model_info"}
        assert all(len(run_id) == 32 for run_id in run_ids), run_ids  # an MLflow run id
        assert total("xgbops_history_database_up") >= 1, kind
        assert total("xgbops_http_requests_in_flight") == 1, kind  # the scrape itself
        assert total("xgbops_history_spool_bytes") == 0, kind
        drifted = {
            dict(p)["feature"]
            for (n, p), v in samples.items()
            if n == "xgbops_drift_detected" and v == 1
        }
        assert drifted == observed["drifted"] and drifted, kind
        features = {f.name for f in observed["settings"].dataset.features}
        psi = {dict(p)["feature"] for (n, p) in samples if n == "xgbops_drift_psi"}
        assert psi == features, kind


OBSERVERS = """
from api.core import metrics
metrics.observe_retrain("queued")
metrics.observe_outcome("challenger", correct=False)
metrics.observe_database(False, "write")
metrics.observe_queue(3)
print(metrics.render().decode())
"""


def test_what_traffic_cannot_reach_is_exposed_with_the_documented_labels(tmp_path: Path):
    """Retraining, rollout outcomes and database errors, as a worker records them."""
    done = run_as_worker(OBSERVERS, tmp_path)
    assert done.returncode == 0, done.stderr
    exposed = exposition(done.stdout)
    documented = documented_metrics()
    for name, value in NOT_REACHED.items():
        samples = [s for s in exposed[name][2] if s.name == name]
        assert [s.labels for s in samples] == [value], (name, samples)
        assert set(value) == documented[name][1]
    assert [s.value for s in exposed["xgbops_history_database_up"][2]] == [0.0]
    assert [s.value for s in exposed["xgbops_history_queued_records"][2]] == [3.0]


def test_scores_of_a_batch_count_as_one_observe_per_score(tmp_path: Path):
    """The numpy shortcut of observe_predictions against prometheus-client's own observe()."""
    script = """
import numpy as np
from api.core import metrics
scores = np.random.default_rng(7).random(5000)
scores[:3] = [0.1, 0.0, 1.0]  # exactly on bucket edges
metrics.observe_predictions(["a"] * len(scores), "1", scores)
for score in scores:
    metrics.SCORES.labels("2", "champion").observe(float(score))
print(metrics.render().decode())
"""
    done = subprocess.run(  # nosec B603 - this interpreter, a fixed script
        [sys.executable, "-c", script],
        env={"PYTHONPATH": str(Path.cwd())},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    by_version: dict[str, dict[tuple[str, str], float]] = {"1": {}, "2": {}}
    for family in text_string_to_metric_families(done.stdout):
        for s in family.samples:
            if s.name.startswith("xgbops_prediction_score") and not s.name.endswith("_created"):
                key = (s.name, s.labels.get("le", ""))
                by_version[s.labels["model_version"]][key] = s.value
    assert len(by_version["1"]) == len(metrics.SCORE_BUCKETS) + 3  # +Inf, _count, _sum
    assert by_version["1"].keys() == by_version["2"].keys()
    for key, value in by_version["1"].items():
        assert value == pytest.approx(by_version["2"][key]), key
