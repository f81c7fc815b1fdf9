"""``xgbops monitor report``: one self-contained HTML page with the five views of the Kibana
dashboards (models, predictions, drift, rollout, system), for whoever runs without Docker.

The data come from the local sink first. Where it holds nothing of a kind yet, the report reads
the sources the monitoring package already reads, without shipping anything: MLflow for the
training runs (:func:`~xgbops.monitoring.sync.training_run_events`), the prediction history
(:func:`~xgbops.monitoring.history.read_predictions`; its rows are merged with the sink's by
prediction id), the clients' feedback joined with its predictions
(:func:`~xgbops.monitoring.history.read_feedback`, merged the same way, the later label of a
prediction winning), the last drift report file (``reports/drift.json``). The rollout's
comparison reports and decisions come from the local sink alone
(:func:`~xgbops.monitoring.sync.ship_rollout` puts them there): no other source keeps them. So
the page is useful right after ``make run`` and a few predictions. A view with no data says
which command produces some.

A window (``--window 30d`` by default) bounds what is read of the time series: predictions,
feedback (by when the label was received), drift checks, rollout reports and decisions, and
machine samples; the training runs are a registry, shown whole.

The page needs nothing but itself: CSS inline, plots drawn with matplotlib's object API (no
pyplot, no global backend) and inlined as base64 PNG, and a Content-Security-Policy that forbids
every fetch. A few lines of inline script mark ``<body>`` once the page has loaded, with how many
images decoded: the browser test reads that mark.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib import dates as mdates
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from xgbops.config import Settings
from xgbops.monitoring import MonitoringError
from xgbops.monitoring.events import ROLLOUT_ARMS
from xgbops.monitoring.history import read_feedback, read_predictions
from xgbops.monitoring.sinks import LocalSink, local_sink_path

#: Colours: one for "normal", one for "flagged", one for the threshold and the champion.
_BLUE, _RED, _ORANGE, _GREY = "#3b6ea8", "#c0392b", "#e67e22", "#9aa5b1"
_ARM_COLOURS = {"champion": _ORANGE, "challenger": _BLUE}
#: The rollout view lists this many of the latest decisions.
_DECISIONS_SHOWN = 5
#: Bucket widths for time series, smallest first; the first giving at most _MAX_BUCKETS wins.
_BUCKETS = ("1min", "5min", "15min", "1h", "6h", "1D", "7D")
_MAX_BUCKETS = 60
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"
#: Event kinds read whole whatever the window: the registry of models, not a time series.
_WHOLE = frozenset({"training-runs"})
#: Where ``xgbops compare`` leaves its latest table and chart (xgbops.compare.REPORT_FOLDER).
COMPARE_CHART = Path("compare") / "compare.png"


@dataclass(frozen=True)
class Plot:
    """One PNG image and what it shows."""

    title: str
    png: bytes

    @property
    def data_uri(self) -> str:
        """The image inlined as a ``data:`` URI."""
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


@dataclass
class View:
    """One of the five views: plots and a table, or the message saying how to get data."""

    key: str
    title: str
    empty: str = ""
    source: str = ""
    summary: str = ""
    plots: list[Plot] = field(default_factory=list)
    headers: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def has_data(self) -> bool:
        """True when the view shows plots (rather than its "no data yet" message)."""
        return bool(self.plots)


@dataclass
class Report:
    """The five views, when and for which project the report was made, and where it went."""

    generated_at: datetime
    project: Path
    views: list[View]
    since: datetime | None = None
    path: Path | None = None

    @property
    def span(self) -> str:
        """What the time series cover, for people."""
        return "all time" if self.since is None else f"since {self.since:%Y-%m-%d %H:%M} UTC"

    def lines(self) -> list[str]:
        """One line per view for the terminal, then the file written."""
        lines = [
            (
                f"{view.title}: {len(view.plots)} plot(s)"
                if view.has_data
                else f"{view.title}: {view.empty}"
            )
            for view in self.views
        ]
        if self.path is not None:
            lines.append(f"report: {self.path}")
        return lines


def build_report(
    settings: Settings, now: datetime | None = None, window: timedelta | None = None
) -> Report:
    """Collect the five views' data and draw their plots.

    Args:
        settings: the project (local sink, MLflow, prediction history, reports folder).
        now: the report's time (default: the current time).
        window: how far back the time series go (default: all of them).

    Returns:
        The report; views without data carry their "no data yet" message.
    """
    now = now or datetime.now(UTC)
    since = None if window is None else now - window
    sink = _SinkReader(local_sink_path(settings), settings.monitoring.index_prefix, since)
    views = [
        _models_view(settings, sink),
        _predictions_view(settings, sink),
        _drift_view(settings, sink),
        _rollout_view(sink),
        _system_view(sink),
    ]
    return Report(now, settings.project_dir, views, since)


def write_report(settings: Settings, output: Path, window: timedelta | None = None) -> Report:
    """Build the report and write it as one HTML file (folders created as needed).

    Args:
        settings: the project.
        output: the HTML file.
        window: how far back the time series go (default: all of them).

    Returns:
        The report, with ``path`` set.
    """
    report = build_report(settings, window=window)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render_html(report), encoding="utf-8")
    report.path = output
    return report


# --- data -------------------------------------------------------------------------------------
class _SinkReader:
    """The local sink, read only if it exists (a report never creates an empty sink)."""

    def __init__(self, path: Path, prefix: str, since: datetime | None = None) -> None:
        self.path = path
        self.prefix = prefix
        self.since = since

    def read(self, kind: str) -> list[dict[str, Any]]:
        """Documents of one kind in the window, oldest first; none when there is no sink file."""
        if not self.path.is_file():
            return []
        with LocalSink(self.path, self.prefix) as sink:
            return sink.read(kind, since=None if kind in _WHOLE else self.since)


def _training_runs(settings: Settings, sink: _SinkReader) -> tuple[list[dict[str, Any]], str]:
    """The sink's training runs, else MLflow's (read, not shipped); and where they came from."""
    runs = sink.read("training-runs")
    if runs:
        return runs, "local sink"
    uri = settings.tracking_uri
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        return [], ""  # no MLflow store yet: opening one would create it
    from xgbops.monitoring.sync import (  # pylint: disable=import-outside-toplevel
        training_run_events,  # imports MLflow: only when the sink has nothing
    )

    try:
        return [event.to_document() for event in training_run_events(settings)], "MLflow"
    except Exception as exc:  # pylint: disable=broad-exception-caught
        # A tracking server that is down (or any registry error) costs the models view only:
        # the other three views are still worth a page, so the problem becomes a note.
        return [], f"MLflow not read ({type(exc).__name__}: {exc})"


def _predictions(settings: Settings, sink: _SinkReader) -> tuple[list[dict[str, Any]], list[str]]:
    """The sink's predictions and the history's, merged by prediction id; notes on problems."""
    by_id = {doc["prediction_id"]: doc for doc in sink.read("predictions")}
    notes = []
    try:
        positive = settings.dataset.target.positive
        for event in read_predictions(settings.history_url, positive, since=sink.since):
            by_id.setdefault(event.prediction_id, event.to_document())
    except MonitoringError as exc:
        notes.append(f"prediction history not read: {exc}")
    return list(by_id.values()), notes


def _feedback(settings: Settings, sink: _SinkReader) -> tuple[list[dict[str, Any]], list[str]]:
    """The sink's feedback and the history's, merged by prediction id (the later label wins:
    it is a correction the sink has not received yet); notes on problems."""
    by_id = {doc["prediction_id"]: doc for doc in sink.read("feedback")}
    notes = []
    try:
        for event in read_feedback(settings.history_url, since=sink.since):
            document = event.to_document()
            known = by_id.get(event.prediction_id)
            if known is None or str(known["@timestamp"]) < document["@timestamp"]:
                by_id[event.prediction_id] = document
    except MonitoringError as exc:
        notes.append(f"prediction feedback not read: {exc}")
    return list(by_id.values()), notes


def _latest_drift(
    settings: Settings, sink: _SinkReader
) -> tuple[dict[str, Any] | None, list[dict[str, Any]], list[dict[str, Any]], str]:
    """The latest drift report, its feature rows, every report (for the trend), the source."""
    reports = sink.read("drift-reports")
    if reports:
        latest = reports[-1]  # oldest first
        rows = [r for r in sink.read("drift-features") if r["report_id"] == latest["report_id"]]
        return latest, rows, reports, "local sink"
    path = settings.reports_path / "drift.json"
    if not path.is_file():
        return None, [], [], ""
    data = json.loads(path.read_text(encoding="utf-8"))
    rows = list(data.get("features") or [])
    if data.get("prediction"):
        rows.append(data["prediction"])
    data["@timestamp"] = data.get("generated_at")
    return data, rows, [data], str(path)


# --- views ------------------------------------------------------------------------------------
def _models_view(settings: Settings, sink: _SinkReader) -> View:
    """Holdout metric of every registered version over time, the champion marked; and the live
    accuracy the clients' feedback measures, per version, when there is feedback."""
    view = View("models", "Models", empty="no data yet — run `make train`")
    runs, view.source = _training_runs(settings, sink)
    if view.source.startswith("MLflow not read"):
        view.notes.append(view.source)
    versions = sorted(
        (r for r in runs if r.get("registered") and r.get("version_number") is not None),
        key=lambda r: int(r["version_number"]),
    )
    if versions:
        _registered_versions(view, versions, settings.train.promotion.metric)
    labels, notes = _feedback(settings, sink)
    view.notes += notes
    if labels:
        _live_accuracy(view, labels)
        feedback = "client feedback (local sink + prediction history)"
        view.source = f"{view.source} + {feedback}" if versions else feedback
    chart = settings.reports_path / COMPARE_CHART
    if chart.is_file():  # the last `xgbops compare` a user ran, beside the registry's story
        view.plots.append(Plot("the latest xgbops compare", chart.read_bytes()))
        view.notes.append(f"the latest comparison: {chart.with_suffix('.md')} (`xgbops compare`)")
    return view


def _registered_versions(view: View, versions: list[dict[str, Any]], metric: str) -> None:
    """The holdout plot, the summary and the table of the registered versions."""
    frame = pd.DataFrame(
        {
            "time": _times(r["@timestamp"] for r in versions),
            "version": [int(r["version_number"]) for r in versions],
            "value": [(r.get("metrics") or {}).get(metric) for r in versions],
            "champion": [bool(r.get("champion")) for r in versions],
        }
    )
    view.plots.append(
        _plot(f"Holdout {metric} of every registered version", _draw_models(frame, metric))
    )
    champion = frame[frame["champion"]]
    view.summary = (
        f"{len(frame)} registered version(s); champion: "
        + (f"v{champion['version'].iloc[-1]}" if len(champion) else "none")
        + f"; promotion metric: holdout {metric}"
    )
    names = ("roc_auc", "pr_auc", "f1", "accuracy", "log_loss")
    view.headers = ["version", "trained (UTC)", *names, "aliases"]
    view.rows = [
        [
            f"v{r['version_number']}" + (" ★ champion" if r.get("champion") else ""),
            str(r["@timestamp"])[:19].replace("T", " "),
            *(_number((r.get("metrics") or {}).get(name)) for name in names),
            ", ".join(r.get("aliases") or []),
        ]
        for r in reversed(versions)
    ]


def _live_accuracy(view: View, labels: list[dict[str, Any]]) -> None:
    """The share of labelled predictions that were right, per version and time bucket (of when
    the label was received), and a summary line."""
    frame = pd.DataFrame(
        {
            "time": _times(d["@timestamp"] for d in labels),
            "version": [str(d.get("model_version")) for d in labels],
            "correct": _floats(d.get("correct") for d in labels),
        }
    ).sort_values("time")
    width = _bucket(frame["time"])
    accuracy = frame.pivot_table(
        index=pd.Grouper(key="time", freq=width), columns="version", values="correct"
    )
    view.plots.append(
        _plot("Live accuracy (client feedback)", lambda ax: _draw_accuracy(ax, accuracy))
    )
    per_version = frame.groupby("version")["correct"].agg(["mean", "size"])
    versions = ", ".join(
        f"v{version} {row['mean']:.1%} of {int(row['size'])}"
        for version, row in sorted(per_version.iterrows(), key=lambda item: _version_key(item[0]))
    )
    line = (
        f"{len(frame)} labelled prediction(s) (client feedback); live accuracy "
        f"{frame['correct'].mean():.1%} ({versions})"
    )
    view.summary = f"{view.summary}\n{line}" if view.summary else line


def _predictions_view(settings: Settings, sink: _SinkReader) -> View:
    """Volume per time bucket, latency p50/p99 and positive rate."""
    view = View(
        "predictions",
        "Predictions",
        empty="no data yet — run `make serve` and send a few predictions (POST /predict)",
        source="local sink + prediction history",
    )
    docs, view.notes = _predictions(settings, sink)
    if not docs:
        return view
    frame = pd.DataFrame(
        {
            "time": _times(d["@timestamp"] for d in docs),
            "latency": _floats(d.get("latency_ms") for d in docs),
            "positive": _floats(d.get("positive") for d in docs),
            "version": [str(d.get("model_version")) for d in docs],
        }
    ).sort_values("time")
    width = _bucket(frame["time"])
    grouped = frame.set_index("time").groupby(pd.Grouper(freq=width))
    volume = frame.pivot_table(
        index=pd.Grouper(key="time", freq=width), columns="version", aggfunc="size", fill_value=0
    )
    latency = pd.DataFrame(
        {"p50": grouped["latency"].quantile(0.5), "p99": grouped["latency"].quantile(0.99)}
    )
    positive = grouped["positive"].mean()
    view.plots += [
        _plot(f"Predictions per {width}", lambda ax: _draw_volume(ax, volume, width)),
        _plot("Latency p50 / p99 (ms)", lambda ax: _draw_latency(ax, latency)),
        _plot("Positive rate", lambda ax: _draw_rate(ax, positive)),
    ]
    lat = frame["latency"].dropna()
    view.summary = (
        f"{len(frame)} predictions from {frame['time'].min():%Y-%m-%d %H:%M} to "
        f"{frame['time'].max():%Y-%m-%d %H:%M} UTC; positive rate "
        f"{frame['positive'].mean():.1%}"
        + (
            f"; latency p50 {lat.quantile(0.5):.1f} ms, p99 {lat.quantile(0.99):.1f} ms"
            if len(lat)
            else ""
        )
    )
    return view


def _drift_view(settings: Settings, sink: _SinkReader) -> View:
    """PSI per feature of the latest report, the threshold line, drifted features flagged."""
    view = View("drift", "Drift", empty="no data yet — run `make drift` (after some predictions)")
    latest, rows, reports, view.source = _latest_drift(settings, sink)
    if latest is None:
        return view
    threshold = float(latest.get("psi_threshold") or settings.monitoring.drift.psi_threshold)
    view.summary = (
        f"latest check {str(latest.get('@timestamp'))[:19].replace('T', ' ')} UTC: "
        f"{latest.get('status')}, {latest.get('window_rows')} predictions against "
        f"{latest.get('reference_rows')} training rows; threshold PSI ≥ {threshold:g}"
    )
    if not rows:
        view.empty = (
            f"the latest check had too few predictions ({latest.get('window_rows')} < "
            f"{latest.get('min_samples')}) — send more, then run `make drift`"
        )
        return view
    rows = sorted(rows, key=lambda r: float(r["psi"]))
    judged = latest.get("status") != "insufficient_data"
    if not judged:
        view.summary += (
            f" — indicative only: fewer than the {latest.get('min_samples')} predictions a "
            "verdict needs"
        )
    view.plots.append(
        _plot(
            "PSI per feature (latest check)" if judged else "PSI per feature (indicative only)",
            lambda ax: _draw_psi(ax, rows, threshold),
            height=max(3.0, 0.28 * len(rows) + 1.2),
        )
    )
    if len(reports) > 1:
        view.plots.append(
            _plot("Drift checks over time", lambda ax: _draw_checks(ax, reports, threshold))
        )
    view.headers = ["feature", "type", "PSI", "test", "p-value", "adjusted", "verdict"]
    view.rows = [
        [
            str(r["feature"]),
            str(r["feature_type"]),
            f"{float(r['psi']):.4f}",
            str(r.get("test") or "-"),
            _number(r.get("p_value"), "{:.3g}"),
            _number(r.get("adjusted_p_value"), "{:.3g}"),
            ("DRIFT" if r.get("drifted") else "") if judged else "no verdict",
        ]
        for r in reversed(rows)
    ]
    return view


def _rollout_view(sink: _SinkReader) -> View:
    """Each rollout's latest comparison, one table row per arm; the live error rate of each arm
    over time with its interval; the latest decisions."""
    view = View(
        "rollout",
        "Rollout",
        empty="no data yet — run `xgbops rollout start` to put a challenger on live traffic",
        source="local sink (the rollout's comparison reports and decisions)",
    )
    arms, decisions = sink.read("rollout"), sink.read("decisions")
    if not arms and not decisions:
        return view
    latest = _latest_reports(arms)
    lines = [_rollout_line(pair) for pair in latest]
    if decisions:
        lines.append(f"{len(decisions)} decision(s), the latest last:")
        lines += [_decision_line(d) for d in decisions[-_DECISIONS_SHOWN:]]
    view.summary = "\n".join(lines)
    view.headers = ["rollout", "arm", "version", "requests", "labelled", "error rate", "AUC"]
    view.headers += ["log loss", "ECE", "latency p50 / p95 (ms)", "decision"]
    view.rows = [_arm_row(doc) for pair in latest for doc in pair]
    if any(doc.get("error_rate") is not None for doc in arms):
        view.plots.append(
            _plot("Live error rate per arm (confidence interval shaded)", _draw_arms(arms))
        )
    else:
        view.empty = (
            "no live error rate yet — the arms need labelled predictions (`POST /feedback`)"
        )
    return view


def _latest_reports(arms: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The arm documents of each rollout's latest report (champion first), newest rollout
    first."""
    newest: dict[str, str] = {}
    for doc in arms:  # oldest first: the last time seen is the latest
        newest[str(doc["rollout_id"])] = str(doc["@timestamp"])
    order = sorted(newest, key=lambda rollout: newest[rollout], reverse=True)
    return [
        sorted(
            (d for d in arms if d["rollout_id"] == rollout and d["@timestamp"] == newest[rollout]),
            key=lambda d: ROLLOUT_ARMS.index(d["arm"]),
        )
        for rollout in order
    ]


def _rollout_line(pair: list[dict[str, Any]]) -> str:
    """One rollout's state at its latest report, for people."""
    first = pair[0]
    versions = {d["arm"]: d.get("version") for d in pair}
    share = "" if first.get("share") is None else f" {float(first['share']):g}%"
    tested = ", ".join(
        f"{name} {float(first[key]):.3g}"
        for name, key in (("p-value", "p_value"), ("P(challenger worse)", "p_worse"))
        if first.get(key) is not None
    )
    return (
        f"rollout {first['rollout_id']} of {first['model_name']}: {first['mode']}{share}, "
        f"champion v{versions.get('champion')} against challenger v{versions.get('challenger')}; "
        f"{_minute(first['@timestamp'])} UTC: {first['decision']}"
        + (f" (error-rate test: {tested})" if tested else "")
    )


def _decision_line(decision: dict[str, Any]) -> str:
    """One decision, for people: when, what, on which versions, by whom and why."""
    share = "" if decision.get("share") is None else f" {float(decision['share']):g}%"
    mode = f" {decision['mode']}{share}" if decision.get("mode") else ""
    return (
        f"{_minute(decision['@timestamp'])} UTC {decision['action']}{mode}"
        f" (v{decision.get('champion_version')} → v{decision.get('challenger_version')})"
        + (f" by {decision['actor']}" if decision.get("actor") else "")
        + (f": {decision['reason']}" if decision.get("reason") else "")
    )


def _arm_row(doc: dict[str, Any]) -> list[str]:
    """An arm's numbers in its latest report; a metric that needs labels is empty without."""
    return [
        str(doc["rollout_id"]),
        str(doc["arm"]),
        f"v{doc.get('version')}",
        str(doc["requests"]),
        str(doc["labelled"]),
        _estimate(doc, "error_rate", "{:.1%}"),
        _estimate(doc, "auc", "{:.3f}"),
        _number(doc.get("log_loss")),
        _number(doc.get("ece")),
        " / ".join(_number(doc.get(k), "{:.1f}") for k in ("latency_p50_ms", "latency_p95_ms")),
        str(doc["decision"]),
    ]


def _estimate(doc: dict[str, Any], name: str, fmt: str) -> str:
    """An estimate and its interval, e.g. ``12.0% [10.0%, 14.0%]``; empty when unknown."""
    if doc.get(name) is None:
        return ""
    low, high = doc.get(f"{name}_low"), doc.get(f"{name}_high")
    bounds = "" if low is None or high is None else f" [{_number(low, fmt)}, {_number(high, fmt)}]"
    return _number(doc[name], fmt) + bounds


def _system_view(sink: _SinkReader) -> View:
    """CPU, memory and disk of the machine over time (and the xgbops processes' memory)."""
    view = View(
        "system",
        "System",
        empty="no data yet — run `make monitor-system`",
        source="local sink (xgbops monitor system)",
    )
    samples = sink.read("system")
    if not samples:
        return view
    frame = pd.DataFrame(
        {
            "time": _times(s["@timestamp"] for s in samples),
            "CPU": [s["cpu_percent"] for s in samples],
            "memory": [s["memory_percent"] for s in samples],
            "disk": [s["disk_percent"] for s in samples],
        }
    ).set_index("time")
    view.plots.append(_plot("CPU, memory and disk (%)", lambda ax: _draw_system(ax, frame)))
    processes = sink.read("processes")
    if processes:
        rss = pd.DataFrame(
            {
                "time": _times(p["@timestamp"] for p in processes),
                "group": [p["process_group"] for p in processes],
                "rss": [p["rss_bytes"] / 2**20 for p in processes],
            }
        ).pivot_table(index="time", columns="group", values="rss", aggfunc="sum")
        view.plots.append(
            _plot("xgbops processes: memory (RSS, MiB)", lambda ax: _draw_lines(ax, rss, "MiB"))
        )
    last = samples[-1]
    view.summary = (
        f"{len(samples)} sample(s) of {last['host']}; latest: CPU {last['cpu_percent']:.0f}%, "
        f"memory {last['memory_percent']:.0f}%, "
        f"disk {last['disk_percent']:.0f}% ({last['disk_path']})"
    )
    return view


# --- plots ------------------------------------------------------------------------------------
def _plot(title: str, draw: Callable[[Axes], None], height: float = 3.2) -> Plot:
    """Draw on a new figure's axes and keep the PNG."""
    fig = Figure(figsize=(8.0, height), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    draw(ax)
    ax.set_title(title, loc="left", fontsize=11)
    ax.grid(True, alpha=0.3)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return Plot(title, buffer.getvalue())


def _time_axis(ax: Axes, times: Any) -> None:
    """Concise date ticks; a single instant gets an hour either side (not years)."""
    # matplotlib.dates ships no type hints.
    locator = mdates.AutoDateLocator()  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(
        mdates.ConciseDateFormatter(locator)  # type: ignore[no-untyped-call]
    )
    stamps = pd.DatetimeIndex(times)
    if len(stamps) and stamps.min() == stamps.max():
        # Limits of a single date are centred on it (in days): keep the centre, narrow them.
        middle = sum(ax.get_xlim()) / 2
        ax.set_xlim(middle - 1 / 24, middle + 1 / 24)


def _draw_models(frame: pd.DataFrame, metric: str) -> Callable[[Axes], None]:
    def draw(ax: Axes) -> None:
        ordered = frame.sort_values("time")
        ax.plot(ordered["time"], ordered["value"], color=_GREY, linewidth=1, zorder=1)
        ax.scatter(ordered["time"], ordered["value"], color=_BLUE, zorder=2, label="version")
        for row in ordered.itertuples():
            ax.annotate(
                f"v{row.version}",
                (row.time, row.value),
                xytext=(0, 7),
                textcoords="offset points",
                ha="center",
                fontsize=8,
            )
        champion = ordered[ordered["champion"]]
        if len(champion):
            ax.scatter(
                champion["time"],
                champion["value"],
                marker="*",
                s=260,
                color=_ORANGE,
                edgecolors="black",
                zorder=3,
                label="champion",
            )
        ax.set_ylabel(f"holdout {metric}")
        ax.legend(loc="lower right", fontsize=8)
        _time_axis(ax, ordered["time"])

    return draw


def _draw_arms(arms: list[dict[str, Any]]) -> Callable[[Axes], None]:
    frame = pd.DataFrame(
        {
            "time": _times(d["@timestamp"] for d in arms),
            "rollout": [str(d["rollout_id"]) for d in arms],
            "arm": [str(d["arm"]) for d in arms],
            "label": [f"{d['arm']} v{d.get('version')}" for d in arms],
            "rate": _floats(d.get("error_rate") for d in arms),
            "low": _floats(d.get("error_rate_low") for d in arms),
            "high": _floats(d.get("error_rate_high") for d in arms),
        }
    ).sort_values("time")

    def draw(ax: Axes) -> None:
        shown: set[str] = set()  # one legend entry per arm and version, however many rollouts
        for (_, arm), series in frame.groupby(["rollout", "arm"], sort=False):
            colour = _ARM_COLOURS.get(str(arm), _GREY)
            label = str(series["label"].iloc[0])
            ax.fill_between(
                series["time"], series["low"], series["high"], color=colour, alpha=0.2, lw=0
            )
            ax.plot(
                series["time"],
                series["rate"],
                marker=".",
                color=colour,
                label=None if label in shown else label,
            )
            shown.add(label)
        ax.set_ylim(bottom=0)
        ax.yaxis.set_major_formatter(lambda value, _: f"{value:.0%}")
        ax.set_ylabel("labelled predictions wrong")
        ax.legend(title="arm", fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        _time_axis(ax, frame["time"])

    return draw


def _draw_volume(ax: Axes, volume: pd.DataFrame, width: str) -> None:
    bottom = None
    bar_width = 0.8 * (pd.Timedelta(width) / pd.Timedelta(days=1))  # dates are in days
    for version in volume.columns:
        ax.bar(
            volume.index,
            volume[version],
            width=bar_width,
            bottom=bottom,
            align="edge",
            label=f"v{version}",
        )
        bottom = volume[version] if bottom is None else bottom + volume[version]
    ax.set_ylabel("predictions")
    ax.legend(title="version", fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _time_axis(ax, volume.index)


def _draw_latency(ax: Axes, latency: pd.DataFrame) -> None:
    ax.plot(latency.index, latency["p50"], marker=".", color=_BLUE, label="p50")
    ax.plot(latency.index, latency["p99"], marker=".", color=_RED, label="p99")
    ax.set_ylabel("ms")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    _time_axis(ax, latency.index)


def _draw_rate(ax: Axes, positive: pd.Series) -> None:
    ax.plot(positive.index, positive.to_numpy(dtype=float), marker=".", color=_BLUE)
    ax.set_ylim(0, 1)
    ax.yaxis.set_major_formatter(lambda value, _: f"{value:.0%}")
    ax.set_ylabel("share positive")
    _time_axis(ax, positive.index)


def _draw_accuracy(ax: Axes, accuracy: pd.DataFrame) -> None:
    for version in sorted(accuracy.columns, key=_version_key):
        ax.plot(accuracy.index, accuracy[version], marker=".", label=f"v{version}")
    ax.set_ylim(0, 1.05)
    ax.yaxis.set_major_formatter(lambda value, _: f"{value:.0%}")
    ax.set_ylabel("labelled predictions right")
    ax.legend(title="version", fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _time_axis(ax, accuracy.index)


def _draw_psi(ax: Axes, rows: Sequence[dict[str, Any]], threshold: float) -> None:
    names = [("ŷ " if r["feature_type"] == "prediction" else "") + str(r["feature"]) for r in rows]
    colours = [_RED if r.get("drifted") else _BLUE for r in rows]
    ax.barh(names, [float(r["psi"]) for r in rows], color=colours)
    ax.axvline(
        threshold, color=_ORANGE, linestyle="--", linewidth=2, label=f"threshold {threshold:g}"
    )
    ax.scatter([], [], color=_RED, marker="s", label="drifted")
    ax.set_xlabel("PSI")
    ax.tick_params(axis="y", labelsize=8)
    ax.legend(loc="lower right", fontsize=8)


def _draw_checks(ax: Axes, reports: Sequence[dict[str, Any]], threshold: float) -> None:
    times = _times(r["@timestamp"] for r in reports)
    ax.plot(
        times,
        _floats(r.get("max_psi") for r in reports),
        marker="o",
        color=_BLUE,
        label="max feature PSI",
    )
    ax.plot(
        times,
        _floats(r.get("prediction_psi") for r in reports),
        marker="o",
        color=_GREY,
        label="prediction PSI",
    )
    ax.axhline(threshold, color=_ORANGE, linestyle="--", label="threshold")
    ax.set_ylabel("PSI")
    ax.legend(fontsize=8)
    _time_axis(ax, times)


def _draw_system(ax: Axes, frame: pd.DataFrame) -> None:
    _draw_lines(ax, frame, "%")
    ax.set_ylim(0, 100)


def _draw_lines(ax: Axes, frame: pd.DataFrame, unit: str) -> None:
    for column in frame.columns:
        ax.plot(frame.index, frame[column], marker=".", label=str(column))
    ax.set_ylabel(unit)
    ax.legend(fontsize=8)
    _time_axis(ax, frame.index)


# --- helpers ----------------------------------------------------------------------------------
def _times(values: Iterable[Any]) -> pd.DatetimeIndex:
    """Event times as naive UTC (matplotlib and pandas resampling want one zone)."""
    return pd.DatetimeIndex(pd.to_datetime(list(values), utc=True)).tz_localize(None)


def _bucket(times: pd.Series) -> str:
    span = times.max() - times.min()
    return next((w for w in _BUCKETS if span / pd.Timedelta(w) <= _MAX_BUCKETS), _BUCKETS[-1])


def _floats(values: Iterable[Any]) -> list[float]:
    """Numbers for plotting, a missing one as NaN (a gap in the line)."""
    return [float("nan") if v is None else float(v) for v in values]


def _version_key(version: Any) -> tuple[int, str]:
    """Versions in numeric order ("2" before "10"); anything else after them, by name."""
    text = str(version)
    return (int(text), "") if text.isdigit() else (2**63, text)


def _number(value: Any, fmt: str = "{:.4f}") -> str:
    return "" if value is None else fmt.format(float(value))


def _minute(timestamp: Any) -> str:
    """An event time to the minute, e.g. ``2026-12-07 13:00`` (UTC, as stored)."""
    return str(timestamp)[:16].replace("T", " ")


# --- HTML -------------------------------------------------------------------------------------
_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1f2933;
background:#f5f7fa}header{background:#1f2933;color:#fff;padding:16px 32px}
header h1{margin:0 0 4px;font-size:22px}header p{margin:0;color:#cbd2d9;font-size:13px}
nav a{color:#9fb3c8;margin-right:16px}main{max-width:1100px;margin:0 auto;padding:16px 32px}
section{background:#fff;border-radius:6px;padding:16px 24px;margin:16px 0;
box-shadow:0 1px 3px #0002}h2{margin-top:0}.meta{color:#52606d;font-size:13px}
.empty{color:#8a6d00;background:#fff8e1;padding:10px 14px;border-radius:4px}
figure{margin:12px 0}img{max-width:100%;height:auto}
table{border-collapse:collapse;font-size:13px;margin-top:8px}
th,td{border-bottom:1px solid #e4e7eb;padding:4px 10px;text-align:left}
code{background:#eef2f7;padding:1px 4px;border-radius:3px}
"""
_SCRIPT = """
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var loaded = images.filter(function (img) { return img.complete && img.naturalWidth > 0; });
  document.body.setAttribute("data-images", String(images.length));
  document.body.setAttribute("data-images-loaded", String(loaded.length));
  document.body.setAttribute("data-rendered", "true");
});
"""


def render_html(report: Report) -> str:
    """The page: a header, a section per view, no external resource."""
    esc = html.escape
    nav = " ".join(f'<a href="#{v.key}">{esc(v.title)}</a>' for v in report.views)
    sections = "\n".join(_section(view) for view in report.views)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>xgbops monitoring</title>
<style>{_STYLE}</style>
</head>
<body>
<header><h1>xgbops monitoring</h1>
<p>{esc(str(report.project))} · generated {report.generated_at:%Y-%m-%d %H:%M} UTC ·
predictions, drift, rollout and system: {esc(report.span)} ·
the same views as the Kibana dashboards</p><nav>{nav}</nav></header>
<main>
{sections}
</main>
<script>{_SCRIPT}</script>
</body>
</html>
"""


def _section(view: View) -> str:
    esc = html.escape
    parts = [f'<section id="{view.key}" data-view="{view.key}" data-plots="{len(view.plots)}">']
    parts.append(f"<h2>{esc(view.title)}</h2>")
    if view.summary:  # one line of the summary per line of text
        parts.append(f'<p class="meta">{"<br>".join(map(esc, view.summary.splitlines()))}</p>')
    if not view.has_data:
        parts.append(f'<p class="empty">{_with_code(view.empty)}</p>')
    for plot in view.plots:
        parts.append(f'<figure><img alt="{esc(plot.title)}" src="{plot.data_uri}"></figure>')
    if view.rows:
        head = "".join(f"<th>{esc(h)}</th>" for h in view.headers)
        body = "".join(
            "<tr>" + "".join(f"<td>{esc(cell)}</td>" for cell in row) + "</tr>" for row in view.rows
        )
        parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
    if view.source and view.has_data:
        parts.append(f'<p class="meta">source: {esc(view.source)}</p>')
    parts += [f'<p class="meta">note: {esc(note)}</p>' for note in view.notes]
    parts.append("</section>")
    return "\n".join(parts)


def _with_code(text: str) -> str:
    """Escape ``text`` and show its `backticked` commands as code."""
    pieces = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(pieces))
