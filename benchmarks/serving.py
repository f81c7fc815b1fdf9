"""Serving benchmark: the Flask and FastAPI apps against ``mlflow models serve``, on loopback.

Run from the repository root (``make bench``)::

    .venv/bin/python -m tests.bench.bench [--duration 10] [--workers 2] [--strict]

One run makes sure a champion is exported, then, one server at a time (so that neither the cold
starts nor the loads compete for the two cores): starts it on a free port with the same number
of workers, times its cold start (process start to the first 200 on its predict endpoint with the
real payload), checks its answer, drives it with ``wrk`` at 1 and 8 connections, reads the RSS of
its worker processes, times ``/predict/batch`` (our apps only) and stops it. Finally the batch
rows/s are compared with the booster called in-process, every number is compared with MLflow's
and the results are printed as one markdown table and written to ``reports/bench.json``.

What recording costs is measured apart, because the machine's speed drifts by tens of percent
within minutes: the Flask app with and without recording run side by side, and ``wrk`` drives
them at one connection in short alternating slices (A B B A ...), so both see the same machine.

Exit status: 0, or 1 when a server failed to start (or, with ``--strict``, when a target failed
or the probabilities differ).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import resource
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import psutil

from xgbops.config import Settings, load_settings
from xgbops.predict import Predictor

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]
OURS = ("flask", "fastapi")
#: "flask-unrecorded" is the Flask app with prediction recording off: the cost of recording.
ALL_SERVERS = ("flask", "fastapi", "mlflow", "flask-unrecorded")
#: name -> (connections, wrk threads)
LOADS: dict[str, tuple[int, int]] = {"c1": (1, 1), "c8": (8, 2)}
WARMUP_S = 2
#: Alternating c1 slices of the recording-cost measurement: each server gets this many.
RECORDING_SLICES = 8
BUSY_CPU_PCT = 25.0
IN_PROCESS_REPEATS = 15
POLL_S = 0.02
STOP_TIMEOUT_S = 30.0
PROBABILITY_TOLERANCE = 1e-6
JSON_HEADERS = {"Content-Type": "application/json"}
#: Processes that are part of a server's tree but serve no request.
HELPER_MARKERS = ("resource_tracker", "semaphore_tracker", "forkserver")
MB = 1024 * 1024


class ServerStartError(RuntimeError):
    """A server exited or did not answer 200 on its predict endpoint in time."""


#: What may go wrong while measuring one server; the others are still measured.
BENCH_ERRORS = (RuntimeError, ValueError, httpx.HTTPError, subprocess.TimeoutExpired)


# -- results ---------------------------------------------------------------------------------


@dataclass
class WrkResult:
    """What one wrk run reported."""

    connections: int
    threads: int
    duration_s: float
    requests: int
    requests_per_s: float
    p50_ms: float
    p75_ms: float
    p90_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: dict[str, int]

    @property
    def errors(self) -> int:
        """Non-2xx/3xx answers plus socket errors (connect, read, write, timeout)."""
        return self.non_2xx + sum(self.socket_errors.values())


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
class BatchResult:
    """Timings of ``/predict/batch`` (or of the in-process call) on the same records."""

    records: int
    seconds: list[float]
    rows_per_s: float  # from the median time


@dataclass
class ServerResult:
    """Everything measured on one server."""

    name: str
    command: list[str]
    url: str
    cold_start_s: float | None = None  # median of cold_starts_s
    cold_starts_s: list[float] = field(default_factory=list)
    probability: float | None = None
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
    #: c1 requests/s with recording over without, measured side by side (flask only).
    recording_ratio: float | None = None
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
class ServerSpec:
    """How to start one server and what to send it."""

    name: str
    command: list[str]
    env: dict[str, str]
    port: int
    predict_path: str
    body: bytes
    log: Path

    @property
    def url(self) -> str:
        """Base URL on loopback."""
        return f"http://127.0.0.1:{self.port}"


# -- options and inputs ----------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.bench", description=__doc__.split("\n\n", maxsplit=1)[0]
    )
    parser.add_argument("--workers", type=int, default=2, help="workers per server (default 2)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--database-url", default=None, help="history DB for both apps")
    parser.add_argument("--batch-size", type=int, default=10_000, help="records per batch")
    parser.add_argument("--batch-repeats", type=int, default=3, help="timed batch requests")
    parser.add_argument(
        "--cold-starts", type=int, default=3, help="cold starts per server (median reported)"
    )
    parser.add_argument("--start-timeout", type=float, default=180.0, help="cold-start limit (s)")
    parser.add_argument(
        "--servers",
        default=",".join(ALL_SERVERS),
        help="comma-separated subset of flask,fastapi,mlflow",
    )
    parser.add_argument("--json", type=Path, default=None, help="default: reports/bench.json")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target fails")
    args = parser.parse_args(argv)
    unknown = set(args.servers.split(",")) - set(ALL_SERVERS)
    if unknown:
        parser.error(f"unknown servers: {sorted(unknown)}")
    counts = (args.workers, args.batch_size, args.batch_repeats, args.cold_starts)
    if min(counts) < 1 or args.duration <= 0:
        parser.error("--workers, --duration, --batch-*, --cold-starts must be positive")
    return args


def ensure_champion(settings: Settings, timeout: float = 900.0) -> Path:
    """Train and export a champion if none is exported; return its serving model directory.

    Raises:
        ServerStartError: there is still no exported champion afterwards.
    """
    pointer_path = settings.serving_path / "current.json"
    if not pointer_path.is_file():
        print(f"no exported champion at {pointer_path}: training (skipped if one exists)")
        for step in (["train", "--skip-if-champion"], ["export-champion"]):
            subprocess.run(  # nosec B603 - our own CLI, fixed arguments
                [str(BIN / "xgbops"), *step], cwd=settings.project_dir, check=True, timeout=timeout
            )
    try:
        pointer = json.loads(pointer_path.read_text(encoding="utf-8"))
        return settings.serving_path / str(pointer["model_dir"])
    except (OSError, ValueError, KeyError) as exc:
        raise ServerStartError(f"no usable champion pointer at {pointer_path}: {exc}") from exc


def feature_types(settings: Settings) -> dict[str, type]:
    """Python type of each feature in a request: int for whole numbers, float, or str."""
    types: dict[str, type] = {}
    for feature in settings.dataset.features:
        if feature.type == "categorical":
            types[feature.name] = str
        else:
            types[feature.name] = int if feature.integer else float
    return types


def coerce_record(raw: Mapping[str, Any], types: Mapping[str, type]) -> dict[str, Any]:
    """The record with each feature typed as the dataset says (``10`` -> ``10.0`` for a double).

    MLflow's signature types whole-number features as long and the others as double, so a
    double column must travel as a JSON float; missing or empty values stay None.
    """
    record: dict[str, Any] = {}
    for name, kind in types.items():
        value = raw.get(name)
        if value is None or (isinstance(value, str) and kind is not str and not value.strip()):
            record[name] = None
        elif kind is int:
            record[name] = int(float(value))
        else:
            record[name] = kind(value)
    return record


def load_example(settings: Settings) -> dict[str, Any]:
    """``data/example.json`` typed per the dataset configuration."""
    path = settings.project_dir / "data" / "example.json"
    return coerce_record(json.loads(path.read_text(encoding="utf-8")), feature_types(settings))


def batch_records(settings: Settings, count: int) -> list[dict[str, Any]]:
    """``count`` records cycling through the dataset CSV's rows, typed, without the target."""
    types = feature_types(settings)
    with settings.data_path.open(newline="", encoding="utf-8") as handle:
        rows = [coerce_record(row, types) for row in csv.DictReader(handle)]
    if not rows:
        raise ValueError(f"{settings.data_path} has no rows")
    return [rows[i % len(rows)] for i in range(count)]


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- servers ---------------------------------------------------------------------------------


def base_env(**extra: str) -> dict[str, str]:
    """The caller's environment without serving/metrics leftovers, plus ``extra``."""
    dropped = ("XGBOPS_SERVE__", "PROMETHEUS_MULTIPROC_DIR", "DATABASE_URL", "XGBOPS_DATABASE_URL")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["OMP_NUM_THREADS"] = "1"  # all three servers: one XGBoost thread per worker
    env.update(extra)
    return env


def app_state_dir(settings: Settings, root: Path, name: str) -> Path:
    """A private state directory for one app, sharing only the exported champion.

    The apps keep their spool, metrics files and migration lock in the state directory; a
    private one keeps the bench away from the project's (a stale spool there would otherwise be
    replayed into the bench's database).
    """
    state = root / f"{name}-state"
    state.mkdir(parents=True)
    (state / "serving").symlink_to(settings.state_path / "serving", target_is_directory=True)
    return state


def app_spec(
    name: str, settings: Settings, root: Path, args: argparse.Namespace, body: bytes
) -> ServerSpec:
    """Gunicorn + Flask or uvicorn + FastAPI, prediction history on, private state and DB."""
    port = free_port()
    database = args.database_url or f"sqlite:///{root / name}-history.db"
    env = base_env(
        XGBOPS_PROJECT_DIR=str(settings.project_dir),
        XGBOPS_STATE_DIR=str(app_state_dir(settings, root, name)),
        XGBOPS_LOG_FORMAT="json",
        DATABASE_URL=database,
        XGBOPS_SERVE__HOST="127.0.0.1",
        XGBOPS_SERVE__WORKERS=str(args.workers),
        XGBOPS_SERVE__BATCH_LIMIT=str(args.batch_size),
    )
    if name.startswith("flask"):
        command = [str(BIN / "gunicorn"), "--config", "python:api.gunicorn_conf"]
        env["XGBOPS_SERVE__PORT"] = str(port)
        if name == "flask-unrecorded":
            env["XGBOPS_SERVE__RECORD_PREDICTIONS"] = "false"
    else:
        command = [str(BIN / "python"), "-m", "api.fastapi_app"]
        env["XGBOPS_SERVE__FASTAPI_PORT"] = str(port)
    return ServerSpec(name, command, env, port, "/predict", body, root / f"{name}.log")


def mlflow_spec(
    settings: Settings, root: Path, args: argparse.Namespace, body: bytes
) -> ServerSpec:
    """``mlflow models serve`` of ``models:/<name>@champion`` from the embedded store."""
    port = free_port()
    env = {k: v for k, v in base_env().items() if not k.startswith(("MLFLOW_", "XGBOPS_"))}
    env["MLFLOW_TRACKING_URI"] = settings.tracking_uri
    command = [
        str(BIN / "mlflow"),
        "models",
        "serve",
        "-m",
        f"models:/{settings.model_name}@champion",
        "--env-manager",
        "local",
        "--workers",
        str(args.workers),
        "-p",
        str(port),
        "-h",
        "127.0.0.1",
    ]
    return ServerSpec("mlflow", command, env, port, "/invocations", body, root / "mlflow.log")


def start(spec: ServerSpec) -> tuple[subprocess.Popen[bytes], float]:
    """Start the server in its own session; returns the process and its start time."""
    with spec.log.open("wb") as log:
        started = time.monotonic()
        process = subprocess.Popen(  # nosec B603 - fixed commands built above
            spec.command,
            cwd=REPO,
            env=spec.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return process, started


def log_tail(path: Path, lines: int = 30) -> str:
    """The last lines of a server log."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_first_200(
    spec: ServerSpec, process: subprocess.Popen[bytes], started: float, timeout: float
) -> tuple[float, dict[str, Any]]:
    """Poll the predict endpoint every 20 ms; return the cold start (s) and the first answer.

    Raises:
        ServerStartError: the process exited, or no 200 came within ``timeout`` seconds.
    """
    deadline = started + timeout
    url = spec.url + spec.predict_path
    with httpx.Client(timeout=10.0) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise ServerStartError(
                    f"{spec.name} exited with {process.returncode}:\n{log_tail(spec.log)}"
                )
            remaining = max(0.05, deadline - time.monotonic())
            try:
                response = client.post(
                    url, content=spec.body, headers=JSON_HEADERS, timeout=min(10.0, remaining)
                )
                if response.status_code == 200:
                    return time.monotonic() - started, dict(response.json())
            except httpx.HTTPError:
                pass
            time.sleep(POLL_S)
    raise ServerStartError(f"{spec.name}: no 200 within {timeout:.0f} s:\n{log_tail(spec.log)}")


def stop(process: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM the server and every process under it, wait, then SIGKILL what is left.

    A server already reaped is left alone: its pid may belong to another process by now.
    """
    if process.returncode is not None:
        return
    try:
        tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(True)]
    except psutil.NoSuchProcess:
        tree = []
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)  # gunicorn/uvicorn stop their workers (history flushed)
        except subprocess.TimeoutExpired:
            pass
    alive = [p for p in tree if p.is_running() and p.pid != process.pid]
    for proc in alive:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(alive, timeout=5)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    if process.poll() is None:
        process.kill()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        print(f"warning: pid {process.pid} survived SIGKILL", file=sys.stderr)


def probability_of(name: str, answer: Mapping[str, Any]) -> float:
    """The positive-class probability in a server's answer to one record.

    Raises:
        RuntimeError: the answer holds no probability.
    """
    try:
        if name == "mlflow":
            return float(answer["predictions"][0]["probability"])
        return float(answer["probability"])
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise RuntimeError(f"{name}: no probability in {json.dumps(answer)[:300]}") from exc


# -- load, memory, batch ---------------------------------------------------------------------


def write_lua(path: Path, body: bytes) -> Path:
    """A wrk script that POSTs ``body`` as JSON."""
    text = body.decode("utf-8")
    level = "="
    while f"]{level}]" in text:
        level += "="
    path.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = [{level}[{text}]{level}]\n",
        encoding="utf-8",
    )
    return path


_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def to_ms(value: str, unit: str) -> float:
    """A wrk time (``635.91us``, ``1.2ms``, ``2.00s``) in milliseconds."""
    return float(value) * _UNITS_MS[unit]


def parse_wrk(output: str, connections: int, threads: int) -> WrkResult:
    """Requests/s, latency percentiles and errors from ``wrk --latency`` output.

    Raises:
        ValueError: the output lacks the summary (wrk failed).
    """
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m|h)", output)
    if not rps or not total:
        raise ValueError(f"unexpected wrk output:\n{output}")
    percentiles = {
        int(m.group(1)): to_ms(m.group(2), m.group(3))
        for m in re.finditer(r"^\s*(\d+)%\s+([\d.]+)(us|ms|s|m|h)\s*$", output, re.MULTILINE)
    }
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    socket_errors = dict(
        zip(
            ("connect", "read", "write", "timeout"),
            (int(x) for x in sockets.groups()) if sockets else (0, 0, 0, 0),
        )
    )
    return WrkResult(
        connections=connections,
        threads=threads,
        duration_s=to_ms(total.group(2), total.group(3)) / 1000,
        requests=int(total.group(1)),
        requests_per_s=float(rps.group(1)),
        p50_ms=percentiles.get(50, math.nan),
        p75_ms=percentiles.get(75, math.nan),
        p90_ms=percentiles.get(90, math.nan),
        p99_ms=percentiles.get(99, math.nan),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=socket_errors,
    )


def run_wrk(url: str, lua: Path, connections: int, threads: int, duration: float) -> WrkResult:
    """One wrk run against ``url``; bounded by ``duration`` + 60 s."""
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--latency",
        "-s",
        str(lua),
        url,
    ]
    done = subprocess.run(  # nosec B603 B607 - wrk on loopback
        command, capture_output=True, text=True, timeout=duration + 60, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr}{done.stdout}")
    return parse_wrk(done.stdout, connections, threads)


def _is_helper(proc: psutil.Process) -> bool:
    try:
        cmdline = " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return True
    return any(marker in cmdline for marker in HELPER_MARKERS)


def worker_processes(root_pid: int) -> list[psutil.Process]:
    """The processes that serve requests: the leaves of the server's process tree.

    gunicorn: the master's children; uvicorn (our FastAPI app and ``mlflow models serve``,
    which runs ``mlflow`` -> ``uvicorn`` -> workers): the supervisor's spawned children.
    multiprocessing helpers (resource tracker) are left out; a lone process is its own worker.
    """
    root = psutil.Process(root_pid)
    tree = [root, *root.children(recursive=True)]
    leaves = [p for p in tree if not p.children() and not _is_helper(p)]
    return leaves or [root]


def _memory(proc: psutil.Process) -> tuple[float, float | None]:
    try:
        full = proc.memory_full_info()
        return full.rss / MB, full.uss / MB
    except psutil.AccessDenied:
        return proc.memory_info().rss / MB, None


def _describe(proc: psutil.Process) -> WorkerRss:
    rss, uss = _memory(proc)
    cmdline = " ".join(proc.cmdline())
    return WorkerRss(
        proc.pid, proc.name(), cmdline[:120], round(rss, 1), None if uss is None else round(uss, 1)
    )


def measure_rss(root_pid: int) -> RssReport:
    """RSS (and USS) of each worker, their mean, the other processes and the tree's total."""
    root = psutil.Process(root_pid)
    tree = [root, *root.children(recursive=True)]
    chosen = {p.pid for p in worker_processes(root_pid)}
    workers = [_describe(p) for p in tree if p.pid in chosen]
    others = [_describe(p) for p in tree if p.pid not in chosen]
    return RssReport(
        workers=workers,
        per_worker_mb=round(statistics.mean(w.rss_mb for w in workers), 1),
        tree_total_mb=round(sum(w.rss_mb for w in workers + others), 1),
        others=others,
    )


def _median_rate(records: int, seconds: list[float]) -> BatchResult:
    return BatchResult(
        records, [round(s, 4) for s in seconds], records / statistics.median(seconds)
    )


def time_batch(url: str, body: bytes, records: int, repeats: int) -> BatchResult:
    """POST the batch once to warm up, then ``repeats`` times; rows/s from the median time.

    Raises:
        RuntimeError: an answer is not a 200 holding one prediction per record.
    """
    seconds = []
    with httpx.Client(timeout=300.0) as client:
        for attempt in range(repeats + 1):
            began = time.perf_counter()
            response = client.post(url, content=body, headers=JSON_HEADERS)
            elapsed = time.perf_counter() - began
            if response.status_code != 200 or response.json().get("count") != records:
                raise RuntimeError(f"batch: {response.status_code} {response.text[:300]}")
            if attempt:
                seconds.append(elapsed)
    return _median_rate(records, seconds)


def time_in_process(
    predictor: Predictor, records: Sequence[Mapping[str, Any]], repeats: int
) -> BatchResult:
    """``predict_proba`` (featurise + predict) on the same records, warm-up then ``repeats``."""
    seconds = []
    for attempt in range(repeats + 1):
        began = time.perf_counter()
        predictor.predict_proba(records)
        if attempt:
            seconds.append(time.perf_counter() - began)
    return _median_rate(len(records), seconds)


def history_rows(database_url: str) -> int | None:
    """Rows in a SQLite prediction history (None for another database or when unreadable)."""
    if not database_url.startswith("sqlite:///"):
        return None
    try:
        with sqlite3.connect(database_url.removeprefix("sqlite:///")) as connection:
            return int(connection.execute("SELECT count(*) FROM predictions").fetchone()[0])
    except sqlite3.Error:
        return None


# -- one server ------------------------------------------------------------------------------


def tree_cpu_seconds(root_pid: int) -> float:
    """User + system CPU time used so far by a process and everything under it."""
    root = psutil.Process(root_pid)
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def cold_starts(
    spec: ServerSpec, args: argparse.Namespace, processes: list[subprocess.Popen[bytes]]
) -> tuple[subprocess.Popen[bytes], list[float], dict[str, Any]]:
    """Start the server ``--cold-starts`` times (stopping all but the last); the last one runs.

    Returns:
        The running process, every cold start in seconds, and the last first answer.
    """
    seconds: list[float] = []
    while True:
        process, started = start(spec)
        processes.append(process)
        try:
            cold, answer = wait_first_200(spec, process, started, args.start_timeout)
        except ServerStartError:
            stop(process)
            raise
        seconds.append(cold)
        if len(seconds) >= args.cold_starts:
            return process, seconds, answer
        stop(process)


def busy_cpu_seconds() -> float:
    """CPU time the whole machine has spent busy since boot (all cores)."""
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


def children_cpu_seconds() -> float:
    """CPU time of this process's reaped children (wrk, once it has exited)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def drive(
    spec: ServerSpec, lua: Path, pid: int, load: str, duration: float, label: str = ""
) -> tuple[WrkResult, float, float]:
    """One wrk run at ``load``.

    Returns:
        The run, the server's CPU milliseconds per request, and the cores that processes other
        than the server, wrk and the bench kept busy meanwhile (another load skews the numbers).
    """
    connections, threads = LOADS[load]
    marks = (tree_cpu_seconds(pid), busy_cpu_seconds(), children_cpu_seconds(), time.process_time())
    run = run_wrk(spec.url + spec.predict_path, lua, connections, threads, duration)
    server = tree_cpu_seconds(pid) - marks[0]
    ours = server + children_cpu_seconds() - marks[2] + time.process_time() - marks[3]
    other_cores = max(0.0, busy_cpu_seconds() - marks[1] - ours) / max(run.duration_s, 0.001)
    cpu_ms = server * 1000 / max(1, run.requests)
    print(
        f"[{spec.name}] {label or load}: {run.requests_per_s:,.0f} req/s, p50 {run.p50_ms:.2f} ms,"
        f" p99 {run.p99_ms:.2f} ms, errors {run.errors}, server CPU {cpu_ms:.2f} ms/request,"
        f" other load {other_cores:.2f} cores"
    )
    return run, cpu_ms, other_cores


def bench_server(
    spec: ServerSpec,
    args: argparse.Namespace,
    work: Path,
    batch_body: bytes | None,
    processes: list[subprocess.Popen[bytes]],
) -> ServerResult:
    """Start one server, measure it, stop it (``processes`` lets the caller stop it too)."""
    result = ServerResult(spec.name, spec.command, spec.url)
    result.background_cpu_pct = psutil.cpu_percent(interval=1.0)
    if result.background_cpu_pct > BUSY_CPU_PCT:
        print(f"[{spec.name}] warning: the machine is {result.background_cpu_pct:.0f}% busy")
    process, result.cold_starts_s, answer = cold_starts(spec, args, processes)
    try:
        result.cold_start_s = statistics.median(result.cold_starts_s)
        result.probability = probability_of(spec.name, answer)
        shown = ", ".join(f"{s:.2f}" for s in result.cold_starts_s)
        print(f"[{spec.name}] up in {shown} s; p={result.probability:.9f}")
        lua = write_lua(work / f"{spec.name}.lua", spec.body)
        warmup, _, _ = drive(spec, lua, process.pid, "c8", WARMUP_S, "warm-up c8")
        answered = len(result.cold_starts_s) + warmup.requests
        for load in LOADS:
            result.loads[load], result.cpu_ms_per_request[load], other = drive(
                spec, lua, process.pid, load, args.duration
            )
            result.other_load_cores[load] = round(other, 2)
            answered += result.loads[load].requests
        result.rss = measure_rss(process.pid)
        if batch_body is not None:
            result.batch = time_batch(
                spec.url + "/predict/batch", batch_body, args.batch_size, args.batch_repeats
            )
            answered += (args.batch_repeats + 1) * args.batch_size
            print(f"[{spec.name}] batch: {result.batch.rows_per_s:,.0f} rows/s")
            result.rss_after_batch = measure_rss(process.pid)
    finally:
        stop(process)
    if spec.name in OURS:
        result.history_rows = history_rows(spec.env["DATABASE_URL"])
        result.history_expected_min = answered
    return result


def recording_cost(
    specs: tuple[ServerSpec, ServerSpec],
    args: argparse.Namespace,
    work: Path,
    processes: list[subprocess.Popen[bytes]],
) -> float:
    """c1 requests/s of the recording server over the unrecorded one, driven side by side.

    Both servers are up at once; ``wrk`` alternates between them in slices of
    ``args.duration / RECORDING_SLICES`` seconds (A B, then B A, ...), so a drift in the
    machine's speed falls on both alike. Returns the ratio of the summed rates.
    """
    started = []
    for spec in specs:
        process, at = start(spec)
        processes.append(process)
        started.append((spec, process, at))
    luas = {}
    for spec, process, at in started:
        wait_first_200(spec, process, at, args.start_timeout)
        luas[spec.name] = write_lua(work / f"{spec.name}-interleaved.lua", spec.body)
        run_wrk(spec.url + spec.predict_path, luas[spec.name], 8, 2, WARMUP_S)
    requests = {spec.name: 0 for spec in specs}
    seconds = {spec.name: 0.0 for spec in specs}
    slice_s = max(0.5, args.duration / RECORDING_SLICES)
    try:
        for round_ in range(RECORDING_SLICES):
            for spec in specs if round_ % 2 == 0 else specs[::-1]:
                run = run_wrk(spec.url + spec.predict_path, luas[spec.name], 1, 1, slice_s)
                requests[spec.name] += run.requests
                seconds[spec.name] += run.duration_s
    finally:
        for _, process, _ in started:
            stop(process)
    rates = {name: requests[name] / max(seconds[name], 0.001) for name in requests}
    recorded, unrecorded = (rates[spec.name] for spec in specs)
    print(
        f"[recording cost] c1 side by side, {RECORDING_SLICES} alternating slices of "
        f"{slice_s:.2f} s each: recorded {recorded:,.0f} req/s, unrecorded {unrecorded:,.0f} "
        f"req/s, ratio {recorded / max(unrecorded, 0.001):.3f}"
    )
    return recorded / max(unrecorded, 0.001)


# -- targets and report ----------------------------------------------------------------------


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
            # connections moves the rate more than recording does. Side by side: see
            # recording_cost (one server after the other, the machine's drift dominated).
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


def render_table(
    results: Mapping[str, ServerResult], targets: Sequence[Target], in_process: BatchResult | None
) -> str:
    """One markdown table: a row per server and load, ratios vs mlflow with PASS/FAIL."""
    found = {(t.server, t.name): t for t in targets}
    lines = [TABLE_HEADER, "|" + "---|" * (TABLE_HEADER.count(" | ") + 1)]
    for result in results.values():
        lines += [table_row(result, load, found) for load in LOADS]
    if in_process is not None:
        cells = ["in-process", "batch", *[""] * 10, f"{in_process.rows_per_s:,.0f} (ref)"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _processes(found: Sequence[WorkerRss]) -> str:
    return "; ".join(
        f"pid {w.pid} [{w.cmdline[-60:]}] rss {w.rss_mb:.1f} MB"
        + (f" uss {w.uss_mb:.1f} MB" if w.uss_mb is not None else "")
        for w in found
    )


def probabilities_of(
    results: Mapping[str, ServerResult], in_process: float | None
) -> dict[str, float]:
    """Each server's probability for the example, and the in-process one."""
    found = {n: r.probability for n, r in results.items() if r.probability is not None}
    if in_process is not None:
        found["in-process"] = in_process
    return found


def print_details(
    results: Mapping[str, ServerResult],
    in_process: BatchResult | None,
    targets: Sequence[Target],
    probabilities: Mapping[str, float],
) -> None:
    """Probabilities, counted worker processes and the target summary."""
    if probabilities:
        spread = max(probabilities.values()) - min(probabilities.values())
        verdict = "PASS" if spread <= PROBABILITY_TOLERANCE else "FAIL"
        shown = ", ".join(f"{n}={p:.9f}" for n, p in probabilities.items())
        print(f"\nprobability of data/example.json: {shown}; max |diff| {spread:.2e} {verdict}")
    for name, res in results.items():
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
        if res.history_rows is not None:
            print(
                f"{name} prediction history: {res.history_rows:,} rows recorded,"
                f" >= {res.history_expected_min or 0:,} answered"
            )
    if in_process is not None:
        print(f"in-process Predictor.predict_proba: {in_process.rows_per_s:,.0f} rows/s")
    passed = sum(t.passed for t in targets)
    print(f"targets: {passed}/{len(targets)} PASS")


def git_state() -> dict[str, Any]:
    """The commit benchmarked and the files that differ from it (the code served may differ)."""

    def git(*arguments: str) -> str:
        done = subprocess.run(  # nosec B603 B607 - fixed git commands
            ["git", *arguments], cwd=REPO, capture_output=True, text=True, timeout=30, check=False
        )
        return done.stdout.rstrip("\n")  # keep the status column of the first line

    return {
        "commit": git("rev-parse", "HEAD"),
        "modified": git("status", "--porcelain", "--", "api", "src", "config").splitlines(),
    }


def write_json(
    path: Path,
    args: argparse.Namespace,
    results: Mapping[str, ServerResult],
    in_process: BatchResult | None,
    targets: Sequence[Target],
    table: str,
    probabilities: Mapping[str, float],
    code: Mapping[str, Any],
) -> None:
    """The same results as JSON."""
    values = list(probabilities.values())
    document = {
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "host": {"cpus": os.cpu_count(), "load_avg": os.getloadavg()},
        "git": code,
        "loads": {k: {"connections": c, "threads": t} for k, (c, t) in LOADS.items()},
        "servers": {name: asdict(res) for name, res in results.items()},
        "in_process_batch": asdict(in_process) if in_process else None,
        "probabilities": dict(probabilities),
        "probability_max_abs_diff": max(values) - min(values) if values else None,
        "targets": [{**asdict(t), "passed": t.passed, "verdict": t.verdict} for t in targets],
        "table": table,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, default=str), encoding="utf-8")


# -- main ------------------------------------------------------------------------------------


@contextmanager
def terminate_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into SystemExit so that ``finally`` blocks stop the servers."""

    def handler(signum: int, frame: FrameType | None) -> None:
        del frame
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the whole benchmark; see the module docstring for the exit status."""
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed", file=sys.stderr)
        return 1
    settings = load_settings()
    model_dir = ensure_champion(settings)
    example = load_example(settings)
    records = batch_records(settings, args.batch_size)
    batch_body = json.dumps({"records": records}).encode()
    bodies = {
        "flask": json.dumps(example).encode(),
        "flask-unrecorded": json.dumps(example).encode(),
        "fastapi": json.dumps(example).encode(),
        "mlflow": json.dumps({"dataframe_records": [example]}).encode(),
    }
    results: dict[str, ServerResult] = {}
    processes: list[subprocess.Popen[bytes]] = []
    failed = False
    with terminate_on_sigterm(), tempfile.TemporaryDirectory(prefix="xgbops-bench-") as tmp:
        work = Path(tmp)
        try:
            for name in [s for s in ALL_SERVERS if s in args.servers.split(",")]:
                spec = (
                    mlflow_spec(settings, work, args, bodies[name])
                    if name == "mlflow"
                    else app_spec(name, settings, work, args, bodies[name])
                )
                try:
                    body = batch_body if name in OURS else None
                    results[name] = bench_server(spec, args, work, body, processes)
                except BENCH_ERRORS as exc:
                    failed = failed or isinstance(exc, ServerStartError)
                    print(f"[{name}] FAILED: {exc}", file=sys.stderr)
                    results[name] = ServerResult(name, spec.command, spec.url, error=str(exc))
            pair = ("flask", "flask-unrecorded")
            if all(name in results and not results[name].error for name in pair):
                side = work / "side-by-side"  # fresh state and history for both
                side.mkdir()
                specs = tuple(app_spec(n, settings, side, args, bodies[n]) for n in pair)
                try:
                    results["flask"].recording_ratio = recording_cost(
                        (specs[0], specs[1]), args, work, processes
                    )
                except BENCH_ERRORS as exc:
                    print(f"[recording cost] FAILED: {exc}", file=sys.stderr)
        finally:
            for process in processes:
                stop(process)
    predictor = Predictor.from_directory(model_dir)
    predictor.model.booster.set_param({"nthread": 1})  # as each serving worker does
    in_process = time_in_process(predictor, records, IN_PROCESS_REPEATS)
    probabilities = probabilities_of(results, float(predictor.predict_proba([example])[0]))
    targets = evaluate_targets(results, in_process)
    table = render_table(results, targets, in_process)
    print()
    print(table)
    print_details(results, in_process, targets, probabilities)
    path = args.json or settings.reports_path / "bench.json"
    code = git_state()
    print(f"code: commit {code['commit'][:12]}, modified: {', '.join(code['modified']) or 'none'}")
    write_json(path, args, results, in_process, targets, table, probabilities, code)
    print(f"results: {path}")
    if failed:
        return 1
    same = not probabilities or (
        max(probabilities.values()) - min(probabilities.values()) <= PROBABILITY_TOLERANCE
    )
    if args.strict and not (same and all(t.passed for t in targets)):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
