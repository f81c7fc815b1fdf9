"""`xgbops monitor ...` end to end through the real entry point: a trained champion, a prediction
history written by the API's writer, the local sink (default) and the fake Elasticsearch."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from tests.monitoring.history_rows import label, other, write_feedback
from tests.monitoring.test_check import shifted_history
from xgbops.monitoring.history import read_predictions
from xgbops.monitoring.sinks import LocalSink, local_sink_path
from xgbops.tracking import Tracker
from tests.cli_runner import run_xgbops as run


@pytest.fixture
def project_env(monkeypatch, champion_project, monitored_settings):
    """Run the CLI in the champion project with the test's own state and reports folders."""
    monkeypatch.chdir(champion_project)
    monkeypatch.setenv("XGBOPS_STATE_DIR", str(monitored_settings.state_path))
    monkeypatch.setenv("XGBOPS_REPORTS_DIR", str(monitored_settings.reports_path))
    monkeypatch.setenv("XGBOPS_NOTIFY__DESKTOP", "false")
    return monitored_settings


def _stored(settings, kind):
    with LocalSink(local_sink_path(settings)) as sink:
        return sink.read(kind)


def test_monitor_commands_fill_the_local_sink_without_duplicates(monkeypatch, capsys, project_env):
    settings = project_env
    shifted_history(settings, 150, datetime.now(UTC))

    status, out, _ = run(monkeypatch, capsys, "monitor", "drift", "--window", "24h")
    assert status == 0, out
    assert out.startswith("Drift check: DRIFT") and "alert email: skipped" in out
    assert json.loads((settings.reports_path / "drift.json").read_text())["status"] == "drift"
    assert len(_stored(settings, "drift-reports")) == 1
    assert len(_stored(settings, "drift-features")) == len(settings.dataset.features) + 1

    status, out, _ = run(monkeypatch, capsys, "monitor", "drift", "--fail-on-drift")
    assert status == 1  # still drift, and still failing the pipeline, but not announced again
    assert "alert: not sent again: the same drift was announced at " in out

    status, out, _ = run(monkeypatch, capsys, "monitor", "predictions")
    assert status == 0 and "150 new, 0 updated, 0 already shipped, 0 failed" in out
    status, out, _ = run(monkeypatch, capsys, "monitor", "predictions")
    assert status == 0 and "0 new, 0 updated, 150 already shipped" in out
    assert len(_stored(settings, "predictions")) == 150

    runs = len(Tracker(settings).runs())
    status, out, _ = run(monkeypatch, capsys, "monitor", "sync-mlflow")
    assert status == 0 and f"{runs} new, 0 updated" in out
    status, out, _ = run(monkeypatch, capsys, "monitor", "sync-mlflow")
    assert status == 0 and f"0 new, {runs} updated" in out
    assert len(_stored(settings, "training-runs")) == runs

    status, out, _ = run(monkeypatch, capsys, "monitor", "system", "--count", "1")
    assert status == 0 and "CPU" in out and " new, 0 updated" in out
    assert len(_stored(settings, "system")) == 1


def test_monitor_ships_to_elasticsearch_when_configured(monkeypatch, capsys, project_env, fake_es):
    monkeypatch.setenv("XGBOPS_MONITORING__SINK", "elasticsearch")
    monkeypatch.setenv("XGBOPS_MONITORING__ELASTICSEARCH_URL", fake_es.url)
    shifted_history(project_env, 120, datetime.now(UTC))
    status, out, _ = run(monkeypatch, capsys, "monitor", "setup")
    assert status == 0 and "Elasticsearch 9.1.0: 12 resources" in out
    assert "  index_templates/xgbops-feedback" in out.splitlines()
    status, out, _ = run(monkeypatch, capsys, "monitor", "predictions")
    assert status == 0 and f"elasticsearch:{fake_es.url}: 120 new" in out
    status, out, _ = run(monkeypatch, capsys, "monitor", "predictions", "--all")
    assert status == 0 and "120 already shipped" in out
    assert len(fake_es.documents()) == 120


def test_refused_documents_exit_1_with_their_reasons(monkeypatch, capsys, project_env, fake_es):
    monkeypatch.setenv("XGBOPS_MONITORING__SINK", "elasticsearch")
    monkeypatch.setenv("XGBOPS_MONITORING__ELASTICSEARCH_URL", fake_es.url)
    champion = Tracker(project_env).champion(project_env.model_name)
    fake_es.fail_item(champion.run_id, 400)
    status, out, err = run(monkeypatch, capsys, "monitor", "sync-mlflow")
    assert status == 1 and "1 failed" in out
    assert f"refused xgbops-training-runs/{champion.run_id}: 400 illegal_argument_exception" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["monitor", "drift", "--window", "soon"], "invalid window 'soon'"),
        (["monitor", "setup"], "no Elasticsearch URL"),
        (["monitor", "predictions", "--since", "yesterday"], "not an ISO date/time"),
    ],
)
def test_user_errors_are_one_line_and_a_non_zero_exit(
    monkeypatch, capsys, project_env, args, message
):
    status, _, err = run(monkeypatch, capsys, *args)
    assert status == 2 and message in err and "Traceback" not in err


def _label_history(settings, wrong_every: int = 4) -> list:
    """Label every stored prediction, one in ``wrong_every`` wrongly; the predictions."""
    served = list(read_predictions(settings.history_url, "yes"))
    now = datetime.now(UTC)
    write_feedback(
        settings.history_url,
        [
            label(p.prediction_id, other(p.label) if i % wrong_every == 0 else p.label, now)
            for i, p in enumerate(served)
        ],
    )
    return served


def test_monitor_predictions_ships_the_feedback_on_a_line_of_its_own(
    monkeypatch, capsys, project_env
):
    settings = project_env
    shifted_history(settings, 20, datetime.now(UTC))
    _label_history(settings)

    status, out, _ = run(monkeypatch, capsys, "monitor", "predictions")

    assert status == 0
    lines = out.splitlines()
    target = f"local:{local_sink_path(settings)}"
    assert lines[1] == f"{target}: 20 new, 0 updated, 0 already shipped, 0 failed"
    assert lines[2].startswith("feedback from the beginning to ")
    assert lines[3] == f"feedback: {target}: 20 new, 0 updated, 0 already shipped, 0 failed"
    feedback = _stored(settings, "feedback")
    assert sum(d["correct"] for d in feedback) == 15  # one in four labelled wrongly

    status, out, _ = run(monkeypatch, capsys, "monitor", "predictions")
    assert status == 0
    assert (
        out.splitlines()[3] == f"feedback: {target}: 0 new, 20 updated, 0 already shipped, 0 failed"
    )
    assert len(_stored(settings, "feedback")) == 20


def test_refused_feedback_exits_1_after_shipping_the_predictions(
    monkeypatch, capsys, project_env, fake_es
):
    monkeypatch.setenv("XGBOPS_MONITORING__SINK", "elasticsearch")
    monkeypatch.setenv("XGBOPS_MONITORING__ELASTICSEARCH_URL", fake_es.url)
    shifted_history(project_env, 5, datetime.now(UTC))
    served = _label_history(project_env)
    assert run(monkeypatch, capsys, "monitor", "setup")[0] == 0
    stale = fake_es.templates["xgbops-feedback"]["template"]["mappings"]["properties"]
    stale.pop("actual_label")  # a cluster whose feedback template is older than the code

    status, out, err = run(monkeypatch, capsys, "monitor", "predictions")

    assert status == 1
    lines = out.splitlines()
    assert lines[1].endswith(": 5 new, 0 updated, 0 already shipped, 0 failed")
    assert lines[3].endswith(": 0 new, 0 updated, 0 already shipped, 5 failed")
    index = f"xgbops-feedback-{served[0].timestamp:%Y.%m}.01"
    assert f"refused {index}/{served[0].prediction_id}: 400 strict_dynamic_mapping_exception" in err
    assert len(fake_es.documents()) == 5  # the predictions


def test_a_refused_prediction_still_ships_the_feedback_then_exits_1(
    monkeypatch, capsys, project_env, fake_es
):
    monkeypatch.setenv("XGBOPS_MONITORING__SINK", "elasticsearch")
    monkeypatch.setenv("XGBOPS_MONITORING__ELASTICSEARCH_URL", fake_es.url)
    shifted_history(project_env, 5, datetime.now(UTC))
    served = _label_history(project_env)
    fake_es.fail_item(served[3].prediction_id, 400)  # its prediction, shipped first

    status, out, err = run(monkeypatch, capsys, "monitor", "predictions")

    assert status == 1
    lines = out.splitlines()
    assert lines[1].endswith(": 4 new, 0 updated, 0 already shipped, 1 failed")
    assert lines[3].endswith(": 5 new, 0 updated, 0 already shipped, 0 failed")
    assert f"/{served[3].prediction_id}: 400 illegal_argument_exception" in err
