"""Consistency: every event the code ships fits its index template's strict mapping, and every
mapped field is one the code fills (no stale mapping). Events come from the real builders."""

from __future__ import annotations

import fnmatch
import json
import os
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import project_settings
from tests.monitoring.conftest import ES_DIR
from tests.monitoring.history_rows import label, records, write_feedback, write_history
from tests.monitoring.mapping_check import violations
from tests.monitoring.sample import rollout_decision, rollout_report
from xgbops.monitoring import MonitoringError, elastic, system
from xgbops.monitoring.check import load_reference
from xgbops.monitoring.drift import Inputs, build_report
from xgbops.monitoring.events import EVENT_TYPES, Event, RolloutDecisionEvent, rollout_events
from xgbops.monitoring.history import read_feedback, read_predictions
from xgbops.monitoring.sync import training_run_events


@pytest.fixture(scope="module")
def shipped(champion_project: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list]:
    """Documents of every kind, built by the code that ships them, grouped by kind."""
    with pytest.MonkeyPatch.context() as patch:
        for name in [n for n in os.environ if n.startswith(("XGBOPS_", "MLFLOW_"))]:
            patch.delenv(name)
        settings = project_settings(champion_project)
        events: list[Event] = list(training_run_events(settings))
        reference = load_reference(settings)
        window = reference.sample(200, random_state=3)
        window["total_day_minutes"] += 100.0
        window.loc[window.index[:5], "number_vmail_messages"] = None
        report = build_report(
            Inputs(
                reference,
                window,
                reference[["account_length"]].to_numpy()[:, 0] / 300,
                window[["account_length"]].to_numpy()[:, 0] / 200,
            ),
            settings.dataset,
            settings.monitoring.drift,
            model_name=settings.model_name,
            model_versions=["1"],
            window=(datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 1, 2, tzinfo=UTC)),
            generated_at=datetime(2025, 1, 2, tzinfo=UTC),
        )
        events += report.events()
    example = json.loads((champion_project / "data" / "example.json").read_text())
    history = tmp_path_factory.mktemp("history")
    url = f"sqlite:///{history / 'predictions.db'}"
    served = records([example, example], [0.7, 0.2], datetime.now(UTC))
    write_history(url, history / "spool", served)
    events += list(read_predictions(url, "yes"))
    write_feedback(url, [label(row.id, "yes", datetime.now(UTC)) for row in served])
    events += list(read_feedback(url))  # one right, one wrong
    events += list(_system_sample(tmp_path_factory.mktemp("disk")))
    now = datetime.now(UTC)
    for paired in (True, False):  # shadow (agreement filled) and canary
        events += rollout_events(rollout_report(now, paired=paired))
    events += rollout_events(rollout_report(now, labelled=False))
    events += [
        RolloutDecisionEvent.from_decision(rollout_decision(now, action))
        for action in ("start", "mode", "promote", "rollback", "guard_stop")
    ]
    grouped: dict[str, list] = defaultdict(list)
    for event in events:
        grouped[event.KIND].append(event.to_document())
    return dict(grouped)


def _system_sample(disk: Path) -> Iterator[Event]:
    """A system sample that sees one xgbops process: a sleeper named so on its command line."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "xgbops"])
    try:
        yield from system.sample(disk, measure_seconds=0.05)
    finally:
        sleeper.kill()
        sleeper.wait()


def _mappings(kind: str, directory: Path = ES_DIR) -> dict[str, Any]:
    return elastic.index_template(directory, kind)["template"]["mappings"]


@pytest.mark.parametrize("kind", sorted(EVENT_TYPES))
def test_every_shipped_event_fits_its_strict_mapping(shipped, kind):
    mappings = _mappings(kind)
    assert mappings["dynamic"] == "strict"
    assert shipped[kind], f"no {kind} event was built"
    for document in shipped[kind]:
        assert violations(document, mappings) == [], document


@pytest.mark.parametrize("kind", sorted(EVENT_TYPES))
def test_every_mapped_field_is_filled_by_the_code(shipped, kind):
    mapped = _mappings(kind)["properties"]
    filled = {key for document in shipped[kind] for key in document}
    assert set(mapped) == filled
    for name, field in mapped.items():
        if "properties" in field:  # nested objects: the same, one level down
            inner = {k for d in shipped[kind] if d.get(name) for k in d[name]}
            assert set(field["properties"]) == inner, name


def test_a_template_missing_a_field_the_code_ships_is_caught(shipped, tmp_path):
    broken = tmp_path / "index_templates"
    broken.mkdir()
    body = json.loads((ES_DIR / "index_templates" / "xgbops-predictions.json").read_text())
    del body["template"]["mappings"]["properties"]["probability"]
    body["template"]["mappings"]["properties"]["positive"] = {"type": "boolean"}
    (broken / "xgbops-predictions.json").write_text(json.dumps(body))
    problems = violations(shipped["predictions"][0], _mappings("predictions", tmp_path))
    assert any(p.startswith("probability: not in the mapping") for p in problems)
    assert any(p.startswith("positive:") for p in problems)


def test_a_feedback_template_with_a_wrong_type_is_caught(shipped, tmp_path):
    broken = tmp_path / "index_templates"
    broken.mkdir()
    body = json.loads((ES_DIR / "index_templates" / "xgbops-feedback.json").read_text())
    body["template"]["mappings"]["properties"]["correct"] = {"type": "boolean"}
    del body["template"]["mappings"]["properties"]["predicted_at"]
    (broken / "xgbops-feedback.json").write_text(json.dumps(body))
    assert {d["correct"] for d in shipped["feedback"]} == {0, 1}
    for document in shipped["feedback"]:
        problems = violations(document, _mappings("feedback", tmp_path))
        assert f"correct: {document['correct']!r} for a boolean" in problems
        assert "predicted_at: not in the mapping (dynamic: strict)" in problems


def test_a_rollout_template_with_a_wrong_type_or_a_missing_field_is_caught(shipped, tmp_path):
    broken = tmp_path / "index_templates"
    broken.mkdir()
    body = json.loads((ES_DIR / "index_templates" / "xgbops-rollout.json").read_text())
    body["template"]["mappings"]["properties"]["requests"] = {"type": "byte"}
    body["template"]["mappings"]["properties"]["arm"] = {"type": "boolean"}
    del body["template"]["mappings"]["properties"]["p_worse"]
    (broken / "xgbops-rollout.json").write_text(json.dumps(body))
    filled = [d for d in shipped["rollout"] if d["p_worse"] is not None]
    assert filled, "no rollout document with an error-rate test"
    for document in filled:
        problems = violations(document, _mappings("rollout", tmp_path))
        assert f"requests: {document['requests']!r} for a byte" in problems
        assert f"arm: {document['arm']!r} for a boolean" in problems
        assert "p_worse: not in the mapping (dynamic: strict)" in problems


def test_dynamic_inputs_follow_the_dynamic_templates(shipped):
    document = dict(shipped["predictions"][0])
    mappings = _mappings("predictions")
    assert violations(document, mappings) == []
    document["input"] = {"state": {"nested": "object"}}  # an input value is never an object
    assert violations(document, mappings) == []  # accepted dynamically, as a real cluster would
    document["unexpected"] = 1
    assert violations(document, mappings) == ["unexpected: not in the mapping (dynamic: strict)"]


def test_every_template_names_an_existing_policy_and_component():
    resources = elastic.load_resources(ES_DIR)
    names = {(r.kind, r.name) for r in resources}
    for resource in resources:
        if resource.kind != "index_templates":
            continue
        for component in resource.body["composed_of"]:
            assert ("component_templates", component) in names
        lifecycle = resource.body["template"].get("settings", {}).get("index", {}).get("lifecycle")
        if lifecycle:
            assert ("ilm", lifecycle["name"]) in names
            assert lifecycle["parse_origination_date"] is True
    assert [r.kind for r in resources] == sorted(
        (r.kind for r in resources), key=["ilm", "component_templates", "index_templates"].index
    )


def test_index_patterns_do_not_overlap():
    """Elasticsearch refuses two templates of the same priority matching the same index."""
    templates = [r for r in elastic.load_resources(ES_DIR) if r.kind == "index_templates"]
    for kind, cls in EVENT_TYPES.items():
        moment = datetime(2025, 1, 1, tzinfo=UTC)
        # predicted_at: feedback documents live in the index of their prediction's month.
        index = cls.model_construct(timestamp=moment, predicted_at=moment).index("xgbops")
        matching = [
            t.name
            for t in templates
            if any(fnmatch.fnmatchcase(index, p) for p in t.body["index_patterns"])
        ]
        assert matching == [f"xgbops-{kind}"], (index, matching)


def test_an_unknown_kind_has_no_template():
    with pytest.raises(MonitoringError, match="no index template 'xgbops-nothing'"):
        elastic.index_template(ES_DIR, "nothing")
