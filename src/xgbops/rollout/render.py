"""The comparison report as Markdown: ``xgbops rollout status``, ``reports/rollout.md`` and the
rollout pipeline's email say the same thing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from xgbops.rollout.state import CHALLENGER, CHAMPION


def to_markdown(report: dict[str, Any]) -> str:
    """A page a person reads: state, verdict, per-arm table, tests, decisions."""
    state, verdict = report["state"], report["verdict"]
    arms = report["arms"]
    lines = [
        f"# Rollout of {report.get('model_name', 'the model')}",
        "",
        f"**Verdict: {verdict['decision']}** — {verdict['reason']}",
        "",
        f"Mode **{state['mode']}** at {state['share']:g} %, challenger "
        f"v{state['challenger_version']} against champion v{state['champion_version']}, "
        f"started {state['started_at']}"
        + (f"; stopped: {state['stopped_reason']}" if state.get("stopped_reason") else "")
        + ".",
        "",
        f"| | champion v{arms[CHAMPION]['version']} | challenger v{arms[CHALLENGER]['version']} |",
        "|---|---|---|",
    ]
    rows: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("requests", lambda arm: str(arm["requests"])),
        ("labelled", lambda arm: str(arm["labelled"])),
        ("error rate", lambda arm: _interval(arm["error_rate"])),
        ("ROC AUC", lambda arm: _interval(arm["auc"])),
        ("log loss", lambda arm: _number(arm["log_loss"])),
        ("Brier", lambda arm: _number(arm["brier"])),
        ("calibration error (ECE)", lambda arm: _number(arm["ece"])),
        ("mean probability", lambda arm: _number(arm["mean_probability"])),
        ("latency p50 / p95 (ms)", lambda arm: _latency(arm["latency_ms"])),
    ]
    for title, cell in rows:
        lines.append(f"| {title} | {cell(arms[CHAMPION])} | {cell(arms[CHALLENGER])} |")
    lines += ["", f"Samples are {'paired (shadow)' if report['paired'] else 'independent'}."]
    if report.get("agreement"):
        lines.append(f"Agreement of the served labels: {_interval(report['agreement'])}.")
    lines.append("")
    for name, test in report["tests"].items():
        if test is None:
            lines.append(f"- {name}: not enough data")
            continue
        lines.append(
            f"- {name}: challenger − champion = {test['difference']:+.4f} "
            f"[{test['low']:+.4f}, {test['high']:+.4f}], p = {_p(test['p_value'])} "
            f"(worse: p = {_p(test['p_worse'])}; {test['method']})"
        )
    decisions = report.get("decisions") or []
    if decisions:
        lines += ["", "## Decisions", ""]
        lines += [
            f"- {item['at']} **{item['action']}** by {item['actor']}: {item['reason']}"
            for item in decisions
        ]
    return "\n".join(lines) + "\n"


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def _interval(value: dict[str, float] | None) -> str:
    if not value or value.get("estimate") is None:
        return "–"
    return f"{value['estimate']:.4f} [{value['low']:.4f}, {value['high']:.4f}]"


def _latency(value: dict[str, float | None]) -> str:
    p50, p95 = value.get("p50"), value.get("p95")
    return "–" if p50 is None or p95 is None else f"{p50:.2f} / {p95:.2f}"


def _p(value: float | None) -> str:
    return "–" if value is None else f"{value:.3g}"
