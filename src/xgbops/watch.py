"""Re-run the relevant part of the make chain whenever a project file changes.

Which targets a change triggers is a pure function of the changed paths
(:func:`targets_for`), so the mapping is testable without watching anything.
"""

from __future__ import annotations

# Runs `make` with fixed target names only.
import subprocess  # nosec B404
from collections.abc import Callable, Iterable
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath

#: The chain in its order: a change re-runs the first target it touches and everything after.
CHAIN = ("quality", "data-check", "train")

#: Glob of a project-relative path -> the first target of the chain it invalidates.
RULES: tuple[tuple[str, str], ...] = (
    ("src/*", "quality"),
    ("tests/*", "quality"),
    ("api/*", "quality"),
    ("pyproject.toml", "quality"),
    ("requirements/*", "quality"),
    ("data/*", "data-check"),
    ("config/dataset.yaml", "data-check"),
    ("config/*", "train"),
)

IGNORED = (".git/*", ".venv/*", ".xgbops/*", "reports/*", "*/__pycache__/*", "*.pyc", "*~")


def targets_for(paths: Iterable[str]) -> list[str]:
    """The make targets to run, in chain order, for changed project-relative paths."""
    first = len(CHAIN)
    for raw in paths:
        path = PurePosixPath(raw).as_posix()
        if any(fnmatch(path, pattern) for pattern in IGNORED):
            continue
        for pattern, target in RULES:
            if fnmatch(path, pattern):
                first = min(first, CHAIN.index(target))
                break
    return list(CHAIN[first:])


def run_targets(targets: list[str], make: str = "make") -> int:
    """Run ``make`` with the targets, stopping at the first failure; returns its status."""
    if not targets:
        return 0
    return subprocess.run([make, *targets], check=False).returncode  # nosec B603


def watch(
    root: Path,
    on_change: Callable[[list[str]], object] = run_targets,
    stop_after: int | None = None,
) -> None:
    """Block, calling ``on_change(targets)`` after each batch of relevant file changes.

    Args:
        root: the project directory to watch.
        on_change: what to do with the targets (``run_targets`` by default).
        stop_after: return after this many batches (for tests); None watches forever.
    """
    import watchfiles  # pylint: disable=import-outside-toplevel

    batches = 0
    for changes in watchfiles.watch(root, raise_interrupt=False):
        relative = [
            Path(path).resolve().relative_to(root.resolve()).as_posix() for _, path in changes
        ]
        targets = targets_for(relative)
        if targets:
            on_change(targets)
            batches += 1
        if stop_after is not None and batches >= stop_after:
            return
