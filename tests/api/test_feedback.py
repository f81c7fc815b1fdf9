"""POST /feedback in the core: the body checked field by field, the label stored (or replaced)
on both database backends, and a database outage refused with a 503 rather than lost."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select

from xgbops.config import to_sqlalchemy_url

from api.core.errors import HistoryUnavailable, ValidationFailed
from api.core.feedback import FeedbackStore, check_feedback
from api.core.history import create_engine_for, migrate
from xgbops.tables import prediction_feedback

LABELS = ("no", "yes")
ID = "0123456789abcdef" * 2


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def migrated_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A history database of each backend, migrated."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'history.db'}"
    else:
        url = str(request.getfixturevalue("postgres_url"))
    migrate(url)
    return url


def _stored(url: str) -> list[tuple[str, str, str]]:
    engine = create_engine(to_sqlalchemy_url(url))
    try:
        with engine.connect() as connection:
            query = select(
                prediction_feedback.c.prediction_id,
                prediction_feedback.c.label,
                prediction_feedback.c.request_id,
            )
            return [tuple(row) for row in connection.execute(query)]
    finally:
        engine.dispose()


def test_a_valid_body_gives_the_id_and_label():
    assert check_feedback({"prediction_id": ID, "label": "yes"}, LABELS) == (ID, "yes")


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ([ID, "yes"], [("body", "must be a JSON object")]),
        ({}, [("label", "field required"), ("prediction_id", "field required")]),
        (
            {"prediction_id": ID.upper(), "label": "Yes"},
            [
                ("label", "must be one of: no, yes"),
                ("prediction_id", "must be the 32-hex-digit id /predict returned"),
            ],
        ),
        ({"prediction_id": 12, "label": None}, None),
        ({"prediction_id": ID, "label": "no", "note": "x"}, [("note", "unknown field")]),
    ],
)
def test_every_offending_field_is_named(body, errors):
    with pytest.raises(ValidationFailed) as refused:
        check_feedback(body, LABELS)
    found = [(d.field, d.reason) for d in refused.value.detail]
    if errors is None:  # wrong types: both fields named
        assert [field for field, _ in found] == ["label", "prediction_id"]
    else:
        assert found == errors


def test_a_label_is_stored_and_a_second_one_replaces_it(migrated_url):
    engine = create_engine_for(migrated_url)
    store = FeedbackStore(engine)
    try:
        first = store.record(ID, "yes", "request-1")
        second = store.record(ID, "no", "request-2")
        store.record("f" * 32, "yes", "request-3")
    finally:
        engine.dispose()
    assert first <= second <= datetime.now(UTC)
    assert sorted(_stored(migrated_url)) == [
        (ID, "no", "request-2"),
        ("f" * 32, "yes", "request-3"),
    ]


def test_an_unreachable_database_is_a_503_the_client_can_retry():
    engine = create_engine_for("postgresql://postgres@127.0.0.1:9/nowhere")
    try:
        with pytest.raises(HistoryUnavailable) as refused:
            FeedbackStore(engine).record(ID, "yes", "request-1")
    finally:
        engine.dispose()
    assert refused.value.status == 503
    assert str(refused.value).startswith("the label cannot be stored now")
