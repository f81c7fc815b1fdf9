"""Running the ``xgbops`` command in-process, through its real entry point."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from xgbops import cli


def run_xgbops(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    *args: str,
    cwd: Path | None = None,
) -> tuple[int, str, str]:
    """Run ``xgbops ARGS`` (in ``cwd`` if given) as ``cli.main`` does: (status, stdout, stderr).

    Output printed before the call (e.g. by a fixture's history writer) is not included.
    """
    if cwd is not None:
        monkeypatch.chdir(cwd)
    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["xgbops", *args])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
        sys.exit(0)
    captured = capsys.readouterr()
    return exit_info.value.code or 0, captured.out, captured.err
