"""Load generation for the serving benchmark: wrk runs and their merge, timed batches.

``wrk`` drives one URL with one JSON body for whole seconds. A script of ours makes it also
print its latency histogram (microseconds -> requests), so that runs cut into slices (one
server after another, a second each) can be merged into one exact set of percentiles.
"""

from __future__ import annotations

import math
import re
import statistics
import subprocess  # nosec B404 - runs wrk, a fixed command on loopback
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from xgbops.predict import Predictor

JSON_HEADERS = {"Content-Type": "application/json"}
#: name -> (connections, wrk threads)
LOADS: dict[str, tuple[int, int]] = {"c1": (1, 1), "c8": (8, 2)}
#: Percentiles kept of every run.
PERCENTILES = (50, 75, 90, 99)


@dataclass
class WrkResult:
    """What one wrk run reported (or several runs at the same load, merged)."""

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
class BatchResult:
    """Timings of ``/predict/batch`` (or of the in-process call) on the same records."""

    records: int
    seconds: list[float]
    rows_per_s: float  # from the median time


def write_lua(path: Path, body: bytes) -> Path:
    """A wrk script that POSTs ``body`` as JSON and prints the latency histogram at the end."""
    text = body.decode("utf-8")
    level = "="
    while f"]{level}]" in text:
        level += "="
    path.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = [{level}[{text}]{level}]\n"
        "done = function(summary, latency, requests)\n"
        "  for i = 1, #latency do\n"
        "    local value, count = latency(i)\n"
        '    io.write(string.format("latency-us %d %d\\n", value, count))\n'
        "  end\n"
        "end\n",
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


def parse_histogram(output: str) -> Counter[int]:
    """The latency histogram our script prints: microseconds -> requests."""
    return Counter(
        {
            int(m.group(1)): int(m.group(2))
            for m in re.finditer(r"^latency-us (\d+) (\d+)$", output, re.MULTILINE)
        }
    )


def run_wrk(
    url: str, lua: Path, connections: int, threads: int, duration: float
) -> tuple[WrkResult, Counter[int]]:
    """One wrk run against ``url`` (whole seconds, at least one); bounded by ``duration`` + 60 s.

    Returns:
        The run and its latency histogram.

    Raises:
        RuntimeError: wrk exited non-zero.
    """
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
    return parse_wrk(done.stdout, connections, threads), parse_histogram(done.stdout)


def percentile_ms(histogram: Mapping[int, int], percent: float) -> float:
    """The ``percent``-th percentile of a microsecond histogram, in ms, ranked as wrk ranks.

    NaN for an empty histogram.
    """
    total = sum(histogram.values())
    if not total:
        return math.nan
    rank = math.floor(percent / 100 * total + 1.0)  # wrk: C's round(p / 100 * count + 0.5)
    seen = 0
    for value in sorted(histogram):
        seen += histogram[value]
        if seen >= rank:
            return value / 1000
    return max(histogram) / 1000


def merge_runs(runs: Sequence[WrkResult], histogram: Mapping[int, int]) -> WrkResult:
    """Runs at the same load as one: summed requests, time and errors; percentiles of the
    merged histogram; requests/s as all requests over all the time driven.

    Raises:
        ValueError: no runs.
    """
    if not runs:
        raise ValueError("no runs to merge")
    requests = sum(run.requests for run in runs)
    seconds = sum(run.duration_s for run in runs)
    socket_errors: Counter[str] = Counter()
    for run in runs:
        socket_errors.update(run.socket_errors)
    percentiles = {p: percentile_ms(histogram, p) for p in PERCENTILES}
    return WrkResult(
        connections=runs[0].connections,
        threads=runs[0].threads,
        duration_s=round(seconds, 3),
        requests=requests,
        requests_per_s=requests / max(seconds, 0.001),
        p50_ms=percentiles[50],
        p75_ms=percentiles[75],
        p90_ms=percentiles[90],
        p99_ms=percentiles[99],
        non_2xx=sum(run.non_2xx for run in runs),
        socket_errors=dict(socket_errors),
    )


def _median_rate(records: int, seconds: list[float]) -> BatchResult:
    return BatchResult(
        records, [round(s, 4) for s in seconds], records / statistics.median(seconds)
    )


def time_batch(url: str, body: bytes, records: int, repeats: int) -> BatchResult:
    """POST the batch once to warm up, then ``repeats`` times; rows/s from the median time.

    One request at a time: a single worker serves each, so the rate is per worker.

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
