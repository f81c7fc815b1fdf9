"""The Grafana dashboards of xgbops, as code: built with the official grafana-foundation-sdk.

``python -m tools.grafana_dashboards`` writes ``monitoring/grafana/dashboards/*.json``
(committed, provisioned from files by ``monitoring/grafana/provisioning/``); ``--check``
instead fails if the committed JSON differs from what the code builds or does not decode with
the SDK's dashboard schema (``make observability-check``). Every panel's query is run on a
real Prometheus by ``tests/monitoring/test_observability_live.py``, each of which must return
data.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import common, dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as dashboard_model
from grafana_foundation_sdk.models.common import BigValueGraphMode

DASHBOARDS = Path(__file__).resolve().parents[1] / "monitoring" / "grafana" / "dashboards"
#: The provisioned data source (provisioning/datasources/prometheus.yml).
DATASOURCE = dashboard_model.DataSourceRef(type_val="prometheus", uid="xgbops-prometheus")
Query = tuple[str, str]  # (PromQL, legend)


def _target(ref: str, expr: str, legend: str) -> prometheus.Dataquery:
    return (
        prometheus.Dataquery().ref_id(ref).expr(expr).legend_format(legend).datasource(DATASOURCE)
    )


def _series(title: str, unit: str, queries: list[Query], width: int = 12) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .unit(unit)
        .datasource(DATASOURCE)
        .height(8)
        .span(width)
        .fill_opacity(10)
    )
    for index, (expr, legend) in enumerate(queries):
        panel = panel.with_target(_target(chr(ord("A") + index), expr, legend))
    return panel


def _stat(title: str, unit: str, expr: str, legend: str, width: int = 6) -> stat.Panel:
    return (
        stat.Panel()
        .title(title)
        .unit(unit)
        .datasource(DATASOURCE)
        .height(4)
        .span(width)
        .graph_mode(BigValueGraphMode.NONE)
        .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]))
        .with_target(_target("A", expr, legend))
    )


def service_dashboard() -> dashboard.Dashboard:
    """RED (rate, errors, duration) of the API, and the model it serves."""
    return (
        dashboard.Dashboard("xgbops service")
        .uid("xgbops-service")
        .tags(["xgbops"])
        .refresh("30s")
        .time("now-3h", "now")
        .with_row(dashboard.Row("Now"))
        .with_panel(
            _stat(
                "Model served",
                "none",
                "max by (model_version, run_id) (xgbops_model_info == 1)",
                "v{{model_version}} run {{run_id}}",
            )
        )
        .with_panel(
            _stat("Requests per second", "reqps", "sum(xgbops:http_requests:rate5m)", "req/s")
        )
        .with_panel(
            _stat(
                "Error ratio (5xx, 5 min)",
                "percentunit",
                "max(xgbops:http_errors:ratio_rate5m)",
                "5xx",
            )
        )
        .with_panel(_stat("In flight", "short", "sum(xgbops_http_requests_in_flight)", "in flight"))
        .with_row(dashboard.Row("Rate, errors, duration"))
        .with_panel(
            _series(
                "Requests per second by endpoint",
                "reqps",
                [("sum by (endpoint) (xgbops:http_requests_by_endpoint:rate5m)", "{{endpoint}}")],
            )
        )
        .with_panel(
            _series(
                "Answers by status class",
                "reqps",
                [
                    (
                        "sum by (status_class) (xgbops:http_requests_by_class:rate5m)",
                        "{{status_class}}",
                    )
                ],
            )
        )
        .with_panel(
            _series(
                "Error ratio against the SLO (0.5 %)",
                "percentunit",
                [
                    ("xgbops:http_errors:ratio_rate5m", "{{job}} 5 min"),
                    ("xgbops:http_errors:ratio_rate1h", "{{job}} 1 h"),
                    ("xgbops:http_errors:ratio_rate6h", "{{job}} 6 h"),
                ],
            )
        )
        .with_panel(
            _series(
                "/predict latency",
                "s",
                [
                    ("xgbops:http_request_duration_seconds:p50_5m", "{{job}} p50"),
                    ("xgbops:http_request_duration_seconds:p95_5m", "{{job}} p95"),
                    ("xgbops:http_request_duration_seconds:p99_5m", "{{job}} p99"),
                ],
            )
        )
        .with_panel(
            _series(
                "/predict within 25 ms (SLO 99 %)",
                "percentunit",
                [("xgbops:predict_latency_slo:ratio_rate5m", "{{job}}")],
            )
        )
        .with_panel(
            _series(
                "Predictions per second by label",
                "ops",
                [("sum by (label) (xgbops:predictions:rate5m)", "{{label}}")],
            )
        )
        .with_row(dashboard.Row("Prediction history"))
        .with_panel(
            _series(
                "Write-behind queue and spool",
                "short",
                [
                    ("sum by (instance) (xgbops_history_queued_records)", "queued {{instance}}"),
                    ("max by (instance) (xgbops_history_spool_bytes)", "spool bytes {{instance}}"),
                ],
            )
        )
        .with_panel(
            _series(
                "History database",
                "short",
                [
                    ("min by (instance) (xgbops_history_database_up)", "up {{instance}}"),
                    (
                        "sum by (operation) (rate(xgbops_database_errors_total[5m]))",
                        "errors/s {{operation}}",
                    ),
                ],
            )
        )
    )


def model_dashboard() -> dashboard.Dashboard:
    """The model over time: versions served, drift per feature, live behaviour per arm."""
    return (
        dashboard.Dashboard("xgbops model over time")
        .uid("xgbops-model")
        .tags(["xgbops"])
        .refresh("1m")
        .time("now-7d", "now")
        .with_row(dashboard.Row("Versions"))
        .with_panel(
            _series(
                "Model version served",
                "none",
                [("max by (model_version) (xgbops_model_info == 1)", "v{{model_version}}")],
                width=24,
            )
        )
        .with_row(dashboard.Row("Drift (the drift job's latest report)"))
        .with_panel(
            _series(
                "PSI per feature",
                "none",
                [("xgbops:drift_psi:max", "{{feature}}")],
            )
        )
        .with_panel(
            _series(
                "Features judged drifted",
                "none",
                [("max by (feature) (xgbops_drift_detected)", "{{feature}}")],
            )
        )
        .with_panel(
            _stat(
                "Age of the latest drift report",
                "s",
                "time() - max(xgbops_drift_report_timestamp_seconds)",
                "age",
            )
        )
        .with_row(dashboard.Row("Live, per rollout arm"))
        .with_panel(
            _series(
                "Rollout mode and the challenger's share of traffic",
                "percent",
                [("max by (mode) (xgbops_rollout_share_percent)", "{{mode}}")],
            )
        )
        .with_panel(
            _series(
                "Predictions per second by arm and label",
                "ops",
                [("sum by (arm, label) (xgbops:predictions:rate5m)", "{{arm}} {{label}}")],
            )
        )
        .with_panel(
            _series(
                "Mean score by arm",
                "percentunit",
                [
                    (
                        "sum by (arm) (rate(xgbops_prediction_score_sum[5m]))"
                        " / sum by (arm) (rate(xgbops_prediction_score_count[5m]))",
                        "{{arm}}",
                    )
                ],
            )
        )
        .with_panel(
            _series(
                "Score distribution (share per tenth)",
                "percentunit",
                [
                    (
                        "sum by (le) (increase(xgbops_prediction_score_bucket[1h]))"
                        " / ignoring (le) group_left"
                        " sum(increase(xgbops_prediction_score_count[1h]))",
                        "<= {{le}}",
                    )
                ],
            )
        )
        .with_panel(
            _series(
                "Error ratio on labelled predictions, per arm",
                "percentunit",
                [("xgbops:rollout_error:ratio_rate1h", "{{arm}}")],
            )
        )
        .with_panel(
            _series(
                "Retraining jobs",
                "short",
                [("sum by (status) (increase(xgbops_retrain_jobs_total[1d]))", "{{status}}")],
            )
        )
    )


BUILDERS: dict[str, Callable[[], dashboard.Dashboard]] = {
    "xgbops-service.json": service_dashboard,
    "xgbops-model.json": model_dashboard,
}


def render(build: Callable[[], dashboard.Dashboard]) -> str:
    """The dashboard's JSON as Grafana provisions it (panels numbered in order)."""
    built = build().build()
    for number, panel in enumerate(built.panels or [], start=1):
        panel.id_val = number
    return json.dumps(built, cls=JSONEncoder, sort_keys=True, indent=2) + "\n"


def panel_queries(document: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query of a dashboard's JSON (rows hold no queries)."""
    return [
        (str(panel["title"]), str(target["expr"]))
        for panel in document.get("panels", [])
        for target in panel.get("targets", [])
    ]


def check() -> list[str]:
    """What is wrong with the committed dashboards (nothing: an empty list)."""
    problems = []
    for name, build in BUILDERS.items():
        path = DASHBOARDS / name
        if not path.is_file():
            problems.append(f"{path} is missing: run python -m tools.grafana_dashboards")
            continue
        committed = path.read_text(encoding="utf-8")
        decoded = dashboard_model.Dashboard.from_json(json.loads(committed))  # the SDK's schema
        if not decoded.title or not panel_queries(json.loads(committed)):
            problems.append(f"{name}: no title or no query")
        if committed != render(build):
            problems.append(f"{name} differs from the code: run python -m tools.grafana_dashboards")
    return problems


def main(argv: list[str] | None = None) -> int:
    """Write the dashboards, or with ``--check`` report what differs (exit 1)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args(argv)
    if args.check:
        problems = check()
        for problem in problems:
            print(problem, file=sys.stderr)
        if not problems:
            print(f"{len(BUILDERS)} dashboards match their code and the SDK's schema")
        return 1 if problems else 0
    DASHBOARDS.mkdir(exist_ok=True)
    for name, build in BUILDERS.items():
        (DASHBOARDS / name).write_text(render(build), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
