"""Batch scoring with the local engine: a CSV streamed in chunks, checked row for row.

The Dask engine's scoring of a partitioned table is tested on a real cluster in test_dask.py.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from xgbops import score
from xgbops.predict import Predictor, parse_records
from xgbops.tracking import Tracker

from tests.cli_runner import run_xgbops

#: Uses the session's trained champion.
pytestmark = pytest.mark.slow


def test_score_command_scores_a_csv_like_the_predictor(
    monkeypatch, capsys, champion_settings, tmp_path
):
    settings = champion_settings
    source = settings.data_path
    monkeypatch.setattr(score, "CSV_CHUNK_ROWS", 2_000)  # 5,000 rows: three chunks, three files
    status, out, _ = run_xgbops(
        monkeypatch, capsys, "score", str(source), str(tmp_path / "out"), cwd=settings.project_dir
    )
    assert status == 0, out
    assert "5000 rows in 3 partition(s)" in out
    files = sorted((tmp_path / "out").glob("part-*.parquet"))
    assert [f.name for f in files] == [f"part-0000{i}.parquet" for i in range(3)]
    scored = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    champion = Tracker(settings).champion(settings.model_name)
    assert champion is not None
    predictor = Predictor.from_directory(
        Tracker(settings).download_model(settings.model_name, alias="champion")
    )
    numeric = [f.name for f in settings.dataset.features if f.type == "numeric"]
    records = parse_records(source.read_text(encoding="utf-8"), "csv", numeric)
    expected = predictor.predict(records)
    np.testing.assert_allclose(scored["probability"], [p.probability for p in expected], rtol=1e-6)
    assert scored["label"].tolist() == [p.label for p in expected]
    assert set(scored["model_version"]) == {champion.version}
    assert set(scored["run_id"]) == {champion.run_id}
    assert scored["state"].tolist() == [r["state"] for r in records]  # inputs kept, in order
