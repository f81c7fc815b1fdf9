"""Prometheus metrics as gunicorn workers write them (multi-process mode, one file per worker)."""

from __future__ import annotations

import re
import subprocess  # nosec B404 - runs this interpreter on a fixed script
import sys
from pathlib import Path

SWAP = """
from api.core import metrics
metrics.set_model("churn-xgboost", "1")
metrics.observe_request("/predict", "POST", 200, 0.002)
metrics.set_model("churn-xgboost", "2")
metrics.set_model("churn-xgboost", "2")
print(metrics.render().decode())
"""


def test_a_swapped_model_is_served_and_the_replaced_one_reads_zero(tmp_path: Path):
    """Run as a worker does: PROMETHEUS_MULTIPROC_DIR set before prometheus-client is imported,
    and every warning an error (prometheus-client warns when asked to drop a series)."""
    done = subprocess.run(  # nosec B603 - this interpreter, a fixed script
        [sys.executable, "-W", "error", "-c", SWAP],
        env={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": str(Path.cwd())},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    served = dict(
        re.findall(r'^xgbops_model_info\{.*model_version="(\d+)".*\} (\S+)$', done.stdout, re.M)
    )
    assert served == {"1": "0.0", "2": "1.0"}
    assert re.search(r'^xgbops_http_requests_total\{.*status="200"\} 1\.0$', done.stdout, re.M)
