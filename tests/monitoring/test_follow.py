"""`xgbops monitor follow`: the monitoring jobs on their schedules, each failure retried at its
next turn, predictions and their feedback shipped incrementally with an hourly catch-up of late
replays."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from tests.cli_runner import run_xgbops as run_cli
from tests.monitoring.conftest import FAST_RETRY
from tests.monitoring.history_rows import label, records, write_feedback, write_history
from tests.monitoring.test_check import shifted_history
from xgbops.monitoring import elastic, follow
from xgbops.monitoring.sinks import ElasticsearchSink, LocalSink, local_sink_path


class FakeClock:
    """Monotonic seconds that only move when the follower sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_each_job_runs_on_its_own_schedule_and_a_failure_stops_nothing(tmp_path):
    clock, runs = FakeClock(), []

    def job(name, every, fail=False):
        def run():
            runs.append((name, clock.now))
            if fail:
                raise ConnectionError("elasticsearch:9200 refused")
            return "ok"

        return follow.Job(name, timedelta(seconds=every), run)

    jobs = [job("fast", 60), job("broken", 60, fail=True), job("slow", 300)]
    seen = []
    heartbeat = tmp_path / "follow.json"

    failures = follow.follow(
        jobs, heartbeat, rounds=6, report=seen.append, clock=clock, sleep=clock.sleep
    )

    assert [t for name, t in runs if name == "fast"] == [0, 60, 120, 180, 240, 300]
    assert [t for name, t in runs if name == "slow"] == [0, 300]
    assert failures == 6 and len([o for o in seen if not o.ok]) == 6
    assert clock.slept == [60.0] * 5  # no sleep after the last round
    failed = next(o for o in seen if not o.ok)
    assert failed.line().endswith("broken: failed: ConnectionError: elasticsearch:9200 refused")
    last = json.loads(heartbeat.read_text())
    assert [r["job"] for r in last["ran"]] == ["fast", "broken", "slow"]
    assert last["ran"][1]["ok"] is False


def test_the_jobs_ship_everything_then_only_what_is_new(make_monitored):
    settings = make_monitored(notify={"desktop": False}, monitoring={"drift": {"min_samples": 10}})
    now = datetime.now(UTC)
    shifted_history(settings, 40, now)
    clock = FakeClock()
    with LocalSink(local_sink_path(settings)) as sink:
        jobs = follow.monitoring_jobs(settings, sink, clock)
        first = {o.name: o for o in follow.run_due(jobs, clock)}
        assert all(o.ok for o in first.values()), first
        assert first["predictions"].detail.startswith(f"{sink.target}: 40 new")
        assert "drift (40 predictions)" in first["drift"].detail
        runs = len(sink.read("training-runs"))
        assert runs >= 1 and len(sink.read("system")) == 1 and len(sink.read("drift-reports")) == 1

        shifted_history(settings, 5, now + timedelta(hours=1))  # after the watermark
        clock.now += 60
        second = {o.name: o for o in follow.run_due(jobs, clock)}

        assert set(second) == {"predictions", "system"}  # MLflow and drift are not due yet
        assert second["predictions"].detail.startswith(f"{sink.target}: 5 new")
        assert len(sink.read("predictions")) == 45 and len(sink.read("system")) == 2
        assert len(sink.read("training-runs")) == runs


def test_a_late_replay_is_caught_by_the_hourly_full_overlap(make_monitored):
    settings = make_monitored(notify={"desktop": False})
    now = datetime.now(UTC)
    inputs = [{"state": "KS"}] * 3
    spool = settings.state_path / "spool"
    write_history(settings.history_url, spool, records(inputs, [0.2] * 3, now))
    clock = FakeClock()
    with LocalSink(local_sink_path(settings)) as sink:
        shipping = follow.monitoring_jobs(settings, sink, clock)[0]
        assert shipping.name == "predictions"
        assert shipping.run().startswith(f"{sink.target}: 3 new")
        # Replayed from the API's spool after an outage: stored now, created 30 minutes ago.
        late = records(inputs[:1], [0.9], now - timedelta(minutes=30))
        write_history(settings.history_url, spool, late)

        clock.now += 60
        assert shipping.run().startswith(f"{sink.target}: 0 new")  # 5-minute overlap: not yet
        clock.now += 3600
        assert shipping.run().startswith(f"{sink.target}: 1 new")  # the hourly catch-up
        assert late[0].id in {d["prediction_id"] for d in sink.read("predictions")}


def test_the_predictions_job_ships_the_feedback_too_and_catches_late_predictions(make_monitored):
    settings = make_monitored(notify={"desktop": False})
    now = datetime.now(UTC)
    spool = settings.state_path / "spool"
    served = records([{"state": "KS"}] * 3, [0.9, 0.2, 0.2], now - timedelta(hours=2))
    write_history(settings.history_url, spool, served)
    # A label whose prediction the API replays from its spool half an hour late.
    late = records([{"state": "OH"}], [0.7], now - timedelta(minutes=31))[0]
    write_feedback(
        settings.history_url,
        [label(r.id, "yes", now - timedelta(minutes=i)) for i, r in enumerate(served)]
        + [label(late.id, "no", now - timedelta(minutes=30))],
    )
    clock = FakeClock()
    with LocalSink(local_sink_path(settings)) as sink:
        shipping = follow.monitoring_jobs(settings, sink, clock)[0]

        assert shipping.run() == (
            f"{sink.target}: 3 new, 0 updated, 0 already shipped, 0 failed; "
            "feedback: 3 new, 0 updated, 0 already shipped, 0 failed"
        )
        assert sorted(d["correct"] for d in sink.read("feedback")) == [0, 0, 1]

        write_history(settings.history_url, spool, [late])
        clock.now += 60  # 5-minute overlap: the label, received 30 minutes ago, is not re-read
        assert shipping.run().endswith("feedback: 0 new, 3 updated, 0 already shipped, 0 failed")
        clock.now += 3600  # the hourly catch-up
        assert shipping.run().endswith("feedback: 1 new, 3 updated, 0 already shipped, 0 failed")
        stored = {d["prediction_id"]: d for d in sink.read("feedback")}
    assert set(stored) == {r.id for r in served} | {late.id}
    assert (stored[late.id]["actual_label"], stored[late.id]["correct"]) == ("no", 0)


def test_refused_feedback_fails_the_job_once_the_predictions_shipped(make_monitored, fake_es):
    settings = make_monitored(
        notify={"desktop": False},
        monitoring={"sink": "elasticsearch", "elasticsearch_url": fake_es.url},
    )
    now = datetime.now(UTC)
    served = records([{"state": "KS"}] * 2, [0.9, 0.2], now - timedelta(minutes=10))
    write_history(settings.history_url, settings.state_path / "spool", served)
    write_feedback(settings.history_url, [label(r.id, "yes", now) for r in served])
    _install(settings)
    stale = fake_es.templates["xgbops-feedback"]["template"]["mappings"]["properties"]
    stale.pop("correct")  # a cluster whose feedback template is older than the code
    sink = ElasticsearchSink(settings.monitoring, retry=FAST_RETRY)
    clock = FakeClock()
    shipping = follow.monitoring_jobs(settings, sink, clock)[:1]

    (failed,) = follow.run_due(shipping, clock)

    assert not failed.ok
    month = f"{served[0].created_at:%Y.%m}.01"  # labels go to their predictions' month
    index = f"xgbops-feedback-{month}"
    assert f"0 new, 0 updated, 0 already shipped, 2 failed; first refused: {index}/" in (
        failed.detail
    )
    assert "strict_dynamic_mapping_exception" in failed.detail
    assert {i for i, _ in fake_es.documents()} == {f"xgbops-predictions-{month}"}

    _install(settings)  # the template is brought up to date: the next turn ships the labels
    clock.now += 60
    (retried,) = follow.run_due(shipping, clock)
    assert retried.ok and retried.detail.endswith(
        "feedback: 2 new, 0 updated, 0 already shipped, 0 failed"
    )
    assert len(fake_es.indices[index]) == 2
    sink.close()


def test_a_refused_prediction_does_not_hold_back_the_feedback(make_monitored, fake_es):
    settings = make_monitored(notify={"desktop": False})
    now = datetime.now(UTC)
    served = records([{"state": "KS"}] * 2, [0.9, 0.2], now - timedelta(minutes=10))
    write_history(settings.history_url, settings.state_path / "spool", served)
    write_feedback(settings.history_url, [label(r.id, "yes", now) for r in served])
    fake_es.fail_item(served[1].id, 400)  # the first document with that id: the prediction
    sink = ElasticsearchSink(
        settings.monitoring.model_copy(update={"elasticsearch_url": fake_es.url}),
        retry=FAST_RETRY,
    )
    clock = FakeClock()

    (outcome,) = follow.run_due(follow.monitoring_jobs(settings, sink, clock)[:1], clock)

    assert not outcome.ok and "1 new, 0 updated, 0 already shipped, 1 failed" in outcome.detail
    assert f"first refused: xgbops-predictions-{served[1].created_at:%Y.%m}.01/" in outcome.detail
    month = f"{served[0].created_at:%Y.%m}.01"
    assert set(fake_es.indices[f"xgbops-feedback-{month}"]) == {r.id for r in served}
    sink.close()


def _install(settings):
    elastic.install(settings, elastic.create_client(settings.monitoring, FAST_RETRY))


def test_the_command_runs_rounds_and_prints_each_job(monkeypatch, capsys, make_monitored):
    settings = make_monitored(notify={"desktop": False})
    monkeypatch.chdir(settings.project_dir)
    monkeypatch.setenv("XGBOPS_STATE_DIR", str(settings.state_path))
    monkeypatch.setenv("XGBOPS_REPORTS_DIR", str(settings.reports_path))
    monkeypatch.setenv("XGBOPS_MONITORING__FOLLOW__DRIFT_EVERY", "2h")

    status, out, err = run_cli(monkeypatch, capsys, "monitor", "follow", "--rounds", "1")

    assert status == 0, err
    assert "drift every 2:00:00 over 1 day" in out.splitlines()[0]
    jobs = [line.split()[2] for line in out.splitlines()[1:]]
    assert jobs == ["predictions:", "system:", "mlflow:", "drift:"]
    assert "insufficient_data (0 predictions), no alert" in out
    assert follow.heartbeat_path(settings).is_file()
