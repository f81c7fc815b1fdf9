"""The champion's files for serving, and which model they are.

Serving reads one directory: the model files and ``current.json``, a pointer that names the
model by identity (registered name and version, the registry's run id and a digest of the files)
and by origin (``registry``: exported from an MLflow server; ``local``: from the embedded
store on this machine; ``baked``: copied into the image at build time). The pointer is replaced
atomically, so a reader never sees half of it, and a model is never re-exported over a
different one that happens to have the same version number.

Two writers share the format: :meth:`xgbops.tracking.Tracker.export_champion` (with the MLflow
library, on the platform side) and :class:`RegistryClient` (MLflow's REST API over the standard
library, for the lean serving image, which has no MLflow). ``python -m xgbops.champion sync`` is
what the serving image runs before its server starts.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal, TypeGuard

from xgbops import XgbopsError, compiled

#: The pointer file in the serving directory.
POINTER_FILE: Final = "current.json"
#: The registry alias serving follows.
CHAMPION_ALIAS: Final = "champion"
#: The alias of the version on trial beside the champion (``xgbops rollout``).
CHALLENGER_ALIAS: Final = "challenger"
#: The champion a promotion replaced: what ``xgbops rollout rollback`` gives ``champion`` back to.
PREVIOUS_ALIAS: Final = "previous_champion"
#: The pyfunc artifact holding the booster and the featuriser spec (see xgbops.tracking).
MODEL_ARTIFACT: Final = "model"
#: The files that make a model; the digest covers exactly these.
MODEL_FILES: Final = ("model.json", "booster.ubj")

Source = Literal["registry", "local", "baked"]


class RegistryError(XgbopsError):
    """The registry cannot be read, or holds no usable champion."""


class RegistryUnreachable(RegistryError):
    """The registry did not answer (down, refused, timed out): not the same as "no champion"."""


@dataclass(frozen=True)
class ChampionVersion:
    """A registered version, as the registry names it."""

    name: str
    version: str
    run_id: str


def model_digest(model_dir: Path) -> str:
    """``sha256:<hex>`` of the model's files, names included: the same model, whatever its path.

    Raises:
        FileNotFoundError: a model file is missing.
    """
    digest = hashlib.sha256()
    for name in MODEL_FILES:
        digest.update(name.encode() + b"\0")
        digest.update((model_dir / name).read_bytes())
    return f"sha256:{digest.hexdigest()}"


def pointer_file(alias: str = CHAMPION_ALIAS) -> str:
    """The serving directory's pointer of ``alias``: ``current.json`` for the champion (the name
    every deployment already knows), ``<alias>.json`` for another (``challenger.json``)."""
    return POINTER_FILE if alias == CHAMPION_ALIAS else f"{alias}.json"


def read_pointer(destination: Path, alias: str = CHAMPION_ALIAS) -> dict[str, Any] | None:
    """The pointer in ``destination``, or None when there is none (or it is unreadable)."""
    try:
        content = json.loads((destination / pointer_file(alias)).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return content if isinstance(content, dict) else None


def is_server_uri(uri: str | None) -> TypeGuard[str]:
    """True for an MLflow tracking server's URL, false for a database or file store (or none)."""
    return uri is not None and uri.startswith(("http://", "https://"))


def current_pointer(
    destination: Path, champion: ChampionVersion, alias: str = CHAMPION_ALIAS
) -> dict[str, Any] | None:
    """The pointer of ``destination`` when it already serves exactly ``champion`` as ``alias``
    (same run, intact files), else None."""
    pointer = read_pointer(destination, alias)
    if not pointer or (pointer.get("run_id"), str(pointer.get("version"))) != (
        champion.run_id,
        champion.version,
    ):
        return None
    folder = destination / str(pointer.get("model_dir", ""))
    return pointer if _holds(folder, str(pointer.get("digest"))) else None


def install_model(
    files: Path,
    destination: Path,
    champion: ChampionVersion,
    source: Source,
    extra: Mapping[str, Any] | None = None,
    alias: str = CHAMPION_ALIAS,
    *,
    trees_cache: Path | None = None,
) -> dict[str, Any]:
    """Copy a model's files into ``destination`` and point ``alias``'s pointer at them.

    The files go to a folder named by run id and digest, so two different models never share
    one; the pointer is written last, atomically. With a ``trees_cache``, the folder also gets
    the trees compiled to native code (:mod:`xgbops.compiled`, kept in that cache by key) when
    this machine can build them; compiled trees that come with ``files`` are copied along.

    Returns:
        The pointer written.
    """
    digest = model_digest(files)
    model_dir = f"{champion.run_id}-{digest.removeprefix('sha256:')[:12]}"
    target = destination / model_dir
    if not _holds(target, digest):
        destination.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=".model-", dir=destination))
        partial.chmod(0o755)  # mkdtemp's 0700 would hide it from a server of another user
        for name in MODEL_FILES + compiled.FILES:
            if name in MODEL_FILES or (files / name).is_file():
                shutil.copyfile(files / name, partial / name)
        if target.exists():  # the same model's folder, damaged: set it aside, then replace it
            damaged = Path(tempfile.mkdtemp(prefix=".damaged-", dir=destination))
            os.replace(target, damaged / model_dir)
            shutil.rmtree(damaged, ignore_errors=True)
        os.replace(partial, target)
    if trees_cache is not None:
        compiled.compile_into(target, trees_cache)
    spec = json.loads((target / "model.json").read_text(encoding="utf-8"))
    pointer = {
        "model_name": champion.name,
        "version": champion.version,
        "alias": alias,
        "run_id": champion.run_id,
        "digest": digest,
        "source": source,
        "model_dir": model_dir,
        "trained_at": spec.get("metadata", {}).get("trained_at"),
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **(extra or {}),
    }
    write_pointer(destination, pointer, alias)
    return pointer


def _holds(folder: Path, digest: str) -> bool:
    try:
        return model_digest(folder) == digest
    except OSError:
        return False


def identity(pointer: Mapping[str, Any]) -> dict[str, Any]:
    """Which model a pointer names, as log events carry it."""
    return {
        "model_name": pointer.get("model_name"),
        "model_version": pointer.get("version"),
        "run_id": pointer.get("run_id"),
        "digest": pointer.get("digest"),
        "source": pointer.get("source"),
    }


def write_pointer(
    destination: Path, pointer: Mapping[str, Any], alias: str = CHAMPION_ALIAS
) -> None:
    """Replace ``alias``'s pointer atomically (write beside it, then rename over it)."""
    name = pointer_file(alias)
    partial = destination / f".{name}.{os.getpid()}"
    partial.write_text(json.dumps(pointer, indent=2), encoding="utf-8")
    os.replace(partial, destination / name)


def holdout_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    """A run's holdout metrics, named without their ``holdout_`` prefix."""
    return {
        key.removeprefix("holdout_"): float(value)
        for key, value in metrics.items()
        if key.startswith("holdout_")
    }


def redact_uri(uri: str) -> str:
    """The URI without user information, for pointers and logs (others as they are)."""
    parts = urllib.parse.urlsplit(uri)
    if "@" not in parts.netloc:  # nothing to hide; a file URI's empty host must stay as it is
        return uri
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


class RegistryClient:
    """The champion of an MLflow server, read over its REST API with the standard library.

    Needs a tracking server that serves its artifacts (``mlflow server --serve-artifacts``, as
    compose runs it). Credentials come from MLflow's own variables (``MLFLOW_TRACKING_TOKEN``,
    or ``MLFLOW_TRACKING_USERNAME`` and ``MLFLOW_TRACKING_PASSWORD``).
    """

    def __init__(self, tracking_uri: str, timeout: float = 10.0) -> None:
        if not is_server_uri(tracking_uri):
            raise RegistryError(f"not an MLflow server URL: {redact_uri(tracking_uri)}")
        self.base = tracking_uri.rstrip("/")
        self.timeout = timeout

    def champion(self, name: str, alias: str = CHAMPION_ALIAS) -> ChampionVersion | None:
        """The version carrying ``alias`` (the ``champion`` by default), or None when there is none.

        Raises:
            RegistryUnreachable: the server did not answer.
            RegistryError: it answered with an error other than "no such alias/model".
        """
        query = urllib.parse.urlencode({"name": name, "alias": alias})
        try:
            found = self._json(f"/api/2.0/mlflow/registered-models/alias?{query}")
        except _NotFound:
            return None
        version = found.get("model_version", {})
        return ChampionVersion(name, str(version["version"]), str(version["run_id"]))

    def download(self, champion: ChampionVersion, target: Path) -> Path:
        """Download the version's model files into ``target``.

        Raises:
            RegistryError: the artifacts are not served by the tracking server, or are missing.
        """
        query = urllib.parse.urlencode({"name": champion.name, "version": champion.version})
        uri = str(
            self._json(f"/api/2.0/mlflow/model-versions/get-download-uri?{query}")["artifact_uri"]
        )
        scheme, _, path = uri.partition(":")
        if scheme != "mlflow-artifacts":
            raise RegistryError(
                f"the model's artifacts are at {scheme}:, not served by the tracking server: "
                "start it with --serve-artifacts"
            )
        folder = f"{path.lstrip('/')}/artifacts/{MODEL_ARTIFACT}"
        target.mkdir(parents=True, exist_ok=True)
        for name in MODEL_FILES:
            url = f"/api/2.0/mlflow-artifacts/artifacts/{urllib.parse.quote(folder)}/{name}"
            try:
                (target / name).write_bytes(self._get(url))
            except _NotFound:
                raise RegistryError(f"{champion.name} v{champion.version} has no {name}") from None
        return target

    def holdout_metrics(self, run_id: str) -> dict[str, float]:
        """The run's ``holdout_*`` metrics, without the prefix (what /model reports)."""
        query = urllib.parse.urlencode({"run_id": run_id})
        run = self._json(f"/api/2.0/mlflow/runs/get?{query}").get("run", {})
        return holdout_metrics(
            {m["key"]: m["value"] for m in run.get("data", {}).get("metrics", [])}
        )

    def model_tag(self, name: str, key: str) -> str | None:
        """A tag of the registered model ``name`` (None when it or the model is missing).

        Raises:
            RegistryUnreachable: the server did not answer.
        """
        query = urllib.parse.urlencode({"name": name})
        try:
            model = self._json(f"/api/2.0/mlflow/registered-models/get?{query}")
        except _NotFound:
            return None
        tags = model.get("registered_model", {}).get("tags", [])
        return next((str(tag["value"]) for tag in tags if tag.get("key") == key), None)

    def set_model_tag(self, name: str, key: str, value: str) -> None:
        """Set a tag of the registered model ``name`` (how the rollout's state reaches every
        replica that follows this registry).

        Raises:
            RegistryUnreachable: the server did not answer.
            RegistryError: it refused.
        """
        body = json.dumps({"name": name, "key": key, "value": value}).encode()
        try:
            self._get("/api/2.0/mlflow/registered-models/set-tag", body)
        except _NotFound:
            raise RegistryError(f"no registered model {name}") from None

    def _json(self, path: str) -> dict[str, Any]:
        try:
            answer = json.loads(self._get(path))
        except json.JSONDecodeError as exc:
            raise RegistryError(f"the registry answered something other than JSON: {exc}") from None
        if not isinstance(answer, dict):
            raise RegistryError("the registry answered something other than a JSON object")
        return answer

    def _get(self, path: str, payload: bytes | None = None) -> bytes:
        """GET ``path``, or POST ``payload`` (JSON) to it."""
        headers = _auth_headers()
        if payload is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.base + path, data=payload, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # nosec B310
                return bytes(response.read())
        except urllib.error.HTTPError as exc:
            body = exc.read().decode("utf-8", "replace")
            if exc.code == 404 or _is_not_found(body):
                raise _NotFound() from None
            raise RegistryError(f"the registry answered {exc.code}: {body[:200]}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RegistryUnreachable(
                f"the registry at {redact_uri(self.base)} does not answer: {reason}"
            ) from None


class _NotFound(Exception):
    """A 404 or MLflow's "does not exist" answer."""


def _is_not_found(body: str) -> bool:
    """MLflow's error for a missing model (RESOURCE_DOES_NOT_EXIST) or alias (a 400 whose
    INVALID_PARAMETER_VALUE message says "not found")."""
    try:
        error = json.loads(body)
    except json.JSONDecodeError:
        return False
    if not isinstance(error, dict):
        return False
    code, message = error.get("error_code"), str(error.get("message", ""))
    return code == "RESOURCE_DOES_NOT_EXIST" or (
        code == "INVALID_PARAMETER_VALUE" and "alias" in message and "not found" in message
    )


def _auth_headers() -> dict[str, str]:
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    if token:
        return {"Authorization": f"Bearer {token}"}
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get(
        "MLFLOW_TRACKING_PASSWORD"
    )
    if user and password:
        credentials = base64.b64encode(f"{user}:{password}".encode()).decode()
        return {"Authorization": f"Basic {credentials}"}
    return {}


@dataclass(frozen=True)
class Synced:
    """What a look at the registry left in the serving directory."""

    pointer: dict[str, Any]
    #: True when this look installed the champion; False when it was already in place.
    changed: bool


def sync_from_registry(
    client: RegistryClient,
    name: str,
    destination: Path,
    alias: str = CHAMPION_ALIAS,
    trees_cache: Path | None = None,
) -> Synced | None:
    """Make ``destination`` serve the registry's ``alias``; download only when it changed.

    Returns:
        The pointer now in place and whether it changed, or None when the registry has no
        champion (``destination`` is then left as it was).

    Raises:
        RegistryUnreachable: the registry did not answer (nothing in ``destination`` changed).
        RegistryError: the champion's files could not be fetched.
    """
    champion = client.champion(name, alias)
    if champion is None:
        return None
    current = current_pointer(destination, champion, alias)
    if current is not None:
        return Synced(current, changed=False)
    destination.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=destination) as tmp:
        files = client.download(champion, Path(tmp))
        extra = {
            "metrics": client.holdout_metrics(champion.run_id),
            "registry": redact_uri(client.base),
        }
        pointer = install_model(
            files, destination, champion, "registry", extra, alias, trees_cache=trees_cache
        )
        return Synced(pointer, True)


def use_baked(
    baked: Path, destination: Path, trees_cache: Path | None = None
) -> dict[str, Any] | None:
    """Serve the model baked into the image (``baked`` holds its files and pointer).

    Returns:
        The pointer now in place (``source: baked``), or None when nothing was baked.
    """
    pointer = read_pointer(baked)
    if pointer is None:
        return None
    champion = ChampionVersion(
        str(pointer["model_name"]), str(pointer["version"]), str(pointer["run_id"])
    )
    kept: dict[str, Any] = {k: pointer[k] for k in ("metrics", "registry") if k in pointer}
    files = baked / str(pointer["model_dir"])
    return install_model(files, destination, champion, "baked", kept, trees_cache=trees_cache)


def _sync_command(args: argparse.Namespace) -> int:
    """``sync``: what the serving image runs before its server (see docker/entrypoint.sh).

    With a registry URL: the registry's champion, or, only when the registry does not answer,
    the baked model (and it says so). A registry that answers without a champion, or whose
    champion cannot be fetched, leaves nothing to serve: the server starts and /ready says why.
    Logs one event saying which model will be served, in the format of the settings.
    """
    # pylint: disable=import-outside-toplevel  # a command's own imports, not the module's
    import structlog

    from xgbops.config import load_settings
    from xgbops.logs import configure_logging

    settings = load_settings()
    configure_logging(settings)
    log = structlog.get_logger("xgbops.champion")
    destination = settings.serving_path
    baked = Path(args.baked) if args.baked else None
    uri = settings.mlflow_tracking_uri or ""
    pointer: dict[str, Any] | None = None
    if is_server_uri(uri):
        try:
            synced = sync_from_registry(
                RegistryClient(uri, timeout=args.timeout),
                settings.model_name,
                destination,
                trees_cache=settings.compiled_cache_path,
            )
            pointer = synced.pointer if synced else None
            if pointer is None:
                log.warning("champion.registry_has_none", model_name=settings.model_name)
        except RegistryUnreachable as exc:
            log.warning("champion.registry_unreachable", reason=str(exc), baked=bool(baked))
            pointer = use_baked(baked, destination, settings.compiled_cache_path) if baked else None
        except RegistryError as exc:
            log.error("champion.registry_failed", reason=str(exc))
    elif baked:
        pointer = use_baked(baked, destination, settings.compiled_cache_path)
    if pointer is None:
        (destination / POINTER_FILE).unlink(missing_ok=True)
        log.warning("champion.none", detail="/ready answers 503 until the registry has a champion")
        return 0
    log.info("champion.serving", **identity(pointer))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m xgbops.champion sync [--baked DIR]``."""
    parser = argparse.ArgumentParser(prog="python -m xgbops.champion", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    sync = commands.add_parser("sync", help="serve the registry's champion (or the baked one)")
    sync.add_argument("--baked", help="folder of a model baked into the image")
    sync.add_argument("--timeout", type=float, default=10.0, help="seconds per registry request")
    args = parser.parse_args(argv)
    return _sync_command(args)


if __name__ == "__main__":
    sys.exit(main())
