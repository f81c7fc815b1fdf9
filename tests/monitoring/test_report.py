"""`xgbops monitor report`: events shipped through the monitoring package, the HTML page written
by the real command, then opened in headless Chromium to see that every view's plots loaded."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess  # nosec B404 - runs the browser on a file the test wrote
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import psutil
import pytest

from tests.monitoring.history_rows import label, other, records, write_feedback, write_history
from tests.monitoring.sample import rollout_decision, rollout_report
from tests.monitoring.test_check import shifted_history
from xgbops.monitoring import system
from xgbops.monitoring.check import check_drift
from xgbops.monitoring.events import ProcessEvent
from xgbops.monitoring.history import read_predictions
from xgbops.monitoring.report import build_report, render_html
from xgbops.monitoring.sinks import LocalSink, local_sink_path
from xgbops.monitoring.sync import ship_rollout, sync_feedback, sync_mlflow, sync_predictions
from xgbops.tracking import Tracker
from tests.cli_runner import run_xgbops as run_cli

#: Trains models or starts servers: run early (tests/conftest.py orders slow modules first).
pytestmark = pytest.mark.slow

VIEWS = ["models", "predictions", "drift", "rollout", "system"]
LIVE_ACCURACY = "Live accuracy (client feedback)"
ROLLOUT_CHART = "Live error rate per arm (confidence interval shaded)"
#: Headless, offline, no profile left behind: nothing may reach the network.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def require_chromium() -> str:
    """Path of Debian's ``chromium``; skipped with the reason when absent, failed under CI."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    reason = "chromium is not installed (Debian: apt-get install -y chromium)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; CI=true requires it")
    pytest.skip(reason)


class _Page(HTMLParser):
    """What the test reads from the DOM: body attributes, and per view its images and message."""

    def __init__(self) -> None:
        super().__init__()
        self.body: dict[str, str] = {}
        self.views: dict[str, dict[str, Any]] = {}
        self.alts: list[str] = []
        self.sources: list[str] = []
        self._view: str | None = None
        self._in_empty = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        self.sources += [values[key] for key in ("src", "href") if key in values]
        if tag == "body":
            self.body = values
        elif tag == "section":
            self._view = values.get("data-view")
            self.views[self._view or ""] = {"images": [], "empty": ""}
        elif tag == "img" and self._view:
            self.views[self._view]["images"].append(values.get("src", ""))
            self.alts.append(values.get("alt", ""))
        elif tag == "p" and values.get("class") == "empty":
            self._in_empty = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "section":
            self._view = None
        elif tag == "p":
            self._in_empty = False

    def handle_data(self, data: str) -> None:
        if self._in_empty and self._view:
            self.views[self._view]["empty"] += data


def parse(text: str) -> _Page:
    """The page's structure."""
    page = _Page()
    page.feed(text)
    return page


def render_in_chromium(page: Path, tmp_path: Path) -> _Page:
    """The DOM of ``page`` after Chromium loaded it (and ran its load handler)."""
    chromium = require_chromium()
    profile = tmp_path / "chromium-profile"
    result = subprocess.run(  # nosec B603 - fixed argument list, no shell
        [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            "--virtual-time-budget=10000",
            "--dump-dom",
            page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return parse(result.stdout)


def _this_process(machine: Any) -> ProcessEvent:
    """The test's own process as an xgbops process of a sample (the collector only watches
    processes named like xgbops', which a test run may not have)."""
    me = psutil.Process()
    return ProcessEvent(
        timestamp=machine.timestamp,
        sample_id=machine.sample_id,
        host=machine.host,
        pid=me.pid,
        process_group="xgbops",
        name=me.name(),
        cmdline=" ".join(me.cmdline())[:1000],
        rss_bytes=me.memory_info().rss,
        cpu_percent=0.0,
        memory_percent=me.memory_percent(),
        num_threads=me.num_threads(),
        started_at=datetime.fromtimestamp(me.create_time(), UTC),
    )


def label_history(settings, received_at: datetime, wrong_every: int = 4, version: str = "1"):
    """Label the stored predictions of ``version``, one in ``wrong_every`` wrongly (the first
    of each ``wrong_every``; none when 0)."""
    served = [
        p for p in read_predictions(settings.history_url, "yes") if p.model_version == version
    ]
    write_feedback(
        settings.history_url,
        [
            label(p.prediction_id, other(p.label) if wrong else p.label, received_at)
            for p, wrong in zip(served, _wrong(len(served), wrong_every), strict=True)
        ],
    )
    return served


def _wrong(count: int, every: int) -> list[bool]:
    return [every > 0 and i % every == 0 for i in range(count)]


def test_the_report_shows_all_five_views_and_chromium_loads_every_plot(
    monkeypatch, capsys, champion_project, make_monitored, tmp_path
):
    settings = make_monitored(notify={"desktop": False})
    now = datetime.now(UTC)
    shifted_history(settings, 150, now)
    label_history(settings, now - timedelta(minutes=1), wrong_every=5)
    with LocalSink(local_sink_path(settings)) as sink:
        assert sync_mlflow(settings, sink).failed == 0
        assert sync_predictions(settings, sink).result.created == 150
        assert sync_feedback(settings, sink).result.created == 150
        assert check_drift(settings, timedelta(hours=24), sink).report.drift_detected
        for _ in range(2):
            events = system.sample(settings.project_dir, measure_seconds=0.01)
            assert sink.ship([*events, _this_process(events[0])]).failed == 0
    decisions = [rollout_decision(now - timedelta(minutes=40))]
    assert ship_rollout(settings, rollout_report(now - timedelta(minutes=30)), decisions) == 3
    assert ship_rollout(settings, rollout_report(now - timedelta(minutes=1))) == 2
    monkeypatch.chdir(champion_project)
    monkeypatch.setenv("XGBOPS_STATE_DIR", str(settings.state_path))
    monkeypatch.setenv("XGBOPS_REPORTS_DIR", str(settings.reports_path))
    output = tmp_path / "out" / "monitoring.html"

    status, out, err = run_cli(monkeypatch, capsys, "monitor", "report", "--output", str(output))

    assert status == 0, err
    assert f"report: {output}" in out
    text = output.read_text(encoding="utf-8")
    page = parse(text)
    assert list(page.views) == VIEWS
    assert {key: len(view["images"]) for key, view in page.views.items()} == {
        "models": 2,
        "predictions": 3,
        "drift": 1,
        "rollout": 1,
        "system": 2,
    }
    assert page.alts[:2] == ["Holdout roc_auc of every registered version", LIVE_ACCURACY]
    accuracy = "150 labelled prediction(s) (client feedback); live accuracy 80.0% (v1 80.0% of 150)"
    assert f"<br>{accuracy}</p>" in text  # a line of its own under the versions' summary
    assert all(not view["empty"] for view in page.views.values())
    for src in page.sources:  # self-contained: every resource is inline
        assert src.startswith(("data:image/png;base64,", "#")), src[:80]
    for view in page.views.values():
        for src in view["images"]:
            assert base64.b64decode(src.split(",", 1)[1]).startswith(b"\x89PNG\r\n\x1a\n")
    champion = Tracker(settings).champion(settings.model_name)
    assert f"v{champion.version} ★ champion" in text
    assert "<td>total_day_minutes</td><td>numeric</td>" in text and "<td>DRIFT</td>" in text
    assert "no data yet" not in text and "—" not in text.split("<main>", 1)[1].split("<table")[0]

    shown = render_in_chromium(output, tmp_path)

    assert shown.body.get("data-rendered") == "true"
    assert shown.body["data-images"] == shown.body["data-images-loaded"] == "9"
    assert {key: len(view["images"]) for key, view in shown.views.items()} == {
        key: len(view["images"]) for key, view in page.views.items()
    }


def test_an_empty_project_gets_a_page_that_says_how_to_get_data(
    monkeypatch, capsys, project, settings, tmp_path
):
    monkeypatch.chdir(project)

    status, out, err = run_cli(
        monkeypatch, capsys, "monitor", "report", "--output", "reports/monitoring.html"
    )

    assert status == 0, err
    assert "Models: no data yet — run `make train`" in out
    page = parse((project / "reports" / "monitoring.html").read_text(encoding="utf-8"))
    expected = {
        "models": "make train",
        "predictions": "make serve",
        "drift": "make drift",
        "rollout": "xgbops rollout start",
        "system": "make monitor-system",
    }
    assert list(page.views) == VIEWS
    for key, command in expected.items():
        assert not page.views[key]["images"]
        assert page.views[key]["empty"].startswith(f"no data yet — run {command}"), page.views[key]
    # Reading created nothing: no sink, no MLflow store.
    assert not local_sink_path(settings).exists()
    assert not (settings.state_path / "mlflow.db").exists()

    shown = render_in_chromium(project / "reports" / "monitoring.html", tmp_path)

    assert shown.body.get("data-rendered") == "true" and shown.body["data-images"] == "0"
    assert all(command in shown.views[key]["empty"] for key, command in expected.items())


def test_without_a_sink_the_report_reads_mlflow_the_history_and_the_drift_file(
    make_monitored, tmp_path
):
    """As after `make run`, a few predictions and `make drift` with Elasticsearch as the sink:
    nothing in the local sink, yet every source of truth is there to be read."""
    settings = make_monitored(notify={"desktop": False})
    shifted_history(settings, 120, datetime.now(UTC))
    with LocalSink(tmp_path / "elsewhere.db") as elsewhere:  # stands in for Elasticsearch
        check_drift(settings, timedelta(hours=24), elsewhere)

    report = build_report(settings)

    views = {view.key: view for view in report.views}
    assert views["models"].source == "MLflow" and len(views["models"].plots) == 1
    assert views["predictions"].has_data and "120 predictions" in views["predictions"].summary
    assert views["drift"].source == str(settings.reports_path / "drift.json")
    assert ["total_day_minutes", "numeric"] == views["drift"].rows[0][:2]
    assert views["drift"].rows[0][-1] == "DRIFT" and len(views["drift"].plots) == 1
    assert not views["system"].has_data and "make monitor-system" in views["system"].empty
    assert not local_sink_path(settings).exists()


def test_live_accuracy_comes_from_the_sink_and_the_history_the_later_label_winning(
    make_monitored,
):
    settings = make_monitored(notify={"desktop": False})
    now = datetime.now(UTC)
    shifted_history(settings, 8, now - timedelta(hours=1), version="1")
    shifted_history(settings, 4, now, version="2")
    first = label_history(settings, now - timedelta(minutes=50), wrong_every=2, version="1")
    with LocalSink(local_sink_path(settings)) as sink:  # v1's labels: half of them right
        assert sync_feedback(settings, sink).result.created == 8
    # Not shipped yet: v2's labels (all right), and a correction of a wrong v1 label.
    label_history(settings, now - timedelta(minutes=5), wrong_every=0, version="2")
    write_feedback(settings.history_url, [label(first[0].prediction_id, first[0].label, now)])

    models = {view.key: view for view in build_report(settings).views}["models"]

    assert [plot.title for plot in models.plots][-1] == LIVE_ACCURACY
    assert models.summary.splitlines()[-1] == (
        "12 labelled prediction(s) (client feedback); live accuracy 75.0% "
        "(v1 62.5% of 8, v2 100.0% of 4)"
    )
    assert "client feedback" in models.source


def test_live_accuracy_is_shown_without_any_registered_version(settings, tmp_path):
    """Feedback but no MLflow store (an API serving a model trained elsewhere)."""
    now = datetime.now(UTC)
    served = records([{"state": "KS"}] * 3, [0.9, 0.8, 0.1], now - timedelta(hours=1))
    write_history(settings.history_url, tmp_path / "spool", served)
    write_feedback(settings.history_url, [label(r.id, "yes", now) for r in served])

    models = {view.key: view for view in build_report(settings).views}["models"]
    two_days_later = build_report(settings, now + timedelta(days=2), timedelta(days=1))
    later = {view.key: view for view in two_days_later.views}

    assert models.has_data and [plot.title for plot in models.plots] == [LIVE_ACCURACY]
    assert models.summary == (
        "3 labelled prediction(s) (client feedback); live accuracy 66.7% (v1 66.7% of 3)"
    )
    assert not later["models"].has_data and "make train" in later["models"].empty  # out of window
    assert not local_sink_path(settings).exists()


def test_the_models_view_shows_the_latest_comparison_of_runs(settings, tmp_path):
    chart = settings.reports_path / "compare" / "compare.png"
    chart.parent.mkdir(parents=True)
    figure, axes = plt.subplots()
    axes.bar(["v1", "v2"], [0.91, 0.93])
    figure.savefig(chart)
    plt.close(figure)

    models = {view.key: view for view in build_report(settings).views}["models"]

    assert [plot.png for plot in models.plots] == [chart.read_bytes()]
    assert any("compare/compare.md" in note for note in models.notes)
    assert 'alt="the latest xgbops compare"' in render_html(build_report(settings))


def test_a_drift_check_with_too_few_predictions_says_so(make_monitored):
    settings = make_monitored(notify={"desktop": False})
    shifted_history(settings, 20, datetime.now(UTC))
    with LocalSink(local_sink_path(settings)) as sink:
        outcome = check_drift(settings, timedelta(hours=24), sink)
    assert outcome.report.status == "insufficient_data"

    drift = {view.key: view for view in build_report(settings).views}["drift"]

    min_samples = settings.monitoring.drift.min_samples
    assert drift.has_data and "insufficient_data" in drift.summary
    assert f"indicative only: fewer than the {min_samples} predictions" in drift.summary
    assert {row[-1] for row in drift.rows} == {"no verdict"}  # shifted, but not judged on 20


def test_a_drift_check_on_a_handful_of_predictions_has_nothing_to_plot(make_monitored):
    settings = make_monitored(notify={"desktop": False})
    shifted_history(settings, 3, datetime.now(UTC))
    with LocalSink(local_sink_path(settings)) as sink:
        check_drift(settings, timedelta(hours=24), sink)

    drift = {view.key: view for view in build_report(settings).views}["drift"]

    assert not drift.has_data
    min_samples = settings.monitoring.drift.min_samples
    assert f"too few predictions (3 < {min_samples})" in drift.empty


def test_the_window_bounds_the_time_series_but_not_the_models(
    monkeypatch, capsys, champion_project, make_monitored, tmp_path
):
    settings = make_monitored(notify={"desktop": False})
    now = datetime.now(UTC)
    shifted_history(settings, 30, now - timedelta(days=40))
    shifted_history(settings, 12, now)
    old = now - timedelta(days=40)
    with LocalSink(local_sink_path(settings)) as sink:
        events = system.sample(settings.project_dir, measure_seconds=0.01)
        assert sink.ship([e.model_copy(update={"timestamp": old}) for e in events]).failed == 0

    everything = {v.key: v for v in build_report(settings, now).views}
    recent = build_report(settings, now, window=timedelta(days=30))
    views = {v.key: v for v in recent.views}

    assert "42 predictions" in everything["predictions"].summary
    assert "12 predictions" in views["predictions"].summary
    assert everything["system"].has_data and not views["system"].has_data
    assert views["models"].has_data  # the registry is shown whole
    assert recent.span == f"since {now - timedelta(days=30):%Y-%m-%d %H:%M} UTC"

    monkeypatch.chdir(champion_project)
    monkeypatch.setenv("XGBOPS_STATE_DIR", str(settings.state_path))
    monkeypatch.setenv("XGBOPS_REPORTS_DIR", str(settings.reports_path))
    page = tmp_path / "r.html"
    status, out, err = run_cli(
        monkeypatch, capsys, "monitor", "report", "--output", str(page), "--window", "all"
    )
    assert status == 0, err
    assert out.startswith("window: all time") and "System: no data" not in out
    assert "predictions, drift, rollout and system: all time" in page.read_text(encoding="utf-8")
    status, _, err = run_cli(monkeypatch, capsys, "monitor", "report", "--window", "soon")
    assert status != 0 and "invalid window 'soon'" in err


def test_the_rollout_view_shows_each_arms_latest_numbers_and_the_decisions(settings):
    now = datetime(2026, 12, 7, 14, 0, tzinfo=UTC)
    first, latest = now - timedelta(hours=2), now - timedelta(hours=1)
    old = now - timedelta(days=40)  # another rollout, out of the window
    ship_rollout(settings, rollout_report(old, rollout_id="old123", decision="rollback"))
    ship_rollout(settings, rollout_report(first), [rollout_decision(first)])
    promote = rollout_decision(latest, "promote", mode=None, share=None, reason="not worse")
    newest = rollout_report(latest, decision="promote", challenger_error_rate=0.10)
    ship_rollout(settings, newest, [promote])

    rollout = {v.key: v for v in build_report(settings, now, timedelta(days=30)).views}["rollout"]

    assert rollout.rows == [  # the latest report's numbers, champion first
        ["a1b2c3", "champion", "v1", "1600", "800", "12.0% [10.0%, 14.0%]"]
        + ["0.810 [0.780, 0.840]", "0.3500", "0.0300", "1.2 / 3.4", "promote"],
        ["a1b2c3", "challenger", "v2", "400", "200", "10.0% [8.0%, 12.0%]"]
        + ["0.790 [0.760, 0.820]", "0.3500", "0.0300", "1.2 / 3.4", "promote"],
    ]
    assert rollout.summary.splitlines() == [
        "rollout a1b2c3 of churn-xgboost: canary 20%, champion v1 against challenger v2; "
        "2026-12-07 13:00 UTC: promote (error-rate test: p-value 0.27, P(challenger worse) 0.13)",
        "2 decision(s), the latest last:",
        "2026-12-07 12:00 UTC start canary 20% (v1 → v2) by alice: a new version to try",
        "2026-12-07 13:00 UTC promote (v1 → v2) by alice: not worse",
    ]
    assert [plot.title for plot in rollout.plots] == [ROLLOUT_CHART]
    assert rollout.plots[0].png.startswith(b"\x89PNG")
    everything = {v.key: v for v in build_report(settings, now).views}["rollout"]
    assert [row[0] for row in everything.rows] == ["a1b2c3", "a1b2c3", "old123", "old123"]


def test_a_rollout_without_labels_has_its_table_but_no_chart(settings):
    now = datetime.now(UTC)
    ship_rollout(settings, rollout_report(now, labelled=False, paired=True))

    report = build_report(settings)
    rollout = {v.key: v for v in report.views}["rollout"]

    assert not rollout.has_data and "need labelled predictions" in rollout.empty
    assert [row[1] for row in rollout.rows] == ["champion", "challenger"]
    assert [row[3:8] for row in rollout.rows] == [["1600", "0", "", "", ""]] * 2
    assert rollout.summary.startswith("rollout a1b2c3 of churn-xgboost: shadow 100%, champion v1")
    assert "Rollout: no live error rate yet" in "\n".join(report.lines())
