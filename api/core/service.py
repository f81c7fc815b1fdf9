"""The service core: validate, score, record, report. Both HTTP adapters call only this.

It takes plain Python values (already-parsed JSON), returns plain dictionaries (the response
bodies) and raises :mod:`api.core.errors` exceptions; it knows nothing of Flask or FastAPI.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy.exc import SQLAlchemyError

from xgbops.champion import RegistryClient, RegistryError, is_server_uri
from xgbops.config import Settings
from xgbops.rollout.decisions import change_mode, rollout_report
from xgbops.rollout.state import CHALLENGER, CHAMPION, RolloutStateError, read_state

from api.core import metrics
from api.core.access import Access
from api.core.champion import ChampionStore, LoadedModel, RegistryFollower
from api.core.ids import random_id, random_ids
from api.core.body import read_json
from api.core.feedback import FeedbackStore, check_feedback
from api.core.errors import (
    ApiError,
    FieldError,
    field_path,
    HistoryUnavailable,
    ModelNotReady,
    RegistryUnavailable,
    ValidationFailed,
    error_body,
)
from api.core.history import (
    HistoryReader,
    HistoryWriter,
    PredictionBatch,
    PredictionRecord,
    migrate,
    reason_of,
)
from api.core.query import parse_history_query
from api.core.retrain import RetrainJobs
from api.core.rollout import RolloutRouter, Shadow
from api.core.rollout_guard import RolloutGuard
from api.core.schema import UNKNOWN, RecordSpec

log = structlog.get_logger(__name__)

#: What /ready says when the spool folder cannot be written (the log has the reason).
SPOOL_UNWRITABLE = "the local spool cannot be written; predictions are served, not yet safe"


def registry_follower(settings: Settings) -> RegistryFollower | None:
    """A follower of the registry's champion when it is an MLflow server and the interval is on;
    with the embedded store, ``xgbops`` exports the champion into the serving directory itself."""
    uri = settings.mlflow_tracking_uri or ""
    interval = settings.serve.registry_sync_interval
    if not is_server_uri(uri) or interval <= 0:
        return None
    return RegistryFollower(
        RegistryClient(uri),
        settings.model_name,
        settings.serving_path,
        interval,
        settings.compiled_cache_path,
    )


class PredictionService:
    """One per worker process: the champion, the record spec and the prediction history."""

    def __init__(
        self,
        settings: Settings,
        store: ChampionStore | None = None,
        writer: HistoryWriter | None = None,
        reader: HistoryReader | None = None,
    ) -> None:
        self.settings = settings
        self.spec = RecordSpec.from_dataset(settings.dataset)
        self.store = store or ChampionStore(settings.serving_path, settings.serve.reload_interval)
        # One connection pool per worker process: the writer's thread, the requests' reads and
        # labels, and the retraining jobs all draw from it.
        self.writer = writer or HistoryWriter(
            settings.history_url,
            spool_dir(settings),
            flush_interval=settings.serve.history_flush_interval,
            engine=reader.engine if reader is not None else None,
        )
        self.reader = reader or HistoryReader(settings.history_url, engine=self.writer.engine)
        self.labels = FeedbackStore(self.reader.engine)
        self.jobs = RetrainJobs(settings, engine=self.reader.engine)
        self.access = Access(settings, lambda: self.reader.engine)
        self.rollout = RolloutRouter(settings, self._shadow)
        self.guard = RolloutGuard(settings, self.rollout, self.reader.engine)
        self.follower = registry_follower(settings)
        metrics.watch(spool_dir(settings), settings.reports_path / "drift.json")

    @classmethod
    def create(cls, settings: Settings) -> PredictionService:
        """Migrate the history database, then build the service (call once per process)."""
        settings.state_path.mkdir(parents=True, exist_ok=True)
        migrate(settings.history_url)  # safe when every worker does it at once
        return cls(settings)

    def start(self) -> None:
        """Start background work (the history writer, the registry follower); call after the
        worker process forks."""
        self.writer.start()
        self.rollout.start()
        self.guard.start()
        if self.follower is not None:
            self.follower.start()
        try:
            self._model()
        except ModelNotReady as exc:
            log.warning("champion.not_ready", reason=str(exc))

    def close(self) -> None:
        """Flush pending history records and stop background work."""
        if self.follower is not None:
            self.follower.close()
        self.guard.close()
        self.rollout.close()
        self.writer.close()
        self.reader.close()

    # -- scoring -----------------------------------------------------------------------------

    def predict(self, body: Any, request_id: str, caller: str = "") -> dict[str, Any]:
        """Score one record (the request body).

        Raises:
            ValidationFailed: some fields are invalid; every one is listed.
            ModelNotReady: no champion is loaded.
        """
        record, errors = self.spec.validate(body)
        if errors:
            raise ValidationFailed(errors)
        return self.predict_valid(record, request_id, caller)

    def predict_valid(
        self, record: dict[str, Any], request_id: str, caller: str = ""
    ) -> dict[str, Any]:
        """Score one record an adapter's schema (built from the same spec) already validated;
        ``caller`` keys the caller's arm during a rollout (:func:`api.core.rollout.caller_key`)."""
        loaded, arm, results = self._answer([record], request_id, caller)
        return {**results[0], **_answered_by(loaded, arm)}

    def predict_batch(self, body: Any, request_id: str, caller: str = "") -> dict[str, Any]:
        """Score ``{"records": [...]}``; all or nothing, errors named ``records.<i>.<field>``."""
        if not isinstance(body, dict):
            raise ValidationFailed([FieldError("body", "must be a JSON object")])
        unknown = [FieldError(field_path(key), UNKNOWN) for key in body if key != "records"]
        if "records" not in body:
            raise ValidationFailed([FieldError("records", "field required"), *unknown])
        raw, limit = body["records"], self.settings.serve.batch_limit
        columns = None
        if not unknown and isinstance(raw, list) and 0 < len(raw) <= limit:
            columns = self.spec.columns_if_clean(raw)  # the fast path for well-formed batches
        if columns is not None:
            records = raw
        else:
            records, errors = self.spec.validate_batch(raw, limit)
            if errors or unknown:
                raise ValidationFailed([*errors, *unknown])
        loaded, arm, results = self._answer(records, request_id, caller, columns)
        return {**_answered_by(loaded, arm), "count": len(results), "predictions": results}

    def _answer(
        self,
        records: list[dict[str, Any]],
        request_id: str,
        caller: str,
        columns: dict[str, Sequence[Any]] | None = None,
    ) -> tuple[LoadedModel, str, list[dict[str, Any]]]:
        """Score ``records`` with the arm the rollout routes this caller to (the champion when
        none runs): the model that answered, its arm and the results. A challenger that fails
        is counted and the champion answers instead: the client never pays for a trial."""
        champion = self._model()
        route = self.rollout.route(caller, request_id)
        if route.arm == CHALLENGER and route.challenger is not None:
            try:
                started = time.perf_counter()
                answer = self._score(
                    route.challenger, records, request_id, started, columns, arm=CHALLENGER
                )
                self.rollout.scored()
                return route.challenger, CHALLENGER, answer
            except Exception as exc:  # pylint: disable=broad-exception-caught
                # Any failure of a model on trial is the trial's, not the client's.
                self.rollout.failed()
                log.warning("rollout.challenger_failed", error=repr(exc))
        results = self._score(champion, records, request_id, time.perf_counter(), columns)
        if route.shadow and route.challenger is not None:
            ids = [result["prediction_id"] for result in results]
            self.rollout.shadows.submit(route.challenger, Shadow(records, ids, request_id))
        return champion, CHAMPION, results

    def _shadow(self, challenger: LoadedModel, shadows: list[Shadow]) -> None:
        """Score the challenger's shadows of several requests in one call, and record each
        request's as its own batch (its request id; ``shadow_of`` its champion predictions)."""
        records = [record for shadow in shadows for record in shadow.records]
        started = time.perf_counter()
        scores = challenger.predictor.predict_proba(records)
        latency_ms = (time.perf_counter() - started) * 1000 / len(records)
        labels = challenger.predictor.model.labels(scores)
        metrics.observe_predictions(labels, challenger.version, scores, CHALLENGER)
        if not self.settings.serve.record_predictions:
            return
        probabilities, created_at, offset = scores.tolist(), datetime.now(UTC), 0
        for shadow in shadows:
            end = offset + len(shadow.records)
            self.writer.record_batch(
                PredictionBatch(
                    ids=random_ids(len(shadow.records)),
                    created_at=created_at,
                    model_name=challenger.name,
                    model_version=challenger.version,
                    inputs=shadow.records,
                    probabilities=probabilities[offset:end],
                    labels=labels[offset:end],
                    latency_ms=latency_ms,
                    request_id=shadow.request_id,
                    arm=CHALLENGER,
                    shadow_of=shadow.champion_ids,
                )
            )
            offset = end

    def feedback(self, body: Any, request_id: str) -> dict[str, Any]:
        """Store the true label of a served prediction (``POST /feedback``; see
        :mod:`api.core.feedback`); a second label for the same prediction replaces the first.

        Raises:
            ValidationFailed: the body is not ``{"prediction_id", "label"}`` as documented.
            HistoryUnavailable: the database cannot store it now (the client may retry).
        """
        prediction_id, label = check_feedback(body, self.spec.labels)
        received_at = self.labels.record(prediction_id, label, request_id)
        self._count_outcome(prediction_id, label)
        return {
            "prediction_id": prediction_id,
            "label": label,
            "received_at": received_at.isoformat(),
        }

    def _count_outcome(self, prediction_id: str, label: str) -> None:
        """Count whether each arm's label was right (``xgbops_rollout_outcomes_total``, the live
        error ratio per arm): the arm that answered, and a challenger that shadowed it. A
        prediction still buffered, not yet in the database, is not counted. Never fails the
        request."""
        try:
            scored = self.reader.labels_of(prediction_id)
        except SQLAlchemyError as exc:
            log.warning("feedback.outcome_not_counted", error=reason_of(exc))
            return
        for arm, served in scored:
            metrics.observe_outcome(arm, served == label)

    def answer_message(
        self, message: str | bytes, request_id: str, caller: str = ""
    ) -> dict[str, Any]:
        """The reply to one WebSocket message: a record, or ``{"records": [...]}``; errors as
        the error body (the socket stays open)."""
        raw = message.encode("utf-8") if isinstance(message, str) else message
        try:
            body = read_json("application/json", raw, self.settings.serve.max_body_bytes)
        except ApiError as exc:
            return error_body(exc, request_id)
        try:
            if isinstance(body, dict) and "records" in body:
                return self.predict_batch(body, request_id, caller)
            return self.predict(body, request_id, caller)
        except ApiError as exc:
            return error_body(exc, request_id)

    def _score(
        self,
        loaded: LoadedModel,
        records: list[dict[str, Any]],
        request_id: str,
        started: float,
        columns: dict[str, Sequence[Any]] | None = None,
        *,
        arm: str = CHAMPION,
    ) -> list[dict[str, Any]]:
        if columns is not None:
            scores = loaded.predictor.predict_proba_columns(columns)
        else:
            scores = loaded.predictor.predict_proba(records)
        probabilities = scores.tolist()
        latency_ms = (time.perf_counter() - started) * 1000 / len(records)
        # Per-record work is kept to list comprehensions: a 10,000-record batch runs these
        # lines 10,000 times, and every microsecond there is 1 % of the batch's time.
        labels = loaded.predictor.model.labels(scores)
        ids = random_ids(len(records))
        if self.settings.serve.record_predictions:
            self.writer.record_batch(
                PredictionBatch(
                    ids=ids,
                    created_at=datetime.now(UTC),
                    model_name=loaded.name,
                    model_version=loaded.version,
                    inputs=records,
                    probabilities=probabilities,
                    labels=labels,
                    latency_ms=latency_ms,
                    request_id=request_id,
                    arm=arm,
                )
            )
        results = [
            {"prediction_id": prediction_id, "probability": probability, "label": label}
            for prediction_id, probability, label in zip(ids, probabilities, labels)
        ]
        metrics.observe_predictions(labels, loaded.version, scores, arm)
        return results

    def _model(self) -> LoadedModel:
        loaded = self.store.get()
        metrics.set_model(loaded.name, loaded.version, str(loaded.pointer.get("run_id") or ""))
        return loaded

    # -- retraining --------------------------------------------------------------------------

    def retrain(self, client: str) -> dict[str, Any]:
        """Start a retraining job (answered with 202 and the job document); the adapter has
        checked the caller's ``admin`` scope (:mod:`api.core.access`)."""
        job = self.jobs.submit(client)
        metrics.observe_retrain("queued")
        return job

    def retrain_status(self, job_id: str) -> dict[str, Any]:
        """A retraining job's document."""
        return self.jobs.get(job_id)

    # -- reporting ---------------------------------------------------------------------------

    def model_info(self) -> dict[str, Any]:
        """Which model answers (name, version, run id, file digest and where it came from:
        registry, local or baked), its training time, holdout metrics and input features."""
        loaded = self._model()
        pointer = loaded.pointer
        return {
            "model_name": loaded.name,
            "model_version": loaded.version,
            "alias": pointer.get("alias", "champion"),
            "run_id": pointer.get("run_id"),
            "digest": pointer.get("digest"),
            "source": pointer.get("source"),
            "trained_at": pointer.get("trained_at"),
            "scorer": loaded.predictor.model.scorer,
            # What it was trained from, saved in the model's own files (xgbops.dataversion).
            "data_version": loaded.predictor.metadata.get("data_version"),
            "git_commit": loaded.predictor.metadata.get("git_commit"),
            "threshold": loaded.predictor.threshold,
            "labels": {
                "positive": loaded.predictor.model.positive_label,
                "negative": loaded.predictor.model.negative_label,
            },
            "metrics": pointer.get("metrics", {}),
            "features": [_feature_doc(f) for f in self.spec.fields],
        }

    def health(self) -> dict[str, Any]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Ready when the champion is loaded and the history database answers."""
        checks: dict[str, Any] = {}
        try:
            loaded = self._model()
            checks["model"] = {"ok": True, "version": loaded.version}
        except ModelNotReady as exc:
            checks["model"] = {"ok": False, "reason": str(exc)}
        db_ok, reason = self.writer.database_ok()
        if not db_ok:
            log.warning("ready.database_down", error=reason)
        checks["database"] = {"ok": db_ok, **({} if db_ok else {"reason": "it does not answer"})}
        spool_ok, reason = self.writer.spool_ok()
        if not spool_ok:
            log.warning("ready.spool_unwritable", error=reason)
        checks["spool"] = {"ok": spool_ok, **({} if spool_ok else {"reason": SPOOL_UNWRITABLE})}
        checks["history_spooled"] = self.writer.spooled
        ready = all(c["ok"] for c in checks.values() if isinstance(c, dict))
        return ready, {"status": "ready" if ready else "not_ready", "checks": checks}

    def predictions(self, pairs: Iterable[tuple[str, str]] | Mapping[str, str]) -> dict[str, Any]:
        """A page of the prediction history, newest first (the query: :mod:`api.core.query`)."""
        query = parse_history_query(pairs.items() if isinstance(pairs, Mapping) else pairs)
        try:
            records, total = self.reader.page(
                limit=query.limit,
                offset=query.offset,
                since=query.since,
                until=query.until,
                model_version=query.model_version,
            )
        except SQLAlchemyError as exc:
            log.error("history.read_failed", error=reason_of(exc))
            metrics.observe_database(False, "read")
            raise HistoryUnavailable("the prediction history cannot be read") from None
        return {
            "total": total,
            "limit": query.limit,
            "offset": query.offset,
            "items": [_record_doc(r) for r in records],
        }

    # -- rollout -----------------------------------------------------------------------------

    def rollout_report(self) -> dict[str, Any]:
        """``GET /rollout``: the rollout's state, the live comparison of its arms, the verdict
        and the decisions so far (:mod:`xgbops.rollout.comparison`).

        Raises:
            HistoryUnavailable: the history cannot be read now.
        """
        try:
            return rollout_report(self.settings, self.reader.engine, self.rollout.state())
        except SQLAlchemyError as exc:
            log.error("history.read_failed", error=reason_of(exc))
            metrics.observe_database(False, "read")
            raise HistoryUnavailable("the prediction history cannot be read") from None

    def change_rollout(self, body: Any, actor: str) -> dict[str, Any]:
        """``PUT /rollout``: ``{"mode": ..., "share": ...}`` for the running rollout (admin).

        Raises:
            ValidationFailed: not that shape, an unknown mode, a share outside 0..100, or no
                rollout to change (starting one is ``xgbops rollout start``: it needs the
                registry).
        """
        mode, share = check_rollout_change(body)
        try:
            state = change_mode(self.settings, self.reader.engine, mode, share, actor)
        except RolloutStateError as exc:
            field, _, reason = str(exc).partition(": ")
            raise ValidationFailed([FieldError(field, reason)]) from None
        except RegistryError as exc:
            log.error("rollout.registry_failed", error=str(exc))
            raise RegistryUnavailable() from None
        except SQLAlchemyError as exc:  # the state changed; only its record failed
            log.error("rollout.decision_unrecorded", error=reason_of(exc))
            state = read_state(self.settings.serving_path)
        self.rollout.forget()  # this worker applies it now, the others at their next look
        return {"state": state.to_dict()}

    def metrics_summary(self) -> dict[str, Any]:
        """The JSON summary of /api/v1/metrics."""
        try:
            positive: str | None = self._model().predictor.model.positive_label
        except ModelNotReady:
            positive = None
        return metrics.summary(positive)


def spool_dir(settings: Settings) -> Path:
    """Where unwritten history waits: one folder per database, so a spool is only ever
    replayed into the database it was meant for."""
    digest = hashlib.sha256(settings.history_url.encode()).hexdigest()[:16]
    folder = settings.serve.spool_dir
    return (settings.resolve(folder) if folder else settings.state_path / "spool") / digest


def check_rollout_change(body: Any) -> tuple[str, float | None]:
    """The mode and share of a ``PUT /rollout`` body.

    Raises:
        ValidationFailed: each wrong field, named.
    """
    if not isinstance(body, dict):
        raise ValidationFailed([FieldError("body", "must be a JSON object")])
    problems = [
        FieldError(field_path(key), UNKNOWN) for key in body if key not in ("mode", "share")
    ]
    mode, share = body.get("mode"), body.get("share")
    if not isinstance(mode, str):
        problems.append(FieldError("mode", "field required: shadow, canary, ab or off"))
    if share is not None and (isinstance(share, bool) or not isinstance(share, (int, float))):
        problems.append(FieldError("share", "must be a number from 0 to 100"))
    if problems:
        raise ValidationFailed(problems)
    return str(mode), None if share is None else float(share)


def new_request_id(header: str | None) -> str:
    """The client's X-Request-ID if it is sane, else a fresh one."""
    if header and 0 < len(header) <= 128 and header.isprintable():
        return header
    return random_id()


def _answered_by(loaded: LoadedModel, arm: str) -> dict[str, Any]:
    """Which model answered: every prediction response carries it (and the adapters' headers)."""
    return {
        "threshold": loaded.predictor.threshold,
        "model_name": loaded.name,
        "model_version": loaded.version,
        "run_id": loaded.pointer.get("run_id"),
        "arm": arm,
    }


def _feature_doc(spec: Any) -> dict[str, Any]:
    doc = {
        "name": spec.name,
        "type": spec.kind,
        "description": spec.description,
        "nullable": spec.nullable,
    }
    if spec.kind == "categorical":
        doc["categories"] = list(spec.categories)
    else:
        doc.update({"integer": spec.integer, "min": spec.minimum, "max": spec.maximum})
    return doc


def _record_doc(record: PredictionRecord) -> dict[str, Any]:
    doc = asdict(record)
    doc["created_at"] = record.created_at.isoformat()
    return doc
