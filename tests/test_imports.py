"""Module boundaries (DESIGN.md): each module imports only what its job needs."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "xgbops"
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")

#: module -> top-level names it must never import (xgbops modules are written as "xgbops.x").
FORBIDDEN = {
    "predict": {
        "xgbops.train",
        "xgbops.data",
        "xgbops.tracking",
        "xgbops.evaluate",
        "mlflow",
        "pandas",
        "sklearn",
        "pandera",
    },
    "model": {
        "xgbops.train",
        "xgbops.data",
        "xgbops.tracking",
        "xgbops.evaluate",
        "mlflow",
        "pandas",
        "sklearn",
        "pandera",
    },
    "data": {
        "xgbops.model",
        "xgbops.train",
        "xgbops.tracking",
        "xgbops.predict",
        "mlflow",
        "xgboost",
    },
    "evaluate": {
        "xgbops.train",
        "xgbops.tracking",
        "xgbops.data",
        "xgbops.model",
        "mlflow",
        "xgboost",
    },
    "config": {f"xgbops.{m}" for m in MODULES if m != "config"} | {"mlflow", "xgboost", "pandas"},
    "watch": {f"xgbops.{m}" for m in MODULES if m != "watch"} | {"mlflow"},
}
#: Only these modules may import MLflow: tracking talks to it, mlflow_model is its entry point.
MLFLOW_ALLOWED = {"tracking", "mlflow_model"}


def imports_of(module: str) -> set[str]:
    """Every module name imported anywhere in ``module`` (top-level or inside functions)."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            if node.module == "xgbops":
                names.update(f"xgbops.{alias.name}" for alias in node.names)
    return names


def _matches(name: str, forbidden: str) -> bool:
    return name == forbidden or name.startswith(forbidden + ".")


@pytest.mark.parametrize("module", sorted(FORBIDDEN))
def test_module_does_not_import_what_it_must_not(module):
    bad = {n for n in imports_of(module) for f in FORBIDDEN[module] if _matches(n, f)}
    assert not bad, f"xgbops.{module} imports {sorted(bad)}"


@pytest.mark.parametrize("module", MODULES)
def test_only_tracking_talks_to_mlflow(module):
    if module in MLFLOW_ALLOWED:
        return
    assert not {n for n in imports_of(module) if _matches(n, "mlflow")}


@pytest.mark.parametrize("module", MODULES)
def test_nothing_in_src_imports_the_api(module):
    assert not {n for n in imports_of(module) if _matches(n, "api")}


def test_the_checker_sees_imports_inside_functions():
    # cli imports train lazily; a checker blind to that would pass vacuously
    assert "xgbops.train" in imports_of("cli") or "xgbops" in imports_of("cli")
    assert {"xgbops.model", "numpy"} <= imports_of("predict")


def test_predict_runs_without_pandas_mlflow_or_sklearn(champion_settings):
    """Import-time proof: a fresh interpreter scores a record with those packages blocked."""
    import subprocess  # pylint: disable=import-outside-toplevel
    import sys  # pylint: disable=import-outside-toplevel

    from xgbops.tracking import Tracker  # pylint: disable=import-outside-toplevel

    model_dir = Tracker(champion_settings).download_model("churn-xgboost", alias="champion")
    example = (champion_settings.project_dir / "data" / "example.json").read_text()
    script = f"""
import sys
for blocked in ("pandas", "mlflow", "sklearn", "pandera", "matplotlib"):
    sys.modules[blocked] = None  # any import of these now raises ImportError
from pathlib import Path
from xgbops.predict import Predictor
p = Predictor.from_directory(Path({str(model_dir)!r}))
print(p.predict([{example}])[0].probability)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert 0 < float(out.stdout) < 1
