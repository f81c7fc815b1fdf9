"""The ``xgbops`` command: parses options, calls one library function, reports the outcome.

Errors a user can fix (bad configuration, bad data, missing model) end with a one-line
message naming what and why, and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from xgbops import XgbopsError
from xgbops.config import ConfigError, Settings, load_settings
from xgbops.data import DataValidationError
from xgbops.logs import configure_logging

app = typer.Typer(
    help="Train, track, promote and score tabular XGBoost models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err = Console(stderr=True, soft_wrap=True)  # soft wrap: error lines stay greppable

EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2

VersionOption = Annotated[
    Optional[str], typer.Option("--version", "-v", help="Registered version (default: latest).")
]


@app.callback()
def _main(
    ctx: typer.Context,
    dataset_config: Annotated[
        Optional[Path], typer.Option(help="Dataset YAML (default config/dataset.yaml).")
    ] = None,
    train_config: Annotated[
        Optional[Path], typer.Option(help="Training YAML (default config/train.yaml).")
    ] = None,
) -> None:
    overrides = {
        key: value
        for key, value in (("dataset_config", dataset_config), ("train_config", train_config))
        if value is not None
    }
    ctx.obj = overrides


def _settings(ctx: typer.Context) -> Settings:
    settings = load_settings(**(ctx.obj or {}))
    configure_logging(settings)
    return settings


@contextmanager
def _status(message: str) -> Iterator[None]:
    with err.status(message, spinner="dots"):
        yield


@app.command("data-check")
def data_check(ctx: typer.Context) -> None:
    """Check the dataset against its config; write reports/data-check.{json,txt}."""
    from xgbops import data  # pylint: disable=import-outside-toplevel

    settings = _settings(ctx)
    with _status(f"Checking {settings.data_path}"):
        frame = data.read_csv(settings.data_path, settings.dataset)
        report = data.check_data(frame, settings.dataset, settings.data_path)
        paths = data.write_report(report, settings.reports_path)
    typer.echo(report.to_text(), nl=False)
    typer.echo(f"report: {', '.join(map(str, paths))}")
    if not report.passed:
        raise typer.Exit(EXIT_CHECK_FAILED)


@app.command()
def train(
    ctx: typer.Context,
    decide_champion: Annotated[
        bool,
        typer.Option(
            "--promote/--no-promote", help="Decide the champion at the end (or leave it)."
        ),
    ] = True,
    force: Annotated[bool, typer.Option(help="Make the new version champion regardless.")] = False,
    skip_if_champion: Annotated[
        bool, typer.Option(help="Do nothing if the registry already has a champion.")
    ] = False,
    result_file: Annotated[
        Optional[Path], typer.Option(help="Also write the result as JSON to this file.")
    ] = None,
) -> None:
    """Train, log to MLflow, register a version, promote it if it beats the champion."""
    from xgbops import train as training  # pylint: disable=import-outside-toplevel
    from xgbops.tracking import Tracker  # pylint: disable=import-outside-toplevel

    settings = _settings(ctx)
    if skip_if_champion:
        champion = Tracker(settings).champion(settings.model_name)
        if champion is not None:
            typer.echo(f"{champion.name} v{champion.version} is champion; not training.")
            return
    total = settings.train.num_boost_round
    with Progress(
        TextColumn("[bold]training"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("rounds (early stopping may end sooner)"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as progress:
        task = progress.add_task("train", total=total)
        result = training.train(
            settings,
            promote=decide_champion,
            force=force,
            on_round=lambda done, _total: progress.update(task, completed=done),
        )
    typer.echo(
        f"run {result.run_id}: {result.model_name} v{result.version} "
        f"(best round {result.best_iteration}, {result.duration_seconds:.1f}s)"
    )
    typer.echo(_metrics_table(result.metrics))
    if result.decision is not None:
        typer.echo(result.decision.summary())
    typer.echo(f"reports: {result.report_dir}")
    if result_file is not None:
        result.write(result_file)


@app.command()
def evaluate(
    ctx: typer.Context,
    version: VersionOption = None,
    alias: Annotated[
        Optional[str], typer.Option(help="Evaluate the version with this alias.")
    ] = None,
) -> None:
    """Score a registered version on the holdout; write plots to reports/evaluation."""
    from xgbops import train as training  # pylint: disable=import-outside-toplevel

    settings = _settings(ctx)
    with _status("Evaluating on the holdout"):
        result = training.evaluate_version(settings, version=version, alias=alias)
    typer.echo(f"{result.model_name} v{result.version} on the holdout:")
    typer.echo(_metrics_table(result.metrics))
    typer.echo(f"reports: {result.report_dir}")


@app.command()
def promote(
    ctx: typer.Context,
    version: VersionOption = None,
    force: Annotated[bool, typer.Option(help="Promote whatever the scores.")] = False,
    result_file: Annotated[
        Optional[Path], typer.Option(help="Also write the decision as JSON to this file.")
    ] = None,
) -> None:
    """Make a version (latest by default) champion if it beats the current one."""
    from xgbops import train as training  # pylint: disable=import-outside-toplevel

    settings = _settings(ctx)
    with _status("Comparing with the champion"):
        decision = training.promote_version(settings, version, force=force)
    typer.echo(decision.summary())
    if result_file is not None:
        result_file.parent.mkdir(parents=True, exist_ok=True)
        result_file.write_text(json.dumps(asdict(decision), indent=2), encoding="utf-8")


@app.command()
def predict(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(help="JSON or CSV file of records, or - for stdin.")],
    input_format: Annotated[
        Optional[str], typer.Option("--format", help="json or csv (default: from the file name).")
    ] = None,
    model_dir: Annotated[
        Optional[Path], typer.Option(help="A saved model directory instead of the registry.")
    ] = None,
    version: VersionOption = None,
) -> None:
    """Print probability and label for each record, scored by the champion by default."""
    from xgbops import predict as scoring  # pylint: disable=import-outside-toplevel

    settings = _settings(ctx)
    text = sys.stdin.read() if source == "-" else _read_text(Path(source))
    fmt = input_format or ("csv" if source.lower().endswith(".csv") else "json")
    numeric = [f.name for f in settings.dataset.features if f.type == "numeric"]
    records = scoring.parse_records(text, fmt, numeric)
    if model_dir is None:
        with _status("Fetching the model from the registry"):
            model_dir = _registry_model(settings, version)
    predictor = scoring.Predictor.from_directory(model_dir)
    missing = sorted(
        {n for r in records for n in predictor.model.featurizer.input_names}
        - {k for r in records for k in r}
    )
    if missing:
        err.print(f"[yellow]warning: no value for {missing}; scored as missing[/]")
    results = [
        {"probability": round(p.probability, 6), "label": p.label}
        for p in predictor.predict(records)
    ]
    typer.echo(json.dumps(results if len(results) > 1 else results[0], indent=2))


@app.command("score")
def score_command(
    ctx: typer.Context,
    source: Annotated[
        str, typer.Argument(help="A CSV file, or a folder, glob or URL of Parquet/CSV files.")
    ],
    output: Annotated[str, typer.Argument(help="Folder (or URL) for the scored Parquet parts.")],
    version: VersionOption = None,
) -> None:
    """Score a whole table with the champion on the engine of XGBOPS_ENGINE; write Parquet."""
    from xgbops.score import score_table  # pylint: disable=import-outside-toplevel

    settings = _settings(ctx)
    with Progress(
        TextColumn(f"[bold]scoring ({settings.engine})"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("partitions"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as progress:
        task = progress.add_task("score", total=None)
        result = score_table(
            settings,
            source,
            output,
            version=version,
            on_partition=lambda done, total: progress.update(task, completed=done, total=total),
        )
    typer.echo(
        f"{result.rows} rows in {result.partitions} partition(s) scored by "
        f"{settings.model_name} v{result.version} (run {result.run_id}) in "
        f"{result.seconds:.1f}s: {result.output}"
    )


@app.command("export-champion")
def export_champion(
    ctx: typer.Context,
    output: Annotated[
        Path | None,
        typer.Option(help="Folder to export to (the serving folder of the state dir if unset)."),
    ] = None,
) -> None:
    """Copy the champion's files where the API serves them from (no MLflow at serving time)."""
    from xgbops.tracking import Tracker  # pylint: disable=import-outside-toplevel

    settings = _settings(ctx)
    with _status("Exporting the champion"):
        pointer = Tracker(settings).export_champion(
            settings.model_name, output or settings.serving_path
        )
    if pointer is None:
        typer.echo(f"{settings.model_name} has no champion yet; run `make train`.", err=True)
        raise typer.Exit(EXIT_CHECK_FAILED)
    typer.echo(f"champion exported: {pointer}")


@app.command("watch")
def watch_command(ctx: typer.Context) -> None:
    """Re-run quality, data-check or train (make targets) when a project file changes."""
    from xgbops import watch  # pylint: disable=import-outside-toplevel

    settings = _settings(ctx)
    typer.echo(f"watching {settings.project_dir} (Ctrl-C to stop)")
    watch.watch(settings.project_dir)


# --- tune and compare (experiments issue): xgbops.tune and xgbops.compare do the work ---------
@app.command("tune")
def tune_command(
    ctx: typer.Context,
    trials: Annotated[
        Optional[int],
        typer.Option(min=1, help="Trials the study holds when done (default: tune.trials)."),
    ] = None,
    timeout: Annotated[
        Optional[str], typer.Option(help="Start no trial after this long, e.g. 10m, 1h.")
    ] = None,
    workers: Annotated[
        Optional[int],
        typer.Option(
            min=1,
            help="Processes sharing the study (tune.workers); on a Dask engine, cluster tasks"
            " (default: one per Dask worker).",
        ),
    ] = None,
) -> None:
    """Search the space in train.yaml with Optuna; write the best params where train reads them."""
    # pylint: disable=import-outside-toplevel  # optuna only for this command
    from xgbops.config import parse_duration
    from xgbops.tune import tune

    settings = _settings(ctx)
    seconds = None
    if timeout is not None:
        try:
            seconds = parse_duration(timeout, "timeout").total_seconds()
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--timeout") from None
    total = trials or settings.train.tune.trials
    with Progress(
        TextColumn("[bold]tuning"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("trials, best {task.fields[best]}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as progress:
        task = progress.add_task("tune", total=total, best="-")
        result = tune(
            settings,
            trials=trials,
            timeout=seconds,
            workers=workers,
            on_trial=lambda done, _total, best: progress.update(
                task, completed=done, best="-" if best is None else f"{best:.4f}"
            ),
        )
    states = ", ".join(f"{count} {state.lower()}" for state, count in result.states.items())
    typer.echo(f"study {result.study_name} ({result.storage}): {states}")
    typer.echo(
        f"best validation {result.metric} {result.best_value:.4f} (trial {result.best_trial})"
    )
    if result.hand_set_value is not None:
        typer.echo(f"hand-set parameters: {result.hand_set_value:.4f}")
    typer.echo(f"parameters written to {result.params_file}; `xgbops train` uses them")
    typer.echo(f"MLflow parent run {result.parent_run_id}; plots in {result.report_dir}")


@app.command("compare")
def compare_command(
    ctx: typer.Context,
    names: Annotated[
        list[str],
        typer.Argument(
            metavar="RUN_OR_VERSION",
            help="Versions (3, v3), aliases (champion) or MLflow run ids.",
        ),
    ],
) -> None:
    """Table of metrics, differing params and data versions; plot in reports/compare/."""
    from xgbops.compare import compare  # pylint: disable=import-outside-toplevel

    comparison = compare(_settings(ctx), names)
    typer.echo(comparison.table())
    typer.echo(f"report: {comparison.markdown}; plot: {comparison.plot}")


# --- notify and sonar-gate (platform issue) ---------------------------------------------------
@app.command("notify")
def notify_command(
    ctx: typer.Context,
    *,
    job: Annotated[str, typer.Option(help="Job name, e.g. training.")],
    status: Annotated[str, typer.Option(help="Result: SUCCESS, FAILURE, UNSTABLE, ABORTED...")],
    duration: Annotated[float, typer.Option(min=0, help="Duration in seconds.")],
    url: Annotated[Optional[str], typer.Option(help="The build's page.")] = None,
    build: Annotated[
        Optional[str], typer.Option(envvar="BUILD_NUMBER", help="Build number, shown as #N.")
    ] = None,
    summary: Annotated[
        Optional[list[Path]], typer.Option(help="JSON summary to include (repeatable).")
    ] = None,
) -> None:
    """Email (SMTP from XGBOPS_NOTIFY__*) and desktop notification of a job's result.

    Exits 1 when SMTP is configured and the email could not be sent.
    """
    from xgbops import notify  # pylint: disable=import-outside-toplevel

    settings = _settings(ctx)
    message = notify.job_notification(
        job,
        status,
        duration,
        url=url,
        build=build,
        summaries=summary or [],
        mlflow_uri=settings.mlflow_tracking_uri,
    )
    report = notify.send(settings, message)
    typer.echo("\n".join([message.subject, *report.lines()]))
    if report.email_failed:
        typer.echo(f"error: email not sent: {report.email.detail}", err=True)
        raise typer.Exit(EXIT_CHECK_FAILED)


@app.command("sonar-gate")
def sonar_gate(
    ctx: typer.Context,
    *,
    token_file: Annotated[
        Optional[Path], typer.Option(help="Write an analysis token here (kept if still valid).")
    ] = None,
    admin_login: Annotated[str, typer.Option(envvar="SONAR_ADMIN_LOGIN")] = "admin",
    admin_password: Annotated[
        Optional[str], typer.Option(envvar="SONAR_ADMIN_PASSWORD", show_default=False)
    ] = None,
    initial_password: Annotated[
        Optional[str],
        typer.Option(envvar="SONAR_ADMIN_INITIAL_PASSWORD", help="A fresh server's (admin)."),
    ] = None,
    wait: Annotated[float, typer.Option(help="Seconds to wait for SonarQube to be UP.")] = 300.0,
    poll: Annotated[float, typer.Option(help="Seconds between status polls.")] = 5.0,
) -> None:
    """Create/update the SonarQube quality gate, assign it, add the Jenkins webhook."""
    from xgbops import sonar  # pylint: disable=import-outside-toplevel

    settings = _settings(ctx)
    token = settings.sonar.token.get_secret_value() if settings.sonar.token else None
    credentials = sonar.Credentials(
        token, admin_login, admin_password, initial_password or sonar.DEFAULT_ADMIN_PASSWORD
    )
    report = sonar.setup(
        settings.sonar, credentials, token_file=token_file, wait_timeout=wait, poll_interval=poll
    )
    typer.echo("\n".join(report.lines()))


# --- data versions (DVC issue): xgbops.dataversion does the work ----------------------------
data_app = typer.Typer(
    help="Data versions: the dataset's DVC hash, and the data a registered version used.",
    no_args_is_help=True,
)
app.add_typer(data_app, name="data")


@data_app.command("version")
def data_version(ctx: typer.Context) -> None:
    """Print the dataset's data version (its md5, as DVC records it)."""
    from xgbops import dataversion  # pylint: disable=import-outside-toplevel

    settings = _settings(ctx)
    typer.echo(f"{dataversion.data_version(settings.data_path)}  {settings.dataset.path}")


@data_app.command("checkout")
def data_checkout(
    ctx: typer.Context,
    version: VersionOption = None,
    alias: Annotated[
        Optional[str], typer.Option(help="The version with this alias (e.g. champion).")
    ] = None,
    output: Annotated[
        Optional[Path], typer.Option(help="Write it here (default: the dataset's own path).")
    ] = None,
) -> None:
    """Restore the exact data a registered version was trained on (checked by its md5)."""
    from xgbops import dataversion  # pylint: disable=import-outside-toplevel

    settings = _settings(ctx)
    with _status("Looking for the version's data"):
        restored = dataversion.checkout_version(settings, version, alias, output)
    typer.echo(f"{restored.path}: data version {restored.data_version} ({restored.source})")


@data_app.command("synth")
def data_synth(
    ctx: typer.Context,
    rows: Annotated[int, typer.Option(min=1, help="Rows in all.")],
    out: Annotated[Path, typer.Option(help="Folder of the Parquet files (part-NNNNN.parquet).")],
    seed: Annotated[int, typer.Option(help="Same seed, same table.")] = 0,
    partition_rows: Annotated[int, typer.Option(min=1, help="Rows per file.")] = 250_000,
) -> None:
    """Write a synthetic table that follows the dataset config, for scale tests and benchmarks."""
    from xgbops.synth import synthesize  # pylint: disable=import-outside-toplevel

    settings = _settings(ctx)
    with _status(f"Writing {rows} rows to {out}"):
        result = synthesize(settings.dataset, rows, out, seed=seed, partition_rows=partition_rows)
    typer.echo(
        f"{result.directory}: {result.rows} rows in {result.partitions} Parquet file(s), "
        f"positive rate {result.positive_rate:.3f}"
    )


# --- monitor (monitoring issue): xgbops.monitoring does the work ------------------------------
monitor_app = typer.Typer(
    help="Ship training runs, predictions, drift reports and machine samples to the "
    "monitoring sink (local SQLite by default, or Elasticsearch).",
    no_args_is_help=True,
)
app.add_typer(monitor_app, name="monitor")


def _shipped(result: Any) -> None:
    """Print a sink's counts and the first refused documents; exit 1 if any was refused."""
    if _print_shipped(result):
        raise typer.Exit(EXIT_CHECK_FAILED)


def _print_shipped(result: Any, label: str = "") -> bool:
    """Print a sink's counts (after ``label``) and the first refused documents; True if any was
    refused."""
    typer.echo(f"{label}{result.summary()}")
    for error in result.errors[:10]:
        typer.echo(f"  refused {error}", err=True)
    return bool(result.failed)


@monitor_app.command("setup")
def monitor_setup(ctx: typer.Context) -> None:
    """Install the Elasticsearch ILM policies and index templates (idempotent)."""
    from xgbops.monitoring import elastic  # pylint: disable=import-outside-toplevel

    settings = _settings(ctx)
    with _status(f"Installing into {settings.monitoring.elasticsearch_url}"):
        result = elastic.install(settings)
    typer.echo(f"Elasticsearch {result.cluster_version}: {len(result.installed)} resources")
    typer.echo("\n".join(f"  {name}" for name in result.installed))


@monitor_app.command("sync-mlflow")
def monitor_sync_mlflow(ctx: typer.Context) -> None:
    """Ship every MLflow run of the experiment, with its version and champion flag."""
    from xgbops.monitoring import sinks, sync  # pylint: disable=import-outside-toplevel

    settings = _settings(ctx)
    with closing(sinks.open_sink(settings)) as sink, _status("Reading MLflow"):
        result = sync.sync_mlflow(settings, sink)
    _shipped(result)


@monitor_app.command("predictions")
def monitor_predictions(
    ctx: typer.Context,
    since: Annotated[
        Optional[str], typer.Option(help="Ship from this ISO time (default: the watermark).")
    ] = None,
    everything: Annotated[
        bool, typer.Option("--all", help="Ignore the watermark: ship the whole history.")
    ] = False,
) -> None:
    """Ship the prediction history in bulk, then the clients' feedback (true labels joined with
    their predictions), each from its last watermark (re-runs never duplicate)."""
    from xgbops.monitoring import sinks, sync  # pylint: disable=import-outside-toplevel

    settings = _settings(ctx)
    try:
        start = datetime.fromisoformat(since) if since else None
    except ValueError as exc:
        raise typer.BadParameter(f"not an ISO date/time: {since!r}", param_hint="--since") from exc
    with closing(sinks.open_sink(settings)) as sink:
        with _status("Shipping predictions"):
            shipped = sync.sync_predictions(settings, sink, since=start, everything=everything)
        typer.echo(f"from {shipped.since or 'the beginning'} to {shipped.watermark or 'now'}")
        refused = _print_shipped(shipped.result)
        with _status("Shipping feedback"):
            labelled = sync.sync_feedback(settings, sink, since=start, everything=everything)
        typer.echo(
            f"feedback from {labelled.since or 'the beginning'} to {labelled.watermark or 'now'}"
        )
        refused = _print_shipped(labelled.result, "feedback: ") or refused
    if refused:
        raise typer.Exit(EXIT_CHECK_FAILED)


@monitor_app.command("drift")
def monitor_drift(
    ctx: typer.Context,
    window: Annotated[str, typer.Option(help="How far back: e.g. 24h, 90m, 7d.")] = "24h",
    fail_on_drift: Annotated[bool, typer.Option(help="Exit 1 when drift is found.")] = False,
) -> None:
    """Drift of recent predictions' inputs from the training data: report, ship, alert.

    Writes reports/drift.json and .txt, ships the report, sends an alert past the thresholds
    and, if monitoring.drift.retrain_on_drift is set, asks the API to retrain.
    """
    from xgbops.monitoring import check, sinks  # pylint: disable=import-outside-toplevel

    settings = _settings(ctx)
    span = check.parse_window(window)
    with closing(sinks.open_sink(settings)) as sink, _status("Checking drift"):
        outcome = check.check_drift(settings, span, sink)
    typer.echo(outcome.report.to_text(), nl=False)
    typer.echo(f"report: {', '.join(map(str, outcome.paths))}")
    if outcome.suppressed:
        typer.echo(f"alert: not sent again: {outcome.suppressed}")
    else:
        typer.echo("\n".join(f"alert {line}" for line in outcome.alert) or "alert: none needed")
    if outcome.retrain:
        typer.echo(f"retrain: {outcome.retrain}")
    _shipped(outcome.shipped)
    if fail_on_drift and outcome.report.drift_detected:
        raise typer.Exit(EXIT_CHECK_FAILED)


@monitor_app.command("system")
def monitor_system(
    ctx: typer.Context,
    interval: Annotated[float, typer.Option(min=0.1, help="Seconds between samples.")] = 10.0,
    count: Annotated[int, typer.Option(min=0, help="Samples to take; 0 until Ctrl-C.")] = 1,
) -> None:
    """Sample CPU, memory, disk and the xgbops processes; ship each sample."""
    from xgbops.monitoring import sinks, system  # pylint: disable=import-outside-toplevel

    settings = _settings(ctx)
    with closing(sinks.open_sink(settings)) as sink:
        try:
            for events in system.collect(settings.project_dir, interval, count):
                typer.echo(system.summary(events))
                _shipped(sink.ship(events))
        except KeyboardInterrupt:
            typer.echo("stopped")


@monitor_app.command("follow")
def monitor_follow(
    ctx: typer.Context,
    rounds: Annotated[
        int, typer.Option(min=0, help="Stop after this many rounds; 0 runs until stopped.")
    ] = 0,
) -> None:
    """Run the monitoring jobs on their schedules (monitoring.follow): predictions, system,
    MLflow runs and drift, each shipped as it is due. A failed job is retried at its next turn.
    """
    # pylint: disable-next=import-outside-toplevel
    from xgbops.monitoring import follow, sinks

    settings = _settings(ctx)
    schedule = settings.monitoring.follow
    typer.echo(
        f"following: predictions and feedback every {schedule.predictions_every}, system every "
        f"{schedule.system_every}, MLflow every {schedule.mlflow_every}, drift every "
        f"{schedule.drift_every} over {schedule.drift_window}"
    )
    with closing(sinks.open_sink(settings)) as sink:
        try:
            failures = follow.follow(
                follow.monitoring_jobs(settings, sink),
                follow.heartbeat_path(settings),
                rounds=rounds or None,
                report=lambda outcome: typer.echo(outcome.line()),
            )
        except KeyboardInterrupt:
            typer.echo("stopped")
            return
    if failures:
        raise typer.Exit(EXIT_CHECK_FAILED)


@monitor_app.command("report")
def monitor_report(
    ctx: typer.Context,
    output: Annotated[Path, typer.Option(help="The HTML file to write.")] = Path(
        "reports/monitoring.html"
    ),
    window: Annotated[
        str, typer.Option(help="How far back the time series go: e.g. 30d, 24h, or all.")
    ] = "30d",
) -> None:
    """One self-contained HTML page: models, predictions, drift and system, as plots."""
    # pylint: disable-next=import-outside-toplevel
    from xgbops.monitoring import check, report

    settings = _settings(ctx)
    span = None if window == "all" else check.parse_window(window)
    with _status("Building the monitoring report"):
        written = report.write_report(settings, output, span)
    typer.echo("\n".join([f"window: {written.span}", *written.lines()]))


@monitor_app.command("kibana-import")
def monitor_kibana_import(
    ctx: typer.Context,
    wait: Annotated[float, typer.Option(min=0.0, help="Seconds to wait for Kibana.")] = 300.0,
) -> None:
    """Import the Kibana data views and dashboards (monitoring/kibana) once Kibana is up."""
    from xgbops.monitoring import kibana  # pylint: disable=import-outside-toplevel

    settings = _settings(ctx)
    with _status(f"Waiting for Kibana at {settings.monitoring.kibana_url}"):
        result = kibana.import_saved_objects(settings, wait=kibana.Wait(timeout=wait))
    typer.echo("\n".join(result.lines()))
    if not result.ok:
        raise typer.Exit(EXIT_CHECK_FAILED)


# --- end of monitor -----------------------------------------------------------------------------


def _registry_model(settings: Settings, version: str | None) -> Path:
    from xgbops.champion import CHAMPION_ALIAS  # pylint: disable=import-outside-toplevel
    from xgbops.tracking import Tracker  # pylint: disable=import-outside-toplevel

    tracker = Tracker(settings)
    alias = None if version else CHAMPION_ALIAS
    return tracker.download_model(settings.model_name, version=version, alias=alias)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: file not found") from exc


def _metrics_table(metrics: dict[str, float]) -> str:
    return "\n".join(f"  {name:<10} {value:.4f}" for name, value in metrics.items())


# --- API keys: xgbops.keys does the work, on the serving database ---------------------------
keys_app = typer.Typer(
    help="API keys of the serving API: create (shown once), list, revoke.", no_args_is_help=True
)
app.add_typer(keys_app, name="keys")


def _key_store(settings: Settings) -> Any:
    # pylint: disable=import-outside-toplevel  # the database layer only for this command
    from xgbops.database import create_engine_for, migrate
    from xgbops.keys import KeyStore

    migrate(settings.history_url)  # the API may never have started on this database
    return KeyStore(create_engine_for(settings.history_url))


@keys_app.command("create")
def keys_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Option(help="Who or what uses the key (shown by list).")],
    scope: Annotated[
        list[str],
        typer.Option(help="predict, read or admin (admin implies both); repeat for several."),
    ],
) -> None:
    """Create a key and print it once: it is stored only as a hash."""
    try:
        key, text = _key_store(_settings(ctx)).create(name, scope)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    err.print(f"key {key.id} ({key.name}): {' '.join(sorted(key.scopes))}; shown only now")
    typer.echo(text)


@keys_app.command("list")
def keys_list(ctx: typer.Context) -> None:
    """Every key, newest first: id, name, scopes, created, revoked."""
    for key in _key_store(_settings(ctx)).list():
        revoked = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active"
        scopes = ",".join(sorted(key.scopes))
        typer.echo(
            f"{key.id}  {key.name:<20} {scopes:<20} {key.created_at:%Y-%m-%d %H:%M}  {revoked}"
        )


@keys_app.command("revoke")
def keys_revoke(
    ctx: typer.Context, key_id: Annotated[str, typer.Argument(help="The id list shows.")]
) -> None:
    """Revoke a key: every API worker refuses it within auth.key_cache_seconds."""
    # pylint: disable-next=import-outside-toplevel
    from xgbops.keys import UnknownKey

    try:
        key = _key_store(_settings(ctx)).revoke(key_id)
    except UnknownKey:
        raise typer.BadParameter(f"no key has the id {key_id!r}", param_hint="KEY_ID") from None
    typer.echo(f"{key.id} ({key.name}) revoked")


# --- rollout: xgbops.rollout.actions does the work -------------------------------------------
rollout_app = typer.Typer(
    help="A challenger on live traffic: start, mode, ramp, status, promote, rollback.",
    no_args_is_help=True,
)
app.add_typer(rollout_app, name="rollout")


def _rollouts(ctx: typer.Context) -> Any:
    from xgbops.rollout.actions import Rollouts  # pylint: disable=import-outside-toplevel

    return Rollouts(_settings(ctx))


def _said(state: Any) -> None:
    share = f" at {state.share:g} %" if state.mode != "off" else ""
    ended = f" ({state.stopped_reason})" if state.stopped_reason else ""
    typer.echo(
        f"rollout {state.rollout_id}: {state.mode}{share}, challenger v{state.challenger_version}"
        f" against champion v{state.champion_version}{ended}"
    )


@rollout_app.command("start")
def rollout_start(
    ctx: typer.Context,
    version: Annotated[
        Optional[str],
        typer.Argument(help="The version to put on trial (default: the challenger alias)."),
    ] = None,
    mode: Annotated[
        Optional[str], typer.Option(help="shadow, canary or ab (default: rollout.mode).")
    ] = None,
    share: Annotated[
        Optional[float], typer.Option(help="Percent of traffic (default: rollout.share).")
    ] = None,
) -> None:
    """Give VERSION the challenger alias and put it on live traffic beside the champion."""
    _said(_rollouts(ctx).start(version, mode, share))


@rollout_app.command("mode")
def rollout_mode(
    ctx: typer.Context,
    mode: Annotated[str, typer.Argument(help="shadow, canary, ab, or off to pause.")],
    share: Annotated[Optional[float], typer.Option(help="Percent of traffic.")] = None,
) -> None:
    """Change the running rollout's mode or share; the workers apply it within a second."""
    _said(_rollouts(ctx).change(mode, share))


@rollout_app.command("ramp")
def rollout_ramp(ctx: typer.Context) -> None:
    """Move a canary to its next traffic step (rollout.steps)."""
    _said(_rollouts(ctx).ramp())


@rollout_app.command("promote")
def rollout_promote(ctx: typer.Context) -> None:
    """Make the challenger champion; the old champion stays as previous_champion."""
    _said(_rollouts(ctx).promote())


@rollout_app.command("rollback")
def rollout_rollback(ctx: typer.Context) -> None:
    """Stop the rollout and clear the challenger, or undo the last promotion."""
    _said(_rollouts(ctx).rollback())


@rollout_app.command("status")
def rollout_status(
    ctx: typer.Context,
    json_file: Annotated[
        Optional[Path], typer.Option(help="Also write the report as JSON here.")
    ] = None,
    markdown_file: Annotated[
        Optional[Path], typer.Option(help="Also write the report as Markdown here.")
    ] = None,
    ship: Annotated[bool, typer.Option(help="Ship it to the monitoring sink.")] = False,
) -> None:
    """The live comparison of the arms and the verdict it supports (waiting/promote/rollback)."""
    # pylint: disable=import-outside-toplevel
    from xgbops.rollout.render import to_markdown

    report = _rollouts(ctx).report()
    text = to_markdown(report)
    for path, content in ((json_file, json.dumps(report, indent=2)), (markdown_file, text)):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content, encoding="utf-8")
    if ship and report["state"]["rollout_id"]:
        from xgbops.monitoring.sync import ship_rollout

        ship_rollout(_settings(ctx), report, report.get("decisions", []))
    typer.echo(text, nl=False)


def main() -> None:
    """Entry point: run the app and turn known errors into a message and an exit status."""
    try:
        app()  # standalone: usage errors, --help and exit codes are handled by Typer
    except DataValidationError as exc:
        err.print(exc.report.to_text(), end="", markup=False, highlight=False)
        err.print(f"error: {exc}", style="red", markup=False, highlight=False)
        sys.exit(EXIT_CHECK_FAILED)
    except XgbopsError as exc:
        err.print(f"error: {exc}", style="red", markup=False, highlight=False)
        sys.exit(EXIT_USAGE)
