"""Serving benchmark: the Flask and FastAPI apps against their frameworks' hello-world apps and
``mlflow models serve``, on loopback, in one run.

Run from the repository root (``make bench``)::

    .venv/bin/python -m benchmarks.serving [--duration 10] [--workers 2] [--strict] [--quick]

One run makes sure a champion is exported, then starts, one after the other, on free ports and
with the same number of workers: a Flask hello-world and a FastAPI hello-world under the
project's own gunicorn and uvicorn invocations (:mod:`benchmarks.hello`), the Flask app with and
without prediction recording and with a challenger shadowing every request, the FastAPI app
(each recording into its own database) and ``mlflow models serve`` of the same champion. Each
start is timed (process start to the first 200 on its predict endpoint with the real payload,
``--cold-starts`` times, the last start stays up), its answer checked and it is warmed up at 8
connections.

The machine's speed drifts by tens of percent within minutes, so the loads take turns: at 1 and
then at 8 connections, ``wrk`` drives each server for one second, one after the other, in
alternating order (A B C ..., then ... C B A), until each had about ``--duration`` seconds. A
server's slices are merged (all requests over all the time, percentiles of every request), so
every ratio compares servers that saw the same machine. Then the RSS of each server's worker
processes is read, ``/predict/batch`` is timed on our apps one request at a time (one worker
busy: rows/s per worker), the servers are stopped, the batch rows/s are compared with the
booster called in-process, every number is compared with MLflow's (targets) and with the
hello-world of the same framework (the project's goals), and the results are printed as one
markdown table plus the goals, and written to ``reports/bench.json``.

Exit status: 0, or 1 when a server failed to start (or, with ``--strict``, when a target
failed, a goal was missed or the probabilities differ).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import resource
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess  # nosec B404 - starts the servers and our own CLI, fixed commands
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import psutil

from xgbops.champion import CHALLENGER_ALIAS, POINTER_FILE, write_pointer
from xgbops.config import Settings, load_settings
from xgbops.predict import Predictor
from xgbops.rollout.state import new_rollout, write_state

from benchmarks import hello
from benchmarks.load import (
    JSON_HEADERS,
    LOADS,
    BatchResult,
    WrkResult,
    merge_runs,
    run_wrk,
    time_batch,
    time_in_process,
    write_lua,
)
from benchmarks.report import (
    OURS,
    SHADOW,
    Outcome,
    RssReport,
    ServerResult,
    WorkerRss,
    git_state,
    hello_of,
    judge,
    print_details,
    print_goals,
    render_table,
    write_json,
)

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
#: In start order, which is also the order of the load slices. "flask-unrecorded" is the Flask
#: app with prediction recording off: the cost of recording.
ALL_SERVERS = (
    hello_of("flask"),
    "flask",
    "flask-unrecorded",
    SHADOW,
    hello_of("fastapi"),
    "fastapi",
    "mlflow",
)
#: Seconds of one load slice (wrk runs whole seconds).
SLICE_S = 1
BUSY_CPU_PCT = 25.0
IN_PROCESS_REPEATS = 15
POLL_S = 0.02
STOP_TIMEOUT_S = 30.0
#: Processes that are part of a server's tree but serve no request.
HELPER_MARKERS = ("resource_tracker", "semaphore_tracker", "forkserver")
MB = 1024 * 1024
#: What ``--quick`` sets: every measurement once, briefly (a test runs it end to end).
QUICK = {"duration": 1.0, "warmup": 1.0, "cold_starts": 1, "batch_repeats": 10}


class ServerStartError(RuntimeError):
    """A server exited or did not answer 200 on its predict endpoint in time."""


#: What may go wrong while measuring one server; the others are still measured.
BENCH_ERRORS = (RuntimeError, ValueError, httpx.HTTPError, subprocess.TimeoutExpired)


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
    """Command-line options; ``--quick`` overrides the ones in :data:`QUICK`."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.serving", description=__doc__.split("\n\n", maxsplit=1)[0]
    )
    parser.add_argument("--workers", type=int, default=2, help="workers per server (default 2)")
    parser.add_argument(
        "--duration", type=float, default=10.0, help="seconds of load per server and load"
    )
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up at c8")
    parser.add_argument("--database-url", default=None, help="history DB for both apps")
    parser.add_argument("--batch-size", type=int, default=1_000, help="records per batch")
    parser.add_argument("--batch-repeats", type=int, default=30, help="timed batch requests")
    parser.add_argument(
        "--cold-starts", type=int, default=3, help="cold starts per server (median reported)"
    )
    parser.add_argument("--start-timeout", type=float, default=180.0, help="cold-start limit (s)")
    parser.add_argument(
        "--servers",
        default=",".join(ALL_SERVERS),
        help=f"comma-separated subset of {','.join(ALL_SERVERS)}",
    )
    parser.add_argument("--json", type=Path, default=None, help="default: reports/bench.json")
    parser.add_argument(
        "--strict", action="store_true", help="exit 1 when a target fails or a goal is missed"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="every measurement, briefly: "
        + " ".join(f"--{k.replace('_', '-')} {v:g}" for k, v in QUICK.items()),
    )
    args = parser.parse_args(argv)
    if args.quick:
        vars(args).update(QUICK)
    unknown = set(args.servers.split(",")) - set(ALL_SERVERS)
    if unknown:
        parser.error(f"unknown servers: {sorted(unknown)}")
    counts = (args.workers, args.batch_size, args.batch_repeats, args.cold_starts)
    if min(counts) < 1 or min(args.duration, args.warmup) <= 0:
        parser.error("--workers, --duration, --warmup, --batch-*, --cold-starts must be positive")
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
    if name == SHADOW:
        shadow_serving(settings.serving_path, state / "serving" / settings.model_name)
    else:
        (state / "serving").symlink_to(settings.state_path / "serving", target_is_directory=True)
    return state


def shadow_serving(champion: Path, serving: Path) -> None:
    """A serving folder where the champion's booster also shadows every request as challenger:
    a copy of the champion's, plus ``challenger.json`` and a shadow rollout at 100 %. The same
    booster makes the shadow cost exactly one more scoring and one more history row."""
    shutil.copytree(champion, serving, symlinks=False)
    pointer = json.loads((serving / POINTER_FILE).read_text(encoding="utf-8"))
    challenger = {**pointer, "alias": CHALLENGER_ALIAS, "version": f"{pointer['version']}-shadow"}
    write_pointer(serving, challenger, CHALLENGER_ALIAS)
    rollout = new_rollout("shadow", 100, str(pointer["version"]), challenger["version"])
    write_state(serving, rollout)


def app_spec(
    name: str, settings: Settings, root: Path, args: argparse.Namespace, body: bytes
) -> ServerSpec:
    """Gunicorn + Flask or uvicorn + FastAPI, prediction history on, private state and DB.

    ``hello-flask`` and ``hello-fastapi`` are the hello-world apps (:mod:`benchmarks.hello`)
    under the same server invocation, with the same settings.
    """
    port = free_port()
    database = args.database_url or f"sqlite:///{root / name}-history.db"
    env = base_env(
        XGBOPS_PROJECT_DIR=str(settings.project_dir),
        XGBOPS_STATE_DIR=str(app_state_dir(settings, root, name)),
        XGBOPS_LOG_FORMAT="json",
        DATABASE_URL=database,
        XGBOPS_SERVE__HOST="127.0.0.1",
        XGBOPS_SERVE__WORKERS=str(args.workers),
        XGBOPS_SERVE__BATCH_LIMIT=str(max(args.batch_size, settings.serve.batch_limit)),
    )
    is_hello = name.startswith(hello_of(""))
    if name.removeprefix(hello_of("")).startswith("flask"):
        command = [str(BIN / "gunicorn"), "--config", "python:api.gunicorn_conf"]
        if is_hello:
            command.append(f"{hello.__name__}:{hello.create_flask_app.__name__}()")
        env["XGBOPS_SERVE__PORT"] = str(port)
        if name == "flask-unrecorded":
            env["XGBOPS_SERVE__RECORD_PREDICTIONS"] = "false"
    else:
        module = hello.__name__ if is_hello else "api.fastapi_app"
        command = [str(BIN / "python"), "-m", module]
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
        process = subprocess.Popen(  # nosec B603 # pylint: disable=consider-using-with
            spec.command,
            cwd=REPO,
            env=spec.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return process, started


def log_tail(path: Path, lines: int = 80) -> str:
    """The last lines of a server log (enough to hold a worker's traceback before gunicorn's)."""
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


def stop_all(processes: Sequence[subprocess.Popen[bytes]]) -> None:
    """:func:`stop` every process at once (each may take seconds to stop gracefully)."""
    with ThreadPoolExecutor(max_workers=max(1, len(processes))) as pool:
        list(pool.map(stop, processes))


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


# -- memory and history ----------------------------------------------------------------------


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


def arm_rows(database_url: str) -> dict[str, int]:
    """Rows per rollout arm in a SQLite prediction history (empty when unreadable)."""
    if not database_url.startswith("sqlite:///"):
        return {}
    try:
        with sqlite3.connect(database_url.removeprefix("sqlite:///")) as connection:
            rows = connection.execute("SELECT arm, count(*) FROM predictions GROUP BY arm")
            return {str(arm): int(count) for arm, count in rows}
    except sqlite3.Error:
        return {}


def history_rows(database_url: str) -> int | None:
    """Rows in a SQLite prediction history (None for another database or when unreadable)."""
    if not database_url.startswith("sqlite:///"):
        return None
    try:
        with sqlite3.connect(database_url.removeprefix("sqlite:///")) as connection:
            return int(connection.execute("SELECT count(*) FROM predictions").fetchone()[0])
    except sqlite3.Error:
        return None


# -- running servers -------------------------------------------------------------------------


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


@dataclass
class Running:
    """A server that is up: how it was started, its process and what it measured so far."""

    spec: ServerSpec
    process: subprocess.Popen[bytes]
    result: ServerResult
    lua: Path
    #: Requests answered for sure (first 200s, warm-up, loads, batch rows).
    answered: int = 0


@dataclass
class _Slices:
    """One server's slices at one load, before they are merged."""

    runs: list[WrkResult] = field(default_factory=list)
    histogram: Counter[int] = field(default_factory=Counter)
    server_cpu_s: float = 0.0
    other_cpu_s: float = 0.0


def bring_up(
    spec: ServerSpec,
    args: argparse.Namespace,
    work: Path,
    processes: list[subprocess.Popen[bytes]],
) -> Running:
    """Cold-start the server (``processes`` lets the caller stop it), check it, warm it up.

    Raises:
        ServerStartError: it exited or did not answer 200 in time.
    """
    result = ServerResult(spec.name, spec.command, spec.url)
    result.background_cpu_pct = psutil.cpu_percent(interval=0.5)
    if result.background_cpu_pct > BUSY_CPU_PCT:
        print(f"[{spec.name}] warning: the machine is {result.background_cpu_pct:.0f}% busy")
    process, result.cold_starts_s, answer = cold_starts(spec, args, processes)
    result.cold_start_s = statistics.median(result.cold_starts_s)
    shown = f"[{spec.name}] up in {', '.join(f'{s:.2f}' for s in result.cold_starts_s)} s"
    if spec.name.startswith(hello_of("")):
        print(f"{shown}; {json.dumps(answer)}")
    else:
        result.probability = probability_of(spec.name, answer)
        print(f"{shown}; p={result.probability:.9f}")
    lua = write_lua(work / f"{spec.name}.lua", spec.body)
    connections, threads = LOADS["c8"]
    warmup, _ = run_wrk(spec.url + spec.predict_path, lua, connections, threads, args.warmup)
    return Running(spec, process, result, lua, len(result.cold_starts_s) + warmup.requests)


def drive(running: Running, load: str) -> tuple[WrkResult, Counter[int], float, float]:
    """One wrk slice of :data:`SLICE_S` seconds at ``load``.

    Returns:
        The run, its latency histogram, the server's CPU seconds, and the CPU seconds that
        processes other than the server, wrk and the bench used meanwhile (another load, or
        an idle server's background work, skews the numbers).
    """
    connections, threads = LOADS[load]
    pid = running.process.pid
    marks = (tree_cpu_seconds(pid), busy_cpu_seconds(), children_cpu_seconds(), time.process_time())
    spec = running.spec
    run, histogram = run_wrk(
        spec.url + spec.predict_path, running.lua, connections, threads, SLICE_S
    )
    server = tree_cpu_seconds(pid) - marks[0]
    ours = server + children_cpu_seconds() - marks[2] + time.process_time() - marks[3]
    return run, histogram, server, max(0.0, busy_cpu_seconds() - marks[1] - ours)


def drive_in_turns(running: list[Running], load: str, duration: float) -> None:
    """Drive every server at ``load`` in turns, about ``duration`` seconds each; merge.

    Rounds alternate the order (A B C, C B A, ...), so each server is as often early as late
    (give or take a round). A server that fails is dropped from the remaining rounds and from
    ``running`` (its error kept in its result).
    """
    rounds = math.ceil(duration / SLICE_S)
    slices = {r.spec.name: _Slices() for r in running}
    active = list(running)
    for round_ in range(rounds):
        for server in list(active) if round_ % 2 == 0 else active[::-1]:
            try:
                run, histogram, server_s, other_s = drive(server, load)
            except BENCH_ERRORS as exc:
                print(f"[{server.spec.name}] {load} FAILED: {exc}", file=sys.stderr)
                server.result.error = str(exc)
                active.remove(server)
                continue
            got = slices[server.spec.name]
            got.runs.append(run)
            got.histogram.update(histogram)
            got.server_cpu_s += server_s
            got.other_cpu_s += other_s
    for server in active:
        got = slices[server.spec.name]
        merged = merge_runs(got.runs, got.histogram)
        result = server.result
        result.loads[load] = merged
        result.cpu_ms_per_request[load] = got.server_cpu_s * 1000 / max(1, merged.requests)
        result.other_load_cores[load] = round(got.other_cpu_s / max(merged.duration_s, 0.001), 2)
        server.answered += merged.requests
        print(
            f"[{server.spec.name}] {load}: {merged.requests_per_s:,.0f} req/s,"
            f" p50 {merged.p50_ms:.2f} ms, p99 {merged.p99_ms:.2f} ms, errors {merged.errors},"
            f" server CPU {result.cpu_ms_per_request[load]:.2f} ms/request,"
            f" other load {result.other_load_cores[load]:.2f} cores"
            f" ({len(got.runs)} slices, {merged.duration_s:.1f} s)"
        )
    running[:] = active


def recording_ratio(results: Mapping[str, ServerResult]) -> float | None:
    """c1 requests/s of the Flask app recording over the one not recording, same run."""
    recorded, unrecorded = (
        results[name].loads.get("c1") if name in results else None
        for name in ("flask", "flask-unrecorded")
    )
    if recorded is None or unrecorded is None:
        return None
    ratio = recorded.requests_per_s / max(unrecorded.requests_per_s, 0.001)
    print(
        f"[recording cost] c1 in the same turns: recorded {recorded.requests_per_s:,.0f} req/s,"
        f" unrecorded {unrecorded.requests_per_s:,.0f} req/s, ratio {ratio:.3f}"
    )
    return ratio


def measure(
    specs: Sequence[ServerSpec],
    args: argparse.Namespace,
    work: Path,
    batch_body: bytes,
    processes: list[subprocess.Popen[bytes]],
) -> tuple[dict[str, ServerResult], bool]:
    """Bring every server up, drive them in turns, then read memory and time batches.

    Returns:
        Each server's result, and whether one failed to start.
    """
    results: dict[str, ServerResult] = {}
    running: list[Running] = []
    failed = False
    for spec in specs:
        try:
            running.append(bring_up(spec, args, work, processes))
            results[spec.name] = running[-1].result
        except BENCH_ERRORS as exc:
            failed = failed or isinstance(exc, ServerStartError)
            print(f"[{spec.name}] FAILED: {exc}", file=sys.stderr)
            results[spec.name] = ServerResult(spec.name, spec.command, spec.url, error=str(exc))
    for load in LOADS:
        drive_in_turns(running, load, args.duration)
    if "flask" in results:
        results["flask"].recording_ratio = recording_ratio(results)
    for server in running:
        server.result.rss = measure_rss(server.process.pid)
    for server in running:
        name, result = server.spec.name, server.result
        if name not in OURS:
            continue
        try:
            result.batch = time_batch(
                server.spec.url + "/predict/batch", batch_body, args.batch_size, args.batch_repeats
            )
        except BENCH_ERRORS as exc:
            print(f"[{name}] batch FAILED: {exc}", file=sys.stderr)
            result.error = str(exc)
            continue
        server.answered += (args.batch_repeats + 1) * args.batch_size
        print(f"[{name}] batch of {args.batch_size:,}: {result.batch.rows_per_s:,.0f} rows/s")
        result.rss_after_batch = measure_rss(server.process.pid)
    stop_all([server.process for server in running])  # the apps flush their history
    for server in running:
        if server.spec.name in OURS:
            server.result.history_rows = history_rows(server.spec.env["DATABASE_URL"])
            server.result.history_expected_min = server.answered
        if server.spec.name == SHADOW:
            server.result.arm_rows = arm_rows(server.spec.env["DATABASE_URL"])
    return results, failed


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


def server_specs(
    settings: Settings, work: Path, args: argparse.Namespace, example: Mapping[str, Any]
) -> list[ServerSpec]:
    """The servers ``--servers`` names, in :data:`ALL_SERVERS` order, each with its body."""
    record = json.dumps(example).encode()
    chosen = [name for name in ALL_SERVERS if name in args.servers.split(",")]
    return [
        (
            mlflow_spec(settings, work, args, json.dumps({"dataframe_records": [example]}).encode())
            if name == "mlflow"
            else app_spec(name, settings, work, args, record)
        )
        for name in chosen
    ]


def compare_in_process(
    model_dir: Path, records: Sequence[Mapping[str, Any]], example: Mapping[str, Any]
) -> tuple[BatchResult, float]:
    """The booster called in-process on the batch, and its probability for the example."""
    predictor = Predictor.from_directory(model_dir)
    predictor.model.booster.set_param({"nthread": 1})  # as each serving worker does
    in_process = time_in_process(predictor, records, IN_PROCESS_REPEATS)
    return in_process, float(predictor.predict_proba([example])[0])


def report(outcome: Outcome, args: argparse.Namespace, path: Path) -> None:
    """Print the table, the details and the goals; write the JSON report to ``path``."""
    table = render_table(outcome)
    print()
    print(table)
    print_details(outcome)
    print_goals(outcome.goals)
    code = git_state()
    print(f"code: commit {code['commit'][:12]}, modified: {', '.join(code['modified']) or 'none'}")
    write_json(path, vars(args), outcome, table, code)
    print(f"results: {path}")


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
    processes: list[subprocess.Popen[bytes]] = []
    with terminate_on_sigterm(), tempfile.TemporaryDirectory(prefix="xgbops-bench-") as tmp:
        try:
            specs = server_specs(settings, Path(tmp), args, example)
            batch_body = json.dumps({"records": records}).encode()
            results, failed = measure(specs, args, Path(tmp), batch_body, processes)
        finally:
            stop_all(processes)
    in_process, probability = compare_in_process(model_dir, records, example)
    probabilities = {n: r.probability for n, r in results.items() if r.probability is not None}
    probabilities["in-process"] = probability
    outcome = Outcome(results, in_process, probabilities)
    judge(outcome)
    report(outcome, args, args.json or settings.reports_path / "bench.json")
    if failed:
        return 1
    judged = [*outcome.targets, *outcome.goals]
    if args.strict and not (outcome.probabilities_agree and all(t.passed for t in judged)):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
