"""The system collector: host CPU, memory and disk, and the xgbops-related processes."""

from __future__ import annotations

import itertools
import subprocess
import sys

import psutil
import pytest

from xgbops.monitoring import system
from xgbops.monitoring.events import ProcessEvent, SystemEvent


@pytest.mark.parametrize(
    ("name", "cmdline", "group"),
    [
        ("gunicorn", ["gunicorn", "--config", "python:api.gunicorn_conf"], "gunicorn"),
        ("python3", ["python", "-m", "uvicorn", "api.fastapi_app:create_app"], "uvicorn"),
        ("python3", ["/venv/bin/mlflow", "server"], "mlflow"),
        ("python3", ["/venv/bin/xgbops", "monitor", "system"], "xgbops"),
        ("gunicorn", ["gunicorn: worker [xgbops]"], "gunicorn"),
        ("bash", ["bash"], None),
    ],
)
def test_processes_are_grouped_by_what_they_serve(name, cmdline, group):
    assert system.process_group(name, cmdline) == group


@pytest.fixture
def mlflow_like():
    """A process whose command line says mlflow (a sleeper; killed after the test)."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "mlflow"])
    yield process
    process.kill()
    process.wait()


def test_a_sample_describes_the_machine_and_the_watched_processes(tmp_path, mlflow_like):
    events = system.sample(tmp_path, measure_seconds=0.05)
    host, *processes = events
    assert isinstance(host, SystemEvent)
    assert 0.0 <= host.cpu_percent <= 100.0 and host.cpu_count >= 1
    assert host.disk_path == str(tmp_path) and 0 < host.disk_used_bytes <= host.disk_total_bytes
    assert host.memory_available_bytes <= host.memory_total_bytes
    ours = [p for p in processes if isinstance(p, ProcessEvent) and p.pid == mlflow_like.pid]
    assert len(ours) == 1
    assert ours[0].process_group == "mlflow" and ours[0].rss_bytes > 0
    assert {e.sample_id for e in events} == {host.sample_id}
    assert len({e.doc_id for e in events}) == len(events)
    assert "1 xgbops process(es)" in system.summary([host, ours[0]])


def test_collect_takes_count_samples_and_waits_in_between(tmp_path):
    waits: list[float] = []
    samples = list(system.collect(tmp_path, 5.0, 3, measure_seconds=0.01, sleep=waits.append))
    assert len(samples) == 3 and len(waits) == 2
    assert all(0 < wait <= 5.0 for wait in waits)


def test_count_zero_samples_until_stopped(tmp_path):
    stream = system.collect(tmp_path, 0.01, 0, measure_seconds=0.001, sleep=lambda _: None)
    assert len(list(itertools.islice(stream, 4))) == 4


def test_a_summary_without_a_host_sample_says_so():
    assert system.summary([]) == "no system sample"


def test_a_process_that_ends_during_the_sample_is_left_out(tmp_path, monkeypatch):
    process = subprocess.Popen([sys.executable, "-c", "pass", "xgbops"])
    watched = psutil.Process(process.pid)
    process.wait()
    monkeypatch.setattr(system, "_watched", lambda: [(watched, "xgbops")])
    events = system.sample(tmp_path, measure_seconds=0.01)
    assert [type(e) for e in events] == [SystemEvent]
