"""Data versions: the dataset's DVC hash, and the way back from a registered model to its data.

A data version is the md5 of the dataset file's bytes: the very hash DVC records for it (in
``dvc.lock``, in a ``.dvc`` file, and as the name of its object in a cache or remote). Every
training run carries it as the MLflow tag ``data_version`` next to the git commit, so a
registered version leads back to its exact data: :func:`checkout_version` finds the file by
that hash in the workspace, in DVC's cache, or at the recorded commit (through DVC, which reads
git history or pulls from the remote), and checks the hash before writing anything.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from xgbops import XgbopsError
from xgbops.config import Settings
from xgbops.files import write_atomically

#: Run and registered-version tag holding the dataset's md5 (DVC's hash of the file).
DATA_VERSION_TAG = "data_version"
#: Run and registered-version tag holding the commit the run was trained from.
GIT_COMMIT_TAG = "git_commit"


class DataVersionError(XgbopsError):
    """The data of a version cannot be found, or what was found is not that version."""


@dataclass(frozen=True)
class Restored:
    """Where a version's data was written and where it was found."""

    path: Path
    data_version: str
    source: str


def data_version(path: Path) -> str:
    """The dataset's version: md5 of its bytes, as DVC 3 names it (``hash: md5``).

    Raises:
        DataVersionError: the file cannot be read.
    """
    try:
        with Path(path).open("rb") as handle:
            # DVC's content address, not a security check
            digest = hashlib.file_digest(handle, lambda: hashlib.md5(usedforsecurity=False))
    except OSError as exc:
        raise DataVersionError(f"{path}: cannot be read ({exc.strerror})") from exc
    return digest.hexdigest()


def version_tags(path: Path, commit: str | None) -> dict[str, str]:
    """The tags a training run and its registered version carry about their data."""
    tags = {DATA_VERSION_TAG: data_version(path)}
    if commit:
        tags[GIT_COMMIT_TAG] = commit
    return tags


def restore(
    project_dir: Path,
    dataset_path: Path,
    wanted: str,
    commit: str | None,
    output: Path,
) -> Restored:
    """Write the dataset whose md5 is ``wanted`` to ``output``.

    Looked for, cheapest first: ``output`` itself, the current dataset file, DVC's cache
    (``<cache>/files/md5/ab/cdef…``), then the file at ``commit`` through DVC, which reads a
    git-tracked file from history and fetches a DVC-tracked one from the default remote.

    Args:
        project_dir: the DVC (and git) repository.
        dataset_path: the dataset as the configuration names it (relative to the project or
            absolute inside it).
        wanted: the data version (md5) to restore.
        commit: the commit the version was trained from, if known.
        output: where to write the file.

    Raises:
        DataVersionError: no source holds data with that hash.
    """
    current = dataset_path if dataset_path.is_absolute() else project_dir / dataset_path
    tried: list[str] = []
    for source, candidate in (("already there", output), ("workspace", current)):
        if _has_version(candidate, wanted):
            if candidate != output:
                write_atomically(output, candidate.read_bytes())
            return Restored(output, wanted, source)
        tried.append(f"{source}: {candidate} is another version or missing")
    cached = _cache_object(project_dir, wanted)
    if cached is not None and _has_version(cached, wanted):
        write_atomically(output, cached.read_bytes())
        return Restored(output, wanted, "dvc cache")
    tried.append("dvc cache: no object with that hash")
    if commit:
        content, reason = _at_commit(project_dir, current, commit)
        if content is not None and _md5(content) == wanted:
            write_atomically(output, content)
            return Restored(output, wanted, f"commit {commit[:12]}")
        tried.append(f"commit {commit[:12]}: {reason or 'the file there is another version'}")
    else:
        tried.append("no git commit recorded")
    raise DataVersionError(f"data version {wanted} not found ({'; '.join(tried)})")


def checkout_version(
    settings: Settings,
    version: str | None = None,
    alias: str | None = None,
    output: Path | None = None,
) -> Restored:
    """Restore the data a registered version was trained on (the latest version by default).

    Args:
        settings: the loaded settings (registry, dataset path, project).
        version: registered version number.
        alias: or the version carrying this alias (e.g. ``champion``).
        output: where to write it (default: the dataset's own path, like ``dvc checkout``).

    Raises:
        xgbops.champion.RegistryError: no such version.
        DataVersionError: the version records no data version, or its data cannot be found.
    """
    from xgbops.tracking import Tracker  # pylint: disable=import-outside-toplevel

    info = Tracker(settings).version(settings.model_name, version=version, alias=alias)
    wanted = info.tags.get(DATA_VERSION_TAG)
    if not wanted:
        raise DataVersionError(
            f"{settings.model_name} v{info.version} records no {DATA_VERSION_TAG} "
            "(trained before data versions were recorded)"
        )
    target = settings.resolve(output) if output is not None else settings.data_path
    return restore(
        settings.project_dir, settings.data_path, wanted, info.tags.get(GIT_COMMIT_TAG), target
    )


def _md5(content: bytes) -> str:
    return hashlib.md5(content, usedforsecurity=False).hexdigest()


def _has_version(path: Path, wanted: str) -> bool:
    try:
        return path.is_file() and data_version(path) == wanted
    except DataVersionError:
        return False


def _cache_object(project_dir: Path, md5: str) -> Path | None:
    """The object DVC's local cache keeps for ``md5``, wherever ``dvc cache dir`` put it."""
    # pylint: disable=import-outside-toplevel  # dvc takes a second to import: only when asked
    from dvc.exceptions import NotDvcRepoError  # type: ignore[import-untyped]
    from dvc.repo import Repo  # type: ignore[import-untyped]

    try:
        with Repo(str(project_dir)) as repo:
            path = Path(repo.cache.local.oid_to_path(md5))
    except NotDvcRepoError:
        return None
    return path if path.is_file() else None


def _at_commit(project_dir: Path, dataset: Path, commit: str) -> tuple[bytes | None, str | None]:
    """The dataset's bytes at ``commit`` through DVC (git history or the default remote)."""
    import dvc.api  # type: ignore[import-untyped]  # pylint: disable=import-outside-toplevel

    try:
        relative = dataset.resolve().relative_to(project_dir.resolve())
    except ValueError:
        return None, f"{dataset} is outside the project"
    try:
        content = dvc.api.read(relative.as_posix(), repo=str(project_dir), rev=commit, mode="rb")
    except Exception as exc:  # pylint: disable=broad-exception-caught  # DVC's errors vary
        return None, f"{type(exc).__name__}: {exc}"
    return bytes(content), None
