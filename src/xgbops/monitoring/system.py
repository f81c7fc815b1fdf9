"""Samples of the machine: CPU, memory, the project's disk and the xgbops-related processes.

``psutil`` measures CPU use as the time spent between two readings, so every sample primes the
counters, waits ``measure_seconds`` and reads them again. The processes watched are the API's
servers (gunicorn, uvicorn), MLflow and any ``xgbops`` command, recognised by name or command
line. Containers are Metricbeat's job in the compose platform; this collector is what works
everywhere, Docker or not.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import psutil

from xgbops.monitoring.events import Event, ProcessEvent, SystemEvent

#: Process groups, in the order a process is matched (a gunicorn worker serving xgbops is
#: ``gunicorn``; a process matching none is not sampled).
PROCESS_GROUPS = ("gunicorn", "uvicorn", "mlflow", "xgbops")
_CMDLINE_CHARS = 1000


def process_group(name: str, cmdline: list[str]) -> str | None:
    """The group a process belongs to, from its name and command line, or None."""
    text = " ".join([name, *cmdline]).lower()
    return next((group for group in PROCESS_GROUPS if group in text), None)


def _watched() -> list[tuple[psutil.Process, str]]:
    found = []
    for process in psutil.process_iter(["name", "cmdline"]):
        info = process.info
        group = process_group(info.get("name") or "", list(info.get("cmdline") or []))
        if group is not None:
            found.append((process, group))
    return found


def sample(disk_path: Path, measure_seconds: float = 0.5) -> list[Event]:
    """One sample: a :class:`SystemEvent` and a :class:`ProcessEvent` per watched process.

    Args:
        disk_path: a path on the filesystem whose usage is reported (the project directory).
        measure_seconds: how long CPU use is measured over.

    Returns:
        The events, all with the same timestamp and ``sample_id``.
    """
    watched = _watched()
    psutil.cpu_percent(interval=None)
    for process, _ in watched:
        try:
            process.cpu_percent(interval=None)
        except psutil.Error:  # it ended meanwhile: skipped below
            pass
    time.sleep(measure_seconds)
    cpu = psutil.cpu_percent(interval=None)
    now = datetime.now(UTC)
    host = socket.gethostname()
    sample_id = f"{host}:{int(now.timestamp() * 1000)}"
    memory, swap = psutil.virtual_memory(), psutil.swap_memory()
    disk = psutil.disk_usage(str(disk_path))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    events: list[Event] = [
        SystemEvent(
            timestamp=now,
            sample_id=sample_id,
            host=host,
            cpu_percent=cpu,
            cpu_count=psutil.cpu_count() or 1,
            load_1m=load,
            memory_total_bytes=memory.total,
            memory_used_bytes=memory.used,
            memory_available_bytes=memory.available,
            memory_percent=memory.percent,
            swap_percent=swap.percent,
            disk_path=str(disk_path),
            disk_total_bytes=disk.total,
            disk_used_bytes=disk.used,
            disk_free_bytes=disk.free,
            disk_percent=disk.percent,
        )
    ]
    for process, group in watched:
        event = _process_event(process, group, now, host, sample_id)
        if event is not None:
            events.append(event)
    return events


def _process_event(
    process: psutil.Process, group: str, now: datetime, host: str, sample_id: str
) -> ProcessEvent | None:
    try:
        with process.oneshot():
            return ProcessEvent(
                timestamp=now,
                sample_id=sample_id,
                host=host,
                pid=process.pid,
                process_group=group,
                name=process.name(),
                cmdline=" ".join(process.cmdline())[:_CMDLINE_CHARS],
                rss_bytes=process.memory_info().rss,
                cpu_percent=process.cpu_percent(interval=None),
                memory_percent=process.memory_percent(),
                num_threads=process.num_threads(),
                started_at=datetime.fromtimestamp(process.create_time(), UTC),
            )
    except psutil.Error:  # ended, or not ours to read: not part of this sample
        return None


def collect(
    disk_path: Path,
    interval: float,
    count: int,
    measure_seconds: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[list[Event]]:
    """Take ``count`` samples (0: until interrupted), one every ``interval`` seconds.

    Args:
        disk_path: the path whose filesystem usage is reported.
        interval: seconds from the start of one sample to the start of the next.
        count: how many samples; 0 for no limit.
        measure_seconds: CPU measuring time of each sample (capped at ``interval``).
        sleep: the wait between samples (tests pass a fake).

    Yields:
        Each sample's events, as soon as it is taken.
    """
    taken = 0
    while count == 0 or taken < count:
        started = time.monotonic()
        yield sample(disk_path, min(measure_seconds, interval))
        taken += 1
        if count == 0 or taken < count:
            sleep(max(0.0, interval - (time.monotonic() - started)))


def summary(events: list[Event]) -> str:
    """One line for people about a sample: time, CPU, memory, disk, processes watched."""
    host = next((e for e in events if isinstance(e, SystemEvent)), None)
    if host is None:
        return "no system sample"
    processes = sum(isinstance(e, ProcessEvent) for e in events)
    return (
        f"{host.timestamp:%Y-%m-%d %H:%M:%S} UTC {host.host}: CPU {host.cpu_percent:.0f}%, "
        f"memory {host.memory_percent:.0f}%, disk {host.disk_percent:.0f}%, "
        f"{processes} xgbops process(es)"
    )
