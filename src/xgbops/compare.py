"""Comparison of any runs: which data and which parameters made each model, and how it scored.

``xgbops compare 3 champion 0123abcd...`` names runs by registered version number, by alias
or by MLflow run id. The comparison shows every holdout metric (and, for tuning runs, the
validation score), only the parameters that differ, and the data each run saw: the DVC data
version (the ``data_version`` tag) and the dataset digest. It is written as Markdown and JSON
with a bar chart of the metrics under ``reports/compare/``, which the monitoring report can link.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
from matplotlib.figure import Figure

from xgbops import XgbopsError
from xgbops.champion import RegistryError, holdout_metrics
from xgbops.config import Settings
from xgbops.dataversion import DATA_VERSION_TAG
from xgbops.tracking import RunInfo, Tracker

#: Where the comparison is written, under the reports folder.
REPORT_FOLDER: Final = "compare"
#: Parameters that always differ between runs and say nothing about the model.
_IGNORED_PARAMS: Final = frozenset({"best_iteration"})
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


class CompareError(XgbopsError):
    """A name is neither a version, an alias nor a run id of the registry."""


@dataclass(frozen=True)
class Compared:
    """One run as the comparison shows it."""

    label: str
    run_id: str
    run_name: str
    version: str | None
    data_version: str | None
    dataset_sha256: str | None
    metrics: dict[str, float]
    params: dict[str, str]


@dataclass(frozen=True)
class Comparison:
    """The runs side by side, and where the report and the plot were written."""

    runs: list[Compared]
    #: ``{param: [value per run]}``, only the parameters whose values differ.
    differing_params: dict[str, list[str | None]]
    markdown: Path
    plot: Path

    def table(self) -> str:
        """The comparison as a Markdown table (what the CLI prints)."""
        return _markdown(self.runs, self.differing_params)


def resolve(tracker: Tracker, model_name: str, name: str) -> Compared:
    """Find a run by version number (``3`` or ``v3``), alias (``champion``) or run id.

    Raises:
        CompareError: nothing of that name.
    """
    version: str | None = None
    try:
        if _RUN_ID.match(name):
            run = tracker.get_run(name)
        else:
            number = name.removeprefix("v")
            info = (
                tracker.version(model_name, version=number)
                if number.isdigit()
                else tracker.version(model_name, alias=name.removeprefix("@"))
            )
            version, run = info.version, tracker.get_run(info.run_id)
    except RegistryError as exc:
        raise CompareError(
            f"{name!r} is neither a version, an alias nor a run id of {model_name!r} ({exc})"
        ) from exc
    return _compared(name, run, version)


def _compared(label: str, run: RunInfo, version: str | None) -> Compared:
    metrics = holdout_metrics(run.metrics)
    metrics.update({k: v for k, v in run.metrics.items() if k.startswith("best_validation_")})
    return Compared(
        label=label,
        run_id=run.run_id,
        run_name=run.run_name,
        version=version,
        data_version=run.tags.get(DATA_VERSION_TAG),
        dataset_sha256=run.tags.get("xgbops.dataset_sha256") or run.params.get("dataset_sha256"),
        metrics=metrics,
        params=dict(run.params),
    )


def differing(runs: list[Compared]) -> dict[str, list[str | None]]:
    """Parameters whose values are not the same in every run (absent counts as a value)."""
    names = sorted({name for run in runs for name in run.params} - _IGNORED_PARAMS)
    table = {name: [run.params.get(name) for run in runs] for name in names}
    return {name: values for name, values in table.items() if len(set(values)) > 1}


def compare(settings: Settings, names: list[str]) -> Comparison:
    """Compare the named runs; write ``compare.md``, ``compare.json`` and ``compare.png``.

    Args:
        settings: the loaded settings (tracking URI, model name, reports folder).
        names: versions, aliases or run ids, at least one.

    Raises:
        CompareError: a name is unknown, or none is given.
    """
    if not names:
        raise CompareError("name at least one run, version or alias to compare")
    tracker = Tracker(settings)
    runs = [resolve(tracker, settings.model_name, name) for name in names]
    params = differing(runs)
    folder = settings.reports_path / REPORT_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    markdown = folder / "compare.md"
    markdown.write_text(
        "# Comparison of runs\n\n" + _markdown(runs, params) + "\n", encoding="utf-8"
    )
    document = {"runs": [asdict(run) for run in runs], "differing_params": params}
    (folder / "compare.json").write_text(json.dumps(document, indent=2), encoding="utf-8")
    plot = _plot(runs, folder / "compare.png")
    return Comparison(runs=runs, differing_params=params, markdown=markdown, plot=plot)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value).replace("|", "\\|")


def _markdown(runs: list[Compared], params: dict[str, list[str | None]]) -> str:
    header = "| | " + " | ".join(_cell(run.label) for run in runs) + " |"
    lines = [header, "|---|" + "---|" * len(runs)]

    def row(name: str, values: list[Any]) -> None:
        lines.append(f"| {name} | " + " | ".join(_cell(v) for v in values) + " |")

    row("run", [run.run_id[:8] for run in runs])
    row("version", [run.version for run in runs])
    row("data version", [run.data_version for run in runs])
    row("dataset sha256", [(run.dataset_sha256 or "")[:12] or None for run in runs])
    metrics = sorted({name for run in runs for name in run.metrics})
    for metric in metrics:
        row(metric, [run.metrics.get(metric) for run in runs])
    for name, values in params.items():
        row(f"param {name}", values)
    if not params:
        row("params", ["all equal" for _ in runs])
    return "\n".join(lines)


def _plot(runs: list[Compared], path: Path) -> Path:
    """Grouped bars: one group per metric, one bar per run."""
    metrics = sorted({name for run in runs for name in run.metrics})
    fig = Figure(figsize=(max(6.0, 1.2 * len(metrics) + 2), 4.5))
    axis = fig.add_subplot(1, 1, 1)
    width = 0.8 / max(len(runs), 1)
    positions = np.arange(len(metrics))
    for index, run in enumerate(runs):
        values = [run.metrics.get(metric, np.nan) for metric in metrics]
        axis.bar(positions + index * width, values, width, label=run.label)
    axis.set_xticks(positions + width * (len(runs) - 1) / 2, metrics, rotation=30, ha="right")
    axis.set_ylabel("value")
    axis.set_title("Holdout metrics by run")
    axis.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
