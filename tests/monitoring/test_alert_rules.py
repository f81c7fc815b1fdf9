"""Every alert names a runbook section that exists and has promtool unit tests both ways.

Read from the files themselves (no Prometheus needed): an alert added without a runbook
section, or without a test that it fires and one that it stays silent, fails here; what the
tests assert is run by ``promtool test rules`` (``make observability-check``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.monitoring.test_observability_live import runbook_anchors

PROMETHEUS = Path(__file__).resolve().parents[2] / "monitoring" / "prometheus"


def _alerts() -> dict[str, dict[str, Any]]:
    groups = yaml.safe_load((PROMETHEUS / "rules" / "alerts.yml").read_text(encoding="utf-8"))
    return {r["alert"]: r for g in groups["groups"] for r in g["rules"] if "alert" in r}


def _unit_tests() -> list[dict[str, Any]]:
    tests = yaml.safe_load((PROMETHEUS / "tests" / "alerts_test.yml").read_text(encoding="utf-8"))
    return [case for test in tests["tests"] for case in test.get("alert_rule_test", [])]


def test_every_alert_links_a_runbook_section_that_exists():
    anchors = runbook_anchors()
    alerts = _alerts()
    assert len(alerts) >= 10
    for name, rule in alerts.items():
        page, _, anchor = rule["annotations"]["runbook_url"].partition("#")
        assert page == "docs/operations/runbooks.md" and anchor in anchors, name


def test_every_alert_has_a_unit_test_that_fires_it_and_one_that_keeps_it_silent():
    cases = _unit_tests()
    for name in _alerts():
        outcomes = {bool(c["exp_alerts"]) for c in cases if c["alertname"] == name}
        assert outcomes == {True, False}, f"{name}: unit tests {outcomes or 'missing'}"
