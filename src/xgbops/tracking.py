"""The one place that talks to MLflow: runs, metrics, artifacts, the model registry, the champion.

The rest of xgbops hands plain values to a :class:`Tracker` and gets plain values back, so
MLflow can be swapped or mocked in one module. The tracking URI comes from the settings: a
local SQLite file by default, any MLflow server when ``MLFLOW_TRACKING_URI`` is set.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Any

import git
import mlflow
import pandas as pd
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.data.pandas_dataset import from_pandas
from mlflow.pyfunc.model import PythonModel, PythonModelContext
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

import xgbops
from xgbops.config import Settings
from xgbops.champion import (
    CHAMPION_ALIAS,
    MODEL_ARTIFACT,
    ChampionVersion,
    RegistryError,
    holdout_metrics,
    install_model,
    current_pointer,
    is_server_uri,
    pointer_file,
    redact_uri,
)
from xgbops.compiled import compile_into
from xgbops.model import Model

_URI_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
_BATCH = 1000  # MLflow's limit of metrics per log_batch call


@dataclass(frozen=True)
class VersionInfo:
    """A registered model version, as the rest of xgbops needs to know it."""

    name: str
    version: str
    run_id: str
    aliases: tuple[str, ...]
    metrics: dict[str, float]
    tags: dict[str, str]
    created_at_ms: int


@dataclass(frozen=True)
class RunInfo:
    """One run of the experiment as monitoring reads it back (see :meth:`Tracker.runs`)."""

    run_id: str
    run_name: str
    status: str
    start_time_ms: int
    end_time_ms: int | None
    metrics: dict[str, float]
    params: dict[str, str]
    tags: dict[str, str]


class XgbopsPyfunc(PythonModel):  # pylint: disable=abstract-method  # no streaming
    """MLflow pyfunc wrapper so ``mlflow models serve`` serves the very same files."""

    def __init__(self) -> None:
        self._model: Model | None = None

    def load_context(self, context: PythonModelContext) -> None:
        """Load the booster and featuriser from the logged artifact directory."""
        self._model = Model.load(Path(context.artifacts[MODEL_ARTIFACT]))

    def predict(
        self,
        context: PythonModelContext,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        """Return ``probability`` and ``label`` per input row."""
        del context, params
        if self._model is None:  # pragma: no cover - MLflow always calls load_context first
            raise RuntimeError("load_context was not called")
        model = self._model
        features = model.featurizer.transform_columns(
            {name: model_input[name].to_numpy() for name in model.featurizer.input_names}
        )
        probabilities = model.predict_proba(features)
        return pd.DataFrame(
            {"probability": probabilities, "label": [model.label(p) for p in probabilities]}
        )


class Tracker:  # pylint: disable=too-many-public-methods  # the one facade over MLflow
    """A session with one tracking server and its model registry.

    Creating it points MLflow at the configured URI and makes sure the experiment exists.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.uri = settings.tracking_uri
        if self.uri.startswith("sqlite:"):
            settings.state_path.mkdir(parents=True, exist_ok=True)
        # MLflow also exports these URIs to the environment, where the next load_settings() of
        # this process would read them as the user's choice: keep the environment as it was.
        saved = {name: os.environ.get(name) for name in _URI_VARIABLES}
        mlflow.set_tracking_uri(self.uri)
        mlflow.set_registry_uri(self.uri)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self.client = MlflowClient(self.uri, self.uri)
        self.experiment_id = self._ensure_experiment(settings.experiment_name)

    def _ensure_experiment(self, name: str) -> str:
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            return str(experiment.experiment_id)
        location = None
        if self.uri.startswith("sqlite:"):
            location = (self.settings.artifact_root / name).as_uri()
        return str(self.client.create_experiment(name, artifact_location=location))

    @contextmanager
    def run(
        self, run_name: str, tags: Mapping[str, str] | None = None, run_id: str | None = None
    ) -> Iterator[str]:
        """Open a run (or reopen ``run_id``, e.g. a resumed study's parent) and yield its id;
        the run is marked FAILED if the block raises."""
        if run_id is not None:
            with mlflow.start_run(run_id=run_id) as active:
                yield str(active.info.run_id)
            return
        with mlflow.start_run(
            experiment_id=self.experiment_id, run_name=run_name, tags=dict(tags or {})
        ) as active:
            yield str(active.info.run_id)

    @contextmanager
    def child_run(
        self, parent_run_id: str, run_name: str, tags: Mapping[str, str] | None = None
    ) -> Iterator[str]:
        """A run nested under ``parent_run_id`` (the UI shows it under its parent).

        Only the client is used, never the process's active run, so worker processes and
        threads may each open their own. The run ends FINISHED, or FAILED if the block raises.
        """
        nested = {MLFLOW_PARENT_RUN_ID: parent_run_id, **dict(tags or {})}
        created = self.client.create_run(self.experiment_id, run_name=run_name, tags=nested)
        run_id = str(created.info.run_id)
        try:
            yield run_id
        except BaseException:
            self.client.set_terminated(run_id, "FAILED")
            raise
        self.client.set_terminated(run_id, "FINISHED")

    def end_run(self, run_id: str, status: str = "KILLED") -> None:
        """Mark a run ended, e.g. one left RUNNING by a process that died."""
        self.client.set_terminated(run_id, status)

    def get_run(self, run_id: str) -> RunInfo:
        """One run by id.

        Raises:
            RegistryError: no such run.
        """
        try:
            run = self.client.get_run(run_id)
        except MlflowException as exc:
            raise RegistryError(f"run {run_id!r} not found") from exc
        return _run_info(run)

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        """Log parameters (values are stringified by MLflow)."""
        mlflow.log_params(dict(params), run_id=run_id)

    def log_metrics(self, run_id: str, values: Mapping[str, float], step: int = 0) -> None:
        """Log scalar metrics at one step."""
        mlflow.log_metrics(dict(values), step=step, run_id=run_id)

    def log_curves(self, run_id: str, history: Mapping[str, Mapping[str, Sequence[float]]]) -> None:
        """Log per-round evaluation results as stepped metrics named ``<set>_<metric>``."""
        timestamp = _now_ms()
        entries = [
            Metric(f"{dataset}_{metric}", float(value), timestamp, step)
            for dataset, per_set in history.items()
            for metric, values in per_set.items()
            for step, value in enumerate(values)
        ]
        for start in range(0, len(entries), _BATCH):
            self.client.log_batch(run_id, metrics=entries[start : start + _BATCH])

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        """Tag the run."""
        for key, value in tags.items():
            self.client.set_tag(run_id, key, value)

    def log_artifacts(self, run_id: str, directory: Path, artifact_path: str | None = None) -> None:
        """Upload every file under ``directory``."""
        self.client.log_artifacts(run_id, str(directory), artifact_path)

    def log_dataset(
        self, frame: pd.DataFrame, source: Path, name: str, target: str, context: str
    ) -> None:
        """Record the dataset the active run used (mlflow.data), with MLflow's digest."""
        with warnings.catch_warnings():
            # MLflow registers two equivalent local-file sources and warns that it picked one.
            warnings.filterwarnings("ignore", message="The specified dataset source")
            dataset = from_pandas(frame, source=str(source), name=name, targets=target)
        mlflow.log_input(dataset, context=context)

    def log_model(self, model_dir: Path, input_example: pd.DataFrame, output: pd.DataFrame) -> str:
        """Log a saved model directory as an MLflow pyfunc in the active run; returns its URI."""
        package_dir = Path(xgbops.__file__).parent
        with warnings.catch_warnings():
            # Whole-number features are logged as long on purpose (they may not be missing).
            warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
            info = self._log_pyfunc(package_dir, model_dir, input_example, output)
        return str(info.model_uri)

    @staticmethod
    def _log_pyfunc(
        package_dir: Path, model_dir: Path, input_example: pd.DataFrame, output: pd.DataFrame
    ) -> Any:
        return mlflow.pyfunc.log_model(
            name=MODEL_ARTIFACT,
            python_model=str(package_dir / "mlflow_model.py"),
            artifacts={MODEL_ARTIFACT: str(model_dir)},
            code_paths=[str(package_dir)],
            signature=infer_signature(input_example, output),
            input_example=input_example,
            pip_requirements=_pip_requirements(),
        )

    def register(self, model_uri: str, name: str, tags: Mapping[str, str] | None = None) -> str:
        """Register ``model_uri`` as a new version of ``name``; returns the version number."""
        version = mlflow.register_model(model_uri, name, tags=dict(tags or {}))
        return str(version.version)

    def version(
        self, name: str, version: str | None = None, alias: str | None = None
    ) -> VersionInfo:
        """Look up a version by number, by alias, or the latest when neither is given.

        Raises:
            RegistryError: no such model, version or alias.
        """
        try:
            if alias is not None:
                found = self.client.get_model_version_by_alias(name, alias)
            elif version is not None:
                found = self.client.get_model_version(name, str(version))
            else:
                versions = self.client.search_model_versions(f"name = '{name}'")
                if not versions:
                    raise RegistryError(f"model {name!r} has no registered version")
                found = max(versions, key=lambda v: int(v.version))
        except MlflowException as exc:
            wanted = (
                f"alias {alias!r}" if alias else f"version {version}" if version else "any version"
            )
            raise RegistryError(f"model {name!r}: {wanted} not found in the registry") from exc
        run = self.client.get_run(str(found.run_id))
        return VersionInfo(
            name=name,
            version=str(found.version),
            run_id=str(found.run_id),
            aliases=tuple(found.aliases or ()),
            metrics=dict(run.data.metrics),
            tags=dict(found.tags or {}),
            created_at_ms=int(found.creation_timestamp),
        )

    # -- read back, for monitoring (xgbops.monitoring.sync) ------------------------------------

    def runs(self) -> list[RunInfo]:
        """Every run of the experiment (active ones), oldest first, paged through MLflow."""
        found: list[RunInfo] = []
        token: str | None = None
        while True:
            page = self.client.search_runs(
                [self.experiment_id],
                max_results=_BATCH,
                order_by=["attributes.start_time ASC"],
                page_token=token,
            )
            found.extend(_run_info(run) for run in page)
            token = page.token
            if not token:
                return found

    def versions(self, name: str) -> list[VersionInfo]:
        """Every registered version of ``name`` with its aliases; ``metrics`` are left empty
        (they are the run's: see :meth:`runs`). An unknown model has no versions."""
        try:
            aliases = dict(self.client.get_registered_model(name).aliases or {})
        except MlflowException:
            return []
        by_version: dict[str, list[str]] = {}
        for alias, number in aliases.items():
            by_version.setdefault(str(number), []).append(str(alias))
        return [
            VersionInfo(
                name=name,
                version=str(found.version),
                run_id=str(found.run_id),
                aliases=tuple(sorted(by_version.get(str(found.version), []))),
                metrics={},
                tags=dict(found.tags or {}),
                created_at_ms=int(found.creation_timestamp),
            )
            for found in self.client.search_model_versions(f"name = '{name}'")
        ]

    def champion(self, name: str) -> VersionInfo | None:
        """The version carrying the ``champion`` alias, or None."""
        return self.aliased(name, CHAMPION_ALIAS)

    def set_champion(self, name: str, version: str) -> None:
        """Move the ``champion`` alias to ``version``."""
        self.set_alias(name, CHAMPION_ALIAS, version)

    def set_alias(self, name: str, alias: str, version: str) -> None:
        """Move ``alias`` to ``version``."""
        self.client.set_registered_model_alias(name, alias, str(version))

    def delete_alias(self, name: str, alias: str) -> None:
        """Remove ``alias`` (no error when no version carries it)."""
        try:
            self.client.delete_registered_model_alias(name, alias)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise

    def aliased(self, name: str, alias: str) -> VersionInfo | None:
        """The version carrying ``alias``, or None."""
        try:
            return self.version(name, alias=alias)
        except RegistryError:
            return None

    def tag_version(self, name: str, version: str, tags: Mapping[str, str]) -> None:
        """Tag a registered version (e.g. with its promotion decision)."""
        for key, value in tags.items():
            self.client.set_model_version_tag(name, str(version), key, value)

    def load_model(self, name: str, version: str | None = None, alias: str | None = None) -> Model:
        """Download a registered version's files and load them with :class:`Model`."""
        directory = self.download_model(name, version=version, alias=alias)
        return Model.load(directory)

    def export_champion(
        self, name: str, destination: Path, alias: str = CHAMPION_ALIAS
    ) -> Path | None:
        """Copy the champion's (or ``alias``'s) files for serving and point ``current.json``
        (``<alias>.json``) at them.

        Serving processes read only ``destination`` (never MLflow) and swap models when
        ``current.json`` changes. A champion already in place (same run, intact files) is not
        exported again; any other one is, whatever its version number says.

        Returns:
            The pointer file, or None when there is no champion.
        """
        champion = self.aliased(name, alias)
        if champion is None:
            return None
        version = ChampionVersion(name, champion.version, champion.run_id)
        current = current_pointer(destination, version, alias)
        trees_cache = self.settings.compiled_cache_path
        if current is not None and trees_cache is not None:  # exported before trees compiled
            compile_into(destination / str(current["model_dir"]), trees_cache)
        if current is None:
            with tempfile.TemporaryDirectory() as tmp:
                files = self.download_model(name, version=champion.version, dst=Path(tmp) / "m")
                remote = is_server_uri(self.settings.tracking_uri)
                extra: dict[str, Any] = {"metrics": holdout_metrics(champion.metrics)}
                if remote:
                    extra["registry"] = redact_uri(self.settings.tracking_uri)
                install_model(
                    files,
                    destination,
                    version,
                    "registry" if remote else "local",
                    extra,
                    alias,
                    trees_cache=trees_cache,
                )
        return destination / pointer_file(alias)

    def download_model(
        self,
        name: str,
        version: str | None = None,
        alias: str | None = None,
        dst: Path | None = None,
    ) -> Path:
        """Download a version's booster and featuriser into ``dst`` (a cache dir by default).

        Returns:
            The directory holding ``model.json`` and ``booster.ubj``.
        """
        info = self.version(name, version=version, alias=alias)
        target = dst or self.settings.state_path / "models" / name / info.version
        if (target / "model.json").is_file():
            return target
        with tempfile.TemporaryDirectory() as tmp:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{name}/{info.version}", dst_path=tmp
            )
            source = Path(local) / "artifacts" / MODEL_ARTIFACT
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(source, target, dirs_exist_ok=True)
        return target


def _run_info(run: Any) -> RunInfo:
    return RunInfo(
        run_id=str(run.info.run_id),
        run_name=str(run.info.run_name or ""),
        status=str(run.info.status),
        start_time_ms=int(run.info.start_time),
        end_time_ms=None if run.info.end_time is None else int(run.info.end_time),
        metrics=dict(run.data.metrics),
        params=dict(run.data.params),
        tags=dict(run.data.tags),
    )


def git_commit(directory: Path) -> str | None:
    """The commit checked out in the repository holding ``directory``, if it is one."""
    try:
        return str(git.Repo(directory, search_parent_directories=True).head.commit.hexsha)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError, ValueError):
        return None


def _pip_requirements() -> list[str]:
    requirements = []
    for package in ("mlflow", "xgboost-cpu", "numpy", "pandas"):
        try:
            requirements.append(f"{package}=={installed_version(package)}")
        except PackageNotFoundError:  # pragma: no cover - e.g. the CUDA xgboost wheel instead
            requirements.append(package)
    return requirements


def _now_ms() -> int:
    return int(time.time() * 1000)
