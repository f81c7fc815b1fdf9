"""POST /retrain: token, one job at a time, rate limit, and a hot champion swap under load."""

from __future__ import annotations

import re
import shutil
import threading
from collections import Counter
import time

import pytest
from sqlalchemy.exc import OperationalError
from structlog.testing import capture_logs

from api.core.errors import Conflict, NotFound, TooManyRequests
from api.core.retrain import RetrainJobs
from api.core.history import migrate
from api.retrain_worker import HEARTBEAT_FILE, serve_jobs
from tests.api.conftest import SteadyLoad, start_server, stop_server
from tests.api.test_contract import EXAMPLE
from tests.conftest import make_project, project_settings
from xgbops.train import promote_version, train

TOKEN = "s3cret-token-for-tests"  # pragma: allowlist secret
FAST_ENV = {"XGBOPS_TRAIN__NUM_BOOST_ROUND": "60", "XGBOPS_TRAIN__EARLY_STOPPING_ROUNDS": "10"}
WEAK = {"num_boost_round": 2, "early_stopping_rounds": None, "params": {"max_depth": 1}}


@pytest.fixture(scope="module")
def weak_template(tmp_path_factory):
    """A project whose champion is a weak model, so retraining promotes a better one."""
    project = make_project(tmp_path_factory.mktemp("retrain") / "project")
    train(project_settings(project))
    train(project_settings(project, train=WEAK), promote=False)
    promote_version(project_settings(project), "2", force=True)
    return project


@pytest.fixture
def weak_champion(weak_template, tmp_path):
    """A private copy of the weak-champion project (retraining changes its registry)."""
    copy = tmp_path / "project"
    shutil.copytree(weak_template, copy)
    return copy


def _retrain_settings(project, monkeypatch, tmp_path, **serve):
    """Fast retraining of ``project`` with a migrated SQLite history of its own."""
    for name, value in FAST_ENV.items():
        monkeypatch.setenv(name, value)
    settings = project_settings(
        project, retrain_token=TOKEN, database_url=f"sqlite:///{tmp_path / 'h.db'}", serve=serve
    )
    migrate(settings.history_url)
    return settings


@pytest.fixture
def jobs(weak_champion, monkeypatch, tmp_path):
    settings = _retrain_settings(weak_champion, monkeypatch, tmp_path, retrain_per_hour=2)
    runner = RetrainJobs(settings)
    yield runner
    runner.wait()


def test_a_job_runs_one_at_a_time_reports_its_result_and_is_rate_limited(jobs):
    job = jobs.submit("10.0.0.1")
    assert job["status"] in {"queued", "running"} and len(job["job_id"]) == 32
    with pytest.raises(Conflict, match=job["job_id"]):
        jobs.submit("10.0.0.2")
    jobs.wait()
    done = jobs.get(job["job_id"])
    assert done["status"] == "succeeded", done["error"]
    assert done["result"]["promoted"] is True  # beats the weak champion
    assert done["result"]["metrics"]["roc_auc"] > 0.85
    assert done["finished_at"] >= done["started_at"] >= done["created_at"]

    second = jobs.submit("10.0.0.1")
    jobs.wait()
    assert jobs.get(second["job_id"])["result"]["promoted"] is False  # a tie keeps it
    with pytest.raises(TooManyRequests):
        jobs.submit("10.0.0.1")  # the third within the hour
    with pytest.raises(NotFound):
        jobs.get("0" * 32)


def test_a_failed_training_is_reported(jobs, weak_champion, monkeypatch):
    monkeypatch.setenv("XGBOPS_TRAIN__NUM_BOOST_ROUND", "0")  # invalid: training refuses
    with capture_logs() as logs:
        job = jobs.submit("10.0.0.3")
        jobs.wait()
    failed = jobs.get(job["job_id"])
    assert failed["status"] == "failed"
    # The client learns that it failed and where to look; the log has why, under the job's id.
    assert failed["error"] == (
        f"training failed (exit status 2); the log has the details under job {job['job_id']}"
    )
    logged = [e for e in logs if e["event"] == "retrain.training_failed"]
    assert logged and logged[0]["job_id"] == job["job_id"]
    assert any("num_boost_round" in line for line in logged[0]["stderr_tail"])


def _retrain_and_wait(server):
    """POST /retrain (checking 401 and 409 on the way) and poll the job until it ends."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with server.client() as client:
        assert client.post("/retrain").status_code == 401
        accepted = client.post("/retrain", headers=auth)
        assert accepted.status_code == 202, accepted.text
        assert client.post("/retrain", headers=auth).status_code == 409
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            job = client.get(accepted.headers["location"], headers=auth).json()
            if job["status"] in {"succeeded", "failed"}:
                return job
            time.sleep(0.5)
    raise AssertionError(f"retraining did not finish: {job}")


def test_retrain_under_load_swaps_the_champion_without_a_failed_request(weak_champion, tmp_path):
    server = start_server(
        "flask",
        weak_champion,
        tmp_path,
        XGBOPS_RETRAIN_TOKEN=TOKEN,
        XGBOPS_SERVE__WORKERS="2",
        DATABASE_URL=f"sqlite:///{tmp_path / 'history.db'}",
        **FAST_ENV,
    )
    try:
        with SteadyLoad(server.url, EXAMPLE, threads=3, keep_alive=False) as load:
            time.sleep(1)
            job = _retrain_and_wait(server)
            assert job["status"] == "succeeded", job
            assert job["result"]["promoted"] is True
            new_version = job["result"]["version"]
            time.sleep(3)  # every worker looks at the pointer at least once a second
            with server.client() as client:
                metrics = client.get("/metrics").text
    finally:
        stop_server(server)
    statuses = load.statuses
    versions = [answer["model_version"] for answer in load.answers]
    assert set(statuses) == {200}, statuses  # zero non-2xx during the swap
    assert versions[0] == "2" and versions[-1] == new_version
    # No worker left behind: each looks at the pointer once per reload interval (1 s), so a
    # request sent 2 s after the first answer from the new champion must get the new one.
    first_new = min(
        sent for sent, answer in load.timed_answers if answer["model_version"] == new_version
    )
    late = [
        answer["model_version"] for sent, answer in load.timed_answers if sent > first_new + 2.0
    ]
    assert late and set(late) == {new_version}, Counter(late)
    assert sum(statuses.values()) > 300
    # /metrics: every live worker serves the new version (1); the one it replaced reads 0.
    info = re.findall(r'^xgbops_model_info\{.*model_version="(\d+)".*\} (\S+)$', metrics, re.M)
    assert {value for version, value in info if version == new_version} == {"1.0"}
    assert {value for version, value in info if version == "2"} == {"0.0"}


# --------------------------------------------------------------- the queue (compose's retrainer)


@pytest.fixture
def queued_jobs(weak_champion, monkeypatch, tmp_path):
    """The API side and the worker side of the queue, on one history database."""
    settings = _retrain_settings(weak_champion, monkeypatch, tmp_path, retrain_runner="queue")
    return RetrainJobs(settings), RetrainJobs(settings)


def test_with_a_queue_the_api_records_the_job_and_the_worker_trains_it_once(queued_jobs, tmp_path):
    api, worker = queued_jobs
    job = api.submit("10.0.0.9")
    time.sleep(0.5)
    assert api.get(job["job_id"])["status"] == "queued"  # nothing trains in the API's process
    assert not api._threads  # pylint: disable=protected-access
    with pytest.raises(Conflict):
        api.submit("10.0.0.8")  # still one job at a time
    stop = threading.Event()
    heartbeat = tmp_path / HEARTBEAT_FILE
    ran: list[int] = []
    loop = threading.Thread(target=lambda: ran.append(serve_jobs(worker, stop, 0.05, heartbeat)))
    loop.start()
    deadline = time.monotonic() + 120
    while api.get(job["job_id"])["status"] == "queued":
        assert time.monotonic() < deadline, "the worker did not claim the job"
        time.sleep(0.05)
    assert RetrainJobs(api.settings).claim() is None  # claimed once, by one worker
    while api.get(job["job_id"])["status"] == "running":
        assert time.monotonic() < deadline, "the worker did not finish the job"
        time.sleep(0.2)
    stop.set()
    loop.join(timeout=10)
    done = api.get(job["job_id"])
    assert done["status"] == "succeeded" and done["result"]["promoted"] is True
    assert ran == [1] and heartbeat.is_file()


def test_the_retraining_worker_waits_out_a_database_outage(queued_jobs, tmp_path, monkeypatch):
    _, worker = queued_jobs

    def down() -> None:
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    monkeypatch.setattr(worker, "claim", down)
    stop = threading.Event()
    with capture_logs() as logs:
        loop = threading.Thread(
            target=serve_jobs, args=(worker, stop, 0.05, tmp_path / HEARTBEAT_FILE)
        )
        loop.start()
        time.sleep(0.3)
        stop.set()
        loop.join(timeout=10)
    assert any(e["event"] == "retrain.worker_database_unavailable" for e in logs)
    assert not (tmp_path / HEARTBEAT_FILE).exists()  # no heartbeat while the database is down
